"""Who and what a drawing request shows: members' avatars, and the bot's own pictures.

Avatars: the sender's own for 「把我画成…」/「我的动漫形象」/「二次元的我」, and with
``plugin.avatar_subjects = "members"`` those of the members @-mentioned (see ``avatars.py``).

The bot's pictures: a reply to one is found in the recent-pictures store by message id, which
answers even when the OneBot implementation cannot return the bot's own message (``get_msg``
fails), so such a reply still counts as addressed to the bot, still has the picture as a
reference, and still has the prompt that made it.
"""

from __future__ import annotations

from nonebot.adapters.onebot.v11 import GroupMessageEvent, MessageEvent

from .. import state
from ..avatars import Avatar, avatar_for, mentioned_members, own_avatar
from ..intent import Intent
from ..recent import RecentPicture
from ..settings import Settings


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


def with_own_avatar(intent: Intent, text: str, settings: Settings) -> Intent:
    """A message about the sender's own looks (「我的动漫形象」, 「二次元的我」) is a request.

    Only when nothing else was found in it, and only with avatars on: 「二次元的我」 is weak.
    """
    if intent.kind != "none" or settings.plugin.avatar_subjects == "off":
        return intent
    strength = own_avatar(text)
    if strength in ("explicit", "weak"):
        return Intent("draw", strength == "explicit", text)
    return intent


def avatars(
    event: MessageEvent, settings: Settings, text: str, *, in_request: bool
) -> list[Avatar]:
    """The avatars ``event`` names as subjects (sender first, then @-mentioned members).

    ``in_request``: the message is a drawing request already, so 「我的头像」 names the sender
    too (outside one it is talk, not a subject).
    """
    mode = settings.plugin.avatar_subjects
    if mode == "off":
        return []
    users = []
    strength = own_avatar(text)
    if strength in ("explicit", "weak") or (strength == "subject" and in_request):
        users.append(event.get_user_id())
    if mode == "members" and isinstance(event, GroupMessageEvent):
        sender = event.reply.sender.user_id if event.reply is not None else None
        if sender is None and replied_picture(event) is not None:
            sender = event.self_id
        segments = [(seg.type, seg.data) for seg in event.original_message]
        mentioned = mentioned_members(
            segments,
            self_id=str(event.self_id),
            quoted_sender=str(sender) if sender is not None else None,
        )
        users += [user for user in mentioned if user not in users]
    return [avatar_for(settings.plugin.avatar_url, user) for user in users]
