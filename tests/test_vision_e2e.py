"""Images in, end to end: `serve` + OneBot v11 client; a group replies to a photo with
「画成动漫风」 and gets a picture from the default Gradio backend, drawn from what a vision LLM
saw."""

from __future__ import annotations

import io
from pathlib import Path

import tomlkit
from PIL import Image

from .fakes.gradio_server import FakeGradio
from .fakes.openai_server import FakeOpenAI
from .fakes.vision_llm import FakeVisionLlm
from .onebot_client import OneBotClient, ServeProcess, message_segments, message_text
from .test_chat_e2e import ACK, quoted_id
from .test_cli import run_cli, write_config


def photo(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (1200, 900), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


async def test_reply_to_photo_redrawn_on_default_gradio(tmp_path: Path) -> None:
    """A reply 「画成动漫风」 to an orange photo: ack, then a picture drawn from "orange"."""
    async with FakeVisionLlm() as llm, FakeGradio() as gradio, FakeOpenAI() as cdn:
        cdn.files["photo.jpg"] = (photo((245, 140, 30)), "image/jpeg")
        url = cdn.url("/files/photo.jpg")
        server = ServeProcess(tmp_path)
        server.workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "limits": {"user_cooldown_seconds": 0},
            "llm": {"base_url": llm.base_url, "model": "vision-model"},
            "backends": {"zimage": {"base_url": gradio.base_url, "retries": 0}},
        }
        server.config_path.write_text(tomlkit.dumps(config), "utf-8")
        await server.start()
        try:
            async with OneBotClient(server.ws_url) as client:
                client.handlers["get_msg"] = lambda params: {
                    "time": 0,
                    "message_type": "group",
                    "message_id": params["message_id"],
                    "real_id": params["message_id"],
                    "sender": {"user_id": 42, "nickname": "小明"},
                    "message": [{"type": "image", "data": {"file": "photo.jpg", "url": url}}],
                }
                request_id = await client.group_message(
                    [
                        {"type": "reply", "data": {"id": "555"}},
                        {"type": "text", "data": {"text": "画成动漫风"}},
                    ]
                )
                ack = await client.next_call("send_msg")
                assert message_text(ack.params["message"]) == ACK
                done = await client.next_call("send_msg")
                assert quoted_id(done) == request_id
                assert len(message_segments(done.params["message"], "image")) == 1
        finally:
            await server.stop()
    assert "a orange picture" in gradio.call_bodies()[-1]["data"][0]
    assert [(image.label, image.colour) for image in llm.seen] == [("参考图 1", "orange")]
    assert llm.violations == []


async def test_cli_draw_with_image_redraws_on_gradio(tmp_path: Path) -> None:
    """`draw "画成动漫风" --image PATH` takes the same path: the LLM sees it, Gradio draws it."""
    (tmp_path / "ref.jpg").write_bytes(photo((30, 60, 220)))
    async with FakeVisionLlm() as llm, FakeGradio() as gradio:
        write_config(
            tmp_path,
            llm={"base_url": llm.base_url, "model": "vision-model"},
            backends={"zimage": {"base_url": gradio.base_url, "retries": 0}},
        )
        code, out, err = await run_cli(
            tmp_path, "draw", "画成动漫风", "--image", "ref.jpg", "-o", "out.png"
        )
    assert code == 0, err
    assert "a blue picture" in out
    assert "backend: zimage" in out
    assert "a blue picture" in gradio.call_bodies()[-1]["data"][0]
    assert (tmp_path / "out.png").exists()


def vision_row(table: str) -> list[str]:
    """The status and detail of the `vision` row of a `check` table."""
    [line] = [line for line in table.splitlines() if line.startswith("vision ")]
    return line.removeprefix("vision").strip().split(None, 1)


async def test_check_shows_whether_the_llm_took_a_test_picture(tmp_path: Path) -> None:
    """`check` has a `vision` row: accepted by a vision model, text-only for another."""
    async with FakeVisionLlm() as llm, FakeGradio() as gradio:
        write_config(
            tmp_path,
            llm={"base_url": llm.base_url, "model": "vision-model"},
            backends={"zimage": {"base_url": gradio.base_url}},
        )
        code, out, err = await run_cli(tmp_path, "check")
        assert code == 0, out + err
        assert vision_row(out) == ["ok", "accepted a test picture (answered: a red picture)"]
        llm.mode = "no_endpoints"
        code, out, _ = await run_cli(tmp_path, "check")
        assert code == 0
        assert vision_row(out) == ["ok", "text-only model: pictures will not be sent"]
    assert [image.label for image in llm.seen] == ["参考图 1"]
