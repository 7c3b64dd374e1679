"""OpenAI-compatible image backend: Images API (generations / edits) or Chat Completions.

Wire formats: the Images API (JSON and SSE) and chat answers carrying images (markdown data
URLs, markdown or bare http(s) URLs, bare base64, content-part lists,
OpenRouter ``message.images`` / ``delta.images``). Whether an answer is SSE or JSON is decided by
its Content-Type, not by what we asked for: relays answer either way.

Streamed chat content is accumulated and parsed once at the end, so a half-received base64 string
is never decoded into a truncated picture.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..exceptions import BackendUnavailableError, ContentPolicyError, StreamError, UpstreamError
from ..imaging import in_worker, sniff_mime
from ..settings import OpenAIBackendSettings, resolve_secret
from ..sse import ServerSentEvent
from ..transport import (
    RequestOptions,
    download,
    error_fields,
    is_content_policy,
    iter_events,
    open_response,
    parse_json_body,
    read_body,
    request_json,
    safe_excerpt,
    with_retries,
)
from .base import Aspect, GeneratedImage, GenerationRequest

if TYPE_CHECKING:
    import aiohttp  # imported lazily (transport.py says why)

ASPECT_SIZES: dict[Aspect, str] = {
    "landscape": "1536x1024",
    "portrait": "1024x1536",
    "square": "1024x1024",
}
"""The GPT-image sizes an aspect hint maps to (only when a size is configured at all)."""

DOWNLOAD_TIMEOUT = 60.0
DOWNLOAD_IDLE_TIMEOUT = 30.0
PROBE_TIMEOUT = 15.0
BASE64_SLICE = 512 * 1024
"""Base64 characters decoded or scanned per C call (a multiple of 4: every slice decodes alone).

Such a call holds the GIL for ~2 ms; the event loop waits for it on top of the 5 ms switch
interval, so a slice twice as long would push the loop's longest stall past 10 ms."""
WORKER_MIN_CHARS = 64 * 1024
"""Stream events and chat texts longer than this are parsed in the image worker."""
LONG_PAYLOAD = 4096
"""Data URL payloads longer than this are cut down to their ends before the URL patterns run."""
PAYLOAD_KEEP = 16
"""Characters kept at each end of a cut payload: a ``data``/``https`` touching it stays whole."""
MIN_BARE_BASE64 = 64
"""A chat text is taken for bare base64 only from this many base64 characters on."""

_MARKDOWN_IMAGE = re.compile(r"!\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?[^)]*\)")
_DATA_URL = re.compile(r"data:image/[\w.+-]+;base64,[A-Za-z0-9+/=_-]+")
_HTTP_URL = re.compile(r"https?://[^\s<>\"')\]]+")
_URL_PATTERNS = (
    (_MARKDOWN_IMAGE, "!", (0,), 1),
    (_DATA_URL, ":", (4,), 0),
    (_HTTP_URL, ":", (5, 4), 0),
)
"""In order of preference: pattern, a character every match holds (a memchr finds it in ~0.3 ms
per 8 MB; a longer literal takes ~20x that), how far before it a match starts, the group to take.
"""
_BASE64_MARK = ";base64,"
_PAYLOAD_RUN = re.compile(r"[A-Za-z0-9+/=_-]*")
"""A data URL payload as ``_DATA_URL`` reads it; every URL pattern accepts all its characters."""
_BARE_BASE64_RUN = re.compile(r"[A-Za-z0-9+/\r\n]*")
_RETRYABLE_STREAM_CODES = frozenset({"server_error", "internal_error", "overloaded", "timeout"})


@dataclass
class _ChatAnswer:
    """What a chat answer (JSON or accumulated stream) said, before we look for the image."""

    text: list[str] = field(default_factory=list)
    image_urls: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    streamed: bool = False
    done: bool = False  # a stream's [DONE] arrived


class OpenAIBackend:
    """``[backends.NAME]`` with ``type = "openai"``."""

    def __init__(
        self, name: str, settings: OpenAIBackendSettings, session: aiohttp.ClientSession
    ) -> None:
        self.name = name
        self._settings = settings
        self._session = session
        self._base_url = settings.base_url.rstrip("/")

    @property
    def supports_references(self) -> bool:
        """Images edits and chat image parts both take reference images."""
        return self._settings.supports_references

    async def generate(self, request: GenerationRequest) -> GeneratedImage:
        """Draw one image (retries included), or raise a ``BackendError``."""
        opts = self._options(self._settings.timeout)
        if self._settings.mode == "chat":
            url, read = f"{self._base_url}/chat/completions", self._chat_result
        elif request.references:
            url, read = f"{self._base_url}/images/edits", self._images_result
        else:
            url, read = f"{self._base_url}/images/generations", self._images_result

        async def attempt() -> GeneratedImage:
            # Built per attempt: an aiohttp FormData can be sent only once.
            payload, form = self._body(request)
            async with open_response(
                self._session, "POST", url, opts, json=payload, data=form
            ) as resp:
                return await read(resp, opts)

        return await with_retries(attempt, retries=self._settings.retries, backend=self.name)

    async def probe(self) -> str:
        """GET ``/models`` with the key: reachability and auth, no generation."""
        opts = self._options(PROBE_TIMEOUT)
        answer = await request_json(self._session, "GET", f"{self._base_url}/models", opts)
        models = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(models, list):
            return "reachable, key accepted"
        ids = {
            item["id"]
            for item in models
            if isinstance(item, dict) and isinstance(item.get("id"), str)
        }
        listed = "listed" if self._settings.model in ids else "not listed"
        return f"reachable, key accepted, {len(ids)} models ({self._settings.model} {listed})"

    # -- requests ---------------------------------------------------------------------------

    def _options(self, timeout: float) -> RequestOptions:
        api_key = resolve_secret(self._settings.api_key)
        if not api_key:
            raise BackendUnavailableError(
                f"{self.name}: api_key is empty",
                backend=self.name,
                user_message=f"绘图服务 {self.name} 未配置 api_key",
            )
        accept = "text/event-stream" if self._settings.use_sse else "application/json"
        return RequestOptions(
            backend=self.name,
            timeout=timeout,
            # Without SSE nothing arrives until the image is done, so "idle" is the whole call.
            read_timeout=timeout,
            proxy=self._settings.proxy or None,
            headers={"Authorization": f"Bearer {api_key}", "Accept": accept},
        )

    def _body(
        self, request: GenerationRequest
    ) -> tuple[dict[str, Any] | None, aiohttp.FormData | None]:
        """``(json, form)`` for the request: chat JSON, edits multipart or generations JSON."""
        if self._settings.mode == "chat":
            return self._chat_payload(request), None
        if request.references:
            return None, self._edit_form(request)
        return self._images_payload(request), None

    def _size(self, request: GenerationRequest) -> str:
        if self._settings.size and request.aspect is not None:
            return ASPECT_SIZES[request.aspect]
        return self._settings.size

    def _images_payload(self, request: GenerationRequest) -> dict[str, Any]:
        payload: dict[str, Any] = {"model": self._settings.model, "prompt": request.prompt, "n": 1}
        payload.update(self._optional_fields(request))
        payload.update(self._extra_fields())
        if self._settings.use_sse:
            payload["stream"] = True  # never partial_images: every partial image is billed
        return payload

    def _extra_fields(self) -> dict[str, Any]:
        """``extra_body`` without ``stream``: streaming follows ``use_sse`` only."""
        return {key: value for key, value in self._settings.extra_body.items() if key != "stream"}

    def _optional_fields(self, request: GenerationRequest) -> dict[str, str]:
        fields = {
            "size": self._size(request),
            "response_format": self._settings.response_format,
            "quality": self._settings.quality,
        }
        return {key: value for key, value in fields.items() if value}

    def _edit_form(self, request: GenerationRequest) -> aiohttp.FormData:
        import aiohttp

        form = aiohttp.FormData()
        form.add_field("model", self._settings.model)
        form.add_field("prompt", request.prompt)
        for key, value in self._optional_fields(request).items():
            form.add_field(key, value)
        if self._settings.use_sse:
            form.add_field("stream", "true")
        for index, reference in enumerate(request.references):
            # The API rejects application/octet-stream parts: send the type the bytes really have.
            mime = sniff_mime(reference.data) or reference.mime
            extension = mime.rpartition("/")[2].replace("jpeg", "jpg")
            form.add_field(
                "image[]", reference.data, filename=f"image{index}.{extension}", content_type=mime
            )
        return form

    def _chat_payload(self, request: GenerationRequest) -> dict[str, Any]:
        content: str | list[dict[str, Any]] = request.prompt
        if request.references:
            content = [{"type": "text", "text": request.prompt}]
            for reference in request.references:
                mime = sniff_mime(reference.data) or reference.mime
                encoded = base64.b64encode(reference.data).decode("ascii")
                url = f"data:{mime};base64,{encoded}"
                content.append({"type": "image_url", "image_url": {"url": url}})
        payload: dict[str, Any] = {
            "model": self._settings.model,
            "messages": [{"role": "user", "content": content}],
        }
        size = self._size(request)
        if size:
            payload["size"] = size  # relays for image models read it
        payload.update(self._extra_fields())
        if self._settings.use_sse:
            payload["stream"] = True
        return payload

    # -- images answers ---------------------------------------------------------------------

    async def _images_result(
        self, resp: aiohttp.ClientResponse, opts: RequestOptions
    ) -> GeneratedImage:
        if not _is_event_stream(resp):
            # A multi-MB JSON body is parsed in the image worker, off the event loop.
            body = await read_body(resp, opts)
            answer = await in_worker(parse_json_body, body, resp.content_type, opts)
            self._raise_in_band_error(answer)
            item = _first_item(answer)
            if item is None:
                raise self._upstream("the images answer has no data[0]")
            return await self._image_from_item(item, opts)
        async for event in iter_events(resp, opts):
            payload = await self._event_json(event)
            if payload is None:
                break
            # Dispatch on the JSON "type", not on "event:" (openai-python does the same).
            kind = str(payload.get("type", ""))
            if kind.endswith(".partial_image"):
                continue
            if kind.endswith(".completed") and payload.get("b64_json"):
                return await self._image_from_item(payload, opts)
            item = _first_item(payload)
            if item is not None:
                return await self._image_from_item(item, opts)  # relays: data[0] in a chunk
        raise self._cut("the image stream ended before the image arrived")

    async def _image_from_item(self, item: dict[str, Any], opts: RequestOptions) -> GeneratedImage:
        encoded = item.get("b64_json")
        if isinstance(encoded, str) and encoded:
            return self._image(await self._b64decode(encoded))
        url = item.get("url")
        if isinstance(url, str) and url:
            return await self._image_from_url(url, opts)
        raise self._upstream("the answer holds neither b64_json nor url")

    # -- chat answers -----------------------------------------------------------------------

    async def _chat_result(
        self, resp: aiohttp.ClientResponse, opts: RequestOptions
    ) -> GeneratedImage:
        answer = _ChatAnswer()
        if _is_event_stream(resp):
            answer.streamed = True
            async for event in iter_events(resp, opts):
                chunk = await self._event_json(event)
                if chunk is None:
                    answer.done = True
                    break
                for choice in _list(chunk.get("choices")):
                    if isinstance(choice, dict):
                        self._collect(answer, choice.get("delta"), choice.get("finish_reason"))
        else:
            raw = await read_body(resp, opts)
            body = await in_worker(parse_json_body, raw, resp.content_type, opts)
            self._raise_in_band_error(body)
            for choice in _list(body.get("choices") if isinstance(body, dict) else None):
                if isinstance(choice, dict):
                    self._collect(answer, choice.get("message"), choice.get("finish_reason"))
        return await self._image_from_chat(answer, opts)

    def _collect(self, answer: _ChatAnswer, message: Any, finish_reason: Any) -> None:
        """Add one message or delta to the answer; nothing is parsed until the answer is whole."""
        if finish_reason:
            answer.finish_reason = str(finish_reason)
        if not isinstance(message, dict):
            return
        content = message.get("content")
        if isinstance(content, str):
            answer.text.append(content)
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, dict):
                    continue
                if part.get("type") == "text" and isinstance(part.get("text"), str):
                    answer.text.append(part["text"])
                answer.image_urls += _image_url_of(part)
        for image in _list(message.get("images")):
            answer.image_urls += _image_url_of(image)

    async def _image_from_chat(self, answer: _ChatAnswer, opts: RequestOptions) -> GeneratedImage:
        if answer.streamed and not answer.done and answer.finish_reason is None:
            # Ended without [DONE] or a finish_reason: whatever base64 we hold may be truncated.
            raise self._cut("the chat stream ended before it finished")
        if answer.finish_reason == "content_filter":
            raise ContentPolicyError(
                f"{self.name}: finish_reason content_filter",
                backend=self.name,
                status=200,
                user_message=f"绘图服务 {self.name} 拒绝了这个请求（内容审核未通过）",
            )
        if answer.finish_reason == "error":
            error = UpstreamError(
                f"{self.name}: finish_reason error",
                backend=self.name,
                user_message=f"绘图服务 {self.name} 生成失败",
            )
            error.retryable = True  # OpenRouter: the provider dropped; another try may work
            raise error
        if answer.image_urls:
            return await self._image_from_url(answer.image_urls[0], opts)
        text = "".join(answer.text)
        # Searching megabytes of text takes tens of ms even done cheaply: not on the loop.
        big = len(text) > WORKER_MIN_CHARS
        found = await in_worker(_image_in_text, text) if big else _image_in_text(text)
        if found is not None:
            kind, value = found
            if kind == "url":
                return await self._image_from_url(value, opts)
            return self._image(await self._b64decode(value))
        raise UpstreamError(
            f"{self.name}: the model answered without an image: {safe_excerpt(text.encode())}",
            backend=self.name,
            user_message=f"绘图服务 {self.name} 没有返回图片",
        )

    # -- shared -----------------------------------------------------------------------------

    async def _event_json(self, event: ServerSentEvent) -> dict[str, Any] | None:
        """The JSON object an event carries; ``None`` for ``[DONE]``; in-band errors raise."""
        data = event.data.strip()
        if data.startswith("[DONE]"):
            return None
        try:
            # An event holding a whole image (~20 ms to parse at 2048²) is parsed off the loop;
            # small chat deltas are not worth a thread hop.
            big = len(data) > WORKER_MIN_CHARS
            payload = await in_worker(json.loads, data) if big else json.loads(data)
        except (ValueError, RecursionError) as err:  # RecursionError: nested too deeply
            raise self._cut(f"malformed stream event: {safe_excerpt(data.encode())}") from err
        if not isinstance(payload, dict):
            return {}
        self._raise_in_band_error(payload)
        return payload

    def _raise_in_band_error(self, payload: Any) -> None:
        """An ``{"error": {...}}`` object inside a 200 answer or a stream becomes a typed error."""
        if not isinstance(payload, dict) or not payload.get("error"):
            return
        code, message = error_fields(payload) or ("", str(payload["error"]))
        excerpt = safe_excerpt(message.encode())
        if is_content_policy(code, message):
            raise ContentPolicyError(
                f"{self.name}: refused in stream: {code}: {excerpt}",
                backend=self.name,
                status=400,
                body=excerpt,
                user_message=f"绘图服务 {self.name} 拒绝了这个请求（内容审核未通过）",
            )
        failure = UpstreamError(
            f"{self.name}: error in answer: {code}: {excerpt}",
            backend=self.name,
            user_message=f"绘图服务 {self.name} 出错：{excerpt[:80] or code}",
        )
        failure.retryable = code in _RETRYABLE_STREAM_CODES or code.startswith(("5", "429"))
        raise failure

    async def _image_from_url(self, url: str, opts: RequestOptions) -> GeneratedImage:
        if url.startswith("data:"):
            header, _, encoded = url.partition(",")
            if not header.endswith(";base64"):
                raise self._upstream("a data URL that is not base64")
            return self._image(await self._b64decode(encoded))
        # No Authorization header: the URL may point at any host.
        download_opts = RequestOptions(
            backend=self.name,
            timeout=DOWNLOAD_TIMEOUT,
            read_timeout=DOWNLOAD_IDLE_TIMEOUT,
            proxy=opts.proxy,
            max_bytes=opts.max_bytes,
        )
        data, _ = await download(self._session, url, download_opts)
        return self._image(data)

    async def _b64decode(self, text: str) -> bytes:
        if text.startswith("data:"):
            text = text.partition(",")[2]  # xAI prefixes b64_json with a data URL header
        try:
            return await in_worker(_decode_base64, text)
        except (binascii.Error, ValueError):
            pass
        # Tolerate line breaks and missing padding, but nothing else.
        try:
            return await in_worker(_decode_base64, await in_worker(_compact_base64, text))
        except (binascii.Error, ValueError) as err:
            raise self._upstream("the image is not valid base64") from err

    def _image(self, data: bytes) -> GeneratedImage:
        mime = sniff_mime(data)
        if mime is None:
            raise self._upstream(f"the bytes returned are not an image ({len(data)} bytes)")
        return GeneratedImage(data=data, mime=mime, backend=self.name)

    def _upstream(self, reason: str) -> UpstreamError:
        return UpstreamError(
            f"{self.name}: {reason}",
            backend=self.name,
            user_message=f"绘图服务 {self.name} 返回的图片无效",
        )

    def _cut(self, reason: str) -> StreamError:
        return StreamError(f"{self.name}: {reason}", backend=self.name)


def _decode_base64(text: str) -> bytes:
    """Strict base64 decoding (run in the image worker), one slice per C call.

    One call over a whole image holds the GIL throughout (~12 ms for a 1024² PNG, ~45 ms at
    2048²), and with it the event loop; between ~2 ms slices the loop can take the GIL back.
    """
    if len(text) <= BASE64_SLICE:
        return base64.b64decode(text, validate=True)
    pieces = []
    for start in range(0, len(text), BASE64_SLICE):
        piece = text[start : start + BASE64_SLICE]
        if piece.endswith("=") and start + BASE64_SLICE < len(text):
            raise binascii.Error("padding before the end of the data")
        pieces.append(base64.b64decode(piece, validate=True))
    return b"".join(pieces)


def _compact_base64(text: str) -> str:
    """``text`` without whitespace, padded to a multiple of 4 (in the worker, a slice per call)."""
    pieces = [
        "".join(text[start : start + BASE64_SLICE].split())
        for start in range(0, len(text), BASE64_SLICE)
    ]
    compact = "".join(pieces)
    return compact + "=" * (-len(compact) % 4)


def _is_event_stream(resp: aiohttp.ClientResponse) -> bool:
    return resp.content_type == "text/event-stream"


def _list(value: Any) -> list[Any]:
    """``value`` when the upstream sent a JSON array there, else nothing to iterate."""
    return value if isinstance(value, list) else []


def _first_item(answer: Any) -> dict[str, Any] | None:
    """``answer["data"][0]`` of an images answer, if there is one."""
    data = answer.get("data") if isinstance(answer, dict) else None
    if isinstance(data, list) and data and isinstance(data[0], dict):
        return data[0]
    return None


def _image_url_of(part: Any) -> list[str]:
    """The URL of an ``{"type": "image_url", "image_url": {"url": ...}}`` part, if it is one."""
    if not isinstance(part, dict):
        return []
    image_url = part.get("image_url")
    if isinstance(image_url, dict):
        image_url = image_url.get("url")
    return [image_url] if isinstance(image_url, str) and image_url else []


def _image_in_text(text: str) -> tuple[Literal["url", "base64"], str] | None:
    """The image a chat text holds: a URL (``_url_in_text``), else the text itself if it is all
    base64, else ``None``. Linear in the text, and no single call walks more than a slice of it.
    """
    url = _url_in_text(text)
    if url is not None:
        return "url", url
    stripped = text.strip()
    end = _run_end(_BARE_BASE64_RUN, stripped, 0)
    if end >= MIN_BARE_BASE64 and stripped[end:] in ("", "=", "=="):
        return "base64", stripped
    return None


def _url_in_text(text: str) -> str | None:
    """The first image reference in chat text: markdown image, data URL, then bare http(s) URL.

    The patterns run on a copy with long data URL payloads cut down to their ends, and only where
    ``str.find`` sees their literal start: the regex engine never walks megabytes of base64.
    """
    skeleton, cuts = _without_long_payloads(text)
    for pattern, anchor, offsets, group in _URL_PATTERNS:
        at = skeleton.find(anchor)
        while at != -1:
            for offset in offsets:
                match = pattern.match(skeleton, at - offset) if at >= offset else None
                if match is not None:
                    start, end = match.span(group)
                    return _sliced_copy(text, _unskeleton(start, cuts), _unskeleton(end, cuts))
            at = skeleton.find(anchor, at + 1)
    return None


def _without_long_payloads(text: str) -> tuple[str, list[tuple[int, int]]]:
    """``text`` with each data URL payload over ``LONG_PAYLOAD`` cut to its two ends, and the cuts.

    Every URL pattern accepts all payload characters and no match starts or ends inside a
    payload's middle, so the patterns match the copy as they would the text. A cut
    ``(position, shift)``: copy positions from ``position`` on are ``shift`` less than in ``text``.
    """
    pieces: list[str] = []
    cuts: list[tuple[int, int]] = []
    copied = removed = 0
    comma = text.find(",")  # one character: a memchr (see _URL_PATTERNS)
    while comma != -1:
        start = comma + 1
        end = start
        if text.startswith(_BASE64_MARK, start - len(_BASE64_MARK)):
            end = _run_end(_PAYLOAD_RUN, text, start)
        if end - start > LONG_PAYLOAD:
            pieces.append(text[copied : start + PAYLOAD_KEEP])
            position = start + PAYLOAD_KEEP - removed
            copied = end - PAYLOAD_KEEP
            removed += copied - (start + PAYLOAD_KEEP)
            cuts.append((position, removed))
        comma = text.find(",", end)
    if not cuts:
        return text, cuts
    pieces.append(text[copied:])
    return "".join(pieces), cuts


def _unskeleton(position: int, cuts: list[tuple[int, int]]) -> int:
    """A position in ``_without_long_payloads``'s copy → the same position in the text."""
    shift = 0
    for cut, removed in cuts:
        if position < cut:
            break
        shift = removed
    return position + shift


def _sliced_copy(text: str, start: int, end: int) -> str:
    """``text[start:end]``, a slice per C call: a data URL copied out of text holding Chinese is
    narrowed from 2 bytes a character to 1 (~5 ms for 8 MB in one call)."""
    if end - start <= BASE64_SLICE:
        return text[start:end]
    return "".join(text[i : min(i + BASE64_SLICE, end)] for i in range(start, end, BASE64_SLICE))


def _run_end(run: re.Pattern[str], text: str, start: int) -> int:
    """Where the run of ``run``'s characters from ``start`` ends, one slice per regex call.

    The regex engine holds the GIL (~4 ms per MB here), and with it the event loop; between
    slices the loop can take the GIL back.
    """
    position = start
    while True:
        stop = min(position + BASE64_SLICE, len(text))
        match = run.match(text, position, stop)
        end = match.end() if match is not None else position
        if end < stop or stop == len(text):
            return end
        position = stop
