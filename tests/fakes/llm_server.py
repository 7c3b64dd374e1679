"""A fake OpenAI-compatible chat LLM (aiohttp ``web`` on loopback) answering TEXT, for the writer.

``POST /v1/chat/completions`` answers ``answer`` as one JSON body, or, when the request asks for
``stream: true``, as ``chat.completion.chunk`` SSE events (``choices[0].delta.content``) ending
with ``data: [DONE]``. ``GET /v1/models`` lists ``models``.
Tests set ``status``/``error_body`` for failures (``answer_error`` for an error inside a 200
answer, ``finish_reason`` for a ``content_filter`` stop), ``delay`` for slow answers, ``has_models``
/``api_key`` for relays without ``/models`` or with a key, and read the recorded
``bodies``/``headers``. An empty ``messages`` list gets OpenAI's 400, as the real API does.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from . import LoopbackServer


class FakeLlm(LoopbackServer):
    """Configure the attributes, enter it, point ``[llm].base_url`` at ``base_url``."""

    def __init__(self, answer: str = '{"prompt": "a cat", "style": "anime"}') -> None:
        self.answer = answer
        self.status = 200
        self.error_body = '{"error": {"message": "boom", "type": "server_error"}}'
        self.delay = 0.0
        self.chunk_chars = 4
        """Characters of ``answer`` per streamed chunk (small: exercises accumulation)."""
        self.ignore_stream = False
        """Answer with one JSON body even when streaming was asked for (some relays do)."""
        self.stream_error: str | None = None
        """Send an in-band ``{"error": …}`` chunk after the first content chunk."""
        self.models = ["test-model"]
        self.models_status = 200
        self.has_models = True
        """False: no ``GET /models`` route at all (many relays): a plain 404."""
        self.api_key: str | None = None
        """When set, any other bearer token (or none) gets OpenAI's 401."""
        self.answer_error: dict[str, Any] | None = None
        """When set: a 200 JSON body holding only this ``{"error": …}`` object (a relay's way)."""
        self.finish_reason = "stop"
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.paths: list[str] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)

    @property
    def base_url(self) -> str:
        return self.url("/v1")

    def _denied(self, request: web.Request) -> web.Response | None:
        """OpenAI's 401 when ``api_key`` is set and the request does not carry it."""
        if self.api_key is None:
            return None
        if request.headers.get("Authorization") == f"Bearer {self.api_key}":
            return None
        return _invalid_key()

    def _record(self, request: web.Request) -> None:
        self.paths.append(request.path)
        self.headers.append(dict(request.headers))

    async def _models(self, request: web.Request) -> web.Response:
        self._record(request)
        if not self.has_models:
            raise web.HTTPNotFound()
        if (denied := self._denied(request)) is not None:
            return denied
        if self.models_status != 200:
            return web.Response(status=self.models_status, text=self.error_body)
        data = [{"id": name, "object": "model", "owned_by": "fake"} for name in self.models]
        return web.json_response({"object": "list", "data": data})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        body = await request.json()
        self.bodies.append(body)
        if self.delay:
            await asyncio.sleep(self.delay)
        if (denied := self._denied(request)) is not None:
            return denied
        if self.status != 200:
            return web.Response(
                status=self.status, text=self.error_body, content_type="application/json"
            )
        if not body.get("messages"):
            error = {
                "message": "Invalid 'messages': empty array. Expected an array with minimum "
                "length 1, but got an empty array instead.",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "empty_array",
            }
            return web.json_response({"error": error}, status=400)
        if self.answer_error is not None:
            return web.json_response({"error": self.answer_error})
        if body.get("stream") and not self.ignore_stream:
            return await self._stream(request)
        return web.json_response(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "model": body.get("model"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": self.answer},
                        "finish_reason": self.finish_reason,
                    }
                ],
            }
        )

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        async def send(payload: Any) -> None:
            data = payload if isinstance(payload, str) else json.dumps(payload)
            await resp.write(f"data: {data}\n\n".encode())

        await send(_chunk({"role": "assistant", "content": ""}))
        pieces = [
            self.answer[i : i + self.chunk_chars]
            for i in range(0, len(self.answer), self.chunk_chars)
        ]
        for index, piece in enumerate(pieces):
            await send(_chunk({"content": piece}))
            if index == 0 and self.stream_error is not None:
                await send({"error": {"message": self.stream_error, "type": "server_error"}})
        await send(_chunk({}, finish_reason=self.finish_reason))
        await send("[DONE]")
        await resp.write_eof()
        return resp


def _invalid_key() -> web.Response:
    error = {
        "message": "Incorrect API key provided: sk-wr****ong.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
    return web.json_response({"error": error}, status=401)


def _chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
