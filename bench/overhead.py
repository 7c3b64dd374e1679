"""Plugin overhead end to end through a real ``serve`` process, vs a blocking baseline.

What: a OneBot v11 client (``tests/onebot_client.py``) sends ``/pic -r …`` from a superuser to a
real ``python -m nonebot_plugin_llm2pic serve``; its ``openai`` backend calls a fake Images
upstream in this process, which answers at once with a photo-like PNG (gradients under seeded
noise: it compresses like a photo, not like a flat test card) as ``b64_json``; crop is on
(40 px from the bottom); the client receives the ``send_msg`` frame carrying the image.

- total: client side, from the event frame sent to the ``send_msg`` frame received;
- upstream: fake's side, from the request in to the answer fully written;
- overhead = total − upstream: routing, HTTP client, JSON + base64 decode, crop and re-encode,
  base64 for OneBot, the adapter's JSON serialisation and the WebSocket transfer.

Baseline, timed in the same run and interleaved: the usual blocking way in a worker thread — a
blocking ``urllib`` request to the same fake, JSON + base64 decode, Pillow crop, re-encode in the
original format (PNG), base64 — minus its upstream time. (It leaves out the frame
serialisation and WebSocket transfer that the plugin's figure includes.)

Budget: median overhead ≤ 100 ms at 1024², ≤ 400 ms at 2048² (crop on). A third case shows
1024² with crop off, the default config, where ``send_format = "auto"`` still turns the PNG
into a JPEG when that is at least 30 % smaller (this photo-like PNG: 2.8 MB → 1.1 MB).
Limits in the config: cooldown 0, quotas 0, ack_message "" (the image is the only reply).

Run from the repository root: ``.venv/bin/python -m bench.overhead`` (about 60 s on 2 cores).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image

from tests.onebot_client import ApiCall, OneBotClient, ServeProcess, message_segments

from ._stats import fmt, machine, summary, verdict
from ._upstream import FakeImagesUpstream, photo_like_png

CASES = ((1024, True, 9), (2048, True, 5), (1024, False, 9))
"""(image edge, crop on, timed rounds); a round is one plugin request and one baseline run."""
BUDGET = {1024: 0.100, 2048: 0.400}
"""For crop on; crop off (the default config) is shown for information, without a baseline."""
CROP_PIXELS = 40
API_KEY = "sk-bench"
SUPERUSER = 10000

CONFIG = """\
[plugin]
ack_message = ""
reply_to_request = false
natural_language = false

[routing]
default = "fake"

[generation]
crop_enabled = {crop_enabled}
crop_position = "bottom"
crop_pixels = {crop}

[limits]
user_cooldown_seconds = 0
user_per_minute = 0
user_daily_quota = 0
group_daily_quota = 0
max_concurrency = 4
max_queue = 20
job_timeout = 120

[backends.fake]
type = "openai"
base_url = "{base_url}"
api_key = "{api_key}"
mode = "images"
model = "gpt-image-1"
size = ""
use_sse = false
timeout = 120
retries = 0
"""


class TimedClient(OneBotClient):
    """The test client, also noting when each API-call frame arrived (before parsing it)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.arrivals: list[float] = []

    async def _read(self) -> None:
        async for raw in self._ws:
            arrived = time.perf_counter()
            frame = json.loads(raw)
            if "action" not in frame:
                continue
            self.arrivals.append(arrived)
            await self.calls.put(ApiCall(frame["action"], frame.get("params") or {}))
            reply = {
                "status": "ok",
                "retcode": 0,
                "echo": frame.get("echo"),
                "data": {"message_id": self.next_message_id()},
            }
            await self._ws.send(json.dumps(reply))


async def plugin_once(
    client: TimedClient, upstream: FakeImagesUpstream
) -> tuple[float, float, bytes]:
    """One request through serve: ``(total, upstream time, image bytes sent)``."""
    served_before = len(upstream.served)
    sent = time.perf_counter()
    await client.group_message("/pic -r a photo of a cat", user_id=SUPERUSER)
    call = await client.next_call("send_msg", timeout=60)
    total = client.arrivals[-1] - sent
    assert len(upstream.served) == served_before + 1, "expected exactly one upstream request"
    served = upstream.served[-1]
    (image,) = message_segments(call.params["message"], "image")
    data = base64.b64decode(image["file"].removeprefix("base64://"))
    return total, served.answered - served.arrived, data


def ancestor_once(base_url: str) -> float:
    """The blocking baseline: download, crop, re-encode as the original format, base64."""
    request = urllib.request.Request(
        f"{base_url}/images/generations",
        data=json.dumps({"model": "gpt-image-1", "prompt": "a photo of a cat"}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"},
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        body = response.read()
    data = base64.b64decode(json.loads(body)["data"][0]["b64_json"])
    image = Image.open(io.BytesIO(data))
    cropped = image.crop((0, 0, image.width, image.height - CROP_PIXELS))
    buffer = io.BytesIO()
    cropped.save(buffer, format=image.format)
    base64.b64encode(buffer.getvalue()).decode("ascii")
    return time.perf_counter() - started


async def run() -> bool:
    print(f"Plugin overhead through `serve`, crop on — {machine()}")
    images = {size: photo_like_png(size) for size, _, _ in CASES}
    ok = True
    async with FakeImagesUpstream(images[CASES[0][0]]) as upstream:
        with tempfile.TemporaryDirectory() as workdir:
            server = ServeProcess(Path(workdir), superusers=(str(SUPERUSER),))
            server.config_path.parent.mkdir(parents=True, exist_ok=True)

            def configure(crop: bool) -> None:
                # serve re-reads the file before each job when its mtime moved.
                server.config_path.write_text(
                    CONFIG.format(
                        crop_enabled=str(crop).lower(),
                        crop=CROP_PIXELS,
                        base_url=upstream.base_url,
                        api_key=API_KEY,
                    ),
                    "utf-8",
                )

            configure(CASES[0][1])
            await server.start()
            try:
                async with TimedClient(server.ws_url) as client:
                    for size, crop, rounds in CASES:
                        configure(crop)
                        ok &= await measure(size, crop, rounds, images[size], client, upstream)
            finally:
                await server.stop()
    return ok


async def measure(
    size: int,
    crop: bool,
    rounds: int,
    png: bytes,
    client: TimedClient,
    upstream: FakeImagesUpstream,
) -> bool:
    upstream.set_image(png)
    _, _, sent = await plugin_once(client, upstream)  # warm-up: imports, connects, config
    with Image.open(io.BytesIO(sent)) as check:
        assert check.size == (size, size - CROP_PIXELS if crop else size), check.size
        sent_format = check.format
    overhead, totals, upstream_times, baseline = [], [], [], []
    for _ in range(rounds):
        total, upstream_time, _ = await plugin_once(client, upstream)
        overhead.append(total - upstream_time)
        totals.append(total)
        upstream_times.append(upstream_time)
        if not crop:
            continue
        served_before = len(upstream.served)
        elapsed = await asyncio.to_thread(ancestor_once, upstream.base_url)
        assert len(upstream.served) == served_before + 1
        served = upstream.served[-1]
        baseline.append(elapsed - (served.answered - served.arrived))
    med = summary(overhead)[0]
    print(
        f"\n{size}x{size} crop {'on' if crop else 'off'}, PNG {len(png) / 1e6:.1f} MB "
        "(upstream JSON "
        f"{len(png) * 4 / 3 / 1e6:.1f} MB) → sent {sent_format} {len(sent) / 1e6:.2f} MB, "
        f"{rounds} rounds:"
    )
    print(f"  plugin overhead    {fmt(overhead)}")
    print(f"    total            {fmt(totals)}   upstream {fmt(upstream_times)}")
    if not crop:
        print("  (the default config: no crop; no budget, no baseline)")
        return True
    passed = med <= BUDGET[size]
    print(f"  ancestor baseline  {fmt(baseline)}")
    print(
        f"  ratio baseline/plugin {summary(baseline)[0] / med:.1f}x; budget ≤ "
        f"{BUDGET[size] * 1000:.0f} ms {verdict(passed)}"
    )
    return passed


def main() -> int:
    return 0 if asyncio.run(run()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
