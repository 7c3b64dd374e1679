"""The chat experience end to end: `serve` + OneBot v11 client + a local fake upstream."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomlkit
from PIL import Image

from .fakes.openai_server import FakeOpenAI, make_png
from .onebot_client import OneBotClient, ServeProcess, message_segments, message_text

ACK = "收到，正在画…"


def write_config(server: ServeProcess, fake: FakeOpenAI, **overrides: dict[str, Any]) -> None:
    """A config routing to the fake upstream, with test-friendly limits, plus overrides."""
    tables: dict[str, dict[str, Any]] = {
        "plugin": {},
        "routing": {"default": "openai"},
        "generation": {},
        "limits": {"user_cooldown_seconds": 0},
        "backends": {"openai": {"base_url": fake.base_url, "api_key": "sk-test", "retries": 0}},
    }
    for section, values in overrides.items():
        tables.setdefault(section, {}).update(values)
    document = tomlkit.document()
    document.update(tables)
    server.workdir.mkdir(parents=True, exist_ok=True)
    server.config_path.write_text(tomlkit.dumps(document), "utf-8")


async def until(condition: Callable[[], bool]) -> None:
    """Return once ``condition()`` holds, polling; bound it with ``asyncio.wait_for``."""
    while not condition():
        await asyncio.sleep(0.02)


async def started(server: ServeProcess):
    await server.start()
    return server


def sent_image(call) -> Image.Image:
    """The picture in a send_msg call (base64 segment)."""
    [image] = message_segments(call.params["message"], "image")
    return Image.open(io.BytesIO(base64.b64decode(image["file"].removeprefix("base64://"))))


def quoted_id(call) -> int | None:
    replies = message_segments(call.params["message"], "reply")
    return int(replies[0]["id"]) if replies else None


async def test_natural_request_gets_cropped_image_quoting_it(tmp_path: Path, upstream):
    """ "画一张猫咪的图片" → ack, then the cropped picture quoting the request."""
    server = ServeProcess(tmp_path)
    write_config(server, upstream, generation={"crop_enabled": True, "crop_pixels": 16})
    await started(server)
    try:
        async with OneBotClient(server.ws_url) as client:
            request_id = await client.group_message("画一张猫咪的图片")
            ack = await client.next_call("send_msg")
            assert message_text(ack.params["message"]) == ACK
            assert quoted_id(ack) == request_id
            done = await client.next_call("send_msg")
            assert quoted_id(done) == request_id
            assert sent_image(done).size == (96, 80)
            assert upstream.requests[-1].json["prompt"] == "猫咪"
    finally:
        await server.stop()


async def test_chatter_and_negative_intent_ignored(tmp_path: Path, upstream):
    """Talk about pictures and "别画" get no reply and reach no upstream."""
    server = ServeProcess(tmp_path)
    write_config(server, upstream)
    await started(server)
    try:
        async with OneBotClient(server.ws_url) as client:
            for text in ("这张图真好看", "别画了", "我在画画呢", "don't draw anything"):
                await client.group_message(text)
            await client.no_call(within=1.5)
        assert upstream.requests == []
    finally:
        await server.stop()


async def test_reply_to_image_reaches_backend(tmp_path: Path, upstream):
    """Replying to an image with "画成动漫风格" sends that image to the backend as reference."""
    reference = make_png(20, 20, (250, 0, 0))
    upstream.files["ref.png"] = (reference, "image/png")
    server = ServeProcess(tmp_path)
    write_config(server, upstream)
    await started(server)
    try:
        async with OneBotClient(server.ws_url) as client:
            url = upstream.url("/files/ref.png")
            client.handlers["get_msg"] = lambda params: {
                "time": 0,
                "message_type": "group",
                "message_id": params["message_id"],
                "real_id": params["message_id"],
                "sender": {"user_id": 42, "nickname": "x"},
                "message": [{"type": "image", "data": {"file": "ref.png", "url": url}}],
            }
            await client.group_message(
                [
                    {"type": "reply", "data": {"id": "555"}},
                    {"type": "text", "data": {"text": "画成动漫风格"}},
                ]
            )
            assert (await client.next_call("get_msg")).params == {"message_id": 555}
            assert message_text((await client.next_call("send_msg")).params["message"]) == ACK
            done = await client.next_call("send_msg")
            assert sent_image(done).size == (96, 96)
        edit = upstream.requests[-1]
        assert edit.path == "/v1/images/edits"
        assert [p.data for p in edit.parts if p.name == "image[]"] == [reference]
    finally:
        await server.stop()


async def test_cooldown_answered_once(tmp_path: Path, upstream):
    """Inside the cooldown a second request is refused once; a third gets silence."""
    server = ServeProcess(tmp_path)
    write_config(server, upstream, limits={"user_cooldown_seconds": 60})
    await started(server)
    try:
        async with OneBotClient(server.ws_url) as client:
            await client.group_message("画一只猫")
            await client.next_call("send_msg")
            await client.next_call("send_msg")
            await client.group_message("画一只狗")
            refusal = await client.next_call("send_msg")
            assert message_text(refusal.params["message"]).startswith("画得太快啦")
            await client.group_message("画一只鸟")
            await client.no_call(within=1.0)
        assert len(upstream.requests) == 1
    finally:
        await server.stop()


async def test_quota_survives_restart(tmp_path: Path, upstream):
    """A used-up daily quota is still used up after the bot restarts."""
    server = ServeProcess(tmp_path)
    write_config(server, upstream, limits={"user_daily_quota": 1})
    await started(server)
    try:
        async with OneBotClient(server.ws_url) as client:
            await client.group_message("/pic 猫")
            await client.next_call("send_msg")
            assert sent_image(await client.next_call("send_msg"))
    finally:
        await server.stop()
    restarted = ServeProcess(tmp_path, port=server.port)
    await restarted.start()
    try:
        async with OneBotClient(restarted.ws_url) as client:
            await client.group_message("/pic 狗")
            refusal = await client.next_call("send_msg")
            assert (
                message_text(refusal.params["message"])
                == "你今天的画图次数用完了（1/1），明天再来吧"
            )
        assert len(upstream.requests) == 1
    finally:
        await restarted.stop()


async def test_queue_overflow_is_busy(tmp_path: Path, upstream):
    """One running, one waiting (told its position), the third refused as busy."""
    upstream.delay = 1.5
    server = ServeProcess(tmp_path)
    write_config(server, upstream, limits={"max_concurrency": 1, "max_queue": 1})
    await started(server)
    try:
        async with OneBotClient(server.ws_url) as client:
            await client.group_message("/pic 一", user_id=1)
            assert message_text((await client.next_call("send_msg")).params["message"]) == ACK
            # Wait until the first job holds the only slot (its request reached the upstream).
            await asyncio.wait_for(until(lambda: bool(upstream.requests)), timeout=10)
            await client.group_message("/pic 二", user_id=2)
            second_ack = message_text((await client.next_call("send_msg")).params["message"])
            assert second_ack == f"{ACK}（前面还有 1 个）"
            await client.group_message("/pic 三", user_id=3)
            busy = message_text((await client.next_call("send_msg")).params["message"])
            assert busy == "排队的人太多了，请稍后再试"
            images = [await client.next_call("send_msg") for _ in range(2)]
            assert all(sent_image(call) for call in images)
        assert len(upstream.requests) == 2
    finally:
        await server.stop()


async def test_selfie_draws_the_persona(tmp_path: Path, upstream):
    """ "来张自拍" draws the persona's appearance on the anime route, never the bare words."""
    async with FakeOpenAI() as anime:
        server = ServeProcess(tmp_path)
        write_config(
            server,
            upstream,
            persona={"appearance": "silver short hair, red eyes, white hoodie"},
            routing={"anime": "anime"},
            backends={
                "anime": {
                    "type": "openai",
                    "base_url": anime.base_url,
                    "api_key": "sk-test",
                    "retries": 0,
                }
            },
        )
        await started(server)
        try:
            async with OneBotClient(server.ws_url) as client:
                await client.group_message("来张自拍")
                assert message_text((await client.next_call("send_msg")).params["message"]) == ACK
                assert sent_image(await client.next_call("send_msg"))
        finally:
            await server.stop()
        prompt = anime.requests[-1].json["prompt"]
    assert "silver short hair, red eyes, white hoodie" in prompt
    assert "自拍" not in prompt
    assert upstream.requests == []


async def test_writer_gets_history_and_judge_confirms_weak_request(tmp_path: Path, upstream):
    """Chat (the bot's pictures included) reaches the writer; `judge_intent` fires "想看看樱花"."""
    from .fakes.llm_server import FakeLlm

    async with FakeLlm("yes") as llm:
        server = ServeProcess(tmp_path)
        write_config(
            server,
            upstream,
            llm={"base_url": llm.base_url, "model": "test-model", "judge_intent": True},
        )
        await started(server)
        try:
            async with OneBotClient(server.ws_url) as client:
                await client.group_message("周末去公园看花吧", user_id=7)
                await client.group_message("想看看樱花", user_id=8)
                assert message_text((await client.next_call("send_msg")).params["message"]) == ACK
                assert sent_image(await client.next_call("send_msg"))
                llm.answer = '{"prompt": "cherry blossoms in a park", "style": "real"}'
                await client.group_message("/pic 再来一张夜樱", user_id=9)
                await client.next_call("send_msg")
                await client.next_call("send_msg")
        finally:
            await server.stop()
    judge, writer_first, writer_second = (body["messages"] for body in llm.bodies)
    assert "想看看樱花" in judge[-1]["content"]
    assert "周末去公园看花吧" in judge[-1]["content"]
    assert "周末去公园看花吧" in writer_first[-1]["content"]
    second = writer_second[-1]["content"]
    assert "想看看樱花" in second
    assert "(the bot)" in second
    assert upstream.requests[-1].json["prompt"] == "cherry blossoms in a park"


async def test_shutdown_cancels_running_jobs(tmp_path: Path, upstream):
    """Stopping the bot mid-job ends the process promptly and cleanly."""
    upstream.delay = 30
    server = ServeProcess(tmp_path)
    write_config(server, upstream)
    await started(server)
    async with OneBotClient(server.ws_url) as client:
        await client.group_message("/pic 猫")
        await client.next_call("send_msg")
        started_at = asyncio.get_running_loop().time()
        await server.stop()
    assert asyncio.get_running_loop().time() - started_at < 8
    # uvicorn re-raises SIGTERM after a graceful shutdown, so the exit status is -15: the log
    # tells whether the shutdown hooks (cancel jobs, close the session and the quota DB) ran.
    assert "Application shutdown complete" in server.log()
    assert "Traceback" not in server.log()
