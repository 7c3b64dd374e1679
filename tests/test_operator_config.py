"""The operator's first hour with the config: each step as the operator ran it (CLI subprocess,
settings store, `serve` + OneBot client), failing before the fix."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
import tomlkit
from nonebug import App

from nonebot_plugin_llm2pic.exceptions import SettingsError
from nonebot_plugin_llm2pic.settings import parse_settings
from nonebot_plugin_llm2pic.settings_store import LAST_GOOD_NAME, SettingsStore

from .fakes.openai_server import FakeOpenAI
from .onebot_client import OneBotClient, ServeProcess, message_text
from .test_admin import ADMIN, run_admin
from .utils import private_message

ADD_BACKEND = 'set backends.local \'{type = "gradio", base_url = '
BROKEN_QUOTE = '[persona]\nname = "小画\ndescription = ""\n'


async def cli(workdir: Path, *args: str) -> tuple[int, str, str]:
    """Run the CLI exactly as typed (no --config added) in ``workdir``."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "nonebot_plugin_llm2pic",
        *args,
        cwd=workdir,
        env={"PATH": "/usr/bin:/bin", "LOCALSTORE_USE_CWD": "true", "NO_PROXY": "*"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


def write_toml(path: Path, **tables: dict) -> None:
    document = tomlkit.document()
    document.update(tables)
    path.write_text(tomlkit.dumps(document), "utf-8")


def rows(out: str) -> dict[str, str]:
    """`check` table rows by their first column (``backend NAME`` for backends)."""
    table = {}
    for line in out.splitlines():
        words = line.split()
        name = " ".join(words[:2]) if words and words[0] == "backend" else words[0]
        table[name] = line
    return table


# -- bug 1: --config before or after the verb; every write names its file --------------------


@pytest.mark.parametrize(
    "args",
    [
        ("--config", "new.toml", "config", "set", "persona.name", "X"),
        ("config", "--config", "new.toml", "set", "persona.name", "X"),
        ("config", "set", "persona.name", "X", "--config", "new.toml"),
    ],
    ids=["before-verb", "after-verb", "at-end"],
)
async def test_config_flag_anywhere_edits_that_file(tmp_path: Path, args):
    """`--config new.toml` edits new.toml wherever it stands, and the reply names that file."""
    code, out, err = await cli(tmp_path, *args)
    assert code == 0, err
    new = tmp_path / "new.toml"
    assert tomlkit.parse(new.read_text("utf-8")).unwrap()["persona"]["name"] == "X"
    assert f"wrote {new}" in out
    assert not list(tmp_path.glob("config/**/llm2pic.toml"))  # the default file is untouched


async def test_config_show_section_prints_valid_toml(tmp_path: Path):
    """`config show backends.openai` prints a [backends.openai] table that parses back."""
    code, out, err = await cli(tmp_path, "config", "show", "backends.openai", "--config", "c.toml")
    assert code == 0, err
    assert out.startswith("[backends.openai]\n")
    assert tomlkit.parse(out).unwrap()["backends"]["openai"]["type"] == "openai"


async def test_config_unset_removes_key_and_names_file(tmp_path: Path):
    """`config unset` removes the key (default again) and says which file it wrote."""
    path = tmp_path / "c.toml"
    write_toml(path, limits={"max_queue": 3})
    code, out, err = await cli(
        tmp_path, "config", "unset", "limits.max_queue", "--config", "c.toml"
    )
    assert code == 0, err
    assert f"wrote {path}" in out
    assert "max_queue" not in tomlkit.parse(path.read_text("utf-8")).unwrap()["limits"]


# -- bug 7: adding a backend key by key says how to do it in one line ------------------------


@pytest.mark.parametrize(
    "edit",
    [("backends.local.type", "gradio"), ("backends.local.base_url", "http://127.0.0.1:7860")],
)
async def test_backend_key_by_key_shows_one_line_form(tmp_path: Path, edit):
    """Setting type or base_url alone on a new backend shows the one-line inline-table form."""
    code, _, err = await cli(tmp_path, "config", "set", *edit, "--config", "c.toml")
    assert code == 1
    assert ADD_BACKEND in err


async def test_backend_one_line_form_works(tmp_path: Path):
    """The one-line form the error suggests adds the backend."""
    value = '{type = "gradio", base_url = "http://127.0.0.1:7860"}'
    code, _, err = await cli(
        tmp_path, "config", "set", "backends.local", value, "--config", "c.toml"
    )
    assert code == 0, err


# -- bug 2: check fails only for what the bot will use ---------------------------------------


async def test_check_ignores_unrouted_broken_backend(tmp_path: Path):
    """An unreachable backend no route names (zimage without HF access) is `unused`, exit 0."""
    async with FakeOpenAI() as images:
        write_toml(
            tmp_path / "c.toml",
            routing={"default": "openai"},
            backends={
                "openai": {"base_url": images.base_url, "api_key": "sk-test", "retries": 0},
                "zimage": {"base_url": "http://127.0.0.1:9", "retries": 0, "timeout": 5},
            },
        )
        code, out, err = await cli(tmp_path, "check", "--config", "c.toml")
    assert code == 0, out + err
    assert " unused " in rows(out)["backend zimage"]
    assert " ok " in rows(out)["backend openai"]


async def test_check_routed_fallback_counts(tmp_path: Path):
    """A broken backend named in routing.fallback fails the check."""
    async with FakeOpenAI() as images:
        write_toml(
            tmp_path / "c.toml",
            routing={"default": "openai", "fallback": ["zimage"]},
            backends={
                "openai": {"base_url": images.base_url, "api_key": "sk-test", "retries": 0},
                "zimage": {"base_url": "http://127.0.0.1:9", "retries": 0, "timeout": 5},
            },
        )
        code, out, _ = await cli(tmp_path, "check", "--config", "c.toml")
    assert code == 1
    assert " FAILED " in rows(out)["backend zimage"]


async def test_check_broken_llm_row_is_called_llm(tmp_path: Path):
    """A configured but unreachable LLM fails the check in a row called LLM, not 绘图服务."""
    async with FakeOpenAI() as images:
        write_toml(
            tmp_path / "c.toml",
            llm={"base_url": "http://127.0.0.1:9/v1", "model": "m", "timeout": 5},
            routing={"default": "openai"},
            backends={
                "openai": {"base_url": images.base_url, "api_key": "sk-test", "retries": 0},
                "zimage": {"enabled": False},
            },
        )
        code, out, _ = await cli(tmp_path, "check", "--config", "c.toml")
    assert code == 1
    assert " FAILED " in rows(out)["LLM"]
    assert "绘图服务" not in rows(out)["LLM"]


async def test_check_llm_url_without_scheme_fails(tmp_path: Path):
    """`llm.base_url = api.deepseek.com` is a validation failure, not an `unused` row."""
    write_toml(tmp_path / "c.toml", llm={"base_url": "api.deepseek.com", "model": "m"})
    code, _, err = await cli(tmp_path, "check", "--config", "c.toml")
    assert code == 1
    assert "llm.base_url" in err
    assert "http://" in err


# -- validation friction ---------------------------------------------------------------------


async def test_missing_quote_reported_once_with_line(tmp_path: Path):
    """A missing closing quote names the line and a likely missing quote, once."""
    (tmp_path / "c.toml").write_text(BROKEN_QUOTE, "utf-8")
    code, _, err = await cli(tmp_path, "config", "get", "persona.name", "--config", "c.toml")
    assert code == 1
    assert err.count("可能缺少引号") == 1
    assert "第 2 行" in err
    assert "u000a" not in err


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"llm": {"base_url": "api.deepseek.com"}}, "llm.base_url"),
        ({"llm": {"proxy": "127.0.0.1:7890"}}, "llm.proxy"),
        ({"backends": {"openai": {"base_url": "api.example.com/v1"}}}, "backends.openai.base_url"),
        ({"backends": {"zimage": {"proxy": "socks"}}}, "backends.zimage.proxy"),
    ],
)
def test_url_without_scheme_rejected(table, key):
    """URLs without http(s):// are refused, naming the key, in Chinese."""
    with pytest.raises(SettingsError) as info:
        parse_settings(table)
    assert info.value.key == key
    assert "需要以 http:// 或 https:// 开头" in str(info.value)


def test_unknown_gradio_placeholder_rejected():
    """A typo like {promt} in Gradio inputs is refused with the known placeholders."""
    table = {"type": "gradio", "base_url": "http://h", "inputs": ["{promt}", "{seed}"]}
    with pytest.raises(SettingsError) as info:
        parse_settings({"backends": {"local": table}})
    assert info.value.key == "backends.local.inputs"
    assert "{promt}" in str(info.value)
    assert "{negative_prompt}" in str(info.value)


def test_numeric_ids_accepted_as_text():
    """`blocked_users = [12345]` is accepted and read as the string "12345"."""
    assert parse_settings({"plugin": {"blocked_users": [12345]}}).plugin.blocked_users == ["12345"]


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ({"plugin": {"nope": 1}}, "未知的键"),
        ({"limits": {"max_queue": "many"}}, "应为整数"),
        ({"limits": {"job_timeout": "soon"}}, "应为数字"),
        ({"plugin": {"enabled": "maybe"}}, "应为 true 或 false"),
        ({"persona": {"name": 5}}, "应为字符串"),
        ({"generation": {"banned_words": "x"}}, "应为列表"),
        ({"limits": {"max_queue": 0}}, "不能小于 1"),
        ({"llm": {"temperature": 3}}, "不能大于 2"),
        ({"backends": {"x": {"type": "gradio"}}}, "缺少这个键"),
    ],
)
def test_validation_errors_are_chinese(table, fragment):
    """Schema errors reach the admin in Chinese."""
    with pytest.raises(SettingsError, match=fragment):
        parse_settings(table)


# -- bug 8: the last valid content, saved and used ------------------------------------------


def test_cli_edit_then_typo_runs_the_cli_edit(tmp_path: Path):
    """Bot idle, CLI edit, then a hand-edit typo: the bot runs the CLI edit, not its old copy."""
    path, last_good = tmp_path / "llm2pic.toml", tmp_path / "data" / LAST_GOOD_NAME
    bot = SettingsStore(path, last_good)
    bot.load()
    SettingsStore(path, last_good).set("persona.name", "命令行改的")
    path.write_text(BROKEN_QUOTE, "utf-8")
    bot.refresh_if_changed()
    assert bot.settings.persona.name == "命令行改的"
    assert bot.source == "last-good"


def test_invalid_file_at_startup_runs_last_good(tmp_path: Path):
    """A file broken while the bot was down: the next start runs the saved last valid content."""
    path, last_good = tmp_path / "llm2pic.toml", tmp_path / "data" / LAST_GOOD_NAME
    SettingsStore(path, last_good).load()
    SettingsStore(path, last_good).set("limits.max_queue", "7")
    path.write_text(BROKEN_QUOTE, "utf-8")
    store = SettingsStore(path, last_good)
    store.load()
    assert (store.source, store.settings.limits.max_queue) == ("last-good", 7)
    assert store.last_error is not None


def test_last_good_of_another_file_is_not_used(tmp_path: Path):
    """The saved content belongs to one file: a different broken file runs the defaults."""
    last_good = tmp_path / LAST_GOOD_NAME
    SettingsStore(tmp_path / "a.toml", last_good).set("limits.max_queue", "7")
    other = tmp_path / "b.toml"
    other.write_text(BROKEN_QUOTE, "utf-8")
    store = SettingsStore(other, last_good)
    store.load()
    assert (store.source, store.settings.limits.max_queue) == ("defaults", 20)


# -- bug 9: show prints TOML that pastes back ------------------------------------------------


def test_show_backend_uses_table_headers(tmp_path: Path):
    """`show backends.openai` is `[backends.openai]`, never `["backends.openai"]`."""
    store = SettingsStore(tmp_path / "llm2pic.toml")
    store.load()
    text = store.show("backends.openai")
    assert text.startswith("[backends.openai]\n")
    assert tomlkit.parse(text).unwrap()["backends"]["openai"]["model"] == "gpt-image-1"


async def test_chat_show_backend_is_valid_toml(app: App, config_file: Path):
    """In chat, `/llm2pic show backends.openai` answers with a [backends.openai] table."""
    from nonebot_plugin_llm2pic.state import store

    text = store.show("backends.openai")
    assert text.startswith("[backends.openai]\n")
    await run_admin(app, private_message("/llm2pic show backends.openai", user_id=ADMIN), text)


async def test_chat_accepts_the_one_line_backend_form(app: App, config_file: Path):
    """The hint's shell-quoted form, pasted into a private chat, adds the backend."""
    from nonebot_plugin_llm2pic.state import store

    command = '/llm2pic set backends.local \'{type = "gradio", base_url = "http://h:7860"}\''
    await run_admin(
        app,
        private_message(command, user_id=ADMIN),
        '已设置 backends.local = {type = "gradio", base_url = "http://h:7860"}，已生效',
    )
    assert store.settings.backends["local"].base_url == "http://h:7860"


# -- serve: SUPERUSERS, the file watcher and the notice --------------------------------------


async def admin(client: OneBotClient, text: str, user_id: int = 10000) -> str:
    await client.private_message(text, user_id=user_id)
    return message_text((await client.next_call("send_msg")).params["message"])


async def test_serve_accepts_numeric_superusers(tmp_path: Path):
    """`SUPERUSERS='[11111]'` serves (no traceback) and 11111 is a superuser."""
    server = ServeProcess(tmp_path, env={"SUPERUSERS": "[11111]"})
    await server.start()
    try:
        async with OneBotClient(server.ws_url) as client:
            assert (await admin(client, "/llm2pic get persona.name", 11111)).startswith(
                "persona.name ="
            )
    finally:
        await server.stop()


async def test_serve_warns_without_superusers(tmp_path: Path):
    """No SUPERUSERS: `serve` warns that admin commands will be ignored."""
    server = ServeProcess(tmp_path, superusers=())
    await server.start()
    await server.stop()
    assert "SUPERUSERS is empty" in server.log()


async def test_idle_bot_rereads_file_and_reports_typo(tmp_path: Path):
    """Idle bot: a valid hand edit applies within 2 s; a later typo is told to superusers who
    are friends, the bot keeps the last valid content, and status and log agree after a restart.
    """
    server = ServeProcess(tmp_path, superusers=("10000", "10001"))
    write_toml(server.config_path, persona={"name": "甲"})
    await server.start()
    try:
        async with OneBotClient(server.ws_url) as client:
            client.handlers["get_friend_list"] = lambda _: [{"user_id": 10000, "nickname": "a"}]
            await asyncio.sleep(1.5)
            write_toml(server.config_path, persona={"name": "乙"})
            await asyncio.sleep(2.5)  # idle: nothing but the watcher reads the file
            server.config_path.write_text(BROKEN_QUOTE, "utf-8")
            notice = await client.next_call("send_private_msg", timeout=5)
            assert notice.params["user_id"] == 10000
            assert "可能缺少引号" in message_text(notice.params["message"])
            await client.no_call(within=1.5)  # once, and not to 10001 (not a friend)
            assert await admin(client, "/llm2pic get persona.name") == 'persona.name = "乙"'
    finally:
        await server.stop()
    assert (tmp_path / "data" / "nonebot_plugin_llm2pic" / LAST_GOOD_NAME).exists()

    await server.start()  # restarted with the broken file
    try:
        async with OneBotClient(server.ws_url) as client:
            assert "正在使用上一次的有效配置" in await admin(client, "/llm2pic status")
            assert await admin(client, "/llm2pic get persona.name") == 'persona.name = "乙"'
    finally:
        await server.stop()
    assert "running the last valid content" in server.log()
    assert "defaults" not in server.log()
