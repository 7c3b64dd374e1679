"""Rough edges met by trying the plugin as a new operator: each step as it was run (CLI
subprocess or chat command), failing before its fix."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import tomlkit
from nonebug import App

from nonebot_plugin_llm2pic.backends.gradio import app_url

from .conftest import SUPERUSER_ID
from .fakes.openai_server import FakeOpenAI
from .onebot_client import OneBotClient, ServeProcess
from .test_admin import ADMIN, run_admin
from .test_chat_e2e import write_config as write_serve_config
from .test_cli import openai_backend, run_cli, write_config
from .test_draw import expect_ack_and_image, make_bot
from .test_operator_config import cli
from .utils import group_message, private_message

# -- wrong types are named in Chinese, never as Python types ----------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("backends.openai.extra_body", "应为表"),
        ("backends.zimage.inputs", "应为列表"),
    ],
)
async def test_cli_wrong_type_named_in_chinese(tmp_path: Path, key: str, expected: str):
    """`config set <table or optional list key> abc` names the type in Chinese, not Python's."""
    code, _, err = await cli(tmp_path, "config", "set", key, "abc")
    assert code == 1
    assert expected in err
    assert "[" not in err.split("应为", 1)[1].split("，", 1)[0]  # no dict[str, Any] / list[Any]


# -- values are shown as TOML, so what `get` prints can be typed back -------------------------


async def test_cli_get_prints_toml(tmp_path: Path):
    """`config get plugin.enabled` prints `true`, the form `config set` takes back."""
    code, out, err = await cli(tmp_path, "config", "get", "plugin.enabled")
    assert code == 0, err
    assert out == "true\n"
    code, _, err = await cli(tmp_path, "config", "set", "plugin.enabled", out.strip())
    assert code == 0, err


async def test_cli_set_echo_is_toml(tmp_path: Path):
    """Adding a backend in one line echoes a TOML inline table, not a Python dict."""
    value = '{type = "gradio", base_url = "http://127.0.0.1:7860"}'
    code, out, err = await cli(tmp_path, "config", "set", "backends.local", value)
    assert code == 0, err
    echo = out.splitlines()[0]
    assert echo == 'backends.local = {type = "gradio", base_url = "http://127.0.0.1:7860"}'
    assert tomlkit.parse(echo).unwrap()["backends"]["local"]["type"] == "gradio"


async def test_chat_get_bool_is_toml(app: App, config_file: Path):
    """`/llm2pic get plugin.enabled` answers `true`, not Python's `True`."""
    event = private_message("/llm2pic get plugin.enabled", user_id=ADMIN)
    await run_admin(app, event, "plugin.enabled = true")


async def test_chat_set_echo_is_toml(app: App, config_file: Path):
    """`/llm2pic set persona.name 小花` echoes the TOML string `"小花"`."""
    event = private_message("/llm2pic set persona.name 小花", user_id=ADMIN)
    await run_admin(app, event, '已设置 persona.name = "小花"，已生效')


# -- /pic keeps the description as typed -------------------------------------------------------


@pytest.fixture
async def drawing(config_file: Path, inline_jobs: None) -> AsyncIterator[FakeOpenAI]:
    """A fake OpenAI Images upstream as the default backend, no cooldown; jobs run inline."""
    from nonebot_plugin_llm2pic import state

    async with FakeOpenAI() as fake:
        state.store.set("backends.openai.base_url", f'"{fake.base_url}"')
        state.store.set("backends.openai.api_key", "sk-test")
        state.store.set("routing.default", "openai")
        state.store.set("limits.user_cooldown_seconds", "0")
        yield fake


@pytest.mark.parametrize(
    ("text", "prompt"),
    [
        ("/pic a cat's toy", "a cat's toy"),
        ('/pic 写着"你好"的牌子', '写着"你好"的牌子'),
        ("/pic -r a cat's toy", "a cat's toy"),
        ("/pic -r\u3000一只猫", "一只猫"),
    ],
    ids=["apostrophe", "quotes", "apostrophe-raw", "full-width-space"],
)
async def test_pic_description_kept_as_typed(app: App, drawing: FakeOpenAI, text, prompt):
    """Quotes and apostrophes in a `/pic` description reach the backend as typed."""
    from nonebot_plugin_llm2pic.matchers.draw import pic_cmd

    event = group_message(text, user_id=int(SUPERUSER_ID))
    async with app.test_matcher(pic_cmd) as ctx:
        bot = make_bot(ctx)
        ctx.receive_event(bot, event)
        expect_ack_and_image(ctx, event, drawing.image)
    assert drawing.requests[-1].json["prompt"] == prompt


# -- a hand-edit slip is explained in Chinese ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[persona]\nname = 小画\n",
            "第 2 行不是有效的 TOML：无法识别的字符 '小'（文字要用英文双引号",
        ),
        ("[persona]\nname = “小画”\n", "第 2 行不是有效的 TOML：用了中文引号 “"),
        ('[persona]\nname = "a"\nname = "b"\n', "name 写了两次"),
        ("[plugin]\nblocked_users = [1, 2\n", "第 2 行不是有效的 TOML：到文件末尾还没写完"),
        ("[persona\nname = 1\n", "第 1 行不是有效的 TOML：这一行没写完"),
        ("[plugin]\nenabled = True\n", "true/false 小写"),
    ],
    ids=["unquoted", "chinese-quotes", "duplicate", "unclosed-list", "unclosed-header", "True"],
)
async def test_cli_syntax_slip_explained_in_chinese(tmp_path: Path, text: str, expected: str):
    """A typical hand-edit slip names its line and the fix in Chinese, without tomlkit's English."""
    (tmp_path / "t.toml").write_text(text, "utf-8")
    code, _, err = await cli(tmp_path, "config", "get", "persona.name", "--config", "t.toml")
    assert code == 1
    assert expected in err
    assert not any(word in err for word in ("Unexpected", "already exists", "character"))


# -- `draw` refuses what cannot work before it draws, in one line --------------------------------


async def test_draw_unwritable_output_fails_in_one_line(tmp_path: Path):
    """`draw -o` to a place it cannot write: one `error:` line naming the file, no traceback."""
    async with FakeOpenAI() as fake:
        write_config(tmp_path, routing={"default": "openai"}, backends=openai_backend(fake))
        code, _, err = await run_cli(tmp_path, "draw", "a cat", "--raw", "-o", "/proc/cat.png")
    assert code == 1
    assert err.startswith("error: /proc/cat.png: ")
    assert len(err.strip().splitlines()) == 1


async def test_draw_unknown_extension_fails_before_drawing(tmp_path: Path):
    """`draw -o cat.txt` is refused before a (paid) picture is generated."""
    async with FakeOpenAI() as fake:
        write_config(tmp_path, routing={"default": "openai"}, backends=openai_backend(fake))
        code, _, err = await run_cli(tmp_path, "draw", "a cat", "--raw", "-o", "cat.txt")
    assert code == 1
    assert "不支持的图片格式" in err
    assert fake.requests == []


async def test_draw_creates_output_folder(tmp_path: Path):
    """`draw -o pics/cat.png` creates `pics/` like an image editor's "save as" would."""
    async with FakeOpenAI() as fake:
        write_config(tmp_path, routing={"default": "openai"}, backends=openai_backend(fake))
        code, _, err = await run_cli(tmp_path, "draw", "a cat", "--raw", "-o", "pics/cat.png")
    assert code == 0, err
    assert (tmp_path / "pics" / "cat.png").read_bytes() == fake.image


async def test_draw_empty_description_refused(tmp_path: Path):
    """`draw ""` says the description is empty and draws nothing."""
    async with FakeOpenAI() as fake:
        write_config(tmp_path, routing={"default": "openai"}, backends=openai_backend(fake))
        code, _, err = await run_cli(tmp_path, "draw", "  ")
    assert code == 1
    assert "描述不能为空" in err
    assert fake.requests == []


# -- a key pasted with its "Bearer " prefix stays out of the log -------------------------------


async def test_serve_log_masks_key_pasted_with_bearer(tmp_path: Path):
    """`/llm2pic set llm.api_key Bearer KEY` in private: NoneBot's message log never shows KEY."""
    key = "abcdefgh12345678wxyz"
    async with FakeOpenAI() as fake:
        server = ServeProcess(tmp_path)
        write_serve_config(server, fake)
        await server.start()
        try:
            async with OneBotClient(server.ws_url) as client:
                await client.private_message(
                    f"/llm2pic set llm.api_key Bearer {key}", user_id=ADMIN
                )
                await client.next_call("send_msg")
        finally:
            await server.stop()
    assert "/llm2pic set llm.api_key" in server.log()
    assert key not in server.log()


# -- unquoted words on the command line are one value, as in chat ------------------------------


async def test_cli_set_joins_unquoted_words(tmp_path: Path):
    """`config set persona.description 活泼 开朗` stores "活泼 开朗", like `/llm2pic set` does."""
    code, _, err = await cli(tmp_path, "config", "set", "persona.description", "活泼", "开朗")
    assert code == 0, err
    code, out, _ = await cli(tmp_path, "config", "get", "persona.description")
    assert out == '"活泼 开朗"\n'


async def test_draw_joins_unquoted_words(tmp_path: Path):
    """`draw 一只 猫 --raw` draws "一只 猫", like `/pic 一只 猫` does."""
    async with FakeOpenAI() as fake:
        write_config(tmp_path, routing={"default": "openai"}, backends=openai_backend(fake))
        code, _, err = await run_cli(tmp_path, "draw", "一只", "猫", "--raw", "-o", "cat.png")
    assert code == 0, err
    assert fake.requests[-1].json["prompt"] == "一只 猫"


# -- a pasted endpoint URL works for images as it does for chat -------------------------------


async def test_draw_with_pasted_images_endpoint_url(tmp_path: Path):
    """`base_url = ".../v1/images/generations"` (copied from a relay's docs) draws like `.../v1`."""
    async with FakeOpenAI() as fake:
        backend = {
            **openai_backend(fake)["openai"],
            "base_url": f"{fake.base_url}/images/generations",
        }
        write_config(tmp_path, routing={"default": "openai"}, backends={"openai": backend})
        code, _, err = await run_cli(tmp_path, "draw", "a cat", "--raw", "-o", "cat.png")
    assert code == 0, err
    assert [request.path for request in fake.requests] == ["/v1/images/generations"]


# -- a Space's page URL reaches the app ------------------------------------------------------


@pytest.mark.parametrize(
    ("pasted", "app"),
    [
        (
            "https://huggingface.co/spaces/Tongyi-MAI/Z-Image-Turbo",
            "https://tongyi-mai-z-image-turbo.hf.space",
        ),
        ("https://huggingface.co/spaces/user_1/my.app/", "https://user-1-my-app.hf.space"),
        ("http://127.0.0.1:7860/", "http://127.0.0.1:7860"),
    ],
)
def test_gradio_space_page_url_becomes_app_url(pasted: str, app: str):
    """A Space's page address copied from the browser is turned into the app's own address."""
    assert app_url(pasted) == app
