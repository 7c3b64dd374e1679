"""Per-group tables: what a group may override, how it merges, and how the store edits it."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import tomlkit

from nonebot_plugin_llm2pic.exceptions import SettingsError
from nonebot_plugin_llm2pic.settings import effective, group_keys, parse_settings
from nonebot_plugin_llm2pic.settings_store import SettingsStore, example_text

from .fakes.openai_server import FakeOpenAI
from .test_cli import openai_backend, run_cli, write_config


def with_group(table: dict[str, Any], **global_tables: Any) -> dict[str, Any]:
    return {**global_tables, "groups": {"123456": table}}


@pytest.mark.parametrize(
    ("table", "key", "value"),
    [
        ({"persona": {"name": "小红"}}, "persona.name", "小红"),
        ({"persona": {"appearance": "red hair"}}, "persona.appearance", "red hair"),
        ({"routing": {"default": "openai"}}, "routing.default", "openai"),
        ({"routing": {"fallback": ["zimage"]}}, "routing.fallback", ["zimage"]),
        ({"generation": {"negative_prompt": "blur"}}, "generation.negative_prompt", "blur"),
        ({"limits": {"user_daily_quota": 5}}, "limits.user_daily_quota", 5),
        ({"limits": {"group_daily_quota": 0}}, "limits.group_daily_quota", 0),
        ({"limits": {"user_cooldown_seconds": 9}}, "limits.user_cooldown_seconds", 9),
        ({"limits": {"user_per_minute": 2}}, "limits.user_per_minute", 2),
        ({"plugin": {"natural_language": False}}, "plugin.natural_language", False),
        ({"plugin": {"ack_message": ""}}, "plugin.ack_message", ""),
        ({"plugin": {"allow_flags": True}}, "plugin.allow_flags", True),
        ({"plugin": {"enabled": False}}, "plugin.enabled", False),
        ({"plugin": {"send_format": "png"}}, "plugin.send_format", "png"),
    ],
)
def test_allowed_override_applies_to_that_group_only(table, key, value):
    """An allowed key in a group table changes that group's effective value, nobody else's."""
    settings = parse_settings(with_group(table))
    section, name = key.split(".")
    assert getattr(getattr(effective(settings, "123456"), section), name) == value
    assert getattr(getattr(effective(settings, "654321"), section), name) != value


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"llm": {"api_key": "sk-x"}}, "groups.123456.llm.api_key: 密钥只能全局设置"),
        ({"llm": {"model": "m"}}, "groups.123456.llm.model: 写提示词的 LLM 只能全局设置"),
        (
            {"backends": {"openai": {"model": "x"}}},
            "groups.123456.backends.openai: 后端表只能全局设置",
        ),
        ({"limits": {"max_queue": 3}}, "groups.123456.limits.max_queue: 这是全局限额"),
        ({"limits": {"job_timeout": 3}}, "groups.123456.limits.job_timeout: 这是全局限额"),
        ({"limits": {"max_concurrency": 3}}, "groups.123456.limits.max_concurrency: 这是全局"),
        ({"limits": {"quota_timezone": "UTC"}}, "groups.123456.limits.quota_timezone: 这是全局"),
        ({"limits": {"superusers_exempt": False}}, "groups.123456.limits.superusers_exempt: 这是"),
        ({"plugin": {"command": "draw"}}, "groups.123456.plugin.command: 这个键不能按群设置"),
        ({"plugin": {"groups_default": "off"}}, "groups.123456.plugin.groups_default: 这个键不能"),
        ({"plugin": {"blocked_users": ["1"]}}, "groups.123456.plugin.blocked_users: 这个键不能"),
        ({"persona": {"nmae": "x"}}, "groups.123456.persona.nmae: 未知的键"),
        ({"plugin": {"no_such_key": "x"}}, "groups.123456.plugin.no_such_key: 未知的键"),
        ({"persona": "小红"}, "groups.123456.persona: 应为表"),
        (
            {"limits": {"user_daily_quota": "lots"}},
            "groups.123456.limits.user_daily_quota: 应为整数",
        ),
        ({"persona": {"name": 5}}, "groups.123456.persona.name: 应为字符串"),
        (
            {"routing": {"default": "nope"}},
            "groups.123456.routing.default: 没有启用名为 'nope' 的后端",
        ),
    ],
)
def test_disallowed_or_invalid_override_says_why(table, message):
    """A key a group may not override, or a bad value, names the group key and the reason."""
    with pytest.raises(SettingsError) as info:
        parse_settings(with_group(table))
    assert str(info.value).startswith(message), str(info.value)
    assert info.value.key.startswith("groups.123456.")


def test_group_id_must_be_digits():
    """A group table named by anything but the group's number is refused."""
    with pytest.raises(SettingsError, match=r"groups\.general: 群设置要用群号命名"):
        parse_settings({"groups": {"general": {"persona": {"name": "x"}}}})


def test_group_route_to_disabled_backend_is_invalid():
    """Disabling a backend a group still routes to is a validation error naming the group."""
    with pytest.raises(
        SettingsError, match=r"groups\.123456\.routing\.default: 没有启用名为 'openai' 的后端"
    ):
        parse_settings(
            with_group({"routing": {"default": "openai"}}, backends={"openai": {"enabled": False}})
        )


def test_banned_words_add_up():
    """A group's banned words are added to the global list, not replacing it."""
    settings = parse_settings(
        with_group({"generation": {"banned_words": ["b", "a"]}}, generation={"banned_words": ["a"]})
    )
    assert effective(settings, "123456").generation.banned_words == ["a", "b"]


def test_global_off_always_wins():
    """Global plugin.enabled = false keeps a group with enabled = true off."""
    settings = parse_settings(with_group({"plugin": {"enabled": True}}, plugin={"enabled": False}))
    assert not effective(settings, "123456").plugin.enabled


@pytest.mark.parametrize(
    ("default", "table", "enabled"),
    [
        ("on", {}, True),
        ("off", {}, False),
        ("off", {"plugin": {"enabled": True}}, True),
        ("on", {"plugin": {"enabled": False}}, False),
    ],
)
def test_groups_default_decides_groups_without_a_switch(default, table, enabled):
    """Whitelist mode keeps groups without their own plugin.enabled off."""
    settings = parse_settings(with_group(table, plugin={"groups_default": default}))
    assert effective(settings, "123456").plugin.enabled is enabled


def test_effective_is_cached_per_settings_object():
    """The same Settings gives the same effective object; private chats get the global one."""
    settings = parse_settings(with_group({"persona": {"name": "小红"}}))
    assert effective(settings, "123456") is effective(settings, "123456")
    assert effective(settings, "1") is effective(settings, "2")
    assert effective(settings, None) is settings


def test_overridable_keys_are_only_schema_keys():
    """Keys declared for groups are offered once the schema has them; global ones never."""
    keys = group_keys()
    assert {"persona.name", "limits.user_daily_quota", "plugin.multi_image"} <= set(keys)
    assert "limits.max_queue" not in keys


# --- the store -------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> SettingsStore:
    path = tmp_path / "llm2pic.toml"
    path.write_text(example_text() + "\n# 群设置写在下面\n", "utf-8")
    store = SettingsStore(path)
    store.load()
    return store


def test_group_set_writes_dotted_keys_and_keeps_comments(store: SettingsStore):
    """set_group adds [groups."<id>"] with dotted keys; every existing line survives."""
    before = store.path.read_text("utf-8")
    store.set_group("123456", "persona.name", "小红")
    store.set_group("123456", "limits.user_daily_quota", "5")
    text = store.path.read_text("utf-8")
    assert text.startswith(before)
    assert text[len(before) :].strip() == (
        '[groups."123456"]\npersona.name = "小红"\nlimits.user_daily_quota = 5'
    )
    assert effective(store.settings, "123456").persona.name == "小红"


def test_group_rejected_edit_changes_nothing(store: SettingsStore):
    """A disallowed key or a bad value leaves the file byte for byte as it was."""
    store.set_group("123456", "persona.name", "小红")
    before = store.path.read_bytes()
    for key, value in [("limits.max_queue", "3"), ("routing.default", "nope")]:
        with pytest.raises(SettingsError):
            store.set_group("123456", key, value)
    with pytest.raises(SettingsError, match=r"groups\.123456\.limits\.user_daily_quota: 应为"):
        store.set_group("123456", "limits.user_daily_quota", "lots")
    assert store.path.read_bytes() == before


def test_group_unset_restores_global_and_drops_empty_table(store: SettingsStore):
    """unset_group removes the key, then the empty table: the file is as before (but a blank
    line)."""
    before = store.path.read_text("utf-8")
    store.set_group("123456", "routing.default", "openai")
    assert store.get_group("123456", "routing.default") == ("openai", True)
    store.unset_group("123456", "routing.default")
    assert store.get_group("123456", "routing.default") == ("zimage", False)
    assert store.path.read_text("utf-8").rstrip() == before.rstrip()


def test_group_show_marks_overrides(store: SettingsStore):
    """show_group lists the overridable keys with the group's own values marked."""
    store.set_group("123456", "persona.name", "小红")
    shown = store.show_group("123456")
    assert 'name = "小红" # 本群' in shown
    assert 'appearance = ""\n' in shown
    assert not [word for word in ("backends", "max_queue", "api_key") if word in shown]


def test_two_groups_edited_concurrently_both_land(store: SettingsStore):
    """Edits of two groups from two stores (bot and CLI) at once are serialised: none is lost."""
    other = SettingsStore(store.path)
    other.load()
    errors: list[BaseException] = []

    def edit(target: SettingsStore, group_id: str) -> None:
        try:
            for index in range(10):
                target.set_group(group_id, "persona.description", f"{group_id}-{index}")
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [
        threading.Thread(target=edit, args=(store, "111")),
        threading.Thread(target=edit, args=(other, "222")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    groups = tomlkit.parse(store.path.read_text("utf-8")).unwrap()["groups"]
    assert groups == {
        "111": {"persona": {"description": "111-9"}},
        "222": {"persona": {"description": "222-9"}},
    }


def test_plain_set_and_unset_reach_group_tables(store: SettingsStore):
    """`set groups.<id>.persona.name` edits the group table like set_group; unset removes it."""
    result = store.set("groups.123456.persona.name", "小红")
    assert result.key == "groups.123456.persona.name"
    assert effective(store.settings, "123456").persona.name == "小红"
    with pytest.raises(SettingsError, match=r"groups\.123456\.limits\.max_queue: 这是全局限额"):
        store.set("groups.123456.limits.max_queue", "3")
    store.unset("groups.123456.persona.name")
    assert store.settings.groups == {}


def test_deny_list_migrated_once_and_left_alone(store: SettingsStore, tmp_path: Path):
    """The old deny list becomes plugin.enabled = false once; a later `on` is not undone."""
    deny_list = tmp_path / "disabled_groups.json"
    deny_list.write_text('["777", "888"]', "utf-8")
    store.set_group("888", "plugin.enabled", "true")
    assert store.migrate_deny_list(deny_list) == ["777"]
    assert not effective(store.settings, "777").plugin.enabled
    assert effective(store.settings, "888").plugin.enabled
    store.set_group("777", "plugin.enabled", "true")
    assert store.migrate_deny_list(deny_list) == []
    assert effective(store.settings, "777").plugin.enabled
    assert deny_list.read_text("utf-8") == '["777", "888"]'


# --- the CLI ---------------------------------------------------------------------------------


async def test_cli_config_group_set_get_unset(tmp_path: Path):
    """`config group ID set|get|unset` edits the group's table with the same validation."""
    code, out, err = await run_cli(
        tmp_path, "config", "group", "123456", "set", "persona.name", "小红"
    )
    assert (code, out.splitlines()[0]) == (0, 'groups.123456.persona.name = "小红"'), err
    code, out, _ = await run_cli(tmp_path, "config", "group", "123456", "get", "persona.name")
    assert (code, out.strip()) == (0, '"小红"')
    code, _, err = await run_cli(
        tmp_path, "config", "group", "123456", "set", "limits.max_queue", "3"
    )
    assert code == 1
    assert "groups.123456.limits.max_queue: 这是全局限额" in err
    code, out, _ = await run_cli(tmp_path, "config", "group", "123456", "unset", "persona.name")
    assert (code, out.splitlines()[0]) == (0, "removed groups.123456.persona.name")
    code, out, _ = await run_cli(tmp_path, "config", "group", "123456", "get", "persona.name")
    assert (code, out.strip()) == (0, '"小画"  (global)')


async def test_check_fails_for_backend_only_a_group_routes_to(tmp_path: Path):
    """`check` counts a backend named only in a group's routing as used: a bad key fails."""
    async with FakeOpenAI() as images:
        backends = openai_backend(images)
        backends["openai"]["api_key"] = "sk-wrong"
        write_config(
            tmp_path,
            routing={"default": "zimage"},
            backends={**backends, "zimage": {"base_url": images.base_url}},
            groups={"123456": {"routing": {"default": "openai"}}},
        )
        code, out, _ = await run_cli(tmp_path, "check")
    assert code == 1
    assert "FAILED" in next(line for line in out.splitlines() if line.startswith("backend openai"))
