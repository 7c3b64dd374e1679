"""Config faults end to end through a real `serve` and a OneBot v11 client.

Unit-level cases live in test_settings_store.py and test_admin.py; here one served bot goes
through them in order, as an admin would meet them: a broken file at start-up, a fixed one,
hostile `set` values, people without rights, two admins at once, a read-only directory, a
broken file at reload, and the file deleted while running — and it keeps drawing throughout.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import tomlkit

from .fakes.openai_server import FakeOpenAI, make_png
from .onebot_client import OneBotClient, ServeProcess, message_segments, message_text
from .test_chat_e2e import write_config

ADMIN, SECOND_ADMIN = 10000, 10001
ACK = "收到，正在画…"


async def admin(client: OneBotClient, command: str, user_id: int = ADMIN) -> str:
    """A superuser's private admin command; returns the reply text."""
    await client.private_message(command, user_id=user_id)
    return message_text((await client.next_call("send_msg")).params["message"])


async def draws(client: OneBotClient, user_id: int) -> None:
    """A member's `/pic` is acknowledged and answered with a picture."""
    await client.group_message("/pic 一只猫", user_id=user_id)
    assert message_text((await client.next_call("send_msg")).params["message"]) == ACK
    done = await client.next_call("send_msg")
    assert message_segments(done.params["message"], "image"), done.params


@contextlib.contextmanager
def read_only(directory: Path):
    """Make a directory refuse new files, for root too (chattr +i), restoring it after."""
    if os.geteuid() == 0 and shutil.which("chattr"):
        subprocess.run(["chattr", "+i", str(directory)], check=True)
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(directory)], check=True)
    else:
        mode = directory.stat().st_mode
        directory.chmod(0o555)
        try:
            yield
        finally:
            directory.chmod(mode)


async def test_config_faults_end_to_end(tmp_path: Path):
    """Broken, hostile, forbidden, concurrent, unwritable, corrupted and deleted config: the bot
    tells the admin, keeps the last good config and keeps drawing."""
    async with FakeOpenAI() as fake:
        fake.image = make_png(24, 24, (9, 9, 9))
        server = ServeProcess(tmp_path, superusers=(str(ADMIN), str(SECOND_ADMIN)))
        server.workdir.mkdir(parents=True, exist_ok=True)
        server.config_path.write_text("[limits\nmax_queue = 3\n", "utf-8")
        await server.start()
        try:
            async with OneBotClient(server.ws_url) as client:
                # 1. Broken TOML at start-up: running on defaults, and status says why.
                status = await admin(client, "/llm2pic status")
                assert "配置错误" in status
                assert "不是有效的 TOML" in status
                assert (
                    await admin(client, "/llm2pic get limits.max_queue") == "limits.max_queue = 20"
                )

                # 2. Fixed on disk and reloaded: it draws.
                write_config(server, fake)
                assert await admin(client, "/llm2pic reload") == "已重新加载配置"
                await draws(client, user_id=501)

                # 3. Hostile values: refused naming the key, file byte-for-byte unchanged.
                good = server.config_path.read_bytes()
                for command, fragment in [
                    ("/llm2pic set limits.max_queue lots", "limits.max_queue: 应为整数"),
                    ("/llm2pic set limits.max_queue " + "9" * 400, "64 位"),
                    ("/llm2pic set limits.job_timeout inf", "有限"),
                    ("/llm2pic set persona.name " + "x" * 5000, "值太长"),
                    ("/llm2pic set limits.max_queue 3\n[evil]\nx = 1", "limits.max_queue"),
                    ("/llm2pic set routing.default ghost", "没有启用名为"),
                ]:
                    reply = await admin(client, command)
                    assert reply.startswith("未修改："), reply
                    assert fragment in reply, reply
                    assert server.config_path.read_bytes() == good
                reply = await admin(client, '/llm2pic set persona.description "x"\n[evil]\nk = 1')
                assert reply.startswith("已设置 persona.description")
                assert "evil" not in tomlkit.parse(server.config_path.read_text("utf-8"))
                good = server.config_path.read_bytes()

                # 4. No rights, no effect, no content: group admin, member, private stranger.
                await client.group_message(
                    "/llm2pic set limits.max_queue 1", user_id=502, role="admin"
                )
                await client.group_message("/llm2pic show", user_id=503)
                await client.private_message("/llm2pic get backends.openai.api_key", user_id=504)
                await client.no_call(within=0.7)
                assert server.config_path.read_bytes() == good

                # 5. Two admins at once: both edits land, neither is lost.
                await client.private_message("/llm2pic set limits.max_queue 7", user_id=ADMIN)
                await client.private_message(
                    "/llm2pic set limits.user_per_minute 9", user_id=SECOND_ADMIN
                )
                replies = {
                    message_text((await client.next_call("send_msg")).params["message"])
                    for _ in range(2)
                }
                assert replies == {
                    "已设置 limits.max_queue = 7，已生效",
                    "已设置 limits.user_per_minute = 9，已生效",
                }
                limits = tomlkit.parse(server.config_path.read_text("utf-8")).unwrap()["limits"]
                assert (limits["max_queue"], limits["user_per_minute"]) == (7, 9)

                # 6. Directory not writable: refused with the reason, memory unchanged.
                with read_only(server.config_path.parent):
                    reply = await admin(client, "/llm2pic set limits.max_queue 3")
                assert reply.startswith("未修改：无法写入"), reply
                assert (
                    await admin(client, "/llm2pic get limits.max_queue") == "limits.max_queue = 7"
                )

                # 7. Corrupted on disk, then reload: last good kept, admin told; still draws.
                server.config_path.write_text("[limits]\nmax_queue = 'lots'\n", "utf-8")
                reply = await admin(client, "/llm2pic reload")
                assert reply.startswith("配置文件有误，正在使用上一次的有效配置")
                assert "limits.max_queue" in reply
                await draws(client, user_id=505)

                # 8. Deleted while running: the last good config stays in force.
                server.config_path.unlink()
                await draws(client, user_id=506)
                assert (
                    await admin(client, "/llm2pic get limits.max_queue") == "limits.max_queue = 7"
                )
                await client.no_call(within=0.3)
        finally:
            await server.stop()
    assert len([r for r in fake.requests if r.path == "/v1/images/generations"]) == 3


def test_deleted_file_keeps_settings_until_it_returns(tmp_path: Path):
    """Deleting the file changes nothing live; a file written again is picked up."""
    from nonebot_plugin_llm2pic.settings_store import SettingsStore, example_text

    path = tmp_path / "llm2pic.toml"
    path.write_text(example_text().replace("max_queue = 20", "max_queue = 5"), "utf-8")
    store = SettingsStore(path)
    assert store.load().limits.max_queue == 5
    path.unlink()
    assert store.refresh_if_changed() is False
    assert store.settings.limits.max_queue == 5
    path.write_text("[limits]\nmax_queue = 6\n", "utf-8")
    assert store.refresh_if_changed() is True
    assert store.settings.limits.max_queue == 6
