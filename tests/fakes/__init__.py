"""Local fake upstreams for tests: each an aiohttp app on 127.0.0.1 with a free port."""

from __future__ import annotations

import io
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from PIL import Image

MAX_REQUEST_BYTES = 64 * 1024 * 1024
"""Largest request a fake accepts (image edits upload reference images)."""


def sample_picture(width: int, height: int, color: tuple[int, int, int]) -> Image.Image:
    """A ``color`` picture with a black or white block over its bottom-right quarter.

    Not blank (the plugin withholds blank results as a safety filter's placeholders), still tiny
    as PNG, and its top-left pixel is ``color``.
    """
    image = Image.new("RGB", (width, height), color)
    red, green, blue = color
    block = (0, 0, 0) if red * 299 + green * 587 + blue * 114 > 127_500 else (255, 255, 255)
    image.paste(block, (width // 2, height // 2, width, height))
    return image


def make_png(width: int = 8, height: int = 8, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A small deterministic PNG (``sample_picture``)."""
    buffer = io.BytesIO()
    sample_picture(width, height, color).save(buffer, format="PNG")
    return buffer.getvalue()


class LoopbackServer:
    """Serve the routes a subclass adds in ``routes``; use as ``async with Fake() as fake``."""

    _server: TestServer | None = None

    def routes(self, app: web.Application) -> None:
        """Add this fake's handlers to ``app``."""
        raise NotImplementedError

    async def __aenter__(self) -> Any:
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        self.routes(app)
        self._server = TestServer(app, host="127.0.0.1", port=0)
        await self._server.start_server()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        await self._server.close()

    def url(self, path: str) -> str:
        """An absolute URL on this server."""
        assert self._server is not None
        return str(self._server.make_url(path))
