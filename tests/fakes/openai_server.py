"""A fake OpenAI-compatible server (aiohttp ``web`` on loopback) for backend tests.

It speaks the OpenAI-compatible wire formats: Images generations/edits as JSON
or SSE (OpenAI's ``image_generation.*`` events or a relay's ``data[0]`` chunk), chat completions
carrying the image in every known way, ``/models``, and plain files for URL answers. Each test
configures the attributes it needs; every request is recorded for assertions.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import BodyPartReader, web

from . import LoopbackServer, make_png, sample_picture

ChatStyle = Literal["markdown", "markdown_url", "bare_url", "bare_b64", "parts", "images"]


def make_jpeg(width: int = 8, height: int = 8) -> bytes:
    """A small deterministic JPEG."""
    buffer = io.BytesIO()
    sample_picture(width, height, (30, 30, 200)).save(buffer, format="JPEG")
    return buffer.getvalue()


@dataclass(frozen=True)
class Part:
    """One multipart form part as received."""

    name: str
    filename: str | None
    content_type: str
    data: bytes


@dataclass
class Recorded:
    """One request as received."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any = None
    parts: list[Part] = field(default_factory=list)


@dataclass
class Reply:
    """A scripted answer (an error, a custom 200 body) served before the normal ones, in order."""

    status: int = 500
    body: Any = field(
        default_factory=lambda: {"error": {"message": "boom", "type": "server_error"}}
    )
    headers: dict[str, str] = field(default_factory=dict)
    events: list[Any] | None = None  # when set: a 200 SSE stream of these data payloads


class FakeOpenAI(LoopbackServer):
    """Configure the public attributes, then use as ``async with FakeOpenAI() as fake``."""

    def __init__(self) -> None:
        self.image = make_png()
        self.api_key = "sk-test"
        self.images_style: Literal["b64_json", "url"] = "b64_json"
        self.stream_style: Literal["events", "relay"] = "events"
        self.chat_style: ChatStyle = "markdown"
        self.answer: Literal["auto", "json", "sse"] = "auto"  # auto: SSE iff "stream" was asked
        self.partial_images = 0  # partial-image events sent before the completed one
        self.content_pieces = 1  # chat content split over this many deltas
        self.chunk_size = 0  # write bodies in pieces of this many bytes (0: one write)
        self.delay = 0.0  # seconds an images request waits before it is answered
        self.line_end = "\n"
        self.keepalive = False  # ": keep-alive" comments between events
        self.events: list[Any] | None = None  # SSE data payloads to send instead of the normal ones
        self.send_done = True
        self.cut_after: int | None = None  # close the connection after this many body bytes
        self.chunk_delay = 0.0  # seconds between body pieces (with chunk_size: a slow loris)
        self.hangups = 0  # next image requests answered by closing before any header
        self.endless = b""  # when set: image answers repeat this chunk forever (no length)
        self.sent_bytes = 0  # body bytes written by the last endless answer
        self.in_flight = 0
        self.peak_in_flight = 0  # most image requests handled at once
        self.replies: list[Reply] = []
        self.has_models = True  # False: no GET /models route (many relays), a plain 404
        self.files: dict[str, tuple[bytes, str]] = {}
        self.requests: list[Recorded] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/images/generations", self._images)
        app.router.add_post("/v1/images/edits", self._images)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/models", _not_allowed)
        app.router.add_get("/files/{name}", self._file)
        self.files.setdefault("image.png", (self.image, "image/png"))

    @property
    def base_url(self) -> str:
        """The ``base_url`` to configure (ends in ``/v1``)."""
        return self.url("/v1")

    @property
    def b64(self) -> str:
        return base64.b64encode(self.image).decode()

    # -- handlers ---------------------------------------------------------------------------

    async def _record(self, request: web.Request) -> Recorded:
        recorded = Recorded(request.method, request.path, dict(request.headers))
        if request.content_type == "multipart/form-data":
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                assert isinstance(part, BodyPartReader)
                recorded.parts.append(
                    Part(
                        name=part.name or "",
                        filename=part.filename,
                        content_type=part.headers.get("Content-Type", ""),
                        data=bytes(await part.read()),
                    )
                )
        elif request.can_read_body:
            recorded.json = await request.json()
        self.requests.append(recorded)
        return recorded

    async def _scripted(self, request: web.Request) -> web.StreamResponse | None:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response(
                {
                    "error": {
                        "message": "Incorrect API key provided: sk-wr****ong.",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "invalid_api_key",
                    }
                },
                status=401,
            )
        if self.replies:
            reply = self.replies.pop(0)
            if reply.events is not None:
                return await self._send_sse(request, reply.events)
            body = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
            return web.Response(
                status=reply.status,
                text=body,
                content_type="application/json",
                headers=reply.headers,
            )
        return None

    def _wants_sse(self, recorded: Recorded) -> bool:
        if self.answer != "auto":
            return self.answer == "sse"
        if recorded.json is not None:
            return bool(recorded.json.get("stream"))
        return any(p.name == "stream" and p.data == b"true" for p in recorded.parts)

    async def _images(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            return await self._images_answer(request)
        finally:
            self.in_flight -= 1

    async def _images_answer(self, request: web.Request) -> web.StreamResponse:
        recorded = await self._record(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.hangups:
            self.hangups -= 1
            assert request.transport is not None
            request.transport.close()  # the client sees the connection drop before headers
            return web.Response()
        if self.endless:
            return await self._send_endless(request)
        scripted = await self._scripted(request)
        if scripted is not None:
            return scripted
        if recorded.json is not None and not recorded.json.get("prompt"):
            return _invalid_request("Missing required parameter: 'prompt'.", "prompt")
        item = (
            {"url": self.url("/files/image.png"), "revised_prompt": None}
            if self.images_style == "url"
            else {"b64_json": self.b64, "revised_prompt": None}
        )
        if not self._wants_sse(recorded):
            return await self._send(request, json.dumps({"created": _now(), "data": [item]}))
        if self.events is not None:
            return await self._send_sse(request, self.events)
        if self.stream_style == "relay":
            return await self._send_sse(request, [{"created": _now(), "data": [item]}])
        kind = "image_edit" if request.path.endswith("/edits") else "image_generation"
        common = {
            "background": "opaque",
            "created_at": _now(),
            "output_format": "png",
            "quality": "high",
            "size": "1024x1024",
        }
        events: list[Any] = [
            {
                "type": f"{kind}.partial_image",
                "b64_json": "AAAA",
                "partial_image_index": i,
                **common,
            }
            for i in range(self.partial_images)
        ]
        usage = {
            "input_tokens": 10,
            "input_tokens_details": {"image_tokens": 0, "text_tokens": 10},
            "output_tokens": 100,
            "total_tokens": 110,
        }
        events.append({"type": f"{kind}.completed", "b64_json": self.b64, **common, "usage": usage})
        return await self._send_sse(request, events, named=True)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        recorded = await self._record(request)
        scripted = await self._scripted(request)
        if scripted is not None:
            return scripted
        if not recorded.json.get("messages"):
            return _invalid_request(
                "Invalid 'messages': empty array. Expected an array with minimum length 1, "
                "but got an empty array instead.",
                "messages",
                code="empty_array",
            )
        content, images = self._chat_content()
        base = {"id": "chatcmpl-1", "created": _now(), "model": "fake-image"}
        if not self._wants_sse(recorded):
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if images:
                message["images"] = images
            choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
            body = {**base, "object": "chat.completion", "choices": [choice]}
            return await self._send(request, json.dumps(body))
        if self.events is not None:
            return await self._send_sse(request, self.events)

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            return {**base, "object": "chat.completion.chunk", "choices": [choice]}

        events: list[Any] = [chunk({"role": "assistant", "content": ""})]
        if isinstance(content, str):
            step = -(-len(content) // self.content_pieces) or 1
            events += [
                chunk({"content": content[i : i + step]}) for i in range(0, len(content), step)
            ]
        else:
            events.append(chunk({"content": content}))
        if images:
            events.append(chunk({"content": "", "images": images}))
        events.append(chunk({}, "stop"))
        events.append({**base, "object": "chat.completion.chunk", "choices": [], "usage": None})
        return await self._send_sse(request, events)

    def _chat_content(self) -> tuple[Any, list[dict[str, Any]]]:
        data_url = f"data:image/png;base64,{self.b64}"
        file_url = self.url("/files/image.png")
        match self.chat_style:
            case "markdown":
                return f"好的，这是图片：\n![image]({data_url})\n", []
            case "markdown_url":
                return f"![generated]({file_url})", []
            case "bare_url":
                return f"Here it is: {file_url}", []
            case "bare_b64":
                return self.b64, []
            case "parts":
                return [
                    {"type": "text", "text": "here"},
                    {"type": "image_url", "image_url": {"url": data_url}},
                ], []
            case "images":
                return "", [{"type": "image_url", "image_url": {"url": data_url}, "index": 0}]

    async def _models(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        if not self.has_models:
            raise web.HTTPNotFound()
        scripted = await self._scripted(request)
        if scripted is not None:
            return scripted
        model = {"id": "gpt-image-1", "object": "model", "created": 0, "owned_by": "openai"}
        return web.json_response({"object": "list", "data": [model]})

    async def _file(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        name = request.match_info["name"]
        if name not in self.files:
            raise web.HTTPNotFound()
        data, content_type = self.files[name]
        return web.Response(body=data, content_type=content_type)

    # -- writing ----------------------------------------------------------------------------

    async def _send_sse(
        self, request: web.Request, events: list[Any], *, named: bool = False
    ) -> web.StreamResponse:
        end = self.line_end
        lines: list[str] = []
        for event in events:
            if self.keepalive:
                lines.append(f": keep-alive{end}{end}")
            data = event if isinstance(event, str) else json.dumps(event, ensure_ascii=False)
            name = f"event: {event['type']}{end}" if named and isinstance(event, dict) else ""
            lines.append(f"{name}data: {data}{end}{end}")
        if self.send_done:
            lines.append(f"data: [DONE]{end}{end}")
        return await self._send(request, "".join(lines), content_type="text/event-stream")

    async def _send(
        self, request: web.Request, text: str, *, content_type: str = "application/json"
    ) -> web.StreamResponse:
        body = text.encode()
        resp = web.StreamResponse(headers={"Content-Type": content_type})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        if self.cut_after is not None:
            body = body[: self.cut_after]
        size = self.chunk_size or len(body) or 1
        for start in range(0, len(body), size):
            await resp.write(body[start : start + size])
            if self.chunk_size:
                # Let each piece leave as its own read on the client.
                await asyncio.sleep(self.chunk_delay)
        if self.cut_after is not None:
            assert request.transport is not None
            request.transport.close()  # no terminating chunk: the client sees a cut stream
            return resp
        await resp.write_eof()
        return resp

    async def _send_endless(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        self.sent_bytes = 0
        try:
            while True:  # until the client hangs up
                await resp.write(self.endless)
                self.sent_bytes += len(self.endless)
        except (ConnectionError, RuntimeError):
            return resp


async def _not_allowed(request: web.Request) -> web.StreamResponse:
    raise web.HTTPMethodNotAllowed(request.method, ["GET"])


def _invalid_request(message: str, param: str, code: str | None = None) -> web.Response:
    """OpenAI's 400 for a request it will not run (nothing is generated or billed)."""
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return web.json_response({"error": error}, status=400)


def _now() -> int:
    return int(time.time())
