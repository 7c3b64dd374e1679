"""A loopback TCP server that answers HTTP with raw bytes, for faults aiohttp's web cannot make.

Each connection reads one request (head and ``Content-Length`` body), takes the next scripted
answer and writes it verbatim, then closes: ``None`` closes before any header, and the bytes may
carry a ``Content-Length`` that lies or a body that is not what its headers claim.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any


def http_response(
    body: bytes | str | Any,
    *,
    status: str = "200 OK",
    content_type: str = "application/json",
    content_length: int | None = None,
) -> bytes:
    """One raw HTTP/1.1 answer; ``content_length`` overrides the true length (to lie)."""
    if not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    data = body.encode() if isinstance(body, str) else body
    length = len(data) if content_length is None else content_length
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + data


class RawHttpServer:
    """``async with RawHttpServer() as raw``; append answers to ``script`` (bytes or None)."""

    def __init__(self) -> None:
        self.script: list[bytes | None] = []
        self.fallback: bytes | None = None
        """Answer once ``script`` is used up (None: close at once)."""
        self.connections = 0
        self.stall = 0.0
        """Seconds to wait after reading a request before answering (a hung upstream)."""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> RawHttpServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: an OpenAI-style base for backends."""
        return self.url("/v1")

    def url(self, path: str) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}{path}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if length:
                await reader.readexactly(length)
            await asyncio.sleep(self.stall)
            answer = self.script.pop(0) if self.script else self.fallback
            if answer is not None:
                writer.write(answer)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
