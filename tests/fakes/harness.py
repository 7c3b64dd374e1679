"""Helpers for the reliability tests: a `Pipeline` against local fakes, leak checks, hostile bytes.

The pipeline is the real one (`pipeline.Pipeline` with a real aiohttp session); only the settings
come from a dict, so each test states exactly which backends, retries and limits it runs with.
"""

from __future__ import annotations

import asyncio
import io
import struct
import time
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from PIL import Image

from nonebot_plugin_llm2pic.pipeline import Pipeline
from nonebot_plugin_llm2pic.settings import Settings, parse_settings
from nonebot_plugin_llm2pic.transport import new_session

from . import make_png

SECRET = "sk-live-SECRETKEY0123456789abcdef"
"""An API key that must never show up anywhere outside the request header."""

PLAIN_SECRET = "relaytoken0123456789ABCDEF"
"""A key without a recognisable prefix (some relays issue these)."""


def openai_backend(base_url: str, **overrides: Any) -> dict[str, Any]:
    """An ``openai`` backend table for a fake, no retries unless asked."""
    return {
        "type": "openai",
        "base_url": base_url,
        "api_key": "sk-test",
        "retries": 0,
        "timeout": 10,
        **overrides,
    }


def gradio_backend(base_url: str, **overrides: Any) -> dict[str, Any]:
    """A ``gradio`` backend table for a fake, no retries unless asked."""
    return {"type": "gradio", "base_url": base_url, "retries": 0, "timeout": 10, **overrides}


def settings_for(backends: dict[str, dict[str, Any]], **tables: dict[str, Any]) -> Settings:
    """Settings with these backends, routed to the first one unless ``routing`` says otherwise."""
    data: dict[str, Any] = {
        "backends": backends,
        "routing": {"default": next(iter(backends))},
        **tables,
    }
    if "routing" in tables:
        data["routing"] = {"default": next(iter(backends)), **tables["routing"]}
    return parse_settings(data)


class LiveSettings:
    """A mutable holder, so a test can change settings between jobs like an admin would."""

    def __init__(self, settings: Settings) -> None:
        self.value = settings

    def __call__(self) -> Settings:
        return self.value


@asynccontextmanager
async def pipeline_for(settings: Settings) -> AsyncIterator[Pipeline]:
    """A pipeline with its own session; on exit, asserts the job left nothing behind."""
    session = new_session()
    pipeline = Pipeline(session, LiveSettings(settings))
    try:
        yield pipeline
        await assert_nothing_leaked(pipeline)
    finally:
        await session.close()


async def assert_nothing_leaked(pipeline: Pipeline) -> None:
    """The queue is back to zero and no task running our code is left (bounded poll)."""
    assert pipeline.queue.waiting == 0, "a job is still counted as waiting"
    assert pipeline.queue.running == 0, "a job still holds a backend slot"
    deadline = time.monotonic() + 2.0
    while own_tasks() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert not own_tasks(), f"leaked tasks: {own_tasks()}"


def own_tasks() -> list[asyncio.Task[Any]]:
    """Unfinished tasks (other than the caller) whose coroutine lives in the plugin package."""
    current = asyncio.current_task()
    found = []
    for task in asyncio.all_tasks():
        if task is current or task.done():
            continue
        coro = task.get_coro()
        code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
        if code is not None and "nonebot_plugin_llm2pic" in code.co_filename:
            found.append(task)
    return found


def png(width: int = 32, height: int = 24, color: tuple[int, int, int] = (20, 90, 160)) -> bytes:
    """A small real PNG, the pipeline tests' usual picture."""
    return make_png(width, height, color)


def blank_png(width: int = 64, height: int = 64) -> bytes:
    """An all-black PNG: what a safety checker returns in place of a filtered picture."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width``×``height`` (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    # A few rows of zeros: real bombs compress gigapixels of one colour into kilobytes.
    pixels = zlib.compress(b"\x00" * (1 + width * 3) * 4, 9)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def elapsed(since: float) -> float:
    return time.monotonic() - since
