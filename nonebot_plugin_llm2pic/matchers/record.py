"""Recent group chat for the prompt writer.

Recorded in an event preprocessor, so messages count even when another plugin blocks the event,
and from the bot's own API calls, so the bot's replies are part of the context.
"""

from __future__ import annotations

import time
from typing import Any

from nonebot import get_driver
from nonebot.adapters import Bot as BaseBot
from nonebot.adapters.onebot.v11 import GroupMessageEvent, Message
from nonebot.message import event_preprocessor

from ..history import HistoryEntry
from ..state import history, store

SEND_ACTIONS = frozenset({"send_msg", "send_group_msg"})
IMAGE_PLACEHOLDER = "[图片]"


def message_text(message: Message) -> str:
    """Plain text of a message with ``[图片]`` for each image."""
    parts = []
    for segment in message:
        if segment.type == "text":
            parts.append(segment.data.get("text", ""))
        elif segment.type == "image":
            parts.append(IMAGE_PLACEHOLDER)
    return "".join(parts).strip()


def is_command(text: str) -> bool:
    """Whether the text starts like a command (``/pic``, ``/llm2pic``…): kept out of history."""
    starts = tuple(start for start in get_driver().config.command_start if start)
    return bool(starts) and text.startswith(starts)


@event_preprocessor
async def record_group_message(event: GroupMessageEvent) -> None:
    """Every group message, before any matcher can block it."""
    text = message_text(event.original_message)
    if not text or is_command(text):
        return
    sender = event.sender.card or event.sender.nickname or str(event.user_id)
    history.add(str(event.group_id), HistoryEntry(sender=sender, text=text, time=time.time()))


@BaseBot.on_called_api
async def record_bot_message(
    bot: BaseBot, exception: Exception | None, api: str, data: dict[str, Any], result: Any
) -> None:
    """What the bot itself said in a group, marked as the bot."""
    if exception is not None or api not in SEND_ACTIONS or data.get("group_id") is None:
        return
    if api == "send_msg" and data.get("message_type", "group") != "group":
        return
    text = message_text(Message(data.get("message", "")))
    if text:
        entry = HistoryEntry(
            sender=store.settings.persona.name, text=text, time=time.time(), is_bot=True
        )
        history.add(str(data["group_id"]), entry)
