"""What the plugin records as group chat for the prompt writer (history from chat and sends)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
from nonebot.adapters import Bot
from nonebot.adapters.onebot.v11 import Message, MessageSegment
from nonebot.matcher import current_matcher

from nonebot_plugin_llm2pic.history import PostedImage
from nonebot_plugin_llm2pic.matchers.admin import admin_cmd
from nonebot_plugin_llm2pic.matchers.record import (
    record_bot_message,
    record_group_message,
    sending_picture,
)
from nonebot_plugin_llm2pic.state import history

from .fakes.llm_server import FakeLlm
from .fakes.openai_server import FakeOpenAI, make_png
from .onebot_client import OneBotClient, ServeProcess, message_text
from .test_chat_e2e import ACK, started, write_config
from .utils import group_message

BOT = cast(Bot, object())
"""The hook does not use the bot."""


def _texts(group: int) -> list[str]:
    return [e.text for e in history.recent(str(group), limit=50, minutes=5)]


async def _bot_sends(group: int, message: Any) -> None:
    await record_bot_message(
        BOT, None, "send_group_msg", {"group_id": group, "message": message}, {"message_id": 1}
    )


async def test_other_plugins_sends_are_recorded() -> None:
    """A send outside our matchers (another plugin's reply) stays in history as the bot's."""
    await _bot_sends(9101, "今天天气不错")
    [entry] = history.recent("9101", limit=5, minutes=5)
    assert (entry.text, entry.is_bot) == ("今天天气不错", True)


async def test_own_replies_are_not_recorded() -> None:
    """A text our matcher (or its job) sends — ack, refusal, admin reply — is left out."""
    token = current_matcher.set(admin_cmd())
    try:
        await _bot_sends(9102, "已设置 limits.user_cooldown_seconds = 0，已生效")
    finally:
        current_matcher.reset(token)
    assert _texts(9102) == []


async def test_own_picture_is_recorded_with_its_prompt() -> None:
    """A picture the draw path sends is recorded as [图片：<prompt>], whatever else it carries."""
    token = current_matcher.set(admin_cmd())
    try:
        with sending_picture("a tabby cat on a sofa"):
            await _bot_sends(9103, MessageSegment.image(b"png") + "\n提示词：a tabby cat")
    finally:
        current_matcher.reset(token)
    assert _texts(9103) == ["[图片：a tabby cat on a sofa]"]


async def test_posted_images_are_stored_with_sub_type() -> None:
    """Members' pictures keep their URL and sub_type (stickers ≠ 0) beside the [图片] text."""
    message = Message(
        [
            MessageSegment.text("看这个"),
            MessageSegment("image", {"file": "a.jpg", "url": "https://cdn/a", "sub_type": 0}),
            MessageSegment("image", {"file": "b.gif", "url": "https://cdn/b", "subType": "1"}),
        ]
    )
    await record_group_message(group_message(message, group_id=9104))
    [entry] = history.recent("9104", limit=5, minutes=5)
    assert entry.text == "看这个[图片][图片]"
    assert entry.images == (PostedImage("https://cdn/a", 0), PostedImage("https://cdn/b", 1))


@pytest.fixture
async def upstream():
    async with FakeOpenAI() as fake:
        fake.image = make_png(64, 64, (30, 160, 90))
        yield fake


async def test_writer_history_has_chat_and_pictures_not_plugin_replies(
    tmp_path: Path, upstream: FakeOpenAI
) -> None:
    """status/show/set/usage replies and acks stay out of the LLM's chat; pictures show prompts."""
    async with FakeLlm('{"prompt": "a tabby cat on a sofa", "style": "real"}') as llm:
        server = ServeProcess(tmp_path)
        write_config(server, upstream, llm={"base_url": llm.base_url, "model": "test-model"})
        await started(server)
        try:
            async with OneBotClient(server.ws_url) as client:
                await client.group_message("周末去公园看花吧", user_id=7)
                for command in (
                    "/llm2pic status",
                    "/llm2pic show llm",
                    "/llm2pic set limits.user_cooldown_seconds 0",
                    "/llm2pic nonsense",
                    "/pic",
                ):
                    await client.group_message(command, user_id=10000)
                    await client.next_call("send_msg")
                await client.group_message("画一张猫咪的图片", user_id=8)
                assert message_text((await client.next_call("send_msg")).params["message"]) == ACK
                await client.next_call("send_msg")
                await client.group_message("/pic 再画一张，换成黑猫", user_id=8)
                await client.next_call("send_msg")
                await client.next_call("send_msg")
        finally:
            await server.stop()
    chat = llm.bodies[-1]["messages"][-1]["content"]
    recent = chat.split("## Drawing request")[0]
    assert "周末去公园看花吧" in recent
    assert "[图片：a tabby cat on a sofa]" in recent
    for leaked in ("配置文件", "[llm]", "已设置", "用法", "收到"):
        assert leaked not in recent, leaked
