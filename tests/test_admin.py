"""`/llm2pic` admin commands through nonebug: every path, and denial for everyone else."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomlkit
from nonebot.adapters.onebot.v11 import Adapter, Bot
from nonebug import App

from .conftest import SUPERUSER_ID
from .utils import SELF_ID, group_message, private_message

ADMIN = int(SUPERUSER_ID)


async def run_admin(app: App, event, reply: str | None, *, startswith: bool = False) -> None:
    """Send one admin command; expect exactly `reply` (or no reply when None)."""
    from nonebot_plugin_llm2pic.matchers.admin import admin_cmd

    async with app.test_matcher(admin_cmd) as ctx:
        adapter = ctx.create_adapter(base=Adapter)
        bot = ctx.create_bot(base=Bot, adapter=adapter, self_id=SELF_ID)
        ctx.receive_event(bot, event)
        if reply is not None:
            ctx.should_call_send(event, reply, result={"message_id": 1})
        ctx.should_finished(admin_cmd)


def read_config(path: Path) -> dict:
    return tomlkit.parse(path.read_text("utf-8")).unwrap()


async def test_set_applies_at_once(app: App, config_file: Path):
    """A superuser's set is written, validated and live without restart."""
    from nonebot_plugin_llm2pic.state import store

    event = group_message("/llm2pic set limits.user_cooldown_seconds 12", user_id=ADMIN)
    await run_admin(app, event, "已设置 limits.user_cooldown_seconds = 12，已生效")
    assert read_config(config_file)["limits"]["user_cooldown_seconds"] == 12
    assert store.settings.limits.user_cooldown_seconds == 12


async def test_set_restart_key_says_so(app: App, config_file: Path):
    """Editing plugin.priority is accepted and the reply says a restart is needed."""
    event = private_message("/llm2pic set plugin.priority 10", user_id=ADMIN)
    await run_admin(app, event, "已设置 plugin.priority = 10（需要重启机器人才生效）")


async def test_invalid_set_names_key_and_changes_nothing(app: App, config_file: Path):
    """A value of the wrong type is refused with key and reason; the file is untouched."""
    before = config_file.read_bytes()
    event = private_message("/llm2pic set limits.user_daily_quota lots", user_id=ADMIN)
    await run_admin(app, event, "未修改：limits.user_daily_quota: 应为整数，收到 'lots'")
    assert config_file.read_bytes() == before


async def test_unknown_key_gets_hint(app: App, config_file: Path):
    """An unknown key is refused with a did-you-mean hint."""
    event = private_message("/llm2pic set limits.user_cooldown 5", user_id=ADMIN)
    await run_admin(
        app,
        event,
        "未修改：limits.user_cooldown: 未知的键（是不是 limits.user_cooldown_seconds？）",
    )


async def test_secret_refused_in_group(app: App, config_file: Path):
    """A key pasted in a group is refused, the admin told it is exposed; nothing is written."""
    before = config_file.read_bytes()
    event = group_message("/llm2pic set backends.openai.api_key sk-secret-abcdefgh", user_id=ADMIN)
    await run_admin(
        app,
        event,
        "未修改：backends.openai.api_key 是密钥，只能私聊我设置。这个密钥已经发在群里、等于公开了，"
        "请到服务商那里作废它、换一个新的，再私聊我设置",
    )
    assert config_file.read_bytes() == before


async def test_secret_set_in_private_is_masked(app: App, config_file: Path):
    """In private the key is stored, and the reply shows it masked."""
    event = private_message(
        "/llm2pic set backends.openai.api_key sk-secret-abcdefgh1234", user_id=ADMIN
    )
    await run_admin(app, event, '已设置 backends.openai.api_key = "sk-****1234"，已生效')
    assert read_config(config_file)["backends"]["openai"]["api_key"] == "sk-secret-abcdefgh1234"


async def test_get_and_show_mask_secrets(app: App, config_file: Path):
    """`get` shows one value; `show backends` never reveals a key."""
    from nonebot_plugin_llm2pic.state import store

    store.set("backends.openai.api_key", "sk-secret-abcdefgh1234")
    await run_admin(
        app,
        private_message("/llm2pic get backends.openai.api_key", user_id=ADMIN),
        'backends.openai.api_key = "sk-****1234"',
    )
    await run_admin(
        app, private_message("/llm2pic get persona.name", user_id=ADMIN), 'persona.name = "小画"'
    )
    await run_admin(
        app, private_message("/llm2pic show limits", user_id=ADMIN), store.show("limits")
    )
    assert "abcdefgh" not in store.show("backends")


async def test_unset_restores_default(app: App, config_file: Path):
    """`unset` removes the key and reports the default now in force."""
    event = private_message("/llm2pic unset limits.max_queue", user_id=ADMIN)
    await run_admin(app, event, "已删除 limits.max_queue，恢复默认值 20")
    assert "max_queue" not in read_config(config_file)["limits"]


async def test_reload_broken_file_keeps_last_good(app: App, config_file: Path):
    """A corrupted file at reload is reported and the last good config stays live."""
    from nonebot_plugin_llm2pic.exceptions import SettingsError
    from nonebot_plugin_llm2pic.settings_store import SettingsStore
    from nonebot_plugin_llm2pic.state import store

    store.set("limits.max_queue", "6")
    config_file.write_text("[limits\n", "utf-8")
    with pytest.raises(SettingsError) as info:
        SettingsStore(config_file).reload()
    await run_admin(
        app,
        private_message("/llm2pic reload", user_id=ADMIN),
        f"配置文件有误，正在使用上一次的有效配置：{info.value}",
    )
    assert store.settings.limits.max_queue == 6


async def test_reload_picks_up_hand_edit(app: App, config_file: Path):
    """`reload` applies a file edited by hand."""
    from nonebot_plugin_llm2pic.state import store

    config_file.write_text(
        config_file.read_text("utf-8").replace("max_queue = 20", "max_queue = 3"), "utf-8"
    )
    await run_admin(app, private_message("/llm2pic reload", user_id=ADMIN), "已重新加载配置")
    assert store.settings.limits.max_queue == 3


async def test_off_and_on_by_group_admin(app: App, config_file: Path):
    """A group admin may switch drawing off and on; the switch is the group's plugin.enabled."""
    from nonebot_plugin_llm2pic.settings import effective
    from nonebot_plugin_llm2pic.state import store

    await run_admin(app, group_message("/llm2pic off", user_id=321, role="admin"), "本群已关闭画图")
    assert read_config(config_file)["groups"]["777"]["plugin"]["enabled"] is False
    assert not effective(store.settings, "777").plugin.enabled
    await run_admin(app, group_message("/llm2pic on", user_id=321, role="owner"), "本群已开启画图")
    assert read_config(config_file)["groups"]["777"]["plugin"]["enabled"] is True
    assert effective(store.settings, "777").plugin.enabled


async def test_group_admin_cannot_edit_config(app: App, config_file: Path):
    """A group admin's `set` has no effect and no reply."""
    before = config_file.read_bytes()
    await run_admin(
        app, group_message("/llm2pic set plugin.enabled false", user_id=321, role="admin"), None
    )
    assert config_file.read_bytes() == before


@pytest.mark.parametrize(
    "command", ["/llm2pic show", "/llm2pic off", "/llm2pic set plugin.enabled false"]
)
async def test_member_is_ignored(app: App, config_file: Path, command: str):
    """A plain member's admin command does not even reach the handler."""
    from nonebot_plugin_llm2pic.matchers.admin import admin_cmd

    before = config_file.read_bytes()
    async with app.test_matcher(admin_cmd) as ctx:
        bot = ctx.create_bot(base=Bot, self_id=SELF_ID)
        event = group_message(command, user_id=555)
        ctx.receive_event(bot, event)
        ctx.should_not_pass_permission(admin_cmd)
    assert config_file.read_bytes() == before


async def test_admin_works_with_plugin_disabled(app: App, config_file: Path):
    """`plugin.enabled = false` never disables the admin commands."""
    from nonebot_plugin_llm2pic.state import store

    store.set("plugin.enabled", "false")
    await run_admin(
        app,
        private_message("/llm2pic set plugin.enabled true", user_id=ADMIN),
        "已设置 plugin.enabled = true，已生效",
    )


async def test_status_lists_disabled_groups(app: App, config_file: Path):
    """`status` lists the groups switched off."""
    from nonebot_plugin_llm2pic.matchers.admin import _status
    from nonebot_plugin_llm2pic.state import store

    store.set_group("888", "plugin.enabled", "false")
    assert "关闭画图的群：888" in await _status()
    await run_admin(app, private_message("/llm2pic status", user_id=ADMIN), await _status())


async def test_unknown_verb_replies_usage(app: App, config_file: Path):
    """An unknown sub-command gets the usage text."""
    from nonebot_plugin_llm2pic.matchers.admin import USAGE

    await run_admin(app, private_message("/llm2pic frobnicate", user_id=ADMIN), USAGE)
