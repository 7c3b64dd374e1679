"""`/llm2pic persona ref add|list|del` through nonebug: stored copies, the config list, denial."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import tomlkit
from nonebot.adapters.onebot.v11 import Adapter, Bot, Message, MessageSegment
from nonebot.adapters.onebot.v11.event import Reply, Sender
from nonebug import App

from .conftest import SUPERUSER_ID
from .fakes.openai_server import FakeOpenAI, make_png
from .utils import SELF_ID, group_message, private_message

ADMIN = int(SUPERUSER_ID)
FACE = make_png(32, 32, (200, 40, 40))
OTHER_FACE = make_png(32, 32, (40, 40, 200))


@pytest.fixture
async def host(config_file: Path) -> AsyncIterator[FakeOpenAI]:
    """Serves chat pictures at /files/…; persona/ is emptied afterwards."""
    async with FakeOpenAI() as fake:
        fake.files["face.png"] = (FACE, "image/png")
        fake.files["other.png"] = (OTHER_FACE, "image/png")
        yield fake
    for path in (config_file.parent / "persona").glob("*"):
        path.unlink()


def picture(host: FakeOpenAI, name: str) -> MessageSegment:
    segment = MessageSegment.image(host.url(f"/files/{name}"))
    segment.data["url"] = host.url(f"/files/{name}")
    return segment


async def run(app: App, event, reply: str) -> None:
    """Send one admin command; expect exactly ``reply``."""
    from nonebot_plugin_llm2pic.matchers.admin import admin_cmd

    async with app.test_matcher(admin_cmd) as ctx:
        adapter = ctx.create_adapter(base=Adapter)
        bot = ctx.create_bot(base=Bot, adapter=adapter, self_id=SELF_ID)
        ctx.receive_event(bot, event)
        ctx.should_call_send(event, reply, result={"message_id": 1})
        ctx.should_finished(admin_cmd)


def listed(config_file: Path) -> list[str]:
    persona = tomlkit.parse(config_file.read_text("utf-8")).unwrap().get("persona", {})
    return persona.get("reference_images", [])


def stored(config_file: Path) -> list[bytes]:
    return [path.read_bytes() for path in sorted((config_file.parent / "persona").glob("*"))]


async def test_add_with_attached_image(app: App, host: FakeOpenAI, config_file: Path):
    """An image in the command is copied into persona/ and appended; comments survive."""
    event = private_message(
        Message("/llm2pic persona ref add") + picture(host, "face.png"), user_id=ADMIN
    )
    await run(app, event, f"已添加第 1 张形象参考图：persona/{_name(FACE)}.png（1 KB）")
    assert listed(config_file) == [f"persona/{_name(FACE)}.png"]
    assert stored(config_file) == [FACE]
    assert "# 形象参考图" in config_file.read_text("utf-8")


async def test_add_replying_to_an_image(app: App, host: FakeOpenAI, config_file: Path):
    """Replying to a picture with `add` stores that picture."""
    reply = Reply(
        time=0,
        message_type="group",
        message_id=5,
        real_id=5,
        sender=Sender(user_id=1),
        message=Message(picture(host, "other.png")),
    )
    event = group_message("/llm2pic persona ref add", user_id=ADMIN, reply=reply)
    await run(app, event, f"已添加第 1 张形象参考图：persona/{_name(OTHER_FACE)}.png（1 KB）")
    assert stored(config_file) == [OTHER_FACE]


async def test_add_replying_to_a_bot_picture(app: App, host: FakeOpenAI, config_file: Path):
    """A reply to one of the bot's recent pictures stores the kept bytes, with no download."""
    from nonebot_plugin_llm2pic import state
    from nonebot_plugin_llm2pic.recent import RecentPicture

    state.recent.add(_bot_picture(RecentPicture, message_id="4242", image=OTHER_FACE))
    reply = Reply(
        time=0,
        message_type="group",
        message_id=4242,
        real_id=4242,
        sender=Sender(user_id=int(SELF_ID)),
        message=Message(MessageSegment.image("file:///bot/own.png")),
    )
    event = group_message("/llm2pic persona ref add", user_id=ADMIN, reply=reply)
    await run(app, event, f"已添加第 1 张形象参考图：persona/{_name(OTHER_FACE)}.png（1 KB）")
    assert stored(config_file) == [OTHER_FACE]
    assert host.requests == []


async def test_add_without_image(app: App, host: FakeOpenAI, config_file: Path):
    """`add` with no picture says how to use it and changes nothing."""
    before = config_file.read_bytes()
    event = private_message("/llm2pic persona ref add", user_id=ADMIN)
    await run(app, event, "没有找到图片：请回复一张图片发送这个命令，或在命令里附上图片")
    assert config_file.read_bytes() == before


async def test_add_twice_is_not_duplicated(app: App, host: FakeOpenAI, config_file: Path):
    """The same picture added again is recognised, not listed twice."""
    event = private_message(
        Message("/llm2pic persona ref add") + picture(host, "face.png"), user_id=ADMIN
    )
    await run(app, event, f"已添加第 1 张形象参考图：persona/{_name(FACE)}.png（1 KB）")
    again = private_message(
        Message("/llm2pic persona ref add") + picture(host, "face.png"), user_id=ADMIN
    )
    await run(app, again, "这张图已经是第 1 张形象参考图了")
    assert len(listed(config_file)) == 1


async def test_list_shows_count_sizes_and_urls(app: App, host: FakeOpenAI, config_file: Path):
    """`list` numbers every entry with its size, URLs as they are, missing files marked."""
    from nonebot_plugin_llm2pic.state import store

    (config_file.parent / "persona").mkdir(exist_ok=True)
    (config_file.parent / "persona" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(3000))
    store.set(
        "persona.reference_images", '["persona/a.png", "https://example.com/me.png", "gone.png"]'
    )
    await run(
        app,
        private_message("/llm2pic persona ref list", user_id=ADMIN),
        "形象参考图共 3 张：\n1. persona/a.png（2 KB）\n2. https://example.com/me.png\n"
        "3. gone.png（不可用：找不到文件）",
    )


async def test_del_removes_entry_and_copy(app: App, host: FakeOpenAI, config_file: Path):
    """`del N` drops entry N and its stored copy; the other entry and file stay."""
    for name in ("face.png", "other.png"):
        event = private_message(
            Message("/llm2pic persona ref add") + picture(host, name), user_id=ADMIN
        )
        await run(app, event, _added(len(listed(config_file)) + 1, name, host))
    await run(
        app,
        private_message("/llm2pic persona ref del 1", user_id=ADMIN),
        f"已删除第 1 张形象参考图：persona/{_name(FACE)}.png",
    )
    assert listed(config_file) == [f"persona/{_name(OTHER_FACE)}.png"]
    assert stored(config_file) == [OTHER_FACE]


async def test_del_out_of_range(app: App, host: FakeOpenAI, config_file: Path):
    """`del` of a number not in the list says so."""
    await run(
        app,
        private_message("/llm2pic persona ref del 3", user_id=ADMIN),
        "没有第 3 张（共 0 张），先用 /llm2pic persona ref list 看看",
    )


async def test_group_admin_cannot_add(app: App, host: FakeOpenAI, config_file: Path):
    """A group owner is not a superuser: no effect, no reply."""
    from nonebot_plugin_llm2pic.matchers.admin import admin_cmd

    event = group_message(
        Message("/llm2pic persona ref add") + picture(host, "face.png"), role="owner"
    )
    async with app.test_matcher(admin_cmd) as ctx:
        adapter = ctx.create_adapter(base=Adapter)
        bot = ctx.create_bot(base=Bot, adapter=adapter, self_id=SELF_ID)
        ctx.receive_event(bot, event)
        ctx.should_finished(admin_cmd)
    assert listed(config_file) == []
    assert host.requests == []


def _name(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()[:16]


def _added(number: int, name: str, host: FakeOpenAI) -> str:
    return f"已添加第 {number} 张形象参考图：persona/{_name(host.files[name][0])}.png（1 KB）"


def _bot_picture(cls, *, message_id: str, image: bytes):
    return cls(
        message_id=message_id,
        group_id="777",
        user_id="12345",
        prompt="a cat",
        style=None,
        backend="openai",
        seed=None,
        image=image,
        mime="image/png",
        references=(),
        request_text="画一只猫",
        created=time.time(),
    )
