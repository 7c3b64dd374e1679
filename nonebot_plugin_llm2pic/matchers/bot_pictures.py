"""Replies to the bot's own pictures, found in the recent-pictures store by message id.

The store answers even when the OneBot implementation cannot return the bot's own message
(``get_msg`` fails), so such a reply still counts as addressed to the bot and still has its
picture and the prompt that made it.
"""

from __future__ import annotations

from nonebot.adapters.onebot.v11 import GroupMessageEvent, MessageEvent

from .. import state
from ..recent import RecentPicture


def reply_id(event: MessageEvent) -> str | None:
    """The id of the message ``event`` replies to, if it replies to one."""
    if event.reply is not None:
        return str(event.reply.message_id)
    return next(
        (str(seg.data["id"]) for seg in event.original_message if seg.type == "reply"), None
    )


def replied_picture(event: MessageEvent) -> RecentPicture | None:
    """The bot's recent picture ``event`` replies to, if it replies to one that is still kept."""
    message_id = reply_id(event)
    if message_id is None:
        return None
    group_id = str(event.group_id) if isinstance(event, GroupMessageEvent) else None
    return state.recent.by_message(group_id, message_id)
