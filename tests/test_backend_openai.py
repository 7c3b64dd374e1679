"""The ``openai`` backend against the fake OpenAI server: every answer format and failure."""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from nonebot_plugin_llm2pic.backends.base import GenerationRequest, ReferenceImage
from nonebot_plugin_llm2pic.backends.image_text import (
    BASE64_SLICE,
    LONG_PAYLOAD,
    compact_base64,
    decode_base64,
    image_in_text,
)
from nonebot_plugin_llm2pic.backends.openai import OpenAIBackend
from nonebot_plugin_llm2pic.chat_api import ChatMessage, ChatRequest, ImagePart, TextPart
from nonebot_plugin_llm2pic.exceptions import (
    BackendAuthError,
    BackendStatusError,
    BackendUnavailableError,
    ContentPolicyError,
    EndpointNotFoundError,
    InsufficientBalanceError,
    ModelNotFoundError,
    QuotaExhaustedError,
    RateLimitedError,
    StreamError,
    UpstreamError,
)
from nonebot_plugin_llm2pic.settings import OpenAIBackendSettings
from nonebot_plugin_llm2pic.transport import new_session

from .fakes.openai_server import FakeOpenAI, Reply, make_jpeg, make_png

CAT = GenerationRequest(prompt="a cat on a sofa")


def make_backend(
    fake: FakeOpenAI, session: aiohttp.ClientSession, **settings: Any
) -> OpenAIBackend:
    values: dict[str, Any] = {
        "type": "openai",
        "base_url": fake.base_url,
        "api_key": "sk-test",
        "retries": 0,
    }
    values.update(settings)
    return OpenAIBackend("oa", OpenAIBackendSettings(**values), session)


# -- images API ----------------------------------------------------------------------------


async def test_images_json_b64(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    """A plain generations call returns the b64_json image and sends only the default fields."""
    image = await make_backend(fake, session).generate(CAT)
    assert image.data == fake.image
    assert image.mime == "image/png"
    assert image.backend == "oa"
    (request,) = fake.requests
    assert request.path == "/v1/images/generations"
    assert request.headers["Authorization"] == "Bearer sk-test"
    assert request.json == {
        "model": "gpt-image-1",
        "prompt": "a cat on a sofa",
        "n": 1,
        "size": "1024x1024",
    }


async def test_images_optional_fields(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    """response_format and quality are sent when configured; an empty size is not sent."""
    backend = make_backend(fake, session, size="", response_format="b64_json", quality="high")
    await backend.generate(CAT)
    assert fake.requests[0].json == {
        "model": "gpt-image-1",
        "prompt": "a cat on a sofa",
        "n": 1,
        "response_format": "b64_json",
        "quality": "high",
    }


@pytest.mark.parametrize(
    ("size", "aspect", "sent"),
    [
        ("1024x1024", "landscape", "1536x1024"),
        ("1024x1024", "portrait", "1024x1536"),
        ("1536x1024", "square", "1024x1024"),
        ("1024x1024", None, "1024x1024"),
        ("", "landscape", None),
    ],
)
async def test_aspect_hint_maps_size(
    fake: FakeOpenAI, session: aiohttp.ClientSession, size: str, aspect: Any, sent: str | None
) -> None:
    """The aspect hint picks the nearest GPT-image size, only when a size is configured."""
    await make_backend(fake, session, size=size).generate(
        GenerationRequest(prompt="x", aspect=aspect)
    )
    assert fake.requests[0].json.get("size") == sent


async def test_images_url_is_downloaded_without_key(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    """A url answer is downloaded, and the API key is not sent to the image host."""
    fake.images_style = "url"
    image = await make_backend(fake, session).generate(CAT)
    assert image.data == fake.image
    download = fake.requests[-1]
    assert download.path == "/files/image.png"
    assert "Authorization" not in download.headers


async def test_images_sse_ignores_partial_images(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    """use_sse asks stream=true (never partial_images); partial-image events are skipped."""
    fake.partial_images = 2
    image = await make_backend(fake, session, use_sse=True).generate(CAT)
    assert image.data == fake.image
    sent = fake.requests[0].json
    assert sent["stream"] is True
    assert "partial_images" not in sent


@pytest.mark.parametrize(
    ("chunk_size", "line_end", "keepalive", "style"),
    [
        (5, "\n", False, "events"),
        (7, "\r\n", True, "events"),
        (3, "\r", True, "relay"),
        (0, "\r\n", False, "relay"),
    ],
)
async def test_images_sse_framings(
    fake: FakeOpenAI,
    session: aiohttp.ClientSession,
    chunk_size: int,
    line_end: str,
    keepalive: bool,
    style: Any,
) -> None:
    """Image streams decode whatever the chunking (inside base64), line ends and keep-alives."""
    fake.chunk_size, fake.line_end, fake.keepalive, fake.stream_style = (
        chunk_size,
        line_end,
        keepalive,
        style,
    )
    image = await make_backend(fake, session, use_sse=True).generate(CAT)
    assert image.data == fake.image


@pytest.mark.parametrize(("use_sse", "answer"), [(True, "json"), (False, "sse")])
async def test_answer_format_decided_by_content_type(
    fake: FakeOpenAI, session: aiohttp.ClientSession, use_sse: bool, answer: Any
) -> None:
    """A JSON answer to a stream request and an SSE answer to a JSON request both work."""
    fake.answer = answer
    for mode in ("images", "chat"):
        image = await make_backend(fake, session, use_sse=use_sse, mode=mode).generate(CAT)
        assert image.data == fake.image


async def test_images_stream_without_image_is_stream_error(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    """A stream that ends with only partial images is a cut stream ("生成中断")."""
    fake.events = [{"type": "image_generation.partial_image", "b64_json": "AAAA"}]
    with pytest.raises(StreamError) as caught:
        await make_backend(fake, session, use_sse=True).generate(CAT)
    assert caught.value.user_message == "生成中断，请稍后再试"


async def test_cut_stream_is_retried_then_fails(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    """A connection cut mid-image is retried, then reported as StreamError."""
    fake.cut_after = 200
    fake.chunk_size = 50
    with pytest.raises(StreamError):
        await make_backend(fake, session, use_sse=True, retries=1).generate(CAT)
    assert len(fake.requests) == 2


async def test_edits_multipart_with_real_mime(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    """References go to /images/edits as image[] parts with their real MIME type and filename."""
    png, jpeg = make_png(4, 4), make_jpeg()
    request = GenerationRequest(
        prompt="make it blue",
        references=(
            ReferenceImage(png, "image/png"),
            ReferenceImage(jpeg, "application/octet-stream"),
        ),
    )
    image = await make_backend(fake, session).generate(request)
    assert image.data == fake.image
    (recorded,) = fake.requests
    assert recorded.path == "/v1/images/edits"
    images = [part for part in recorded.parts if part.name == "image[]"]
    assert [(p.content_type, p.filename, p.data) for p in images] == [
        ("image/png", "image0.png", png),
        ("image/jpeg", "image1.jpg", jpeg),
    ]
    fields = {p.name: p.data.decode() for p in recorded.parts if p.name != "image[]"}
    assert fields == {"model": "gpt-image-1", "prompt": "make it blue", "size": "1024x1024"}


async def test_edits_sse(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    """Edits with use_sse send stream=true and read the image_edit.completed event."""
    request = GenerationRequest(prompt="x", references=(ReferenceImage(make_png(), "image/png"),))
    image = await make_backend(fake, session, use_sse=True).generate(request)
    assert image.data == fake.image
    assert any(p.name == "stream" and p.data == b"true" for p in fake.requests[0].parts)


# -- chat completions ----------------------------------------------------------------------

CHAT_STYLES = ["markdown", "markdown_url", "bare_url", "bare_b64", "parts", "images"]


@pytest.mark.parametrize("use_sse", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("style", CHAT_STYLES)
async def test_chat_image_formats(
    fake: FakeOpenAI, session: aiohttp.ClientSession, style: Any, use_sse: bool
) -> None:
    """Every way a chat answer carries an image works, in JSON and in a finely chunked stream."""
    fake.chat_style = style
    fake.chunk_size = 7  # boundaries fall inside base64 and inside the Chinese text
    fake.content_pieces = 3  # and the content is spread over several deltas
    image = await make_backend(fake, session, mode="chat", use_sse=use_sse).generate(CAT)
    assert image.data == fake.image


async def test_chat_request_shape(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    """Chat mode posts one user message with the prompt (and the size), stream when use_sse."""
    await make_backend(fake, session, mode="chat", use_sse=True, model="gemini-image").generate(CAT)
    assert fake.requests[0].path == "/v1/chat/completions"
    assert fake.requests[0].json == {
        "model": "gemini-image",
        "messages": [{"role": "user", "content": "a cat on a sofa"}],
        "size": "1024x1024",
        "stream": True,
    }


async def test_chat_references_are_data_url_parts(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    """References become image_url content parts holding data URLs with the real MIME type."""
    jpeg = make_jpeg()
    request = GenerationRequest(prompt="redraw", references=(ReferenceImage(jpeg, "image/*"),))
    await make_backend(fake, session, mode="chat").generate(request)
    content = fake.requests[0].json["messages"][0]["content"]
    assert content[0] == {"type": "text", "text": "redraw"}
    url = content[1]["image_url"]["url"]
    assert url == "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()


def test_chat_request_body_with_image_parts() -> None:
    """Image parts (with a detail) serialise as OpenAI's image_url parts; unset options stay out."""
    url = "data:image/jpeg;base64,/9j/AA=="
    request = ChatRequest(
        model="m",
        messages=(
            ChatMessage("system", "be brief"),
            ChatMessage("user", (TextPart("参考图 1"), ImagePart(url, detail="low"))),
        ),
        temperature=0,
    )
    assert request.body() == {
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "参考图 1"},
                    {"type": "image_url", "image_url": {"url": url, "detail": "low"}},
                ],
            },
        ],
        "temperature": 0,
    }


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }


async def test_chat_stream_error_chunk(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    """An ``{"error": ...}`` chunk mid-stream is an UpstreamError with the upstream text."""
    fake.events = [
        chunk({"content": ""}),
        {"error": {"message": "The server had an error", "type": "invalid_thing"}},
    ]
    with pytest.raises(UpstreamError, match="The server had an error"):
        await make_backend(fake, session, mode="chat", use_sse=True).generate(CAT)


async def test_chat_stream_server_error_is_retried(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    """An in-stream server_error is retryable: the next attempt succeeds."""
    fake.replies = [
        Reply(events=[{"error": {"message": "Provider disconnected", "code": "server_error"}}])
    ]
    image = await make_backend(fake, session, mode="chat", use_sse=True, retries=1).generate(CAT)
    assert image.data == fake.image
    assert len(fake.requests) == 2


async def test_chat_finish_reason_error(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    """OpenRouter's finish_reason "error" with an error object is a typed, retryable error."""
    fake.events = [
        chunk(
            {"content": ""},
            "error",
            error={"code": 502, "message": "Provider disconnected unexpectedly"},
        )
    ]
    with pytest.raises(UpstreamError) as caught:
        await make_backend(fake, session, mode="chat", use_sse=True).generate(CAT)
    assert caught.value.retryable


async def test_chat_finish_reason_error_without_error_object(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    """A bare finish_reason "error" is an UpstreamError too."""
    fake.events = [chunk({"content": "partial"}, "error")]
    with pytest.raises(UpstreamError):
        await make_backend(fake, session, mode="chat", use_sse=True).generate(CAT)


@pytest.mark.parametrize(
    "events",
    [
        [
            {
                "error": {
                    "message": "Your request was rejected by the safety system.",
                    "code": "moderation_blocked",
                }
            }
        ],
        [chunk({"content": ""}, "content_filter")],
    ],
    ids=["error-chunk", "finish-content-filter"],
)
async def test_chat_in_stream_refusal_is_content_policy(
    fake: FakeOpenAI, session: aiohttp.ClientSession, events: list[Any]
) -> None:
    """Moderation in the stream is ContentPolicyError (no fallback)."""
    fake.events = events
    with pytest.raises(ContentPolicyError) as caught:
        await make_backend(fake, session, mode="chat", use_sse=True).generate(CAT)
    assert caught.value.fallback is False


async def test_chat_without_image(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    """A text-only answer says the backend returned no image."""
    fake.events = [chunk({"content": "I cannot draw that, sorry."}), chunk({}, "stop")]
    with pytest.raises(UpstreamError) as caught:
        await make_backend(fake, session, mode="chat", use_sse=True).generate(CAT)
    assert caught.value.user_message == "绘图服务 oa 没有返回图片"


async def test_chat_stream_ending_early_is_stream_error(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    """A chat stream that stops with half a data URL and no finish is a cut stream, not an image."""
    half = f"![image](data:image/png;base64,{fake.b64[: len(fake.b64) // 2 // 4 * 4]}"
    fake.events = [chunk({"content": half})]
    fake.send_done = False
    with pytest.raises(StreamError):
        await make_backend(fake, session, mode="chat", use_sse=True).generate(CAT)


# -- failures ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {
            "error": {
                "message": "Your request was rejected by the safety system.",
                "type": "image_generation_user_error",
                "code": "moderation_blocked",
            }
        },
        {
            "error": {
                "message": "Your request was rejected as a result of our safety system.",
                "type": "invalid_request_error",
                "code": "content_policy_violation",
            }
        },
        {
            "error": {
                "message": "Your request was rejected as a result of our safety system. "
                "Your prompt may contain text that is not allowed",
                "type": "invalid_request_error",
                "code": None,
            }
        },
    ],
    ids=["moderation_blocked", "content_policy_violation", "message-only"],
)
async def test_content_policy_400(
    fake: FakeOpenAI, session: aiohttp.ClientSession, body: Any
) -> None:
    """A 400 refusal is ContentPolicyError and is not retried."""
    fake.replies = [Reply(400, body)]
    with pytest.raises(ContentPolicyError):
        await make_backend(fake, session, retries=2).generate(CAT)
    assert len(fake.requests) == 1


async def test_wrong_key_is_auth_error(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    """401 is BackendAuthError ("认证失败") and not retried."""
    with pytest.raises(BackendAuthError) as caught:
        await make_backend(fake, session, api_key="sk-wrong", retries=2).generate(CAT)
    assert caught.value.user_message == "绘图服务 oa 认证失败"
    assert len(fake.requests) == 1


async def test_empty_key_fails_before_any_request(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    """No api_key: BackendUnavailableError naming the backend, and nothing is sent."""
    with pytest.raises(BackendUnavailableError) as caught:
        await make_backend(fake, session, api_key="").generate(CAT)
    assert caught.value.user_message == "绘图服务 oa 未配置 api_key"
    assert fake.requests == []


async def test_env_key_is_resolved(
    fake: FakeOpenAI, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``api_key = "env:NAME"`` reads the key from the environment."""
    monkeypatch.setenv("LLM2PIC_TEST_KEY", "sk-test")
    await make_backend(fake, session, api_key="env:LLM2PIC_TEST_KEY").generate(CAT)
    assert fake.requests[0].headers["Authorization"] == "Bearer sk-test"


async def test_key_with_line_end_is_unavailable(
    fake: FakeOpenAI, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key with a stray CR (a CRLF .env file) is BackendUnavailableError, not a ValueError."""
    monkeypatch.setenv("LLM2PIC_TEST_KEY", "sk-crlf-0123456789\r")
    with pytest.raises(BackendUnavailableError) as caught:
        await make_backend(fake, session, api_key="env:LLM2PIC_TEST_KEY").generate(CAT)
    assert "0123456789" not in str(caught.value)
    assert fake.requests == []


async def test_5xx_retried_then_success(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    """A 503 with a short Retry-After is retried and the next answer is used."""
    fake.replies = [Reply(503, "overloaded", {"retry-after-ms": "10"})]
    image = await make_backend(fake, session, retries=2).generate(CAT)
    assert image.data == fake.image
    assert len(fake.requests) == 2


@pytest.mark.parametrize(
    ("b64", "reason"),
    [
        (base64.b64encode(b"<html>not an image at all</html>").decode(), "not an image"),
        ("iVBORw0KGgo!!!garbage###", "not valid base64"),
        ("", "neither b64_json nor url"),
    ],
    ids=["not-image", "garbage-base64", "empty"],
)
async def test_bad_image_payloads(
    fake: FakeOpenAI, session: aiohttp.ClientSession, b64: str, reason: str
) -> None:
    """Non-image bytes and broken base64 are clear UpstreamErrors, not crashes."""
    fake.replies = [Reply(200, {"created": 0, "data": [{"b64_json": b64}]})]
    with pytest.raises(UpstreamError, match=reason):
        await make_backend(fake, session).generate(CAT)


async def test_b64_with_data_url_prefix_and_line_breaks(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    """xAI-style ``data:...;base64,`` prefixes and wrapped base64 lines are accepted."""
    wrapped = "\n".join(fake.b64[i : i + 60] for i in range(0, len(fake.b64), 60))
    fake.replies = [Reply(200, {"data": [{"b64_json": "data:image/png;base64," + wrapped}]})]
    assert (await make_backend(fake, session).generate(CAT)).data == fake.image


async def test_downloaded_non_image_rejected(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    """A url answer pointing at an HTML page is rejected as not an image."""
    fake.files["page.html"] = (b"<html>login</html>", "text/html")
    fake.replies = [Reply(200, {"data": [{"url": fake.url("/files/page.html")}]})]
    with pytest.raises(UpstreamError, match="not an image"):
        await make_backend(fake, session).generate(CAT)


@pytest.mark.parametrize(
    ("reply", "use_sse"),
    [
        (Reply(200, {"choices": 1}), False),
        (Reply(200, {"choices": [{"message": {"content": "x", "images": 1}}]}), False),
        (Reply(events=[{"choices": 1}]), True),
        (Reply(events=[{"choices": [{"delta": {"images": 7}, "finish_reason": "stop"}]}]), True),
    ],
    ids=["choices-int", "images-int", "stream-choices-int", "stream-images-int"],
)
async def test_chat_odd_shapes_are_upstream_errors(
    fake: FakeOpenAI, session: aiohttp.ClientSession, reply: Reply, use_sse: bool
) -> None:
    """Non-list ``choices`` or ``images`` in a chat answer are UpstreamErrors, not TypeErrors."""
    fake.replies = [reply]
    backend = make_backend(fake, session, mode="chat", use_sse=use_sse)
    with pytest.raises(UpstreamError):
        await backend.generate(CAT)


async def test_malformed_stream_event(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    """A data event that is not JSON is a StreamError, not a crash."""
    fake.events = ["{not json"]
    with pytest.raises(StreamError):
        await make_backend(fake, session, use_sse=True).generate(CAT)


async def test_logs_and_errors_hold_no_base64(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    """An error quoting a huge base64 payload shows only a placeholder."""
    fake.replies = [Reply(400, json.dumps({"error": {"message": "bad image " + fake.b64 * 10}}))]
    with pytest.raises(BackendStatusError) as caught:
        await make_backend(fake, session).generate(CAT)
    assert fake.b64[:60] not in str(caught.value)
    assert "<base64>" in str(caught.value)


# -- probe ---------------------------------------------------------------------------------


async def test_probe_ok(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    """probe lists /models with the key and generates nothing."""
    status = (await make_backend(fake, session).probe()).detail
    assert "gpt-image-1 listed" in status
    assert [r.path for r in fake.requests] == ["/v1/models"]


async def test_probe_odd_model_ids(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    """Model ids that are not strings (a list, a number) are skipped, not a TypeError."""
    fake.replies = [Reply(200, {"data": [{"id": ["x"]}, {"id": 3}, {"id": "gpt-image-1"}]})]
    status = (await make_backend(fake, session).probe()).detail
    assert "1 models (gpt-image-1 listed)" in status


async def test_probe_bad_key(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    """probe with a wrong key raises BackendAuthError."""
    with pytest.raises(BackendAuthError):
        await make_backend(fake, session, api_key="sk-nope").probe()


@pytest.mark.parametrize(
    ("mode", "path", "body"),
    [
        ("images", "/v1/images/generations", {"model": "gpt-image-1"}),
        ("chat", "/v1/chat/completions", {"model": "gpt-image-1", "messages": []}),
    ],
)
async def test_probe_without_models_route_generates_nothing(
    fake: FakeOpenAI, session: aiohttp.ClientSession, mode: str, path: str, body: Any
) -> None:
    """Without GET /models an empty request is sent; its 400 proves reach and auth."""
    fake.has_models = False
    result = await make_backend(fake, session, mode=mode, model="gpt-image-1").probe()
    assert result.ok
    assert "HTTP 400" in result.detail
    assert [(r.path, r.json) for r in fake.requests] == [("/v1/models", None), (path, body)]


async def test_probe_without_models_route_catches_a_bad_key(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    """The empty request's 401 still says the key is wrong."""
    fake.has_models = False
    with pytest.raises(BackendAuthError):
        await make_backend(fake, session, api_key="sk-nope").probe()


async def test_probe_base_url_without_api_prefix(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    """A base_url without /v1 is reported as such, not as a bare HTTP 404."""
    with pytest.raises(EndpointNotFoundError) as caught:
        await make_backend(fake, session, base_url=fake.url("")).probe()
    assert caught.value.user_message == (
        "绘图服务 oa 找不到 API 接口，请检查 base_url 是否以 API 前缀（如 /v1）结尾"
    )


@pytest.mark.parametrize("mode", ["images", "chat"])
async def test_draw_with_base_url_without_api_prefix(
    fake: FakeOpenAI, session: aiohttp.ClientSession, mode: str
) -> None:
    """A draw against a base_url without /v1 says to check the prefix, and is not retried."""
    backend = make_backend(fake, session, base_url=fake.url(""), mode=mode, retries=2)
    with pytest.raises(EndpointNotFoundError) as caught:
        await backend.generate(CAT)
    assert "/v1" in caught.value.user_message
    assert caught.value.retryable is False


KNOWN_FAILURES = [
    (
        429,
        {
            "message": "You exceeded your current quota, please check your plan and billing "
            "details.",
            "type": "insufficient_quota",
            "code": "insufficient_quota",
        },
        QuotaExhaustedError,
        "绘图服务 oa 的额度已用完，请稍后再试或换用其他服务",
    ),
    (
        403,
        {"message": "You have exceeded your GPU quota (60s requested vs. 12s left).", "code": ""},
        QuotaExhaustedError,
        "绘图服务 oa 的额度已用完，请稍后再试或换用其他服务",
    ),
    (
        402,
        {
            "message": "Insufficient Balance",
            "type": "unknown_error",
            "code": "invalid_request_error",
        },
        InsufficientBalanceError,
        "绘图服务 oa 的账户余额不足，请管理员充值",
    ),
    (
        403,
        {"message": "用户额度不足, 剩余额度: ＄0.0001", "type": "one_api_error"},
        InsufficientBalanceError,
        "绘图服务 oa 的账户余额不足，请管理员充值",
    ),
    (
        429,
        {
            "message": "Rate limit reached for gpt-image-1 in organization org-x on images per "
            "minute (IPM): Limit 5, Used 5, Requested 1.",
            "type": "requests",
            "code": "rate_limit_exceeded",
        },
        RateLimitedError,
        "绘图服务 oa 请求太频繁，被限流了，请稍后再试",
    ),
    (
        400,
        {
            "message": "Your request was rejected as a result of our safety system.",
            "type": "invalid_request_error",
            "code": None,
        },
        ContentPolicyError,
        "绘图服务 oa 拒绝了这个请求（内容审核未通过）",
    ),
    (
        404,
        {
            "message": "The model `gpt-image-9` does not exist or you do not have access to it.",
            "type": "invalid_request_error",
            "code": "model_not_found",
        },
        ModelNotFoundError,
        "绘图服务 oa 找不到所配置的模型，请检查 model 设置",
    ),
    (
        503,
        {"message": "当前分组 default 下对于模型 gpt-image-9 无可用渠道", "type": "new_api_error"},
        ModelNotFoundError,
        "绘图服务 oa 找不到所配置的模型，请检查 model 设置",
    ),
]


@pytest.mark.parametrize(
    ("status", "error", "kind", "reply"),
    KNOWN_FAILURES,
    ids=[
        "quota",
        "zerogpu-quota",
        "balance",
        "balance-one-api",
        "rate-limit",
        "content-policy",
        "model",
        "model-new-api",
    ],
)
async def test_known_upstream_texts_are_translated(
    fake: FakeOpenAI,
    session: aiohttp.ClientSession,
    status: int,
    error: Any,
    kind: type[BackendStatusError],
    reply: str,
) -> None:
    """A known upstream failure gets its class and a Chinese reply; its words stay in the log."""
    fake.replies = [Reply(status, {"error": error})]
    with pytest.raises(kind) as caught:
        await make_backend(fake, session).generate(CAT)
    assert caught.value.user_message == reply
    assert error["message"][:20] in str(caught.value)


@pytest.mark.parametrize(
    ("status", "error", "kind", "reply"),
    KNOWN_FAILURES,
    ids=[
        "quota",
        "zerogpu-quota",
        "balance",
        "balance-one-api",
        "rate-limit",
        "content-policy",
        "model",
        "model-new-api",
    ],
)
async def test_known_texts_in_a_stream_are_translated(
    fake: FakeOpenAI,
    session: aiohttp.ClientSession,
    status: int,
    error: Any,
    kind: type[BackendStatusError],
    reply: str,
) -> None:
    """The same texts as an in-band error chunk of a chat stream map to the same error."""
    fake.events = [chunk({"content": ""}), {"error": error}]
    with pytest.raises(kind) as caught:
        await make_backend(fake, session, mode="chat", use_sse=True).generate(CAT)
    assert caught.value.user_message == reply


async def test_quota_is_not_retried_but_rate_limit_is(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    """Quota exhausted fails at once; a rate limit is retried and then draws."""
    quota, rate = KNOWN_FAILURES[0], KNOWN_FAILURES[4]
    fake.replies = [Reply(quota[0], {"error": quota[1]})]
    with pytest.raises(QuotaExhaustedError):
        await make_backend(fake, session, retries=2).generate(CAT)
    assert len(fake.requests) == 1
    fake.replies = [Reply(rate[0], {"error": rate[1]}, headers={"Retry-After": "0"})]
    image = await make_backend(fake, session, retries=1).generate(CAT)
    assert image.data == fake.image
    assert len(fake.requests) == 3


async def test_supports_references(fake: FakeOpenAI, session: aiohttp.ClientSession) -> None:
    """Both modes accept reference images."""
    assert make_backend(fake, session).supports_references
    assert make_backend(fake, session, mode="chat").supports_references


def test_sliced_base64_decoding_matches_one_call() -> None:
    """Base64 longer than one slice decodes exactly as one strict call does."""
    data = bytes(range(256)) * (BASE64_SLICE // 100)
    text = base64.b64encode(data).decode()
    assert len(text) > 2 * BASE64_SLICE
    assert decode_base64(text) == data


def test_sliced_base64_rejects_padding_inside_the_data() -> None:
    """Padding that ends a slice but not the data is invalid, as in one strict call."""
    text = "A" * (BASE64_SLICE - 2) + "==" + "AAAA"
    with pytest.raises(binascii.Error):
        base64.b64decode(text, validate=True)
    with pytest.raises(binascii.Error):
        decode_base64(text)


def _regex_reading(text: str) -> tuple[str, str] | None:
    """How chat text was read before: plain regex searches over the whole text (the oracle)."""
    for pattern, group in (
        (r"!\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?[^)]*\)", 1),
        (r"data:image/[\w.+-]+;base64,[A-Za-z0-9+/=_-]+", 0),
        (r"https?://[^\s<>\"')\]]+", 0),
    ):
        match = re.search(pattern, text)
        if match is not None:
            return "url", match.group(group)
    stripped = text.strip()
    if re.fullmatch(r"[A-Za-z0-9+/\r\n]{64,}={0,2}", stripped):
        return "base64", stripped
    return None


_LONG = base64.b64encode(bytes(range(256)) * (LONG_PAYLOAD // 100)).decode()
_HUGE = "A" * (BASE64_SLICE + 5)


@pytest.mark.parametrize(
    "text",
    [
        f"好的：![image](data:image/png;base64,{_LONG})\n",
        f'![a](<data:image/png;base64,{_LONG}> "title") and ![b](https://x.test/b.png)',
        f"see data:image/png;base64,{_LONG}. Done, data:image/png;base64,{_LONG[:50]}",
        f"data:image/png;base64,{_LONG}https://x.test/a.png then ![x](https://x.test/b.png)",
        f"data:image/png;base64,{_LONG}-data:image/jpeg;base64,{_LONG}",
        f"![broken](data:image/png;base64,{_LONG}\n{_LONG})",
        f"{_LONG}\n\nfull size: https://x.test/full.png",
        f"{_LONG}\n\n![full](https://x.test/full.png)",
        f"x;base64,{_LONG}https://x.test/a.png",
        f"data:image/png;base64,{_HUGE}.",
        f"  {_LONG[:200]}\r\n{_LONG[200:400]}==\n",
        _HUGE,
        f"{_LONG}===",
        "A" * 63,
        "I cannot draw that, sorry.",
        "",
    ],
    ids=lambda text: f"{len(text)}:{text[:12]!r}",
)
def test_chat_text_reading_matches_the_regex_search(text: str) -> None:
    """The linear chat-text reader finds what a plain regex search over the whole text finds."""
    assert image_in_text(text) == _regex_reading(text)


def test_compact_base64_drops_whitespace_across_slices() -> None:
    """Whitespace is removed and padding added whatever the slice boundaries."""
    text = (" " * 3 + "AB\r\n") * (BASE64_SLICE // 3) + "A"
    expected = "AB" * (BASE64_SLICE // 3) + "A"
    assert compact_base64(text) == expected + "=" * (-len(expected) % 4)


_FRAGMENTS = [
    _LONG,
    _LONG[:70],
    "data:image/png;base64,",
    ";base64,",
    "![x](",
    "![",
    ")",
    "]",
    "(",
    "<",
    ">",
    "https://x.test/a.png",
    "http",
    "://",
    " ",
    "\n",
    "\r\n",
    ".",
    "=",
    "==",
    "好",
    "data",
]


@given(st.lists(st.sampled_from(_FRAGMENTS), max_size=8).map("".join))
@hyp_settings(max_examples=300, deadline=None)
def test_chat_text_reading_matches_the_regex_search_on_any_mix(text: str) -> None:
    """On any mix of payloads, markdown, URLs and separators, both readings agree."""
    assert image_in_text(text) == _regex_reading(text)


async def test_extra_body_reaches_generations_and_chat():
    """`extra_body` fields (OpenRouter's modalities) are merged into both JSON requests."""
    async with FakeOpenAI() as fake:
        async with new_session() as session:
            for mode in ("images", "chat"):
                settings = OpenAIBackendSettings(
                    type="openai",
                    base_url=fake.base_url,
                    api_key="sk-test",
                    mode=mode,
                    extra_body={"modalities": ["image", "text"], "stream": "ignored"},
                )
                await OpenAIBackend("or", settings, session).generate(GenerationRequest("a cat"))
    for recorded in fake.requests:
        assert recorded.json["modalities"] == ["image", "text"]
        assert "stream" not in recorded.json or recorded.json["stream"] is True
