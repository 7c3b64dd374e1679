"""Characters end to end: `serve` + OneBot v11 client, avatars from a local avatar server.

The `openai` fake is the default backend (it takes references: `images/edits`) and also serves
the avatars through `plugin.avatar_url` and the chat photos.
"""

from __future__ import annotations

import base64
import itertools
from pathlib import Path
from typing import Any

import pytest

from .fakes.gradio_server import FakeGradio
from .fakes.openai_server import FakeOpenAI, make_png
from .fakes.vision_llm import FakeVisionLlm
from .onebot_client import SELF_ID, OneBotClient, ServeProcess, message_segments, message_text
from .test_chat_e2e import ACK, started, write_config

MEMBER = 333
SENDER = 12345
PHOTO = make_png(20, 20, (5, 150, 5))
FACE = make_png(24, 24, (200, 40, 40))


@pytest.fixture
async def upstream():
    async with FakeOpenAI() as fake:
        fake.image = make_png(64, 64, (30, 160, 90))
        fake.files["photo.png"] = (PHOTO, "image/png")
        for user in (SENDER, MEMBER):
            fake.files[f"avatar-{user}.png"] = (make_png(12, 12, (user % 251, 40, 90)), "image/png")
        yield fake


def avatar(fake: FakeOpenAI, user: int) -> bytes:
    return fake.files[f"avatar-{user}.png"][0]


def configure(server: ServeProcess, fake: FakeOpenAI, **overrides: dict[str, Any]) -> None:
    plugin = {"avatar_url": f"{fake.url('/files')}/avatar-{{user_id}}.png?s=640"}
    write_config(server, fake, plugin={**plugin, **overrides.pop("plugin", {})}, **overrides)


def edit_images(fake: FakeOpenAI) -> list[bytes]:
    edit = fake.requests[-1]
    assert edit.path == "/v1/images/edits"
    return [part.data for part in edit.parts if part.name == "image[]"]


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "data": {"text": value}}


def at(qq: int | str) -> dict[str, Any]:
    return {"type": "at", "data": {"qq": str(qq)}}


def reply(message_id: int) -> dict[str, Any]:
    return {"type": "reply", "data": {"id": str(message_id)}}


async def ack_then_picture(client: OneBotClient) -> Any:
    """The ack, then the picture's send_msg call."""
    ack = await client.next_call("send_msg")
    assert message_text(ack.params["message"]) == ACK
    return await client.next_call("send_msg")


async def test_weak_own_avatar_with_mention(tmp_path: Path, upstream: FakeOpenAI):
    """「二次元的我」 with @bot sends the sender's avatar to images/edits."""
    server = ServeProcess(tmp_path)
    configure(server, upstream)
    await started(server)
    try:
        async with OneBotClient(server.ws_url) as client:
            await client.group_message([at(SELF_ID), text(" 二次元的我")], user_id=SENDER)
            await ack_then_picture(client)
            assert edit_images(upstream) == [avatar(upstream, SENDER)]
    finally:
        await server.stop()


async def test_member_avatar_only_with_members(tmp_path: Path, upstream: FakeOpenAI):
    """「把@某人画成动漫风」 uses the member's avatar with "members"; with "self" nothing fires."""
    request = [text("把"), at(MEMBER), text("画成动漫风")]
    server = ServeProcess(tmp_path)
    configure(server, upstream)
    await started(server)
    try:
        async with OneBotClient(server.ws_url) as client:
            await client.group_message(request, user_id=SENDER)
            await client.no_call(within=2.0)
            assert upstream.requests == []
            await client.private_message(
                "/llm2pic set plugin.avatar_subjects members", user_id=10000
            )
            assert "已设置" in message_text((await client.next_call("send_msg")).params["message"])
            await client.group_message(request, user_id=SENDER)
            await ack_then_picture(client)
            assert edit_images(upstream) == [avatar(upstream, MEMBER)]
    finally:
        await server.stop()


async def test_reply_to_photo_with_automatic_at(tmp_path: Path, upstream: FakeOpenAI):
    """A reply to a member's photo (QQ adds an @ of them) uses the photo, not their avatar."""
    server = ServeProcess(tmp_path)
    configure(server, upstream, plugin={"avatar_subjects": "members"})
    await started(server)
    photo_url = upstream.url("/files/photo.png")
    try:
        async with OneBotClient(server.ws_url) as client:
            client.handlers["get_msg"] = lambda params: {
                "time": 0,
                "message_type": "group",
                "message_id": params["message_id"],
                "real_id": params["message_id"],
                "sender": {"user_id": MEMBER, "nickname": "m"},
                "message": [{"type": "image", "data": {"file": "p.png", "url": photo_url}}],
            }
            await client.group_message([reply(71), at(MEMBER), text(" 画成动漫风")])
            await ack_then_picture(client)
            assert edit_images(upstream) == [PHOTO]
    finally:
        await server.stop()


async def test_selfie_carries_persona_images(tmp_path: Path, upstream: FakeOpenAI):
    """A selfie on an edits backend sends the persona's reference images along."""
    server = ServeProcess(tmp_path)
    (tmp_path / "persona").mkdir(parents=True)
    (tmp_path / "persona" / "face.png").write_bytes(FACE)
    configure(server, upstream, persona={"reference_images": ["persona/face.png"]})
    await started(server)
    try:
        async with OneBotClient(server.ws_url) as client:
            await client.group_message("来张自拍")
            await ack_then_picture(client)
            assert edit_images(upstream) == [FACE]
    finally:
        await server.stop()


async def test_reply_to_bot_picture_edits_it_with_get_msg_failing(
    tmp_path: Path, upstream: FakeOpenAI
):
    """「把背景换成海边」 replying to the bot's picture edits the picture sent, get_msg failing."""
    server = ServeProcess(tmp_path)
    configure(server, upstream)
    await started(server)
    ids = itertools.count(5000)
    try:
        async with OneBotClient(server.ws_url) as client:
            client.handlers["send_msg"] = lambda params: {"message_id": next(ids)}
            client.handlers["get_msg"] = lambda params: None  # cannot return the bot's message
            await client.group_message("画一只橘猫")
            picture = await ack_then_picture(client)
            [image] = message_segments(picture.params["message"], "image")
            sent = base64.b64decode(image["file"].removeprefix("base64://"))
            picture_id = 5001  # the ack took 5000
            await client.group_message([reply(picture_id), text("把背景换成海边")])
            await ack_then_picture(client)
            assert edit_images(upstream) == [sent]
    finally:
        await server.stop()


async def test_text_only_selfies_carry_one_cached_description(tmp_path: Path, upstream: FakeOpenAI):
    """Two text-only selfies: one description call, both prompts carry it, kept on disk."""
    server = ServeProcess(tmp_path)
    (tmp_path / "persona").mkdir(parents=True)
    (tmp_path / "persona" / "face.png").write_bytes(FACE)
    async with FakeGradio() as gradio, FakeVisionLlm() as llm:
        configure(
            server,
            upstream,
            persona={"reference_images": ["persona/face.png"]},
            llm={"base_url": llm.base_url, "model": "vision-model"},
            routing={"default": "zimage"},
            backends={"zimage": {"base_url": gradio.base_url, "retries": 0}},
        )
        await started(server)
        try:
            async with OneBotClient(server.ws_url) as client:
                for _ in range(2):
                    await client.group_message("来张自拍")
                    await ack_then_picture(client)
        finally:
            await server.stop()
    described = [call for call in llm.calls if call.images]
    assert [[image.colour for image in call.images] for call in described] == [["red"]]
    writes = [call for call in llm.calls if not call.images]
    assert len(writes) == 2
    assert all('appearance: "a red picture' in call.text for call in writes)
    [cache] = tmp_path.rglob("persona_looks.json")
    assert "a red picture" in cache.read_text("utf-8")
