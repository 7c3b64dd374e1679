"""One log (NoneBot's) for the plugin's lines, and secrets masked in every line `serve` prints."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from nonebot.log import logger

from nonebot_plugin_llm2pic.log import LOGGER_NAME, configured_secrets, mask_secrets
from nonebot_plugin_llm2pic.settings import Settings

from .fakes.openai_server import FakeOpenAI, make_png
from .onebot_client import OneBotClient, ServeProcess, message_text
from .test_chat_e2e import write_config
from .test_cli import openai_backend, run_cli
from .test_cli import write_config as write_cli_config

OPENAI_KEY = "sk-proj-Zx81Qw7HHd0aa2LmNOPqrs"
GOOGLE_KEY = "AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUv"
HF_TOKEN = "hf_AbCdEfGhIjKlMnOpQrStUvWx"
RELAY_KEY = "r3lay0nlyKEYwithoutprefix77"
"""A relay's key with no known prefix: masked because it is configured."""


@pytest.mark.parametrize(
    ("text", "leaked"),
    [
        (f"/llm2pic set backends.openai.api_key {OPENAI_KEY}", OPENAI_KEY),
        (f"key is {GOOGLE_KEY}.", GOOGLE_KEY),
        (f"Authorization: Bearer {HF_TOKEN}", HF_TOKEN),
        ("/llm2pic set backends.relay.api_key plainvalue12345", "plainvalue12345"),
        ("backends.zimage.token = 'tok3n-value-99'", "tok3n-value-99"),
        (f"我的 key 是 {RELAY_KEY} 别外传", RELAY_KEY),
    ],
)
def test_mask_secrets_hides_keys(text: str, leaked: str) -> None:
    """Key-like tokens, configured secrets and values after .api_key/.token never survive."""
    masked = mask_secrets(text, [RELAY_KEY])
    assert leaked not in masked
    assert masked.split()[0] == text.split()[0]  # the rest of the line stays readable


@pytest.mark.parametrize(
    "text",
    ["llm.api_key = 'env:OPENAI_API_KEY'", "task-queue skipped 3 jobs", "画一张猫咪的图片"],
)
def test_mask_secrets_leaves_ordinary_text(text: str) -> None:
    """Env references and ordinary words are not masked."""
    assert mask_secrets(text, [RELAY_KEY]) == text


def test_configured_secrets_resolve_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every api_key/token in the settings, env references resolved, short ones left out."""
    monkeypatch.setenv("RELAY_KEY", RELAY_KEY)
    settings = Settings.model_validate(
        {
            "llm": {"api_key": OPENAI_KEY},
            "backends": {
                "relay": {"type": "openai", "base_url": "http://x/v1", "api_key": "env:RELAY_KEY"},
                "zimage": {"type": "gradio", "base_url": "http://y", "token": "abc"},
            },
        }
    )
    assert set(configured_secrets(settings)) == {OPENAI_KEY, RELAY_KEY}


def test_library_lines_reach_nonebot_log() -> None:
    """A stdlib line of the plugin arrives in NoneBot's loguru log with its level."""
    seen: list[tuple[str, str]] = []
    sink = logger.add(
        lambda m: seen.append((m.record["level"].name, m.record["message"])), level="DEBUG"
    )
    try:
        logging.getLogger(LOGGER_NAME).info("retrying %s in %.1f s", "openai", 0.5)
        logging.getLogger(LOGGER_NAME).debug("details")
    finally:
        logger.remove(sink)
    assert seen == [("INFO", "retrying openai in 0.5 s"), ("DEBUG", "details")]


async def test_cli_draw_still_shows_library_warnings(tmp_path: Path) -> None:
    """`draw` without the bot: the prompt writer's warning (LLM down) still reaches stderr."""
    async with FakeOpenAI() as images:
        images.image = make_png(32, 32)
        write_cli_config(
            tmp_path,
            llm={"base_url": "http://127.0.0.1:9/v1", "model": "m"},  # nothing listens there
            routing={"default": "openai"},
            backends=openai_backend(images),
        )
        status, _out, err = await run_cli(tmp_path, "draw", "a cat", "-o", "x.png")
    assert status == 0, err
    assert "prompt writer failed" in err


@pytest.mark.parametrize(("level", "shown"), [("INFO", True), ("WARNING", False)])
async def test_serve_logs_library_info_at_nonebot_level(
    tmp_path: Path, level: str, shown: bool
) -> None:
    """`serve` logs "created … from the example" as NoneBot INFO, hidden at LOG_LEVEL=WARNING."""
    server = ServeProcess(tmp_path, env={"LOG_LEVEL": level})
    await server.start()
    await server.stop()
    lines = [line for line in server.log().splitlines() if "from the example config" in line]
    assert bool(lines) == shown, server.log()
    if shown:
        assert "[INFO]" in lines[0]


async def test_serve_log_never_shows_keys(tmp_path: Path) -> None:
    """Keys sent in private and in a group, and a configured one, never reach serve's log."""
    async with FakeOpenAI() as upstream:
        server = ServeProcess(tmp_path)
        write_config(
            server,
            upstream,
            backends={
                "relay": {"type": "openai", "base_url": upstream.base_url, "api_key": RELAY_KEY}
            },
        )
        await server.start()
        try:
            async with OneBotClient(server.ws_url) as client:
                await client.private_message(
                    f"/llm2pic set backends.openai.api_key {OPENAI_KEY}", user_id=10000
                )
                reply = await client.next_call("send_msg")
                assert message_text(reply.params["message"]).startswith("已设置")
                await client.group_message(
                    f"/llm2pic set backends.openai.api_key {GOOGLE_KEY}", user_id=10000
                )
                refusal = message_text((await client.next_call("send_msg")).params["message"])
                assert "公开" in refusal
                assert "换一个新的" in refusal
                await client.group_message(f"我的 key 是 {RELAY_KEY} 别外传 {HF_TOKEN}")
                await client.no_call(within=0.5)
        finally:
            await server.stop()
    log = server.log_path.read_text("utf-8", errors="replace")
    assert "/llm2pic set backends.openai.api_key" in log  # NoneBot's message log was printed
    for key in (OPENAI_KEY, GOOGLE_KEY, RELAY_KEY, HF_TOKEN):
        assert key not in log
