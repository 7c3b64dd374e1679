"""The plugin's long-lived objects, created once when NoneBot loads the plugin.

Paths come from localstore (or ``LLM2PIC_CONFIG``), so this module is imported only in plugin
context, after ``require("nonebot_plugin_localstore")``. The HTTP session and the quota database
open on driver startup and close on shutdown, after the running jobs are cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from nonebot import get_driver, get_plugin_config, logger

from .config import Config, data_dir, resolve_config_path
from .exceptions import SettingsError
from .history import History
from .limits import JobQueue, QuotaStore, RateLimiter
from .persona_refs import LOOKS_FILENAME, PersonaLooks
from .pipeline import Pipeline
from .recent import RecentPictures
from .settings_store import LAST_GOOD_NAME, RUNNING_LOG, SettingsStore
from .transport import new_session

plugin_config = get_plugin_config(Config)

store = SettingsStore(
    resolve_config_path(plugin_config.llm2pic_config),
    data_dir() / LAST_GOOD_NAME,
    data_dir=data_dir(),
)
store.load()
if store.last_error:
    logger.error(
        f"llm2pic: {store.path} is invalid, running {RUNNING_LOG[store.source]}: {store.last_error}"
    )
else:
    logger.info(f"llm2pic: config {store.path}")

try:  # the first release kept `/llm2pic off` groups in a JSON deny list
    moved = store.migrate_deny_list(data_dir() / "disabled_groups.json")
except SettingsError as err:
    logger.error(f"llm2pic: group deny list not moved into {store.path}: {err}")
else:
    if moved:
        logger.info(f"llm2pic: groups switched off moved into {store.path}: {', '.join(moved)}")

WATCH_INTERVAL = 1.0
"""Seconds between checks of the config file's mtime (changes apply within 2 s, idle or not)."""

invalid_config_handlers: list[Callable[[SettingsError], Awaitable[bool]]] = []
"""Called with each new error of the config file until one returns True (it was reported)."""

history = History()
limiter = RateLimiter()
quota = QuotaStore(data_dir() / "quota.sqlite3")
queue = JobQueue()
recent = RecentPictures()
pipeline: Pipeline | None = None

jobs: set[asyncio.Task[None]] = set()
"""Background jobs in flight; shutdown cancels them."""
chores: set[asyncio.Task[None]] = set()
"""Background work no job waits for (recalls); shutdown cancels it."""
watch_config = True
"""Test seam: nonebug's fake bots answer only the API calls a test expects, so in-process tests
turn the file watcher off; it is tested through a real `serve`."""

driver = get_driver()


_watcher: asyncio.Task[None] | None = None


@driver.on_startup
async def _open() -> None:
    global pipeline, _watcher
    await quota.open()
    pipeline = Pipeline(
        new_session(),
        lambda: store.settings,
        queue,
        roots=store.reference_roots,
        looks=PersonaLooks(data_dir() / LOOKS_FILENAME),
    )
    if watch_config:
        _watcher = asyncio.create_task(_watch_config())


async def _watch_config() -> None:
    """Re-read the file when it changes; report each new error once (to the handlers)."""
    reported: SettingsError | None = None
    while True:
        await asyncio.sleep(WATCH_INTERVAL)
        try:
            await asyncio.to_thread(store.refresh_if_changed)
            error = store.last_error
            if error is not None and error is not reported:
                for handler in invalid_config_handlers:
                    if await handler(error):
                        reported = error
        except Exception as err:  # the watcher must outlive any one failure
            logger.opt(exception=err).warning("llm2pic: config watcher")


@driver.on_shutdown
async def _close() -> None:
    if _watcher is not None:
        _watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await _watcher
    await cancel_jobs()
    if pipeline is not None:
        await pipeline.session.close()
    await quota.close()


async def cancel_jobs() -> None:
    """Cancel the background jobs, then the chores, and wait until each has run its cleanup."""
    # A task cancelled before its first step never enters its body, so its `finally` (which
    # gives back the queue place and the quota unit) would never run: let new jobs start first.
    await asyncio.sleep(0)  # their first steps are queued ahead of this task's next one
    for task in list(jobs):
        task.cancel()
    await asyncio.gather(*jobs, return_exceptions=True)
    for task in list(chores):  # after the jobs: their cleanup may have scheduled a recall
        task.cancel()
    await asyncio.gather(*chores, return_exceptions=True)


def get_pipeline() -> Pipeline:
    """The pipeline; it exists from driver startup on."""
    if pipeline is None:
        raise RuntimeError("llm2pic is not started yet")
    return pipeline


async def spawn(job: Coroutine[Any, Any, None]) -> None:
    """Run a job in the background, tracked so shutdown can cancel it.

    A coroutine function so that a test can swap in one that awaits the job inline.
    """
    task = asyncio.create_task(job)
    jobs.add(task)
    task.add_done_callback(jobs.discard)


def background(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` as a tracked background task, never inline: nothing waits for it."""
    task = asyncio.create_task(work)
    chores.add(task)
    task.add_done_callback(chores.discard)
