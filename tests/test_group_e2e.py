"""Per-group settings end to end: `serve` + OneBot v11 client + local fake LLM and upstreams."""

from __future__ import annotations

from pathlib import Path

import tomlkit

from .conftest import SUPERUSER_ID
from .fakes.llm_server import FakeLlm
from .fakes.openai_server import FakeOpenAI, make_png
from .onebot_client import OneBotClient, ServeProcess, message_text
from .test_chat_e2e import ACK, sent_image, write_config

ADMIN = int(SUPERUSER_ID)


async def reply_text(client: OneBotClient) -> str:
    return message_text((await client.next_call("send_msg")).params["message"])


def persona_names(llm: FakeLlm) -> list[str]:
    """The persona name line of each prompt-writer call's system prompt."""
    return [
        next(
            line for line in body["messages"][0]["content"].splitlines() if line.startswith("name:")
        )
        for body in llm.bodies
    ]


async def test_two_groups_get_their_own_persona_and_backend(tmp_path: Path):
    """Each group's persona reaches the prompt writer and its route picks its backend."""
    async with FakeOpenAI() as paid, FakeOpenAI() as free, FakeLlm() as llm:
        paid.image = make_png(64, 64, (200, 0, 0))
        free.image = make_png(48, 48, (0, 0, 200))
        server = ServeProcess(tmp_path)
        write_config(
            server,
            paid,
            llm={"base_url": llm.base_url, "model": "m"},
            routing={"default": "free"},
            backends={"free": {"type": "openai", "base_url": free.base_url, "api_key": "sk-test"}},
            groups={
                "111": {"persona": {"name": "小红"}, "routing": {"default": "openai"}},
                "222": {"persona": {"name": "小蓝"}},
            },
        )
        await server.start()
        try:
            async with OneBotClient(server.ws_url) as client:
                await client.group_message("/pic 猫", group_id=111, user_id=1)
                assert await reply_text(client) == ACK
                assert sent_image(await client.next_call("send_msg")).size == (64, 64)
                await client.group_message("/pic 猫", group_id=222, user_id=2)
                assert await reply_text(client) == ACK
                assert sent_image(await client.next_call("send_msg")).size == (48, 48)
        finally:
            await server.stop()
    assert persona_names(llm) == ['name: "小红"', 'name: "小蓝"']
    assert (len(paid.requests), len(free.requests)) == (1, 1)


async def test_whitelist_silent_until_superuser_switches_on(tmp_path: Path):
    """In whitelist mode a group stays silent, an owner's `on` is refused, a superuser's works."""
    async with FakeOpenAI() as upstream:
        server = ServeProcess(tmp_path)
        write_config(server, upstream, plugin={"groups_default": "off"})
        await server.start()
        try:
            async with OneBotClient(server.ws_url) as client:
                await client.group_message("/pic 猫", user_id=5)
                await client.no_call(within=1.5)
                await client.group_message("/llm2pic on", user_id=6, role="owner")
                assert await reply_text(client) == "白名单模式下只有超级用户可以开启本群"
                await client.group_message("/pic 猫", user_id=5)
                await client.no_call(within=1.5)
                await client.group_message("/llm2pic on", user_id=ADMIN)
                assert await reply_text(client) == "本群已开启画图"
                await client.group_message("/pic 猫", user_id=5)
                assert await reply_text(client) == ACK
                assert sent_image(await client.next_call("send_msg"))
        finally:
            await server.stop()
    assert len(upstream.requests) == 1


async def test_group_admin_changes_persona_not_quota_or_routing(tmp_path: Path):
    """A group admin's persona edit lands and is used; quota and routing edits are refused."""
    async with FakeOpenAI() as upstream, FakeLlm() as llm:
        server = ServeProcess(tmp_path)
        write_config(server, upstream, llm={"base_url": llm.base_url, "model": "m"})
        await server.start()
        try:
            async with OneBotClient(server.ws_url) as client:
                await client.group_message(
                    "/llm2pic group set persona.name 小红", user_id=6, role="admin"
                )
                assert await reply_text(client) == '已设置群 777 的 persona.name = "小红"，已生效'
                for command in (
                    "/llm2pic group set limits.user_daily_quota 99",
                    "/llm2pic group set routing.default zimage",
                ):
                    await client.group_message(command, user_id=6, role="admin")
                    assert (await reply_text(client)).startswith("群主和管理员只能修改：")
                await client.group_message("/pic 猫", user_id=5)
                assert await reply_text(client) == ACK
                assert sent_image(await client.next_call("send_msg"))
        finally:
            await server.stop()
    groups = tomlkit.parse(server.config_path.read_text("utf-8")).unwrap()["groups"]
    assert groups == {"777": {"persona": {"name": "小红"}}}
    assert persona_names(llm) == ['name: "小红"']
