"""Vision preparation: a chat picture → a JPEG data URL for the LLM, in the image worker.

What: ``vision.prepare_image`` (the plugin's code) run in the plugin's single image worker thread
(``in_worker``, as ``prepare_image_async`` does) on
- a 4000×3000 photo-like JPEG (smooth gradients under seeded pixel noise, quality 90: about the
  bytes of a 12 MP phone photo), the case the budget names;
- a 2048² photo-like PNG (11 MB, the size of a big generated picture someone replies to),
for ``detail = "low"`` (the default, 512 px) and ``"high"`` (``vision_max_side = 1024``).
Each case runs ``ROUNDS`` times one after another, after one warm-up.

- time: wall time inside the worker around one preparation (median, min–max); cpu: the worker
  thread's CPU time for it (``time.thread_time``), which other processes on a shared machine do
  not inflate;
- data URL: its length in bytes (the largest of the rounds);
- lag: a ticker task sleeps 5 ms in a loop while the preparations run; lag = how late it wakes
  (p99 and max over all ticks of the case), as in ``bench/load.py``.

Baseline in the same run, for the JPEG at low detail: the plain way (decode every pixel, convert
to RGB, ``resize`` to 512 px, JPEG q85, base64), to show what decoding at a reduced scale saves.

Budgets: 4000×3000 JPEG at the default detail (low) ≤ 150 ms; every case: data URL ≤ 300 KB, lag
p99 < 20 ms. The other times are reported, not budgeted.
Run from the repository root: ``.venv/bin/python -m bench.vision_prep`` (about 25 s).
"""

from __future__ import annotations

import asyncio
import base64
import io
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Literal

from PIL import Image

from nonebot_plugin_llm2pic.settings import VisionDetail
from nonebot_plugin_llm2pic.vision import (
    DATA_URL_PREFIX,
    LOW_DETAIL_SIDE,
    MAX_DATA_URL_BYTES,
    prepare_image,
)
from nonebot_plugin_llm2pic.worker import in_worker

from ._stats import fmt, machine, verdict
from ._upstream import photo_like_png

ROUNDS = 15
TICK = 0.005
TIME_BUDGET = 0.150
LAG_BUDGET = 0.020
MAX_SIDE = 1024
PHOTO_NOISE = 0.15
PHOTO_QUALITY = 90
BASELINE_QUALITY = 85

Prepare = Callable[[bytes], str]
"""Image bytes → data URL."""
Role = Literal["timed", "ours", "baseline"]
"""timed: every budget applies; ours: all but the time budget; baseline: none."""


def photo_like_jpeg(width: int, height: int, seed: int = 1) -> bytes:
    """A JPEG that decodes like a phone photo: gradients under seeded pixel noise."""
    rng = random.Random(seed)
    horizontal = Image.linear_gradient("L").rotate(90).resize((width, height))
    vertical = Image.linear_gradient("L").resize((width, height))
    smooth = Image.merge("RGB", (horizontal, vertical, Image.blend(horizontal, vertical, 0.5)))
    noise = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    buffer = io.BytesIO()
    Image.blend(smooth, noise, PHOTO_NOISE).save(buffer, format="JPEG", quality=PHOTO_QUALITY)
    return buffer.getvalue()


def ours(detail: VisionDetail) -> Prepare:
    return lambda data: prepare_image(data, detail=detail, max_side=MAX_SIDE).data_url


def plain_way(data: bytes) -> str:
    """The baseline: full decode, resize, encode."""
    with Image.open(io.BytesIO(data)) as image:
        rgb = image.convert("RGB")
    scale = LOW_DETAIL_SIDE / max(rgb.size)
    small = rgb.resize((round(rgb.width * scale), round(rgb.height * scale)))
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=BASELINE_QUALITY)
    return DATA_URL_PREFIX + base64.b64encode(buffer.getvalue()).decode("ascii")


def timed(prepare: Prepare, data: bytes) -> tuple[int, float, float]:
    """``(data URL bytes, wall seconds, CPU seconds)``, measured in the worker thread itself."""
    wall, cpu = time.perf_counter(), time.thread_time()
    data_url = prepare(data)
    return len(data_url), time.perf_counter() - wall, time.thread_time() - cpu


async def ticker(lags: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(TICK)
        lags.append(time.perf_counter() - started - TICK)


async def run_case(
    prepare: Prepare, data: bytes
) -> tuple[list[float], list[float], int, list[float]]:
    """``(wall times, CPU times, largest data URL, sorted lags)`` of ``ROUNDS`` preparations."""
    await in_worker(timed, prepare, data)  # warm-up: first-use allocations
    lags: list[float] = []
    stop = asyncio.Event()
    tick = asyncio.create_task(ticker(lags, stop))
    walls: list[float] = []
    cpus: list[float] = []
    largest = 0
    for _ in range(ROUNDS):
        size, wall, cpu = await in_worker(timed, prepare, data)
        walls.append(wall)
        cpus.append(cpu)
        largest = max(largest, size)
    stop.set()
    await tick
    return walls, cpus, largest, sorted(lags)


async def run() -> bool:
    jpeg = photo_like_jpeg(4000, 3000)
    png = photo_like_png(2048)
    cases: list[tuple[str, Prepare, bytes, Role]] = [
        ("4000×3000 JPEG, detail low", ours("low"), jpeg, "timed"),
        ("  baseline: plain decode + resize", plain_way, jpeg, "baseline"),
        ("4000×3000 JPEG, detail high", ours("high"), jpeg, "ours"),
        ("2048² PNG, detail low", ours("low"), png, "ours"),
        ("2048² PNG, detail high", ours("high"), png, "ours"),
    ]
    print(f"Vision preparation, {ROUNDS} rounds per case; {machine()}")
    print(f"JPEG {len(jpeg) / 1e6:.1f} MB, PNG {len(png) / 1e6:.1f} MB")
    ok = True
    for name, prepare, data, role in cases:
        walls, cpus, largest, lags = await run_case(prepare, data)
        p99 = lags[min(len(lags) - 1, round(0.99 * (len(lags) - 1)))]
        time_ok = statistics.median(walls) <= TIME_BUDGET
        size_ok = largest <= MAX_DATA_URL_BYTES
        lag_ok = p99 < LAG_BUDGET
        if role != "baseline":
            ok = ok and size_ok and lag_ok and (time_ok or role != "timed")
        budgets = role != "baseline"
        time_note = f"budget ≤ {TIME_BUDGET * 1000:.0f} ms {verdict(time_ok)}"
        size_note = f"budget ≤ {MAX_DATA_URL_BYTES / 1000:.0f} KB {verdict(size_ok)}"
        lag_note = f"budget p99 < {LAG_BUDGET * 1000:.0f} ms {verdict(lag_ok)}"
        print(f"{name}:")
        print(f"  time      {fmt(walls)}  cpu {fmt(cpus)}", time_note if role == "timed" else "")
        print(f"  data URL  {largest / 1000:.1f} KB", size_note if budgets else "")
        print(
            f"  loop lag  p99 {p99 * 1000:.2f} ms  max {lags[-1] * 1000:.1f} ms",
            f"({len(lags)} ticks)",
            lag_note if budgets else "",
        )
    print(verdict(ok))
    return ok


def main() -> int:
    return 0 if asyncio.run(run()) else 1


if __name__ == "__main__":
    sys.exit(main())
