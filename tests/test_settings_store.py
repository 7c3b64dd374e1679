"""Edits of llm2pic.toml: comments kept, typed conversion, atomic, all-or-nothing, serialised."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import tomlkit

from nonebot_plugin_llm2pic.exceptions import SettingsError
from nonebot_plugin_llm2pic.settings_store import SettingsStore, example_text


@pytest.fixture
def store(tmp_path: Path) -> SettingsStore:
    """A store whose file was just created from the example."""
    created = SettingsStore(tmp_path / "llm2pic.toml")
    created.load()
    return created


def test_missing_file_created_from_example(store: SettingsStore):
    """First start writes the commented example and runs with its defaults."""
    assert store.path.read_text("utf-8") == example_text()
    assert store.settings.routing.default == "zimage"


def test_set_keeps_comments_and_layout(store: SettingsStore):
    """Only the edited value changes; every comment line survives."""
    before = store.path.read_text("utf-8").splitlines()
    store.set("limits.user_cooldown_seconds", "10")
    after = store.path.read_text("utf-8").splitlines()
    changed = [(a, b) for a, b in zip(before, after, strict=False) if a != b]
    assert len(before) == len(after)
    assert changed == [
        (
            "user_cooldown_seconds = 30    # 每人两次请求的最短间隔（秒） / seconds between two"
            " requests of a user",
            "user_cooldown_seconds = 10    # 每人两次请求的最短间隔（秒） / seconds between two"
            " requests of a user",
        )
    ]
    assert store.settings.limits.user_cooldown_seconds == 10


@pytest.mark.parametrize(
    ("key", "raw", "expected"),
    [
        ("persona.name", "1999", "1999"),
        ("persona.name", '"带空格 的名字"', "带空格 的名字"),
        ("persona.appearance", "silver hair, red eyes", "silver hair, red eyes"),
        ("limits.user_daily_quota", "0", 0),
        ("plugin.show_prompt", "true", True),
        ("generation.banned_words", '["a", "b"]', ["a", "b"]),
        ("backends.zimage.steps", "12", 12),
        ("plugin.send_mode", "file", "file"),
    ],
)
def test_set_converts_to_field_type(store: SettingsStore, key, raw, expected):
    """Values are converted to the type of the field they set."""
    store.set(key, raw)
    section, *rest = key.split(".")
    node = tomlkit.parse(store.path.read_text("utf-8")).unwrap()[section]
    for part in rest:
        node = node[part]
    assert node == expected
    assert type(node.unwrap() if hasattr(node, "unwrap") else node) is type(expected)


@pytest.mark.parametrize(
    ("key", "raw", "fragment"),
    [
        ("limits.user_cooldown_seconds", "soon", "应为数字"),
        ("plugin.show_prompt", "maybe", "true 或 false"),
        ("plugin.nonexistent", "1", "未知的键"),
        ("limits.max_queue", "0", "不能小于 1"),
        ("routing.default", "ghost", "没有启用名为"),
        ("generation.banned_words", '["a"]\n[evil]\nx = 1', "应为列表"),
        ("backends.ghost.steps", "3", "type"),
        ("plugin", "1", "是一节"),
        ("plugin..x", "1", "点号路径"),
        ("persona.name", "x" * 5000, "值太长"),
    ],
)
def test_rejected_edit_leaves_file_unchanged(store: SettingsStore, key, raw, fragment):
    """A rejected edit names the key and reason; the file is byte-for-byte the same."""
    before = store.path.read_bytes()
    settings_before = store.settings
    with pytest.raises(SettingsError) as info:
        store.set(key, raw)
    assert fragment in str(info.value)
    assert store.path.read_bytes() == before
    assert store.settings is settings_before


def test_toml_injection_stays_a_string(store: SettingsStore):
    """A string value with a newline and a table header cannot add a table."""
    store.set("persona.description", '"x"\n[evil]\nkey = 1')
    document = tomlkit.parse(store.path.read_text("utf-8"))
    assert "evil" not in document
    assert store.settings.persona.description == '"x"\n[evil]\nkey = 1'


def test_unset_restores_default(store: SettingsStore):
    """`unset` removes the key from the file so the default applies."""
    store.set("limits.max_queue", "3")
    store.unset("limits.max_queue")
    assert "max_queue" not in tomlkit.parse(store.path.read_text("utf-8")).unwrap()["limits"]
    assert store.settings.limits.max_queue == 20


def test_unset_missing_key_is_refused(store: SettingsStore):
    """Unsetting a key that is not in the file changes nothing and says so."""
    before = store.path.read_bytes()
    with pytest.raises(SettingsError, match="文件里没有设置这个键"):
        store.unset("persona.nickname")
    assert store.path.read_bytes() == before


def test_add_backend_as_inline_table(store: SettingsStore):
    """A new backend can be added in one edit and routed to."""
    store.set("backends.sd", '{type = "gradio", base_url = "http://127.0.0.1:7860"}')
    store.set("routing.fallback", '["sd"]')
    assert store.settings.routing.fallback == ["sd"]
    assert "[backends.sd]" in store.path.read_text("utf-8")


def test_secrets_are_masked_on_read(store: SettingsStore):
    """`get` and `show` never reveal a key."""
    result = store.set("backends.openai.api_key", "sk-abcdefghijklmnopqrst9876")
    assert result.value == "sk-****9876"
    assert store.get("backends.openai.api_key") == "sk-****9876"
    assert "abcdefghijklmnop" not in store.show()
    assert "abcdefghijklmnop" not in store.show("backends")


def test_restart_keys_are_flagged(store: SettingsStore):
    """`plugin.command` and `plugin.priority` edits say a restart is needed."""
    assert store.set("plugin.priority", "10").needs_restart
    assert not store.set("plugin.ack_message", "好").needs_restart


def test_edit_rereads_file_changed_on_disk(store: SettingsStore):
    """An edit starts from the file as it is now, not from memory: nothing is lost."""
    text = store.path.read_text("utf-8").replace('name = "小画"', 'name = "外部改的"')
    store.path.write_text(text, "utf-8")
    store.set("limits.max_queue", "7")
    assert 'name = "外部改的"' in store.path.read_text("utf-8")
    assert store.settings.persona.name == "外部改的"


def test_mtime_change_is_noticed(store: SettingsStore):
    """`refresh_if_changed` reloads a file edited by hand, once."""
    text = store.path.read_text("utf-8").replace("max_queue = 20", "max_queue = 9")
    store.path.write_text(text, "utf-8")
    os.utime(store.path, ns=(1, 10**18))
    assert store.refresh_if_changed() is True
    assert store.settings.limits.max_queue == 9
    assert store.refresh_if_changed() is False


def test_broken_file_on_reload_keeps_last_good(store: SettingsStore):
    """A corrupted file at reload raises, and the last good config stays live."""
    store.set("limits.max_queue", "5")
    store.path.write_text("[limits\nmax_queue = ", "utf-8")
    with pytest.raises(SettingsError, match="不是有效的 TOML"):
        store.reload()
    assert store.settings.limits.max_queue == 5
    assert store.last_error is not None


def test_broken_file_at_startup_runs_with_defaults(tmp_path: Path):
    """An invalid file at start-up is reported and the plugin runs with defaults."""
    path = tmp_path / "llm2pic.toml"
    path.write_text("[limits]\nmax_queue = 'lots'\n", "utf-8")
    store = SettingsStore(path)
    settings = store.load()
    assert settings.limits.max_queue == 20
    assert store.last_error is not None
    assert store.last_error.key == "limits.max_queue"
    assert path.read_text("utf-8") == "[limits]\nmax_queue = 'lots'\n"  # never overwritten


def test_deleted_file_edit_starts_from_example(store: SettingsStore):
    """If the file vanished while running, an edit recreates it from the example."""
    store.path.unlink()
    store.set("limits.max_queue", "4")
    assert "# 总开关" in store.path.read_text("utf-8")
    assert store.settings.limits.max_queue == 4


def test_unwritable_file_refuses_edit(store: SettingsStore, monkeypatch):
    """A directory we may not write to refuses the edit with a reason; memory is unchanged.

    Tests run as root in CI, where chmod does not stop writes, so the EACCES a read-only
    directory gives is raised where the temp file is created.
    """

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("tempfile.mkstemp", denied)
    with pytest.raises(SettingsError, match=r"无法写入 .*Permission denied"):
        store.set("limits.max_queue", "4")
    assert store.settings.limits.max_queue == 20


def test_write_is_atomic(store: SettingsStore, monkeypatch):
    """A crash while writing leaves the old file whole and no temp file behind."""
    before = store.path.read_bytes()

    def exploding_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", exploding_replace)
    with pytest.raises(SettingsError, match="无法写入"):
        store.set("limits.max_queue", "4")
    assert store.path.read_bytes() == before
    assert [p.name for p in store.path.parent.iterdir() if p.suffix == ".tmp"] == []


def test_concurrent_edits_are_serialised(tmp_path: Path):
    """Two stores (a bot and the CLI) editing different keys at once never lose an edit."""
    path = tmp_path / "llm2pic.toml"
    bot, cli = SettingsStore(path), SettingsStore(path)
    bot.load()
    rounds = 25

    def edit(store: SettingsStore, key: str) -> None:
        for value in range(1, rounds + 1):
            store.set(key, str(value))

    threads = [
        threading.Thread(target=edit, args=(bot, "limits.user_per_minute")),
        threading.Thread(target=edit, args=(cli, "limits.max_queue")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    limits = tomlkit.parse(path.read_text("utf-8")).unwrap()["limits"]
    assert (limits["user_per_minute"], limits["max_queue"]) == (rounds, rounds)


def test_reload_of_deleted_file_keeps_settings(store: SettingsStore):
    """`reload` after the file vanished says so and keeps the settings in force."""
    store.set("limits.max_queue", "6")
    store.path.unlink()
    with pytest.raises(SettingsError, match="不存在"):
        store.reload()
    assert store.settings.limits.max_queue == 6
