"""The OpenAI-compatible API on the wire, once for the prompt writer and the ``openai`` backend.

Request side: typed chat messages whose content is a string or a tuple of parts (text, and
``image_url`` parts with data URLs and a ``detail``), turned into the JSON body in one place.

Answer side: whether an answer is SSE or JSON is decided by its Content-Type before anything is
decoded (relays answer either way, whatever was asked; an HTML page means ``base_url`` points at a
website, not at the API). JSON and streamed answers become one typed ``ChatAnswer``; a streamed
answer is accumulated and judged only when whole, so half a base64 string is never taken for an
image. In-band errors (an ``{"error": …}`` object in a 200 answer or a stream, ``finish_reason``
``content_filter``/``error``) map to the same typed errors as HTTP statuses do.

Probing (``check``): ``GET /models``; where a relay has no such route (404/405), an empty request
to the generation path, which generates nothing: its 400/422 proves reach and auth.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .exceptions import (
    BackendStatusError,
    ContentPolicyError,
    EndpointNotFoundError,
    StreamError,
    UpstreamError,
    classify_upstream,
)
from .sse import ServerSentEvent
from .transport import (
    ProbeResult,
    RequestOptions,
    error_fields,
    iter_events,
    open_response,
    parse_json_body,
    read_body,
    request_json,
    safe_excerpt,
)
from .worker import in_worker

if TYPE_CHECKING:
    import aiohttp  # imported lazily (transport.py says why)

Role = Literal["system", "user", "assistant"]
ImageDetail = Literal["low", "high", "auto"]

WORKER_MIN_CHARS = 64 * 1024
"""JSON bodies and stream events longer than this are parsed in the image worker, off the loop."""

RETRYABLE_ERROR_CODES = frozenset({"server_error", "internal_error", "overloaded", "timeout"})
"""In-band error codes worth another attempt (besides numeric 5xx/429 codes)."""

NO_MODELS_STATUSES = frozenset({404, 405})
"""``GET /models`` answers meaning "no such route here" rather than "broken"."""

REFUSED_EMPTY_STATUSES = frozenset({400, 422})
"""What an empty generation request gets from a reachable API that accepted the key."""


@dataclass(frozen=True)
class TextPart:
    """A text content part."""

    text: str


@dataclass(frozen=True)
class ImagePart:
    """An image content part: an http(s) or ``data:image/…;base64,`` URL."""

    url: str
    detail: ImageDetail | None = None


ContentPart = TextPart | ImagePart


@dataclass(frozen=True)
class ChatMessage:
    """One message; ``content`` is plain text or a tuple of parts (text and images)."""

    role: Role
    content: str | tuple[ContentPart, ...]

    def wire(self) -> dict[str, Any]:
        """The message as the API takes it."""
        if isinstance(self.content, str):
            return {"role": self.role, "content": self.content}
        return {"role": self.role, "content": [_part_wire(part) for part in self.content]}


@dataclass(frozen=True)
class ChatRequest:
    """A ``POST /chat/completions`` body; ``extra`` fields (``size``, ``extra_body``) go last."""

    model: str
    messages: tuple[ChatMessage, ...]
    stream: bool | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        """The JSON body; unset options are left out."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [message.wire() for message in self.messages],
        }
        options = {
            "stream": self.stream,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        body.update({key: value for key, value in options.items() if value is not None})
        body.update(self.extra)
        return body


@dataclass(frozen=True)
class ChatAnswer:
    """A whole chat answer (JSON, or a stream that finished): its text and image URLs."""

    text_parts: tuple[str, ...] = ()
    image_urls: tuple[str, ...] = ()
    """Images given as parts or as OpenRouter's ``message.images``; URLs inside the text are not."""
    finish_reason: str | None = None

    @property
    def text(self) -> str:
        """The content text, joined."""
        return "".join(self.text_parts)


ENDPOINT_PATHS = ("/chat/completions", "/images/generations", "/images/edits")
"""The endpoints a ``base_url`` is often pasted with (copied from a relay's docs)."""


def api_url(base_url: str, path: str) -> str:
    """``base_url`` + ``/path``; a pasted full endpoint URL is cut back to its API base."""
    base = base_url.rstrip("/")
    for endpoint in ENDPOINT_PATHS:
        base = base.removesuffix(endpoint)
    return f"{base}/{path}"


async def post_chat(
    session: aiohttp.ClientSession, base_url: str, request: ChatRequest, opts: RequestOptions
) -> ChatAnswer:
    """POST one chat completion and return the whole answer, or raise a typed ``BackendError``."""
    url = api_url(base_url, "chat/completions")
    async with open_response(session, "POST", url, opts, json=request.body()) as resp:
        return await read_chat_answer(resp, opts)


async def read_chat_answer(resp: aiohttp.ClientResponse, opts: RequestOptions) -> ChatAnswer:
    """The answer a 2xx chat response holds, streamed or not."""
    parts: list[str] = []
    urls: list[str] = []
    finish: str | None = None
    if is_event_stream(resp, opts):
        done = False
        async for event in iter_events(resp, opts):
            chunk = await event_json(event, opts)
            if chunk is None:
                done = True
                break
            for choice in _list(chunk.get("choices")):
                if isinstance(choice, dict):
                    finish = _collect(parts, urls, choice.get("delta"), choice) or finish
        if not done and finish is None:
            # Ended without [DONE] or a finish_reason: whatever it holds may be truncated.
            raise StreamError(
                f"{opts.backend}: the chat stream ended before it finished",
                backend=opts.backend,
                service=opts.service,
            )
    else:
        body = await read_json(resp, opts)
        for choice in _list(body.get("choices") if isinstance(body, dict) else None):
            if isinstance(choice, dict):
                finish = _collect(parts, urls, choice.get("message"), choice) or finish
    _check_finish(finish, opts)
    return ChatAnswer(tuple(parts), tuple(urls), finish)


def is_event_stream(resp: aiohttp.ClientResponse, opts: RequestOptions) -> bool:
    """Whether a 2xx answer is SSE (else JSON), decided before decoding; HTML is refused."""
    if resp.content_type == "text/event-stream":
        return True
    if resp.content_type == "text/html" and opts.api_base:
        # A website's page (often its app shell, served for any path): not the API's root.
        raise EndpointNotFoundError(
            f"{opts.backend}: {resp.url.path} answered an HTML page, not the API",
            backend=opts.backend,
            service=opts.service,
            status=resp.status,
            body="an HTML page",
        )
    return False


async def read_json(resp: aiohttp.ClientResponse, opts: RequestOptions) -> Any:
    """A JSON answer (parsed in the image worker when big); an in-band error raises."""
    raw = await read_body(resp, opts)
    if len(raw) > WORKER_MIN_CHARS:
        body = await in_worker(parse_json_body, raw, resp.content_type, opts)
    else:
        body = parse_json_body(raw, resp.content_type, opts)
    raise_in_band_error(body, opts)
    return body


async def event_json(event: ServerSentEvent, opts: RequestOptions) -> dict[str, Any] | None:
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
        raise StreamError(
            f"{opts.backend}: malformed stream event: {safe_excerpt(data.encode())}",
            backend=opts.backend,
            service=opts.service,
        ) from err
    if not isinstance(payload, dict):
        return {}
    raise_in_band_error(payload, opts)
    return payload


def raise_in_band_error(payload: Any, opts: RequestOptions) -> None:
    """An ``{"error": …}`` object inside a 200 answer or a stream becomes a typed error."""
    if not isinstance(payload, dict) or not payload.get("error"):
        return
    code, message = error_fields(payload) or ("", str(payload["error"]))
    excerpt = safe_excerpt(message.encode())
    text = f"{opts.backend}: error in answer: {code}: {excerpt}"
    kind = classify_upstream(code, message)
    if kind is not None:
        raise kind(text, backend=opts.backend, service=opts.service, status=200, body=excerpt)
    raise UpstreamError(
        text,
        backend=opts.backend,
        service=opts.service,
        upstream=excerpt[:80] or code,
        retryable=code in RETRYABLE_ERROR_CODES or code.startswith(("5", "429")),
    )


async def probe_api(
    session: aiohttp.ClientSession,
    base_url: str,
    model: str,
    opts: RequestOptions,
    *,
    generation_path: str,
    empty_body: dict[str, Any],
) -> ProbeResult:
    """Reach and auth without generating: ``GET /models``, else an empty generation request.

    Raises the typed error when the API is unusable (bad key, wrong ``base_url``, unknown model).
    """
    try:
        answer = await request_json(session, "GET", api_url(base_url, "models"), opts)
    except BackendStatusError as err:
        if err.status not in NO_MODELS_STATUSES:
            raise
        return await _probe_empty_request(session, base_url, opts, generation_path, empty_body)
    models = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(models, list):
        return ProbeResult(ok=True, detail="reachable, key accepted")
    ids = {
        item["id"] for item in models if isinstance(item, dict) and isinstance(item.get("id"), str)
    }
    listed = "listed" if model in ids else "not listed"
    return ProbeResult(
        ok=True, detail=f"reachable, key accepted, {len(ids)} models ({model} {listed})"
    )


async def _probe_empty_request(
    session: aiohttp.ClientSession,
    base_url: str,
    opts: RequestOptions,
    path: str,
    body: dict[str, Any],
) -> ProbeResult:
    try:
        async with open_response(session, "POST", api_url(base_url, path), opts, json=body):
            status = "accepted"
    except BackendStatusError as err:
        # Only a plain 400/422: a typed one (unknown model, quota, auth…) is the answer to give.
        if type(err) is not BackendStatusError or err.status not in REFUSED_EMPTY_STATUSES:
            raise
        status = f"refused with HTTP {err.status} as expected"
    return ProbeResult(
        ok=True,
        detail=f"reachable, key accepted (no GET /models; an empty /{path} request was {status})",
    )


def _check_finish(finish: str | None, opts: RequestOptions) -> None:
    if finish == "content_filter":
        raise ContentPolicyError(
            f"{opts.backend}: finish_reason content_filter",
            backend=opts.backend,
            service=opts.service,
            status=200,
        )
    if finish == "error":
        # OpenRouter: the provider dropped mid-answer; another try may work.
        raise UpstreamError(
            f"{opts.backend}: finish_reason error",
            backend=opts.backend,
            service=opts.service,
            problem="failed",
            retryable=True,
        )


def _collect(parts: list[str], urls: list[str], message: Any, choice: dict[str, Any]) -> str | None:
    """Add one message or delta to the answer; return the choice's finish_reason, if any."""
    if isinstance(message, dict):
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, dict):
                    continue
                if part.get("type") == "text" and isinstance(part.get("text"), str):
                    parts.append(part["text"])
                urls += _image_url_of(part)
        for image in _list(message.get("images")):
            urls += _image_url_of(image)
    finish = choice.get("finish_reason")
    return str(finish) if finish else None


def _image_url_of(part: Any) -> list[str]:
    """The URL of an ``{"type": "image_url", "image_url": {"url": ...}}`` part, if it is one."""
    if not isinstance(part, dict):
        return []
    image_url = part.get("image_url")
    if isinstance(image_url, dict):
        image_url = image_url.get("url")
    return [image_url] if isinstance(image_url, str) and image_url else []


def _part_wire(part: ContentPart) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    image: dict[str, Any] = {"url": part.url}
    if part.detail is not None:
        image["detail"] = part.detail
    return {"type": "image_url", "image_url": image}


def _list(value: Any) -> list[Any]:
    """``value`` when the upstream sent a JSON array there, else nothing to iterate."""
    return value if isinstance(value, list) else []
