"""Recent group chat for the prompt writer.

Recorded in an event preprocessor, so messages count even when another plugin blocks the event,
and from the bot's own API calls. Of what this plugin sends, only the pictures are recorded (as
``[图片：<prompt>]``): its acks, refusals, usage texts and admin replies would crowd real chat out
of the window. Other plugins' messages are recorded as they are.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from nonebot import get_driver
from nonebot.adapters import Bot as BaseBot
from nonebot.adapters.onebot.v11 import GroupMessageEvent, Message
from nonebot.matcher import current_matcher
from nonebot.message import event_preprocessor

from ..config import PLUGIN_NAME
from ..history import HistoryEntry, PostedImage
from ..settings import effective
from ..state import history, store

SEND_ACTIONS = frozenset({"send_msg", "send_group_msg", "send_group_forward_msg"})
IMAGE_PLACEHOLDER = "[图片]"

_picture_prompt: ContextVar[str | None] = ContextVar("llm2pic_picture_prompt", default=None)
"""Set by the draw path around sending a picture: the prompt it was drawn from."""


def message_text(message: Message) -> str:
    """Plain text of a message with ``[图片]`` for each image."""
    parts = []
    for segment in message:
        if segment.type == "text":
            parts.append(segment.data.get("text", ""))
        elif segment.type == "image":
            parts.append(IMAGE_PLACEHOLDER)
    return "".join(parts).strip()


def posted_images(message: Message) -> tuple[PostedImage, ...]:
    """The http(s) URL and ``sub_type`` of each image (NapCat ``sub_type``, others ``subType``)."""
    images = []
    for segment in message:
        url = segment.data.get("url") or segment.data.get("file") or ""
        if segment.type != "image" or not str(url).startswith(("http://", "https://")):
            continue
        sub_type = segment.data.get("sub_type", segment.data.get("subType", 0))
        try:
            images.append(PostedImage(str(url), int(sub_type or 0)))
        except (TypeError, ValueError):
            images.append(PostedImage(str(url), -1))  # unreadable: not a plain picture
    return tuple(images)


def is_command(text: str) -> bool:
    """Whether the text starts like a command (``/pic``, ``/llm2pic``…): kept out of history."""
    starts = tuple(start for start in get_driver().config.command_start if start)
    return bool(starts) and text.startswith(starts)


@contextmanager
def sending_picture(prompt: str) -> Iterator[None]:
    """Around the send of a drawn picture: history records it as ``[图片：<prompt>]``."""
    token = _picture_prompt.set(prompt)
    try:
        yield
    finally:
        _picture_prompt.reset(token)


def _sent_by_this_plugin() -> bool:
    """Whether the running send comes from one of our matchers (its handler or its job).

    API hooks run in the caller's context, and a job started by a handler inherits it.
    """
    matcher = current_matcher.get(None)
    module = (matcher.module_name or "") if matcher is not None else ""
    return module == PLUGIN_NAME or module.startswith(f"{PLUGIN_NAME}.")


@event_preprocessor
async def record_group_message(event: GroupMessageEvent) -> None:
    """Every group message, before any matcher can block it."""
    text = message_text(event.original_message)
    if not text or is_command(text):
        return
    sender = event.sender.card or event.sender.nickname or str(event.user_id)
    entry = HistoryEntry(
        sender=sender,
        text=text,
        time=time.time(),
        images=posted_images(event.original_message),
    )
    history.add(str(event.group_id), entry)


@BaseBot.on_called_api
async def record_bot_message(
    bot: BaseBot, exception: Exception | None, api: str, data: dict[str, Any], result: Any
) -> None:
    """What the bot said in a group, marked as the bot; of our own sends only the pictures."""
    if exception is not None or api not in SEND_ACTIONS or data.get("group_id") is None:
        return
    if api == "send_msg" and data.get("message_type", "group") != "group":
        return
    prompt = _picture_prompt.get()
    if prompt is not None:
        text = f"[图片：{prompt}]"
    elif _sent_by_this_plugin():
        return
    else:
        text = message_text(Message(data.get("message", "")))
    if text:
        entry = HistoryEntry(
            sender=effective(store.settings, str(data["group_id"])).persona.name,
            text=text,
            time=time.time(),
            is_bot=True,
        )
        history.add(str(data["group_id"]), entry)
