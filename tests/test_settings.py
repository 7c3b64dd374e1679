"""The llm2pic.toml schema: defaults, merging, and messages that name key, expectation, value."""

from __future__ import annotations

import pytest
import tomlkit

from nonebot_plugin_llm2pic.exceptions import SettingsError
from nonebot_plugin_llm2pic.settings import (
    GradioBackendSettings,
    OpenAIBackendSettings,
    mask_secret,
    parse_settings,
    resolve_secret,
)
from nonebot_plugin_llm2pic.settings_store import example_text


def test_example_config_equals_defaults():
    """The packaged example holds exactly the defaults."""
    assert parse_settings(tomlkit.parse(example_text()).unwrap()) == parse_settings({})


def test_zero_config_has_keyless_default_backend():
    """With no file content the default route is the free Z-Image Space."""
    settings = parse_settings({})
    backend = settings.backends[settings.routing.default]
    assert isinstance(backend, GradioBackendSettings)
    assert backend.base_url == "https://tongyi-mai-z-image-turbo.hf.space"
    assert backend.token == ""


def test_backend_tables_merge_over_builtins():
    """`[backends.openai] api_key` keeps the built-in base_url, model and type."""
    settings = parse_settings({"backends": {"openai": {"api_key": "sk-x"}}})
    backend = settings.backends["openai"]
    assert isinstance(backend, OpenAIBackendSettings)
    assert (backend.api_key, backend.model) == ("sk-x", "gpt-image-1")


def test_new_backend_and_disabled_builtin():
    """A new name adds a backend; `enabled = false` removes a built-in."""
    settings = parse_settings(
        {
            "backends": {
                "sd": {"type": "gradio", "base_url": "http://h"},
                "openai": {"enabled": False},
            },
        }
    )
    assert set(settings.backends) == {"zimage", "sd"}


@pytest.mark.parametrize(
    ("data", "key", "fragment"),
    [
        pytest.param({"plugin": {"priority": "high"}}, "plugin.priority", "'high'", id="wrong-int"),
        pytest.param(
            {"plugin": {"natural_languag": True}},
            "plugin.natural_languag",
            "未知的键",
            id="unknown-key",
        ),
        pytest.param(
            {"plugin": {"send_mode": "ftp"}},
            "plugin.send_mode",
            "'base64' 或 'file'",
            id="bad-literal",
        ),
        pytest.param(
            {"limits": {"max_concurrency": 0}},
            "limits.max_concurrency",
            "不能小于 1",
            id="out-of-range",
        ),
        pytest.param(
            {"routing": {"default": "nope"}},
            "routing.default",
            "没有启用名为 'nope' 的后端",
            id="routing-unknown",
        ),
        pytest.param(
            {"routing": {"fallback": ["openai", "ghost"]}},
            "routing.fallback",
            "'ghost'",
            id="fallback-unknown",
        ),
        pytest.param(
            {"backends": {"openai": {"enabled": False}}, "routing": {"anime": "openai"}},
            "routing.anime",
            "没有启用名为 'openai' 的后端",
            id="routing-disabled",
        ),
        pytest.param(
            {"backends": {"x": {"base_url": "http://h"}}},
            "backends.x",
            "type",
            id="backend-without-type",
        ),
        pytest.param(
            {"backends": {"zimage": {"steps": "many"}}},
            "backends.zimage.steps",
            "'many'",
            id="backend-field",
        ),
        pytest.param(
            {"backends": {"openai": {"mode": "video"}}},
            "backends.openai.mode",
            "'images' 或 'chat'",
            id="backend-literal",
        ),
        pytest.param(
            {"limits": {"quota_timezone": "Mars/Olympus"}},
            "limits.quota_timezone",
            "时区",
            id="timezone",
        ),
        pytest.param(
            {"generation": {"banned_words": "nsfw"}},
            "generation.banned_words",
            "应为列表",
            id="list-expected",
        ),
        pytest.param({"llm": "x"}, "llm", "", id="section-not-table"),
    ],
)
def test_invalid_settings_name_the_key(data, key, fragment):
    """Each rejection carries the dotted key and says what was expected or given."""
    with pytest.raises(SettingsError) as info:
        parse_settings(data)
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}:")
    assert fragment.lower() in str(info.value).lower()


@pytest.mark.parametrize(
    ("secret", "shown"),
    [
        ("sk-abcdefghijklmnop1234", "sk-****1234"),
        ("hf_abcdefghijkl5678", "hf_****5678"),
        ("short", "****"),
        ("", ""),
        ("env:OPENAI_KEY", "env:OPENAI_KEY"),
        ("abcdefghijklmnopqrstu", "ab****rstu"),
    ],
)
def test_mask_secret(secret, shown):
    """Secrets show at most a prefix and the last four characters."""
    assert mask_secret(secret) == shown


def test_env_secret(monkeypatch):
    """`env:NAME` reads the environment; unset means empty."""
    monkeypatch.setenv("LLM2PIC_TEST_KEY", "sk-from-env")
    assert resolve_secret("env:LLM2PIC_TEST_KEY") == "sk-from-env"
    assert resolve_secret("env:LLM2PIC_MISSING_KEY") == ""
    assert resolve_secret("sk-plain") == "sk-plain"
