"""Under load: event-loop lag and peak RSS while many jobs wait on a slow upstream.

What: the plugin's ``Pipeline`` and ``JobQueue`` in this process, one shared aiohttp session,
and a fake OpenAI Images upstream in a separate process (so its send buffers are not counted)
that waits 2 s and answers a photo-like 1024² PNG (2.8 MB, 3.7 MB of JSON). Jobs arrive 10 ms
apart; each runs ``/pic -r`` style (no LLM), crop on, then what sending costs the process: the
base64 ``file`` value built in the image worker (as ``matchers/draw.py`` does) and the OneBot
adapter's single ``json.dumps`` of the frame on the event loop (timed and reported).
Runs with 20, 35 and 50 jobs.

Limits: ``max_concurrency = 10`` (per backend), ``max_queue = 40`` — 10 running + 40 waiting,
so 50 jobs are all accepted; a 51st submitted while they wait must be refused (QueueFullError).
The fake reports the peak number of requests it had in flight: it must not exceed 10.

- lag: a ticker task sleeps 5 ms in a loop; lag = how late it wakes (p50, p99, max);
- peak RSS: VmHWM of this process (reset via /proc/self/clear_refs before each run), shown
  absolute and above the idle process after a warm-up job; budget on the increase:
  ≤ 6 × (10 in flight × 2.8 MB image) + 30 MB, and flat from 20 to 50 jobs.

Budgets: lag p99 < 20 ms; RSS as above; queue limits hold.
Run from the repository root: ``.venv/bin/python -m bench.load`` (about 40 s).
"""

from __future__ import annotations

import asyncio
import base64
import json
import statistics
import subprocess
import sys
import time

from nonebot_plugin_llm2pic.limits import JobQueue, QueueFullError
from nonebot_plugin_llm2pic.pipeline import DrawJob, Pipeline
from nonebot_plugin_llm2pic.settings import Settings
from nonebot_plugin_llm2pic.transport import new_session
from nonebot_plugin_llm2pic.worker import in_worker

from ._stats import machine, verdict

JOB_COUNTS = (20, 35, 50)
MAX_CONCURRENCY = 10
MAX_QUEUE = 40
UPSTREAM_DELAY = 2.0
IMAGE_EDGE = 1024
ARRIVAL_GAP = 0.010
TICK = 0.005
LAG_BUDGET = 0.020


def settings_for(base_url: str) -> Settings:
    return Settings.model_validate(
        {
            "routing": {"default": "fake"},
            "generation": {"crop_enabled": True, "crop_position": "bottom", "crop_pixels": 40},
            "limits": {
                "max_concurrency": MAX_CONCURRENCY,
                "max_queue": MAX_QUEUE,
                "job_timeout": 120,
            },
            "backends": {
                "fake": {
                    "type": "openai",
                    "base_url": base_url,
                    "api_key": "sk-bench",
                    "size": "",
                    "retries": 0,
                    "timeout": 60,
                }
            },
        }
    )


def rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(field)


def reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


async def ticker(lags: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(TICK)
        lags.append(time.perf_counter() - started - TICK)


def base64_uri(data: bytes) -> str:
    return "base64://" + base64.b64encode(data).decode("ascii")


async def job_and_send(pipeline: Pipeline, ticket, dumps_times: list[float]) -> int:
    """One job, then what sending it costs: base64 in the image worker (as matchers/draw.py
    does), and the OneBot adapter's one ``json.dumps`` of the frame, on the loop (timed)."""
    result = await pipeline.run(DrawJob(text="a photo of a cat", raw=True), ticket)
    uri = await in_worker(base64_uri, result.image.data)
    frame = {
        "action": "send_msg",
        "params": {
            "message_type": "group",
            "group_id": 1,
            "message": [{"type": "image", "data": {"file": uri}}],
        },
        "echo": "1",
    }
    started = time.perf_counter()
    size = len(json.dumps(frame))
    dumps_times.append(time.perf_counter() - started)
    return size


async def stats(session, url: str) -> dict:
    async with session.get(url) as resp:
        return await resp.json()


async def run_jobs(pipeline: Pipeline, queue: JobQueue, count: int, settings: Settings) -> dict:
    lags: list[float] = []
    stop = asyncio.Event()
    tick = asyncio.create_task(ticker(lags, stop))
    started = time.perf_counter()
    tasks = []
    dumps_times: list[float] = []
    for _ in range(count):
        ticket = queue.accept(max_queue=settings.limits.max_queue)
        tasks.append(asyncio.create_task(job_and_send(pipeline, ticket, dumps_times)))
        await asyncio.sleep(ARRIVAL_GAP)
    refused = False
    if count == MAX_CONCURRENCY + MAX_QUEUE:
        try:
            queue.accept(max_queue=settings.limits.max_queue).close()
        except QueueFullError:
            refused = True
    waiting_max = queue.waiting
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    stop.set()
    await tick
    return {
        "lags": lags,
        "elapsed": elapsed,
        "refused_extra": refused,
        "waiting": waiting_max,
        "dumps": dumps_times,
    }


async def run() -> bool:
    print(
        f"Under load: {IMAGE_EDGE}² photo-like PNG, upstream {UPSTREAM_DELAY:g} s, "
        f"max_concurrency={MAX_CONCURRENCY}, max_queue={MAX_QUEUE} — {machine()}"
    )
    upstream = subprocess.Popen(
        [sys.executable, "-m", "bench._upstream", str(IMAGE_EDGE), str(UPSTREAM_DELAY)],
        stdout=subprocess.PIPE,
        text=True,
    )
    ok = True
    try:
        assert upstream.stdout is not None
        base_url, stats_url = upstream.stdout.readline().split()
        settings = settings_for(base_url)
        async with new_session() as session:
            queue = JobQueue()
            pipeline = Pipeline(session, lambda: settings, queue)
            await job_and_send(pipeline, None, [])  # warm-up: imports, connection, thread pool
            image_bytes = (await stats(session, stats_url))["image_bytes"]
            in_flight_bytes = MAX_CONCURRENCY * image_bytes
            rss_budget_kib = (6 * in_flight_bytes + 30 * 1024 * 1024) / 1024
            idle = rss_kib("VmRSS")
            print(
                f"idle RSS after warm-up {idle / 1024:.0f} MB; in flight at most "
                f"{MAX_CONCURRENCY} × {image_bytes / 1e6:.1f} MB; RSS budget: increase ≤ "
                f"{rss_budget_kib / 1024:.0f} MB"
            )
            peaks = []
            for count in JOB_COUNTS:
                await stats(session, stats_url + "?reset=1")
                reset_peak_rss()
                before = rss_kib("VmRSS")
                outcome = await run_jobs(pipeline, queue, count, settings)
                peak = rss_kib("VmHWM")
                peaks.append(peak - idle)
                upstream_stats = await stats(session, stats_url)
                lags = sorted(outcome["lags"])
                p50 = statistics.median(lags)
                p99 = lags[min(len(lags) - 1, round(0.99 * (len(lags) - 1)))]
                concurrency_ok = upstream_stats["peak_in_flight"] <= MAX_CONCURRENCY
                queue_ok = count < MAX_CONCURRENCY + MAX_QUEUE or outcome["refused_extra"]
                lag_ok = p99 < LAG_BUDGET
                rss_ok = peak - idle <= rss_budget_kib
                ok = ok and concurrency_ok and queue_ok and lag_ok and rss_ok
                print(
                    f"\n{count} jobs in {outcome['elapsed']:.1f} s "
                    f"(RSS before {before / 1024:.0f} MB):"
                )
                print(
                    f"  loop lag  p50 {p50 * 1000:.2f} ms  p99 {p99 * 1000:.2f} ms  "
                    f"max {lags[-1] * 1000:.1f} ms ({len(lags)} ticks)  "
                    f"budget p99 < {LAG_BUDGET * 1000:.0f} ms {verdict(lag_ok)}"
                )
                dumps = sorted(outcome["dumps"])
                print(
                    f"  adapter json.dumps of the send frame (on the loop): median "
                    f"{statistics.median(dumps) * 1000:.1f} ms, max {dumps[-1] * 1000:.1f} ms"
                )
                print(
                    f"  peak RSS  {peak / 1024:.0f} MB, +{(peak - idle) / 1024:.0f} MB over "
                    f"idle (budget ≤ {rss_budget_kib / 1024:.0f} MB) {verdict(rss_ok)}"
                )
                print(
                    f"  upstream peak in flight {upstream_stats['peak_in_flight']} "
                    f"(max_concurrency {MAX_CONCURRENCY}) {verdict(concurrency_ok)}; "
                    f"waiting at most {outcome['waiting']}"
                    + (
                        f"; 51st job refused: {verdict(queue_ok)}"
                        if count == MAX_CONCURRENCY + MAX_QUEUE
                        else ""
                    )
                )
            flat = max(peaks) - min(peaks) <= 0.25 * max(peaks) + 10 * 1024
            ok = ok and flat
            print(
                f"\npeak RSS increase for {JOB_COUNTS} jobs: "
                f"{', '.join(f'{p / 1024:.0f}' for p in peaks)} MB — flat "
                f"(spread ≤ 25% + 10 MB) {verdict(flat)}"
            )
    finally:
        upstream.terminate()
        upstream.wait(10)
    return ok


def main() -> int:
    return 0 if asyncio.run(run()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
