"""Transport helpers against a real loopback server: errors, retries, caps, timeouts, proxies."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from nonebot_plugin_llm2pic.exceptions import (
    BackendAuthError,
    BackendConnectionError,
    BackendStatusError,
    BackendTimeoutError,
    BackendUnavailableError,
    ContentPolicyError,
    ResponseTooLargeError,
    StreamError,
    UpstreamError,
)
from nonebot_plugin_llm2pic.sse import ServerSentEvent
from nonebot_plugin_llm2pic.transport import (
    RequestOptions,
    download,
    iter_events,
    new_session,
    open_response,
    request_json,
    with_retries,
)

HUGE = 100 * 1024 * 1024
PIECE = b"x" * 65536


@dataclass
class Upstream:
    """A loopback server whose routes each show one fault; ``hits`` counts requests per path."""

    server: TestServer
    hits: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    seen_urls: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))


def opts(**overrides: object) -> RequestOptions:
    values: dict[str, object] = {"backend": "fake", "timeout": 5.0}
    values.update(overrides)
    return RequestOptions(**values)  # type: ignore[arg-type]


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    routes = web.RouteTableDef()
    state: Upstream

    def hit(request: web.Request) -> int:
        state.hits[request.path] = state.hits.get(request.path, 0) + 1
        return state.hits[request.path]

    @routes.get("/json")
    async def json_ok(request: web.Request) -> web.Response:
        hit(request)
        return web.json_response({"ok": True})

    @routes.get("/rate-limited-once")
    async def rate_limited_once(request: web.Request) -> web.Response:
        if hit(request) == 1:
            return web.json_response(
                {"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "0.2"}
            )
        return web.json_response({"ok": True})

    @routes.get("/unavailable-once")
    async def unavailable_once(request: web.Request) -> web.Response:
        if hit(request) == 1:
            return web.Response(
                status=503, text="upstream overloaded", headers={"retry-after-ms": "10"}
            )
        return web.json_response({"ok": True})

    @routes.get("/always-502")
    async def always_502(request: web.Request) -> web.Response:
        hit(request)
        return web.Response(status=502, text="bad gateway", headers={"Retry-After": "0"})

    @routes.get("/unauthorized")
    async def unauthorized(request: web.Request) -> web.Response:
        hit(request)
        body = {
            "error": {
                "message": "Incorrect API key provided: sk-abcdefghijklmnopqrstuvwxyz",
                "code": "invalid_api_key",
            }
        }
        return web.json_response(body, status=401)

    @routes.get("/policy")
    async def policy(request: web.Request) -> web.Response:
        hit(request)
        body = {
            "error": {
                "message": "Your request was rejected by the safety system.",
                "type": "image_generation_user_error",
                "code": "moderation_blocked",
            }
        }
        return web.json_response(body, status=400)

    @routes.get("/quota")
    async def quota(request: web.Request) -> web.Response:
        hit(request)
        body = {
            "error": {
                "message": "You exceeded your current quota",
                "type": "insufficient_quota",
                "code": "insufficient_quota",
            }
        }
        return web.json_response(body, status=429, headers={"Retry-After": "0"})

    @routes.get("/huge-error")
    async def huge_error(request: web.Request) -> web.StreamResponse:
        return await stream_bytes(request, status=500)

    @routes.get("/huge")
    async def huge(request: web.Request) -> web.StreamResponse:
        return await stream_bytes(request, status=200)

    async def stream_bytes(request: web.Request, status: int) -> web.StreamResponse:
        resp = web.StreamResponse(status=status)
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        try:
            while state.sent < HUGE:
                await resp.write(PIECE)
                state.sent += len(PIECE)
        except (ConnectionError, RuntimeError):
            pass  # the client hung up, as it should
        return resp

    @routes.get("/declared-huge")
    async def declared_huge(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": str(HUGE)})
        await resp.prepare(request)
        await resp.write(b"x" * 1024)
        await asyncio.sleep(5)
        return resp

    @routes.get("/html")
    async def html(request: web.Request) -> web.Response:
        return web.Response(text="<html>Bad gateway</html>", content_type="text/html")

    @routes.get("/sse")
    async def sse(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for piece in (b"data: one\r", b"\n\r\n: ping\n\nevent: x\ndata: t", b"wo\n\n"):
            await resp.write(piece)
            await asyncio.sleep(0)
        await resp.write_eof()
        return resp

    @routes.get("/cut")
    async def cut(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b'data: one\n\ndata: {"b64_json": "iVBOR')
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.close()
        return resp

    @routes.get("/stall")
    async def stall(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: first\n\n")
        await asyncio.sleep(5)
        return resp

    @routes.get("/trickle")
    async def trickle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for _ in range(200):
            await resp.write(b"a")
            await asyncio.sleep(0.05)
        return resp

    @routes.get("/image.png")
    async def image(request: web.Request) -> web.Response:
        return web.Response(body=b"\x89PNG\r\n\x1a\nrest", content_type="image/png")

    @routes.get("/redirect")
    async def redirect(request: web.Request) -> web.Response:
        # Not HTTPFound: it refuses a malformed target, and upstreams send those too.
        return web.Response(status=302, headers={"Location": request.query["to"]})

    @routes.get("/auth")
    async def auth(request: web.Request) -> web.Response:
        return web.Response(text=request.headers.get("Authorization", "none"))

    app = web.Application()
    app.add_routes(routes)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    state = Upstream(server)
    yield state
    await server.close()


async def stream_data(
    session: aiohttp.ClientSession,
    url: str,
    options: RequestOptions,
    received: list[str] | None = None,
) -> None:
    """Read ``url`` as SSE to the end, appending each event's data to ``received``."""
    async with open_response(session, "GET", url, options) as resp:
        async for event in iter_events(resp, options):
            if received is not None:
                received.append(event.data)


async def test_request_json_ok(upstream: Upstream, session: aiohttp.ClientSession) -> None:
    """A 200 JSON answer is returned parsed."""
    assert await request_json(session, "GET", upstream.url("/json"), opts()) == {"ok": True}


@pytest.mark.parametrize(
    ("path", "wait"),
    [("/rate-limited-once", 0.2), ("/unavailable-once", 0.01)],
    ids=["429-retry-after", "503-retry-after-ms"],
)
async def test_retried_after_the_wait_asked_then_succeeds(
    upstream: Upstream, session: aiohttp.ClientSession, path: str, wait: float
) -> None:
    """A 429 or 503 is retried after the wait the server asked for, and the second answer wins."""
    started = time.monotonic()
    result = await with_retries(
        lambda: request_json(session, "GET", upstream.url(path), opts()),
        retries=2,
        backend="fake",
    )
    elapsed = time.monotonic() - started
    assert result == {"ok": True}
    assert upstream.hits[path] == 2
    assert 0.9 * wait <= elapsed < 1.0


async def test_retries_exhausted_raise_last_error(
    upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    """After ``retries`` retries the status error surfaces with its status and body."""
    with pytest.raises(BackendStatusError) as caught:
        await with_retries(
            lambda: request_json(session, "GET", upstream.url("/always-502"), opts()),
            retries=2,
            backend="fake",
        )
    assert upstream.hits["/always-502"] == 3
    assert caught.value.status == 502
    assert "bad gateway" in caught.value.body
    assert caught.value.retry_after == 0.0


@pytest.mark.parametrize(
    ("path", "error", "attribute", "expected"),
    [
        ("/unauthorized", BackendAuthError, "user_message", "绘图服务 fake 认证失败"),
        ("/policy", ContentPolicyError, "fallback", False),
        ("/quota", BackendStatusError, "retryable", False),
    ],
    ids=["401-auth", "content-policy", "insufficient-quota"],
)
async def test_refusals_a_retry_cannot_fix_are_not_retried(
    upstream: Upstream,
    session: aiohttp.ClientSession,
    path: str,
    error: type[BackendStatusError],
    attribute: str,
    expected: object,
) -> None:
    """Auth failures, moderation refusals and exhausted credit are raised after one request."""
    with pytest.raises(error) as caught:
        await with_retries(
            lambda: request_json(session, "GET", upstream.url(path), opts()),
            retries=3,
            backend="fake",
        )
    assert upstream.hits[path] == 1
    assert getattr(caught.value, attribute) == expected


async def test_auth_error_text_keeps_the_code_not_the_key(
    upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    """A 401's error text names the upstream's error code and leaves out the key it echoed."""
    with pytest.raises(BackendAuthError) as caught:
        await request_json(session, "GET", upstream.url("/unauthorized"), opts())
    assert "abcdefghijklmnop" not in str(caught.value)
    assert "invalid_api_key" in str(caught.value)


async def test_error_body_read_is_capped(
    upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    """A 500 with an endless body is reported after reading only a small part of it."""
    with pytest.raises(BackendStatusError) as caught:
        await request_json(session, "GET", upstream.url("/huge-error"), opts())
    assert caught.value.status == 500
    assert upstream.sent < 16 * 1024 * 1024


async def read_json(session: aiohttp.ClientSession, url: str, options: RequestOptions) -> None:
    """Read ``url`` as one JSON body."""
    await request_json(session, "GET", url, options)


@pytest.mark.parametrize("read", [read_json, stream_data], ids=["json-body", "sse-stream"])
async def test_body_over_cap_rejected(
    upstream: Upstream,
    session: aiohttp.ClientSession,
    read: Callable[[aiohttp.ClientSession, str, RequestOptions], Awaitable[None]],
) -> None:
    """A 100 MB body, read whole or as SSE, is rejected once it passes the cap, long before it
    is all sent."""
    with pytest.raises(ResponseTooLargeError):
        await read(session, upstream.url("/huge"), opts(max_bytes=1024 * 1024))
    await asyncio.sleep(0.05)
    assert upstream.sent < 16 * 1024 * 1024


async def test_declared_length_over_cap_rejected_at_once(
    upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    """A Content-Length above the cap fails before the body is read (no waiting for it)."""
    started = time.monotonic()
    with pytest.raises(ResponseTooLargeError):
        await request_json(
            session, "GET", upstream.url("/declared-huge"), opts(max_bytes=1024 * 1024)
        )
    assert time.monotonic() - started < 2


async def test_wrong_content_type(upstream: Upstream, session: aiohttp.ClientSession) -> None:
    """An HTML page where JSON was expected is an UpstreamError naming the content type."""
    with pytest.raises(UpstreamError, match="text/html"):
        await request_json(session, "GET", upstream.url("/html"), opts())


async def test_iter_events(upstream: Upstream, session: aiohttp.ClientSession) -> None:
    """iter_events decodes a stream whose CRLF straddles two writes."""
    async with open_response(session, "GET", upstream.url("/sse"), opts()) as resp:
        events = [event async for event in iter_events(resp, opts())]
    assert events == [ServerSentEvent(data="one"), ServerSentEvent(event="x", data="two")]


async def test_cut_stream_is_stream_error(
    upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    """A connection dropped mid-event raises StreamError ("生成中断") after the complete events."""
    received: list[str] = []
    with pytest.raises(StreamError) as caught:
        await stream_data(session, upstream.url("/cut"), opts(), received)
    assert received == ["one"]
    assert caught.value.user_message == "生成中断，请稍后再试"
    assert caught.value.retryable


async def test_idle_timeout(upstream: Upstream, session: aiohttp.ClientSession) -> None:
    """A stream that goes silent fails after the idle read timeout, not the total one."""
    started = time.monotonic()
    with pytest.raises(BackendTimeoutError) as caught:
        await stream_data(session, upstream.url("/stall"), opts(read_timeout=0.2))
    assert time.monotonic() - started < 2
    assert caught.value.user_message == "绘图服务 fake 超时"


async def test_slow_loris_hits_total_timeout(
    upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    """A body trickling one byte at a time never idles out but is cut by the total timeout."""
    started = time.monotonic()
    with pytest.raises(BackendTimeoutError):
        await request_json(
            session, "GET", upstream.url("/trickle"), opts(timeout=0.5, read_timeout=1.0)
        )
    assert time.monotonic() - started < 2


async def test_connection_refused(session: aiohttp.ClientSession) -> None:
    """Nothing listening is a retryable BackendConnectionError."""
    with pytest.raises(BackendConnectionError) as caught:
        await request_json(session, "GET", "http://127.0.0.1:9/x", opts())
    assert caught.value.retryable


async def test_invalid_url_is_not_retryable(session: aiohttp.ClientSession) -> None:
    """A malformed base_url is a configuration error, not something to retry."""
    with pytest.raises(BackendUnavailableError):
        await request_json(session, "GET", "ftp://example.invalid/x", opts())


async def test_download_follows_http_redirect(
    upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    """download follows a redirect to another http URL and returns body and content type."""
    target = upstream.url("/image.png")
    body, content_type = await download(session, upstream.url(f"/redirect?to={target}"), opts())
    assert body.startswith(b"\x89PNG")
    assert content_type == "image/png"


@pytest.mark.parametrize(
    ("host", "seen"),
    [("localhost", b"none"), ("127.0.0.1", b"Bearer hf_secret123")],
    ids=["cross-origin-dropped", "same-origin-kept"],
)
async def test_download_redirect_keeps_credentials_within_the_origin(
    upstream: Upstream, session: aiohttp.ClientSession, host: str, seen: bytes
) -> None:
    """A redirect keeps the Authorization header within the origin (a private app's file) and
    drops it on the way to another origin."""
    target = upstream.url("/auth").replace("127.0.0.1", host)
    options = opts(headers={"Authorization": "Bearer hf_secret123"})
    body, _ = await download(session, upstream.url(f"/redirect?to={target}"), options)
    assert body == seen


async def test_download_malformed_redirect_is_upstream_error(
    upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    """A Location header that is not a URL is an UpstreamError, not a bare ValueError."""
    with pytest.raises(UpstreamError):
        await download(session, upstream.url("/redirect?to=http://[::1"), opts())


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://127.0.0.1/x"])
async def test_download_refuses_non_http_redirect(
    upstream: Upstream, session: aiohttp.ClientSession, target: str
) -> None:
    """A redirect to a non-http(s) URL is refused."""
    with pytest.raises(UpstreamError, match="non-http"):
        await download(session, upstream.url(f"/redirect?to={target}"), opts())


async def test_download_refuses_non_http_url(session: aiohttp.ClientSession) -> None:
    """download never opens file:// or other schemes."""
    with pytest.raises(UpstreamError):
        await download(session, "file:///etc/passwd", opts())


@pytest.fixture
async def proxy() -> AsyncIterator[Upstream]:
    """A forward proxy stand-in: answers every absolute-form request itself and records it."""

    async def handle(request: web.Request) -> web.Response:
        state.seen_urls.append(str(request.url))
        return web.json_response({"via": "proxy"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    state = Upstream(server)
    yield state
    await server.close()


async def test_per_request_proxy(proxy: Upstream, session: aiohttp.ClientSession) -> None:
    """``RequestOptions.proxy`` sends the request through that proxy."""
    answer = await request_json(
        session, "GET", "http://example.invalid/v1/models", opts(proxy=proxy.url("/"))
    )
    assert answer == {"via": "proxy"}
    assert proxy.seen_urls == ["http://example.invalid/v1/models"]


async def test_env_proxy_honoured(proxy: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    """The session trusts HTTP_PROXY from the environment."""
    monkeypatch.setenv("HTTP_PROXY", proxy.url("/"))
    for name in ("NO_PROXY", "no_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    async with new_session() as client:
        answer = await request_json(client, "GET", "http://example.invalid/x", opts())
    assert answer == {"via": "proxy"}
