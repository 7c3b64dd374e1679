"""HTTP plumbing shared by every backend and the prompt writer (aiohttp, no NoneBot).

Every request gets explicit timeouts (connect, idle read, total per attempt), error bodies are read
(capped) before a typed ``BackendError`` is raised, bodies and streams are size-capped while they
arrive, and ``with_retries`` applies the retry policy of ``retry.py``. aiohttp's exceptions never
leave this module: they are translated at the boundary.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

from yarl import URL

from .exceptions import (
    BackendAuthError,
    BackendConnectionError,
    BackendError,
    BackendStatusError,
    BackendTimeoutError,
    BackendUnavailableError,
    EndpointNotFoundError,
    Llm2PicError,
    ResponseTooLargeError,
    Service,
    StreamError,
    UpstreamError,
    classify_upstream,
)
from .retry import backoff_delay, parse_retry_after
from .sse import ServerSentEvent, SSEDecoder

if TYPE_CHECKING:
    # aiohttp is imported where it is used: its import (~130 ms, most of it building SSL contexts)
    # then happens when the session opens at startup, not while NoneBot loads the plugin.
    import aiohttp

logger = logging.getLogger("nonebot_plugin_llm2pic")

T = TypeVar("T")

MAX_RESPONSE_BYTES = 64 * 1024 * 1024
"""Default cap for one response body or stream: a 4096² PNG as base64 still fits."""

MAX_ERROR_BODY_BYTES = 64 * 1024
"""Only this much of an error body is read: enough for any JSON error, never a whole page."""

ERROR_EXCERPT_CHARS = 300
EXCERPT_SOURCE_BYTES = ERROR_EXCERPT_CHARS * 4
"""How much of a body an excerpt may show before whitespace is collapsed and it is cut."""
EXCERPT_MASK_MARGIN = 64
"""Bytes read past that, at least, so a key-like token starting in the shown part is whole."""
MAX_REDIRECTS = 5
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
HTTP_SCHEMES = frozenset({"http", "https"})
"""The only URL schemes requested or downloaded."""

SECRET_LIKE = re.compile(r"\b(?P<prefix>sk|hf|key)[-_][A-Za-z0-9_\-]{8,}|\bAIza[A-Za-z0-9_\-]{20,}")
"""Key-like tokens (OpenAI `sk-`, Hugging Face `hf_`, Google `AIza`…), masked wherever shown."""
_KNOWN_SECRETS: dict[str, None] = {}
"""Bearer credentials this process has sent (insertion-ordered, bounded), masked in excerpts."""
MAX_KNOWN_SECRETS = 64
MIN_MASKED_SECRET = 6
"""Shorter credentials are not masked by value: they would mangle ordinary words."""
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/=]{200,}")
_HEADER_CONTROL_CHAR = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
"""What aiohttp refuses in a header value (its ``_safe_header``): CR, LF, NUL and friends."""


@dataclass(frozen=True)
class RequestOptions:
    """Limits and headers for one request attempt."""

    backend: str
    """Name used in errors and logs ("zimage", "llm", …)."""
    timeout: float
    """Total seconds for one attempt, body or stream included."""
    connect_timeout: float = 15.0
    read_timeout: float = 60.0
    """Idle seconds allowed between two reads (a stalled stream fails after this)."""
    proxy: str | None = None
    """Explicit proxy URL; "" / None = none (HTTP(S)_PROXY still applies through trust_env)."""
    max_bytes: int = MAX_RESPONSE_BYTES
    headers: Mapping[str, str] = field(default_factory=dict)
    service: Service = "backend"
    """Whether errors speak of an image backend or of the LLM."""
    api_base: bool = False
    """The URL is ``base_url`` + an API path: a 404 there means ``base_url`` lacks its prefix."""

    def __post_init__(self) -> None:
        for name, value in self.headers.items():
            if _HEADER_CONTROL_CHAR.search(value):
                # aiohttp would refuse it with a bare ValueError on every attempt.
                raise BackendUnavailableError(
                    f"{self.backend}: the {name} header holds a control character "
                    "(a line end copied with the key?)",
                    backend=self.backend,
                    service=self.service,
                    reason="bad_key",
                )
        # A relay may echo the key back in an error body, whatever its shape: remember it so
        # safe_excerpt can mask it even where SECRET_LIKE sees no known prefix.
        scheme, _, credential = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and len(credential) >= MIN_MASKED_SECRET:
            _KNOWN_SECRETS[credential] = None
            while len(_KNOWN_SECRETS) > MAX_KNOWN_SECRETS:
                del _KNOWN_SECRETS[next(iter(_KNOWN_SECRETS))]


@dataclass(frozen=True)
class ProbeResult:
    """What ``check`` prints for one probe: whether it passed, and a one-line detail."""

    ok: bool
    detail: str
    error: Llm2PicError | None = None
    """The error a failed probe raised (its type tells "not configured" from "broken")."""

    def __str__(self) -> str:
        return self.detail


async def run_probe(probe: Callable[[], Awaitable[ProbeResult]]) -> ProbeResult:
    """Run a probe; a typed failure becomes ``ok=False`` with the chat text and the log detail."""
    try:
        return await probe()
    except Llm2PicError as err:
        detail = " ".join(str(err).split())
        text = err.user_message if detail == err.user_message else f"{err.user_message} ({detail})"
        return ProbeResult(ok=False, detail=text, error=err)


def new_session() -> aiohttp.ClientSession:
    """The process-wide session; ``trust_env`` honours HTTP(S)_PROXY. The caller closes it."""
    import aiohttp

    return aiohttp.ClientSession(trust_env=True)


async def request_json(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    opts: RequestOptions,
    *,
    json: Any = None,
    data: Any = None,
) -> Any:
    """Send one request and return its JSON body; every failure is a typed ``BackendError``."""
    async with open_response(session, method, url, opts, json=json, data=data) as resp:
        body = await read_body(resp, opts)
        return parse_json_body(body, resp.content_type, opts)


def parse_json_body(body: bytes, content_type: str, opts: RequestOptions) -> Any:
    """Parse a JSON body, or raise ``UpstreamError`` naming what came back instead."""
    try:
        return jsonlib.loads(body)
    except (ValueError, RecursionError) as err:  # RecursionError: nested too deeply
        raise UpstreamError(
            f"{opts.backend}: expected JSON, got {content_type or 'no content type'}: "
            f"{safe_excerpt(body)}",
            backend=opts.backend,
            service=opts.service,
            problem="malformed",
        ) from err


@asynccontextmanager
async def open_response(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    opts: RequestOptions,
    *,
    json: Any = None,
    data: Any = None,
    allow_redirects: bool = True,
) -> AsyncIterator[aiohttp.ClientResponse]:
    """Send one request and yield the response once its status is below 400.

    Error statuses are read (capped) and raised as ``BackendAuthError`` (401/403),
    ``ContentPolicyError`` or ``BackendStatusError`` with the server's ``Retry-After``. A
    ``Content-Length`` above ``opts.max_bytes`` fails before any of the body is read.
    """
    import aiohttp

    if not _is_http_url(url):
        # A malformed or non-http(s) URL is a config problem: retrying cannot fix it.
        raise BackendUnavailableError(
            f"{opts.backend}: invalid URL {url[:100]!r}",
            backend=opts.backend,
            service=opts.service,
            reason="bad_url",
        )
    timeout = aiohttp.ClientTimeout(
        total=opts.timeout, connect=opts.connect_timeout, sock_read=opts.read_timeout
    )
    try:
        async with session.request(
            method,
            url,
            json=json,
            data=data,
            headers=dict(opts.headers),
            proxy=opts.proxy or None,
            timeout=timeout,
            allow_redirects=allow_redirects,
        ) as resp:
            if resp.status >= 400:
                body = await _read_capped(resp, MAX_ERROR_BODY_BYTES)
                raise status_error(resp.status, body, resp.headers, opts)
            if resp.content_length is not None and resp.content_length > opts.max_bytes:
                resp.close()
                raise _too_large(opts)
            yield resp
    except (asyncio.TimeoutError, aiohttp.ClientError) as err:
        raise _translate(err, opts) from err


async def read_body(resp: aiohttp.ClientResponse, opts: RequestOptions) -> bytes:
    """Read the whole body, failing with ``ResponseTooLargeError`` as soon as it passes the cap."""
    import aiohttp

    if resp.content_length is not None and resp.content_length > opts.max_bytes:
        resp.close()
        raise _too_large(opts)
    pieces: list[bytes] = []
    size = 0
    try:
        async for chunk in resp.content.iter_any():
            size += len(chunk)
            if size > opts.max_bytes:
                resp.close()  # drop the connection instead of draining the rest
                raise _too_large(opts)
            pieces.append(chunk)
    except (asyncio.TimeoutError, aiohttp.ClientError) as err:
        raise _translate(err, opts) from err
    return b"".join(pieces)


async def iter_events(
    resp: aiohttp.ClientResponse, opts: RequestOptions
) -> AsyncIterator[ServerSentEvent]:
    """Decode the response body as SSE, capping the total bytes; a cut stream is ``StreamError``."""
    import aiohttp

    decoder = SSEDecoder()
    size = 0
    try:
        async for chunk in resp.content.iter_any():
            size += len(chunk)
            if size > opts.max_bytes:
                resp.close()
                raise _too_large(opts)
            for event in decoder.feed(chunk):
                yield event
    except (asyncio.TimeoutError, aiohttp.ClientError) as err:
        raise _translate(err, opts) from err
    for event in decoder.close():
        yield event


async def download(
    session: aiohttp.ClientSession, url: str, opts: RequestOptions
) -> tuple[bytes, str]:
    """GET an http(s) URL (redirects only to http(s)), capped; return ``(body, content type)``.

    Pass options without the backend's Authorization header when the URL may point anywhere; an
    Authorization header given is dropped at the first redirect to another origin.
    """
    for _ in range(MAX_REDIRECTS + 1):
        if not _is_http_url(url):
            raise _bad_image_url(opts, f"refusing to download non-http(s) URL {url[:100]!r}")
        async with open_response(session, "GET", url, opts, allow_redirects=False) as resp:
            location = resp.headers.get("Location")
            if resp.status in _REDIRECT_STATUSES and location:
                try:
                    target = resp.url.join(URL(location))
                except ValueError as err:
                    raise _bad_image_url(opts, f"malformed redirect {location[:100]!r}") from err
                if (target.scheme, target.host, target.port) != (
                    resp.url.scheme,
                    resp.url.host,
                    resp.url.port,
                ):
                    # Credentials stay with their origin (Fetch and aiohttp's own redirects do
                    # the same): a Gradio file may redirect to a CDN that must not see the token.
                    opts = _without_authorization(opts)
                url = str(target)
                continue
            return await read_body(resp, opts), resp.content_type
    raise _bad_image_url(opts, f"more than {MAX_REDIRECTS} redirects downloading the image")


async def with_retries(call: Callable[[], Awaitable[T]], *, retries: int, backend: str) -> T:
    """Run ``call``; retry retryable ``BackendError``s up to ``retries`` times, with backoff."""
    attempt = 0
    while True:
        try:
            return await call()
        except BackendError as err:
            if not err.retryable or attempt >= retries:
                raise
            retry_after = err.retry_after if isinstance(err, BackendStatusError) else None
            delay = backoff_delay(attempt, retry_after)
            attempt += 1
            logger.info("%s: %s; retry %d/%d in %.1f s", backend, err, attempt, retries, delay)
            await asyncio.sleep(delay)


def status_error(
    status: int, body: bytes, headers: Mapping[str, str], opts: RequestOptions
) -> BackendStatusError:
    """The typed error for an HTTP error status, from the (already read) body and headers."""
    code, message = _error_fields(body)
    excerpt = safe_excerpt(message.encode() if message else body)
    text = f"{opts.backend}: HTTP {status}" + (f" {code}" if code else "") + f": {excerpt}"
    kind = classify_upstream(code, message, status)
    if kind is None and status in (401, 403):
        kind = BackendAuthError
    if kind is None and status == 404 and opts.api_base:
        kind = EndpointNotFoundError
    return (kind or BackendStatusError)(
        text,
        backend=opts.backend,
        service=opts.service,
        status=status,
        body=excerpt,
        retry_after=parse_retry_after(headers),
    )


def error_fields(payload: Any) -> tuple[str, str] | None:
    """``(code, message)`` of an OpenAI-style ``{"error": {...}}`` or ``{"error": "..."}``."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        code = error.get("code") or error.get("type") or ""
        return str(code), str(error.get("message") or "")
    if isinstance(error, str):
        return "", error
    return None


def _error_fields(body: bytes) -> tuple[str, str]:
    """``(code, message)`` from an OpenAI-style error body; the raw text when it is not one."""
    try:
        parsed = jsonlib.loads(body)
    except (ValueError, RecursionError):
        parsed = None
    return error_fields(parsed) or ("", body.decode("utf-8", "replace"))


def safe_excerpt(body: bytes) -> str:
    """A short, log-safe excerpt: no key-like tokens, no long base64 runs."""
    # Masked before it is cut: a key cut in two would slip past the masks. The text reaches past
    # the part that may be shown by the longest key, so a key starting in that part is whole.
    secrets = sorted(_KNOWN_SECRETS, key=len, reverse=True)  # a key's prefix must not win
    margin = max([EXCERPT_MASK_MARGIN, *(len(secret.encode()) for secret in secrets)])
    shown = len(body[:EXCERPT_SOURCE_BYTES].decode("utf-8", "replace"))
    text = body[: EXCERPT_SOURCE_BYTES + margin].decode("utf-8", "replace")
    known = f"(?P<known>{'|'.join(map(re.escape, secrets))})|" if secrets else ""
    masks = re.compile(f"{known}{SECRET_LIKE.pattern}|(?P<base64>{_BASE64_RUN.pattern})")
    pieces: list[str] = []
    copied = 0
    for match in masks.finditer(text):
        if match.start() >= shown:
            break
        if match["base64"]:
            mask = "<base64>"
        elif match["prefix"]:
            mask = f"{match['prefix']}-****"
        else:
            mask = "****"
        pieces += [text[copied : match.start()], mask]
        copied = match.end()
    pieces.append(text[copied:shown])
    text = " ".join("".join(pieces).split())
    return text if len(text) <= ERROR_EXCERPT_CHARS else text[: ERROR_EXCERPT_CHARS - 1] + "…"


async def _read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    pieces: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_any():
        pieces.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(pieces)[:limit]


def _is_http_url(url: str) -> bool:
    try:
        parsed = URL(url)
    except ValueError:
        return False
    return parsed.scheme in HTTP_SCHEMES and bool(parsed.host)


def _bad_image_url(opts: RequestOptions, reason: str) -> UpstreamError:
    return UpstreamError(
        f"{opts.backend}: {reason}",
        backend=opts.backend,
        service=opts.service,
        problem="bad_image_url",
    )


def _without_authorization(opts: RequestOptions) -> RequestOptions:
    headers = {k: v for k, v in opts.headers.items() if k.lower() != "authorization"}
    return replace(opts, headers=headers)


def _too_large(opts: RequestOptions) -> ResponseTooLargeError:
    return ResponseTooLargeError(
        f"{opts.backend}: response larger than {opts.max_bytes} bytes",
        backend=opts.backend,
        service=opts.service,
    )


def _translate(err: BaseException, opts: RequestOptions) -> BackendError:
    """aiohttp/asyncio failures → our errors (timeouts first: some are also ClientErrors)."""
    import aiohttp

    name, service = opts.backend, opts.service
    if isinstance(err, asyncio.TimeoutError):
        return BackendTimeoutError(
            f"{name}: timed out ({type(err).__name__})", backend=name, service=service
        )
    if isinstance(err, (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError)):
        return StreamError(
            f"{name}: response cut off: {safe_excerpt(str(err).encode())}",
            backend=name,
            service=service,
        )
    return BackendConnectionError(
        # aiohttp quotes the offending bytes (a whole base64 image) in protocol errors.
        f"{name}: connection failed: {safe_excerpt(str(err).encode())}",
        backend=name,
        service=service,
    )
