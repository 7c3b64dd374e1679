"""Fake OneBot v11 events for nonebug tests."""

from __future__ import annotations

import itertools
import time

from nonebot.adapters.onebot.v11 import (
    GroupMessageEvent,
    Message,
    MessageSegment,
    PrivateMessageEvent,
)
from nonebot.adapters.onebot.v11.event import Reply, Sender

_message_ids = itertools.count(1000)
SELF_ID = "2000"


def group_message(
    message: str | Message | MessageSegment,
    *,
    user_id: int = 12345,
    group_id: int = 777,
    role: str = "member",
    to_me: bool = False,
    reply: Reply | None = None,
    nickname: str = "群友",
) -> GroupMessageEvent:
    """A group message event as the adapter would build it (``to_me`` set by the caller)."""
    message = Message(message)
    return GroupMessageEvent(
        time=int(time.time()),
        self_id=int(SELF_ID),
        post_type="message",
        sub_type="normal",
        user_id=user_id,
        message_type="group",
        group_id=group_id,
        message_id=next(_message_ids),
        message=message,
        original_message=message,
        raw_message=str(message),
        font=0,
        sender=Sender(user_id=user_id, nickname=nickname, card="", role=role),
        to_me=to_me,
        reply=reply,
    )


def private_message(message: str | Message, *, user_id: int = 12345) -> PrivateMessageEvent:
    """A private (friend) message event; private messages are always to_me."""
    message = Message(message)
    return PrivateMessageEvent(
        time=int(time.time()),
        self_id=int(SELF_ID),
        post_type="message",
        sub_type="friend",
        user_id=user_id,
        message_type="private",
        message_id=next(_message_ids),
        message=message,
        original_message=message,
        raw_message=str(message),
        font=0,
        sender=Sender(user_id=user_id, nickname="私聊用户"),
        to_me=True,
    )
