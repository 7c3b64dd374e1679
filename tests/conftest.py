"""NoneBug set-up in the style of he0119's plugins: init kwargs, adapter, plugin loaded once.

Every path the plugin writes (config, data, cache) lives in one temporary directory per run.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import nonebot
import pytest
from nonebug import NONEBOT_INIT_KWARGS

from .fakes import make_png
from .fakes.openai_server import FakeOpenAI

TEST_ROOT = Path(tempfile.mkdtemp(prefix="llm2pic-tests-"))
CONFIG_PATH = TEST_ROOT / "config" / "llm2pic.toml"
SUPERUSER_ID = "10000"


INIT_KWARGS = {
    "driver": "~fastapi",
    "superusers": {SUPERUSER_ID},
    "nickname": {"小画"},
    "command_start": {"/"},
    "log_level": "DEBUG",
    "llm2pic_config": str(CONFIG_PATH),
    "localstore_data_dir": str(TEST_ROOT / "data"),
    "localstore_cache_dir": str(TEST_ROOT / "cache"),
    "localstore_config_dir": str(TEST_ROOT / "config"),
}


def pytest_configure(config: pytest.Config) -> None:
    """Init NoneBot and load the plugin before test modules are collected.

    Test modules import plugin modules at the top; had they been imported first, NoneBot's
    loader would skip the package as "already imported" and the matchers would never register.
    """
    config.stash[NONEBOT_INIT_KWARGS] = INIT_KWARGS
    nonebot.init(**INIT_KWARGS)
    from nonebot.adapters.onebot.v11 import Adapter

    nonebot.get_driver().register_adapter(Adapter)
    assert nonebot.load_plugin("nonebot_plugin_llm2pic") is not None
    from nonebot_plugin_llm2pic import state

    state.watch_config = False  # see state.watch_config


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(TEST_ROOT, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _nonebot_init() -> None:
    """Replaces nonebug's: NoneBot is already initialised; only install its matcher provider."""
    from nonebot.matcher import matchers
    from nonebug.provider import NoneBugProvider

    matchers.set_provider(NoneBugProvider)


@pytest.fixture
def config_file() -> Iterator[Path]:
    """The live config file, restored to the packaged example after the test."""
    from nonebot_plugin_llm2pic.settings_store import example_text
    from nonebot_plugin_llm2pic.state import store

    CONFIG_PATH.write_text(example_text(), "utf-8")
    store.reload()
    yield CONFIG_PATH
    CONFIG_PATH.write_text(example_text(), "utf-8")
    store.reload()


@pytest.fixture
def inline_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Jobs run inside their handler instead of in the background, so nonebug sees the outcome
    before its `test_matcher` block exits. Background chores (recalls) are dropped: their calls
    would arrive after the block; `test_recall.py` drives them directly. Each test starts with
    no recent pictures (message ids repeat across tests)."""
    from nonebot_plugin_llm2pic import state
    from nonebot_plugin_llm2pic.recent import RecentPictures

    async def run_inline(job: Coroutine[Any, Any, None]) -> None:
        await job

    monkeypatch.setattr(state, "spawn", run_inline)
    monkeypatch.setattr(state, "background", lambda work: work.close())
    monkeypatch.setattr(state, "recent", RecentPictures())


@pytest.fixture(autouse=True)
def _no_recent_pictures() -> None:
    """Each test starts without the pictures the bot sent in earlier ones (message ids repeat)."""
    from nonebot_plugin_llm2pic import state
    from nonebot_plugin_llm2pic.recent import RecentPictures

    state.recent = RecentPictures()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """The plugin's own kind of HTTP session, closed after the test."""
    from nonebot_plugin_llm2pic.transport import new_session

    async with new_session() as client:
        yield client


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    """A local OpenAI-compatible image upstream (images and chat APIs)."""
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def upstream() -> AsyncIterator[FakeOpenAI]:
    """The image upstream of the end-to-end tests: a 96×96 picture, told from the defaults."""
    async with FakeOpenAI() as server:
        server.image = make_png(96, 96, (30, 160, 90))
        yield server
