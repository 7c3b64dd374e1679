"""A fake Gradio app (aiohttp ``web`` on loopback) for faults a real Gradio app cannot produce.

It speaks Gradio's simple ``/call`` API:
``GET /config`` (with ``api_prefix`` like Gradio 5+/6, or without like Gradio 4),
``POST {prefix}/call/{api}``, the SSE result stream (whose raw bytes each test chooses: ``error``
with ``null`` or text, heartbeats, a cut), ``POST {prefix}/upload`` and ``GET {prefix}/file=…``.
Every request is recorded for assertions.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from . import LoopbackServer, make_png

IMAGE_PATH = "/tmp/gradio/0123abcd/image.png"
UPLOAD_PATH = "/tmp/gradio/feedbeef/reference.png"


def sse(event: str, data: Any) -> bytes:
    """One event framed exactly like Gradio's ``/call`` stream (LF, ``json.dumps`` data)."""
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def file_data(path: str | None = IMAGE_PATH, url: str | None = None) -> dict[str, Any]:
    """A FileData output as Gradio serialises it."""
    return {
        "path": path,
        "url": url,
        "size": None,
        "orig_name": None,
        "mime_type": None,
        "is_stream": False,
        "meta": {"_type": "gradio.FileData"},
    }


def zimage_outputs(image: Any = None, seed: int = 123456) -> list[Any]:
    """The Z-Image-Turbo ``complete`` data: gallery, "seed used", seed."""
    item = file_data() if image is None else image
    return [[{"image": item, "caption": None}], str(seed), seed]


@dataclass
class Recorded:
    """One request as received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class FakeGradio(LoopbackServer):
    """Configure the public attributes, then use as ``async with FakeGradio() as fake``."""

    def __init__(self, *, prefix: str = "/gradio_api") -> None:
        self.prefix = prefix
        """"" emulates Gradio 4: no ``api_prefix`` in /config, every route at the root."""
        self.version = "6.0.0" if prefix else "4.44.1"
        self.stream: list[bytes] = [sse("complete", zimage_outputs())]
        """Raw chunks of the result stream, written in order with ``stream_delay`` between."""
        self.stream_delay = 0.0
        self.cut_stream = False
        """Drop the connection after the chunks instead of ending the response."""
        self.call_failures: list[int] = []
        """Statuses answered to the next ``/call`` POSTs (consumed in order) before succeeding."""
        self.files: dict[str, bytes] = {IMAGE_PATH: make_png()}
        self.oversized_file = b""
        """When set, every file is this chunk repeated forever (no Content-Length)."""
        self.requests: list[Recorded] = []
        self.resolution_choices: list[Any] | None = None
        """When set, /config lists a dropdown with these choices as /generate's second input."""

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/config", self._config)
        app.router.add_post(self.prefix + "/call/{api}", self._call)
        app.router.add_get(self.prefix + "/call/{api}/{event_id}", self._result)
        app.router.add_post(self.prefix + "/upload", self._upload)
        # "/file=<path>" is one path segment followed by the file's own path.
        app.router.add_get(self.prefix + "/{file:file=.*}", self._file)

    @property
    def base_url(self) -> str:
        """The app root, as a user would configure it."""
        return self.url("").rstrip("/")

    def paths(self, method: str = "") -> list[str]:
        """Paths requested so far (optionally only one method)."""
        return [r.path for r in self.requests if not method or r.method == method]

    def call_bodies(self) -> list[Any]:
        """The JSON bodies of every ``/call`` POST so far."""
        return [json.loads(r.body) for r in self.requests if r.path.endswith("/call/generate")]

    async def _record(self, request: web.Request) -> Recorded:
        recorded = Recorded(
            request.method, request.path, dict(request.headers), await request.read()
        )
        self.requests.append(recorded)
        return recorded

    async def _config(self, request: web.Request) -> web.Response:
        await self._record(request)
        config: dict[str, Any] = {
            "version": self.version,
            "protocol": "sse_v3",
            "dependencies": [{"id": 0, "api_name": "generate"}],
        }
        if self.resolution_choices is not None:  # the shape Gradio 4 to 6 serve
            config["components"] = [
                {"id": 1, "type": "textbox", "props": {}},
                {"id": 2, "type": "dropdown", "props": {"choices": self.resolution_choices}},
            ]
            config["dependencies"][0]["inputs"] = [1, 2, 3, 4, 5, 6, 7]
        if self.prefix:
            config["api_prefix"] = self.prefix
        return web.json_response(config)

    async def _call(self, request: web.Request) -> web.Response:
        await self._record(request)
        if self.call_failures:
            status = self.call_failures.pop(0)
            return web.json_response({"detail": "Queue is full."}, status=status)
        return web.json_response({"event_id": "e0123"})

    async def _result(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await response.prepare(request)
        for chunk in self.stream:
            await response.write(chunk)
            await asyncio.sleep(self.stream_delay)
        if self.cut_stream:
            assert request.transport is not None
            request.transport.close()
            return response
        await response.write_eof()
        return response

    async def _upload(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response([UPLOAD_PATH])

    async def _file(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        path = request.match_info["file"].removeprefix("file=")
        if self.oversized_file:
            response = web.StreamResponse(headers={"Content-Type": "image/png"})
            await response.prepare(request)
            while True:  # until the client hangs up
                await response.write(self.oversized_file)
        if path not in self.files:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=self.files[path], content_type="image/png")
