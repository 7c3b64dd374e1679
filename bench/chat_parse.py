"""Chat answers carrying a big image: how long the parse takes and how long it blocks the loop.

What: ``OpenAIBackend._image_from_chat`` on an answer already received (no upstream call), from
the joined text to the image bytes, for 1, 4 and 8 MB of base64 in each shape a chat answer
carries an image in:

- ``markdown_data``: ``好的…![image](data:image/png;base64,…)`` (one content string);
- ``markdown_streamed``: the same text as 4 KB stream deltas, joined before the parse;
- ``data_url``: a bare ``data:image/png;base64,…`` inside a sentence ending in a full stop;
- ``bare_b64`` / ``bare_b64_wrapped``: the whole content is base64 (wrapped: 76-char lines);
- ``markdown_url`` / ``bare_url``: an http URL after a long base64 run (a relay's preview, say);
  the URL points at a loopback server serving a tiny PNG, so the download costs next to nothing;
- ``images``: OpenRouter's ``message.images`` data URL (no text to search).

Each case runs several rounds; the figure is the median with min–max. Meanwhile a ticker task
sleeps 1 ms in a loop; how late it wakes is the longest stretch the loop could not run (the
parse on the loop, or a worker thread holding the GIL). Budget: that stretch stays under 10 ms
(median of the rounds' maxima) for 8 MB answers.

Run from the repository root: ``.venv/bin/python -m bench.chat_parse`` (about 15 s on 2 cores).
"""

from __future__ import annotations

import asyncio
import base64
import gc
import random
import time
from collections.abc import Callable

from aiohttp import web

from nonebot_plugin_llm2pic.backends.openai import OpenAIBackend
from nonebot_plugin_llm2pic.chat_api import ChatAnswer
from nonebot_plugin_llm2pic.settings import OpenAIBackendSettings
from nonebot_plugin_llm2pic.transport import RequestOptions, new_session

from ._stats import fmt, machine, summary, verdict

ROUNDS = 7
SIZES_MB = (1, 4, 8)
TICK = 0.001
BLOCK_BUDGET = 0.010
DELTA_CHARS = 4096
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TINY_PNG = PNG_SIGNATURE + b"\x00" * 64
DOWNLOADED = frozenset({"markdown_url", "bare_url"})
"""Shapes whose image is the tiny PNG behind the http URL, not the base64 in the text."""


def payload(size_mb: int) -> bytes:
    """``size_mb`` MB of base64 once encoded; starts like a PNG so the bytes pass the sniff."""
    raw = random.Random(size_mb).randbytes(size_mb * 2**20 * 3 // 4 - len(PNG_SIGNATURE))
    return PNG_SIGNATURE + raw


def wrapped(b64: str) -> str:
    return "\n".join(b64[i : i + 76] for i in range(0, len(b64), 76))


def answers(b64: str, file_url: str) -> dict[str, Callable[[], ChatAnswer]]:
    """A fresh answer per round."""
    data_url = f"data:image/png;base64,{b64}"
    markdown = f"好的，这是图片：\n![image]({data_url})\n"

    def text(content: str) -> Callable[[], ChatAnswer]:
        return lambda: ChatAnswer((content,), finish_reason="stop")

    def streamed() -> ChatAnswer:
        pieces = [markdown[i : i + DELTA_CHARS] for i in range(0, len(markdown), DELTA_CHARS)]
        return ChatAnswer(tuple(pieces), finish_reason="stop")

    return {
        "markdown_data": text(markdown),
        "markdown_streamed": streamed,
        "data_url": text(f"Here it is: {data_url}. Enjoy!"),
        "bare_b64": text(b64),
        "bare_b64_wrapped": text(wrapped(b64)),
        "markdown_url": text(f"{b64}\n\n![full size]({file_url})"),
        "bare_url": text(f"{b64}\n\nfull size: {file_url}"),
        "images": lambda: ChatAnswer(image_urls=(data_url,), finish_reason="stop"),
    }


async def ticker(lags: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(TICK)
        lags.append(time.perf_counter() - started - TICK)


async def timed(
    backend: OpenAIBackend, answer: ChatAnswer, opts: RequestOptions
) -> tuple[float, float, bytes]:
    """``(seconds, longest loop block, image bytes)`` of one parse."""
    gc.collect()
    lags: list[float] = []
    stop = asyncio.Event()
    tick = asyncio.create_task(ticker(lags, stop))
    await asyncio.sleep(TICK * 3)  # the ticker is running before the parse starts
    started = time.perf_counter()
    image = await backend._image_from_chat(answer, opts)
    elapsed = time.perf_counter() - started
    stop.set()
    await tick
    return elapsed, max(lags), image.data


async def serve_file() -> tuple[web.AppRunner, str]:
    async def file(_: web.Request) -> web.Response:
        return web.Response(body=TINY_PNG, content_type="image/png")

    app = web.Application()
    app.router.add_get("/image.png", file)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/image.png"


async def main_async() -> int:
    print(f"Chat answer parse, {ROUNDS} rounds per case — {machine()}")
    runner, file_url = await serve_file()
    settings = OpenAIBackendSettings(
        type="openai", base_url="http://127.0.0.1:1", api_key="sk-bench", mode="chat"
    )
    ok = True
    worst: tuple[float, str] = (0.0, "")
    try:
        async with new_session() as session:
            backend = OpenAIBackend("bench", settings, session)
            opts = RequestOptions(backend="bench", timeout=60)
            for size_mb in SIZES_MB:
                image = payload(size_mb)
                b64 = base64.b64encode(image).decode("ascii")
                print(f"\n{size_mb} MB of base64:")
                print(f"  {'shape':18s} {'parse':>24s}   longest loop block: median (max)")
                for shape, make in answers(b64, file_url).items():
                    times, blocks = [], []
                    for _ in range(ROUNDS):
                        elapsed, block, data = await timed(backend, make(), opts)
                        expected = TINY_PNG if shape in DOWNLOADED else image
                        assert data == expected, shape
                        times.append(elapsed)
                        blocks.append(block)
                    block_median, _, block_max = summary(blocks)
                    if block_max > worst[0]:
                        worst = (block_max, f"{shape} at {size_mb} MB")
                    line = (
                        f"  {shape:18s} {fmt(times):>24s}   {block_median * 1000:6.1f} ms "
                        f"({block_max * 1000:.1f})"
                    )
                    if size_mb == SIZES_MB[-1]:
                        block_ok = block_median <= BLOCK_BUDGET
                        ok = ok and block_ok
                        line += f"  budget ≤ {BLOCK_BUDGET * 1000:.0f} ms {verdict(block_ok)}"
                    print(line)
    finally:
        await runner.cleanup()
    print(f"\nlongest single loop block seen: {worst[0] * 1000:.1f} ms ({worst[1]})")
    return 0 if ok else 1


def main() -> int:
    return asyncio.run(main_async())


if __name__ == "__main__":
    raise SystemExit(main())
