"""`/llm2pic persona ref add|list|del N`: the images of the bot's look (superusers only).

`add` takes the picture the command carries or replies to (one of the bot's own recent pictures
too), keeps a copy in a `persona/` folder beside the config file and appends it to
`persona.reference_images` through the settings store, so the file keeps its comments. `list`
shows each entry with its size; `del N` removes entry N, and the copy `add` stored for it.
"""

from __future__ import annotations

import asyncio
import hashlib

import tomlkit
from nonebot.adapters import Bot, Event
from nonebot.adapters.onebot.v11 import ActionFailed, Message, MessageEvent, NetworkError

from .. import state
from ..backends import ReferenceImage
from ..exceptions import ReferenceImageError, SettingsError
from ..persona_refs import inspect
from ..pipeline import fetch_references
from ..settings import is_url, resolve_reference
from .characters import replied_picture, reply_id

KEY = "persona.reference_images"
PERSONA_DIR = "persona"
"""Folder beside the config file that holds the copies `add` stores."""
USAGE = (
    "用法：/llm2pic persona ref add（回复一张图片，或在命令里附上图片）"
    " | persona ref list | persona ref del <序号>"
)
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}


async def persona_command(bot: Bot, event: Event, rest: str) -> str:
    """Run `persona ref …` (``rest`` is what follows `persona`) and return the reply."""
    match rest.split():
        case ["ref", "add"]:
            return await _add(bot, event)
        case ["ref", "list"]:
            return await asyncio.to_thread(_list)
        case ["ref", "del", number] if number.isdigit():
            return await _edit(_delete, int(number))
        case _:
            return USAGE


async def _add(bot: Bot, event: Event) -> str:
    if not isinstance(event, MessageEvent):
        return USAGE
    try:
        image = await _image_of(bot, event)
    except ReferenceImageError as err:
        return err.user_message
    if image is None:
        return "没有找到图片：请回复一张图片发送这个命令，或在命令里附上图片"
    return await _edit(_store, image)


async def _image_of(bot: Bot, event: MessageEvent) -> ReferenceImage | None:
    """The first picture of the command, else of the message it replies to."""
    urls = _image_urls(event.original_message)
    picture = replied_picture(event)
    if not urls and picture is not None:
        return ReferenceImage(data=picture.image, mime=picture.mime)
    if not urls and event.reply is not None:
        urls = _image_urls(event.reply.message)
    elif not urls and (message_id := reply_id(event)) is not None:
        try:  # the adapter could not fetch the quoted message: once more
            urls = _image_urls(Message((await bot.get_msg(message_id=int(message_id)))["message"]))
        except (ActionFailed, NetworkError, KeyError, ValueError, TypeError):
            urls = []
    if not urls:
        return None
    settings = state.store.settings
    session = state.get_pipeline().session
    images = await fetch_references(session, urls[:1], proxy=settings.plugin.download_proxy)
    return images[0]


def _image_urls(message: Message) -> list[str]:
    urls = []
    for segment in message:
        url = segment.data.get("url") or segment.data.get("file") or ""
        if segment.type == "image" and url.startswith(("http://", "https://")):
            urls.append(url)
    return urls


async def _edit(func, *args) -> str:
    """File edits run off the event loop; a rejected edit becomes the reply."""
    try:
        return await asyncio.to_thread(func, *args)
    except SettingsError as err:
        return f"未修改：{err}"


def _store(image: ReferenceImage) -> str:
    store = state.store
    name = f"{hashlib.sha256(image.data).hexdigest()[:16]}.{EXTENSIONS.get(image.mime, 'png')}"
    entry = f"{PERSONA_DIR}/{name}"
    entries = list(store.settings.persona.reference_images)
    if entry in entries:
        return f"这张图已经是第 {entries.index(entry) + 1} 张形象参考图了"
    path = store.path.parent / PERSONA_DIR / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image.data)
    try:
        store.set(KEY, _toml_list([*entries, entry]))
    except SettingsError:
        path.unlink(missing_ok=True)
        raise
    return f"已添加第 {len(entries) + 1} 张形象参考图：{entry}（{_size(len(image.data))}）"


def _list() -> str:
    store = state.store
    found = inspect(store.settings.persona.reference_images, store.reference_roots)
    if not found:
        return "还没有形象参考图。回复一张图片发送 /llm2pic persona ref add 添加"
    lines = [f"形象参考图共 {len(found)} 张："]
    for number, item in enumerate(found, start=1):
        size = f"（{_size(item.size)}）" if item.size is not None else ""
        problem = f"（不可用：{item.problem}）" if item.problem else ""
        lines.append(f"{number}. {item.entry}{size}{problem}")
    return "\n".join(lines)


def _delete(number: int) -> str:
    store = state.store
    entries = list(store.settings.persona.reference_images)
    if not 1 <= number <= len(entries):
        return f"没有第 {number} 张（共 {len(entries)} 张），先用 /llm2pic persona ref list 看看"
    entry = entries.pop(number - 1)
    store.set(KEY, _toml_list(entries))
    if not is_url(entry) and entry not in entries:
        path = resolve_reference(entry, store.reference_roots)
        if path.parent == (store.path.parent / PERSONA_DIR).resolve():
            path.unlink(missing_ok=True)  # only the copies `add` made; other files are the admin's
    return f"已删除第 {number} 张形象参考图：{entry}"


def _toml_list(entries: list[str]) -> str:
    return tomlkit.item(entries).as_string()


def _size(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MB" if size >= 1024 * 1024 else f"{max(size // 1024, 1)} KB"
