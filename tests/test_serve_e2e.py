"""End to end: a real `serve` process driven by a OneBot v11 client over a real WebSocket."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
import tomlkit

from .onebot_client import OneBotClient, ServeProcess, message_text


@pytest.fixture
async def served(tmp_path: Path):
    """A running `serve` with a fresh config, and a connected OneBot client."""
    server = ServeProcess(tmp_path)
    await server.start()
    try:
        async with OneBotClient(server.ws_url) as client:
            yield server, client
    finally:
        await server.stop()


async def test_serve_creates_config_and_answers_admin_edit(served):
    """A superuser's private `/llm2pic set` is answered and written to the file with comments."""
    server, client = served
    await client.private_message("/llm2pic set limits.user_cooldown_seconds 12", user_id=10000)
    call = await client.next_call("send_msg")
    assert "已设置 limits.user_cooldown_seconds" in message_text(call.params["message"])
    text = server.config_path.read_text("utf-8")
    assert tomlkit.parse(text).unwrap()["limits"]["user_cooldown_seconds"] == 12
    assert "# 每人每天次数，0 = 不限" in text  # comments survive the edit


async def test_serve_ignores_admin_commands_from_members(served):
    """A group member's `/llm2pic show` gets no reply and no config content."""
    server, client = served
    before = server.config_path.read_bytes()
    await client.group_message("/llm2pic set plugin.enabled false", user_id=55555)
    await client.no_call(within=1.5)
    assert server.config_path.read_bytes() == before


async def test_serve_masks_secrets(served):
    """A key set through the CLI is shown masked in chat."""
    server, client = served
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "nonebot_plugin_llm2pic",
        "config",
        "set",
        "backends.openai.api_key",
        "sk-live-abcdefghijklmnopqrstuvwxyz1234",
        "--config",
        str(server.config_path),
        cwd=server.workdir,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    assert b"abcdefghijklmnop" not in out
    await client.private_message("/llm2pic get backends.openai.api_key", user_id=10000)
    reply = message_text((await client.next_call("send_msg")).params["message"])
    assert "sk-****1234" in reply
    assert "abcdefghijklmnop" not in reply


async def test_serve_exits_nonzero_when_plugin_cannot_load(tmp_path: Path):
    """`serve` refuses to run without the plugin: a broken data dir makes loading fail."""
    (tmp_path / "data").write_text("not a directory")  # localstore cannot create its data dir
    server = ServeProcess(tmp_path)
    with pytest.raises(RuntimeError, match="exited 1"):
        await server.start()
    assert "not serving without it" in server.log()
