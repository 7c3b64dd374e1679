"""A fake OpenAI-compatible vision LLM (aiohttp ``web`` on loopback) that looks at the pictures.

``POST /v1/chat/completions`` checks every ``image_url`` content part the way the plugin promises
to send them, records what it saw, and answers from what it decoded, so a test can prove that a
picture reached the LLM: the answer is a prompt-writer JSON object whose prompt names the
dominant colour of each image in order (``{"prompt": "a red picture, a blue picture", …}``).
Answers come as one JSON body, or as ``chat.completion.chunk`` SSE events ending with
``data: [DONE]`` when the request says ``stream: true``. ``GET /v1/models`` lists the model.

The checks, each recorded in ``violations`` (and answered with a 400 whose message names no
image word, so a client's "this model is text-only" detection is not fooled into passing):

- parts are ``text`` or ``image_url``; images only in ``user`` messages;
- ``image_url.url`` starts with ``data:image/jpeg;base64,``, is at most 300 000 bytes, and
  decodes (strict base64) to a whole JPEG;
- ``image_url.detail`` is low, high or auto (``expect_detail`` when set); the longest side is at
  most 512 px for ``low``, else at most ``max_side``;
- at most ``max_images`` images in one request;
- the text part right before each image labels it (``参考图 N`` or ``群聊图片，来自 <昵称>``);
  references come first, numbered 1, 2, … in order, then chat pictures.

``mode`` picks how the model treats image parts: ``vision`` looks at them; ``refuse`` answers
400 ``image_url is not supported for this model`` (OpenAI-style text-only model); ``no_endpoints``
answers OpenRouter's 404 ``No endpoints found that support image input``. Requests without images
are answered in every mode, so a retry without images succeeds.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web
from PIL import Image

from . import LoopbackServer

Mode = Literal["vision", "refuse", "no_endpoints"]

DATA_URL_PREFIX = "data:image/jpeg;base64,"
MAX_DATA_URL_BYTES = 300_000
LOW_DETAIL_SIDE = 512
DETAILS = frozenset({"low", "high", "auto"})

REFUSE_BODY = {"error": {"message": "image_url is not supported for this model"}}
NO_ENDPOINTS_BODY = {
    "error": {"message": "No endpoints found that support image input", "code": 404}
}
VIOLATION_BODY = {"error": {"message": "fake LLM: request broke the contract (see violations)"}}

_LABEL = re.compile(r"参考图 ?(?P<ref>\d+)|群聊图片，来自 ?(?P<nick>[^\n」）)]+)")

PALETTE = {
    "red": (220, 30, 30),
    "green": (40, 170, 60),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 40),
    "orange": (245, 140, 30),
    "purple": (130, 50, 170),
    "pink": (245, 150, 190),
    "brown": (120, 70, 30),
    "cyan": (40, 200, 220),
    "white": (255, 255, 255),
    "grey": (128, 128, 128),
    "black": (0, 0, 0),
}
"""Colour names the fake answers with: the nearest entry to most of an image's pixels wins."""


@dataclass(frozen=True)
class SeenImage:
    """One image part as the fake decoded it."""

    label: str
    """The label found in the text part before it ("参考图 1", "群聊图片，来自 小明")."""
    colour: str
    width: int
    height: int
    detail: str
    data_url_bytes: int


@dataclass(frozen=True)
class SeenCall:
    """One chat request: its text parts joined by newlines, and the images in order."""

    text: str
    images: tuple[SeenImage, ...]
    stream: bool


class FakeVisionLlm(LoopbackServer):
    """Configure the attributes, enter it, point ``[llm].base_url`` at ``base_url``."""

    def __init__(self, mode: Mode = "vision", *, style: str = "anime") -> None:
        self.mode: Mode = mode
        self.style = style
        self.text_prompt = "a cat"
        """The prompt answered to a request without images."""
        self.max_images = 3
        self.max_side = 1024
        """Longest side allowed for ``detail`` high/auto (``vision_max_side``)."""
        self.expect_detail: str | None = None
        self.calls: list[SeenCall] = []
        self.violations: list[str] = []
        self.bodies: list[dict[str, Any]] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)

    @property
    def base_url(self) -> str:
        return self.url("/v1")

    @property
    def seen(self) -> list[SeenImage]:
        """Every image received so far, in order."""
        return [image for call in self.calls for image in call.images]

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "vision-model"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        problems: list[str] = []
        text, parts = _parts(body.get("messages"), problems)
        if parts and self.mode == "refuse":
            return web.json_response(REFUSE_BODY, status=400)
        if parts and self.mode == "no_endpoints":
            return web.json_response(NO_ENDPOINTS_BODY, status=404)
        images = self._check(parts, problems)
        if problems:
            self.violations += problems
            return web.json_response(VIOLATION_BODY, status=400)
        stream = bool(body.get("stream"))
        self.calls.append(SeenCall(text, tuple(images), stream))
        prompt = ", ".join(f"a {image.colour} picture" for image in images) or self.text_prompt
        answer = json.dumps({"prompt": prompt, "style": self.style})
        if stream:
            return await _stream(request, answer)
        return web.json_response(
            {
                "id": "chatcmpl-vision",
                "object": "chat.completion",
                "created": 0,
                "model": body.get("model"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer},
                        "finish_reason": "stop",
                    }
                ],
            }
        )

    def _check(
        self, parts: list[tuple[str, dict[str, Any]]], problems: list[str]
    ) -> list[SeenImage]:
        """Decode and check each ``(label text, image_url part)``; check count, labels, order."""
        if len(parts) > self.max_images:
            problems.append(f"{len(parts)} images, more than {self.max_images}")
        images: list[SeenImage] = []
        references = 0
        chat_seen = False
        for index, (label_text, part) in enumerate(parts, 1):
            image = self._decode(index, part, problems)
            labels = list(_LABEL.finditer(label_text))
            if not labels:
                problems.append(f"image {index}: no label in the text before it")
                label = ""
            else:
                match = labels[-1]
                label = match.group(0)
                if match["ref"] is not None:
                    references += 1
                    if chat_seen:
                        problems.append(f"image {index}: a reference after a chat picture")
                    if int(match["ref"]) != references:
                        problems.append(
                            f"image {index}: labelled {label}, expected 参考图 {references}"
                        )
                else:
                    chat_seen = True
            if image is not None:
                images.append(SeenImage(label, *image))
        return images

    def _decode(
        self, index: int, part: dict[str, Any], problems: list[str]
    ) -> tuple[str, int, int, str, int] | None:
        """``(colour, width, height, detail, data URL bytes)``, or None after a problem."""
        image_url = part.get("image_url")
        if not isinstance(image_url, dict):
            problems.append(f"image {index}: image_url is not an object")
            return None
        url, detail = image_url.get("url"), image_url.get("detail")
        if detail not in DETAILS or (self.expect_detail and detail != self.expect_detail):
            problems.append(f"image {index}: detail {detail!r}")
        if not isinstance(url, str) or not url.startswith(DATA_URL_PREFIX):
            problems.append(f"image {index}: not a JPEG data URL: {str(url)[:40]!r}")
            return None
        if len(url) > MAX_DATA_URL_BYTES:
            problems.append(f"image {index}: data URL of {len(url)} bytes")
        try:
            jpeg = base64.b64decode(url[len(DATA_URL_PREFIX) :], validate=True)
            with Image.open(io.BytesIO(jpeg), formats=["JPEG"]) as decoded:
                decoded.load()
                width, height = decoded.size
                colour = _dominant_colour(decoded)
        except (binascii.Error, OSError, SyntaxError, ValueError) as err:
            problems.append(f"image {index}: undecodable JPEG: {err}")
            return None
        limit = LOW_DETAIL_SIDE if detail == "low" else self.max_side
        if max(width, height) > limit:
            problems.append(f"image {index}: {width}x{height} for detail {detail!r}")
        return colour, width, height, str(detail), len(url)


def _parts(messages: Any, problems: list[str]) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
    """All text (joined), and each image part with the text part just before it."""
    texts: list[str] = []
    images: list[tuple[str, dict[str, Any]]] = []
    if not isinstance(messages, list):
        problems.append("messages is not a list")
        return "", images
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            texts.append(content)
            continue
        if not isinstance(content, list):
            problems.append(f"content is neither text nor a list: {content!r:.60}")
            continue
        before = ""
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                before = str(part.get("text", ""))
                texts.append(before)
            elif kind == "image_url":
                if message.get("role") != "user":
                    problems.append(f"an image in a {message.get('role')!r} message")
                images.append((before, part))
                before = ""
            else:
                problems.append(f"unknown content part {kind!r}")
    return "\n".join(texts), images


def _dominant_colour(image: Image.Image) -> str:
    """The palette name nearest to most pixels of a 32 px thumbnail."""
    small = image.convert("RGB").resize((32, 32))
    pixels = [small.getpixel((x, y)) for x in range(32) for y in range(32)]
    votes = Counter(_nearest(pixel) for pixel in pixels if isinstance(pixel, tuple))
    return votes.most_common(1)[0][0]


def _nearest(pixel: tuple[int, ...]) -> str:
    return min(
        PALETTE,
        key=lambda name: sum((a - b) ** 2 for a, b in zip(PALETTE[name], pixel[:3], strict=True)),
    )


async def _stream(request: web.Request, answer: str, piece_chars: int = 8) -> web.StreamResponse:
    """The answer as chat-completion chunks, then ``[DONE]``."""
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    deltas += [{"content": answer[i : i + piece_chars]} for i in range(0, len(answer), piece_chars)]
    for delta in deltas:
        await resp.write(f"data: {json.dumps(_chunk(delta, None))}\n\n".encode())
    await resp.write(f"data: {json.dumps(_chunk({}, 'stop'))}\n\n".encode())
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


def _chunk(delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-vision",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "vision-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
