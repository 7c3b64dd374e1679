"""A minimal OpenAI Images upstream for the benches, and photo-like test images.

The server answers ``POST /v1/images/generations`` with a pre-serialised ``b64_json`` body after
an optional delay, and records when each request came in and when its answer was fully written
(``time.perf_counter`` of the bench process, the clock the bench's client side uses too).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import random
import time
from dataclasses import dataclass, field

from aiohttp import web
from PIL import Image


def photo_like_png(size: int, seed: int = 1) -> bytes:
    """A PNG that compresses like a photo: smooth colour gradients under seeded pixel noise."""
    rng = random.Random(seed)
    horizontal = Image.linear_gradient("L").rotate(90).resize((size, size))
    vertical = Image.linear_gradient("L").resize((size, size))
    diagonal = Image.blend(horizontal, vertical, 0.5)
    smooth = Image.merge("RGB", (horizontal, vertical, diagonal))
    noise = Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3))
    photo = Image.blend(smooth, noise, 0.3)
    buffer = io.BytesIO()
    photo.save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class Served:
    """One answered request: arrival and end of the answer (perf_counter seconds)."""

    arrived: float
    answered: float


@dataclass
class FakeImagesUpstream:
    """``async with FakeImagesUpstream(png) as upstream``; ``upstream.base_url`` ends in /v1."""

    image: bytes
    delay: float = 0.0
    honours_n: bool = False
    """True: an answer holds the ``n`` pictures asked for (else always one)."""
    served: list[Served] = field(default_factory=list)
    in_flight: int = 0
    peak_in_flight: int = 0
    _body: bytes = b""
    _b64: str = ""
    _runner: web.AppRunner | None = None
    _port: int = 0

    def set_image(self, image: bytes) -> None:
        """Answer with this image from now on (the JSON body is built here, not per request)."""
        self.image = image
        self._b64 = base64.b64encode(image).decode("ascii")
        self._body = self._answer(1)

    def _answer(self, count: int) -> bytes:
        return json.dumps({"created": 0, "data": [{"b64_json": self._b64}] * count}).encode()

    async def __aenter__(self) -> FakeImagesUpstream:
        self.set_image(self.image)
        app = web.Application(client_max_size=1024**2)
        app.router.add_post("/v1/images/generations", self._generate)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/v1"

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        arrived = time.perf_counter()
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            body = self._body
            if self.honours_n:
                count = int(json.loads(await request.read()).get("n") or 1)
                body = self._answer(count) if count > 1 else body
            else:
                await request.read()
            if self.delay:
                await asyncio.sleep(self.delay)
            response = web.Response(body=body, content_type="application/json")
            await response.prepare(request)
            await response.write_eof()
        finally:
            self.in_flight -= 1
        self.served.append(Served(arrived, time.perf_counter()))
        return response


async def _serve(size: int, delay: float) -> None:
    """Run the fake in its own process (bench/load.py), so its buffers stay out of our RSS."""
    upstream = FakeImagesUpstream(photo_like_png(size), delay=delay)
    async with upstream:
        app_stats = web.Application()

        async def stats(request: web.Request) -> web.Response:
            answer = {
                "served": len(upstream.served),
                "peak_in_flight": upstream.peak_in_flight,
                "image_bytes": len(upstream.image),
            }
            if request.query.get("reset"):
                upstream.peak_in_flight = upstream.in_flight
            return web.json_response(answer)

        app_stats.router.add_get("/stats", stats)
        runner = web.AppRunner(app_stats, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        stats_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(f"{upstream.base_url} http://127.0.0.1:{stats_port}/stats", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    import sys

    asyncio.run(_serve(int(sys.argv[1]), float(sys.argv[2])))
