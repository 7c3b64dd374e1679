"""Secrets, schemes and paths: keys never leak, downloads stay http(s) and
capped, saved files stay in the data dir.

Upstreams here are hostile on purpose: they echo the key they were sent back in error bodies,
in-band errors and Gradio error text. Every text a person could see is collected — chat replies,
loguru (`nonebot.logger`) and stdlib logs, exception texts and causes, saved sidecars — and
searched for the key.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from nonebot import logger as nonebot_logger
from nonebot.adapters.onebot.v11 import Adapter, Bot, Message, MessageSegment
from nonebug import App

from nonebot_plugin_llm2pic import pipeline as pipeline_module
from nonebot_plugin_llm2pic.exceptions import (
    BackendError,
    Llm2PicError,
    QuotaExhaustedError,
    ReferenceImageError,
    UpstreamError,
)
from nonebot_plugin_llm2pic.imaging import ProcessedImage
from nonebot_plugin_llm2pic.pipeline import DrawJob, DrawResult, fetch_references, save_result

from .fakes.gradio_server import FakeGradio, sse
from .fakes.harness import (
    SECRET,
    gradio_backend,
    openai_backend,
    pipeline_for,
    png,
    settings_for,
)
from .fakes.openai_server import FakeOpenAI, Reply
from .fakes.raw_http import RawHttpServer, http_response
from .utils import SELF_ID, group_message

HF_SECRET = "hf_SECRETtoken0123456789abcdefXYZ"
JOB = DrawJob(text="一只猫")


class Logs:
    """Everything logged while the test runs: loguru (`nonebot.logger`) and stdlib alike."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.caplog = caplog
        self.loguru: list[str] = []

    def lines(self) -> list[str]:
        return [
            *self.loguru,
            *(r.getMessage() for r in self.caplog.records),
            *self.caplog.text.splitlines(),
        ]

    def __iter__(self):
        return iter(self.lines())

    def __add__(self, other: list[str]) -> list[str]:
        return [*self.lines(), *other]

    def __radd__(self, other: list[str]) -> list[str]:
        return [*other, *self.lines()]


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture):
    collected = Logs(caplog)
    sink = nonebot_logger.add(lambda message: collected.loguru.append(str(message)), level="DEBUG")
    caplog.set_level(logging.DEBUG)
    try:
        yield collected
    finally:
        nonebot_logger.remove(sink)


def error_texts(err: BaseException) -> list[str]:
    """Every text an exception carries, down its cause/context chain."""
    texts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts += [str(current), repr(current), *map(str, current.args)]
        if isinstance(current, Llm2PicError):
            texts.append(current.user_message)
        texts.append(str(getattr(current, "body", "")))
        current = current.__cause__ or current.__context__
    return texts


def echo_key(key: str) -> dict:
    return {
        "error": {
            "message": f"Incorrect API key provided: {key}. Check {key} again.",
            "type": "invalid_request_error",
            "code": "invalid_api_key",
        }
    }


# --- keys -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        Reply(status=401, body=echo_key(SECRET)),
        Reply(status=403, body=f"forbidden for key {SECRET}"),
        Reply(status=500, body=echo_key(SECRET)),
        Reply(status=429, body=echo_key(SECRET), headers={"Retry-After": "0"}),
        Reply(status=200, body=echo_key(SECRET)),  # in-band error inside a 200
    ],
    ids=["401", "403-text", "500", "429", "in-band"],
)
async def test_echoed_key_never_leaks(reply: Reply, logs: Logs):
    """An upstream echoing our key back: not in the error, its reply text, its causes, or logs."""
    async with FakeOpenAI() as fake:
        fake.api_key = SECRET
        fake.replies.append(reply)
        settings = settings_for({"a": openai_backend(fake.base_url, api_key=SECRET)})
        async with pipeline_for(settings) as pipeline:
            with pytest.raises(BackendError) as caught:
                await pipeline.run(JOB)
    texts = error_texts(caught.value) + logs
    assert texts
    assert not [text for text in texts if SECRET in text]
    assert fake.requests[0].headers["Authorization"] == f"Bearer {SECRET}"  # it was really used


async def test_gradio_error_echoing_token_never_leaks(logs: Logs):
    """A Gradio error event quoting the HF token shows the reason without the token."""
    async with FakeGradio() as gradio:
        gradio.stream = [sse("error", f"Invalid token {HF_SECRET}: quota exceeded")]
        settings = settings_for({"z": gradio_backend(gradio.base_url, token=HF_SECRET)})
        async with pipeline_for(settings) as pipeline:
            with pytest.raises(QuotaExhaustedError) as caught:
                await pipeline.run(JOB)
    assert "额度已用完" in caught.value.user_message
    assert "quota exceeded" in str(caught.value)
    assert not [text for text in error_texts(caught.value) + logs if HF_SECRET in text]


async def test_llm_key_never_leaks_when_the_llm_fails(logs: Logs):
    """The prompt writer's key stays out of the fallback's logs, even when echoed."""
    async with FakeOpenAI() as fake, RawHttpServer() as llm:
        llm.fallback = http_response(echo_key(SECRET), status="401 Unauthorized")
        settings = settings_for(
            {"a": openai_backend(fake.base_url)},
            llm={"base_url": llm.base_url, "model": "m", "api_key": SECRET},
        )
        async with pipeline_for(settings) as pipeline:
            result = await pipeline.run(JOB)
    assert result.prompt == "一只猫"
    assert any("prompt writer" in line for line in logs)
    assert not [line for line in logs if SECRET in line]


async def test_env_key_resolved_but_never_shown(monkeypatch: pytest.MonkeyPatch, logs):
    """`api_key = "env:NAME"` sends the variable's value and shows only the reference."""
    monkeypatch.setenv("LLM2PIC_TEST_KEY", SECRET)
    async with FakeOpenAI() as fake:
        fake.api_key = SECRET
        fake.replies.append(Reply(status=500, body=echo_key(SECRET)))
        settings = settings_for(
            {"a": openai_backend(fake.base_url, api_key="env:LLM2PIC_TEST_KEY")}
        )
        async with pipeline_for(settings) as pipeline:
            with pytest.raises(BackendError) as caught:
                await pipeline.run(JOB)
    assert fake.requests[0].headers["Authorization"] == f"Bearer {SECRET}"
    assert not [text for text in error_texts(caught.value) + logs if SECRET in text]


# --- chat: replies, logs, sidecars ----------------------------------------------------------------


@pytest.fixture
async def keyed_upstream(config_file: Path, inline_jobs: None):
    """The live bot routed to a fake that knows SECRET; saving images on; jobs run inline."""
    from nonebot_plugin_llm2pic import state

    async with FakeOpenAI() as fake:
        fake.api_key = SECRET
        fake.image = png(40, 30)
        for key, value in [
            ("backends.openai.base_url", f'"{fake.base_url}"'),
            ("backends.openai.api_key", f'"{SECRET}"'),
            ("backends.openai.retries", "0"),
            ("routing.default", '"openai"'),
            ("limits.user_cooldown_seconds", "0"),
            ("plugin.save_images", "true"),
            ("plugin.show_prompt", "true"),
        ]:
            state.store.set(key, value)
        yield fake


async def test_chat_replies_logs_and_sidecars_hold_no_key(
    app: App, keyed_upstream: FakeOpenAI, logs: Logs
):
    """A failing and a working `/pic`: replies, logs and the saved sidecar never hold the key."""
    from nonebot_plugin_llm2pic.config import data_dir
    from nonebot_plugin_llm2pic.matchers.draw import image_send_timeout, pic_cmd

    keyed_upstream.replies.append(Reply(status=401, body=echo_key(SECRET)))
    failing = group_message(f"/pic 一只猫 {SECRET[:6]}", user_id=40001)
    working = group_message("/pic 一只狗", user_id=40002)
    images = data_dir() / "images"
    before = set(images.glob("*.json")) if images.exists() else set()
    async with app.test_matcher(pic_cmd) as ctx:
        bot = ctx.create_bot(base=Bot, adapter=ctx.create_adapter(base=Adapter), self_id=SELF_ID)
        ctx.receive_event(bot, failing)
        ctx.should_call_send(failing, "收到，正在画…", result={"message_id": 1}, reply_message=True)
        ctx.should_call_send(
            failing, "绘图服务 openai 认证失败", result={"message_id": 2}, reply_message=True
        )
        ctx.receive_event(bot, working)
        ctx.should_call_send(working, "收到，正在画…", result={"message_id": 3}, reply_message=True)
        image = Message(MessageSegment.image(keyed_upstream.image))
        ctx.should_call_send(
            working,
            image + MessageSegment.text("\n提示词：一只狗"),
            result={"message_id": 4},
            reply_message=True,
            _timeout=image_send_timeout(len(keyed_upstream.image)),
        )
    new = set(images.glob("*.json")) - before
    assert len(new) == 1
    assert SECRET not in new.pop().read_text("utf-8")
    assert any("llm2pic job failed" in line for line in logs)  # the failure was logged…
    assert not [line for line in logs if SECRET in line]  # …without the key


# --- schemes, sizes, time -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://127.0.0.1/x.png",
        "gopher://127.0.0.1:70/_x",
        "//evil/x.png",
        "javascript:alert(1)",
    ],
)
async def test_image_url_answer_must_be_http(url: str):
    """An images answer pointing at a non-http(s) URL is refused, never fetched."""
    async with FakeOpenAI() as fake:
        fake.replies.append(Reply(status=200, body={"data": [{"url": url}]}))
        settings = settings_for({"a": openai_backend(fake.base_url)})
        async with pipeline_for(settings) as pipeline:
            with pytest.raises(BackendError) as caught:
                await pipeline.run(JOB)
    assert caught.value.user_message in ("绘图服务 a 返回了无效的图片地址", "绘图服务 a 的地址无效")


@pytest.mark.parametrize("location", ["file:///etc/passwd", "ftp://127.0.0.1/x.png"])
async def test_redirect_to_another_scheme_is_refused(location: str):
    """An http answer redirecting the image download to file:// or ftp:// is refused."""
    async with FakeOpenAI() as fake, RawHttpServer() as raw:
        raw.fallback = (
            b"HTTP/1.1 302 Found\r\nLocation: "
            + location.encode()
            + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        fake.replies.append(Reply(status=200, body={"data": [{"url": raw.url("/img.png")}]}))
        settings = settings_for({"a": openai_backend(fake.base_url)})
        async with pipeline_for(settings) as pipeline:
            with pytest.raises(UpstreamError) as caught:
                await pipeline.run(JOB)
            with pytest.raises(ReferenceImageError):
                await fetch_references(pipeline.session, [raw.url("/ref.png")])
    assert caught.value.user_message == "绘图服务 a 返回了无效的图片地址"


async def test_reference_download_is_size_capped():
    """A reference image declaring 100 MB is refused before its body is read."""
    async with RawHttpServer() as raw:
        raw.fallback = http_response(
            png(), content_type="image/png", content_length=100 * 1024 * 1024
        )
        async with pipeline_for(settings_for({"a": openai_backend(raw.base_url)})) as pipeline:
            with pytest.raises(ReferenceImageError) as caught:
                await fetch_references(pipeline.session, [raw.url("/big.png")])
    assert isinstance(caught.value.__cause__, BackendError)
    assert "larger than" in str(caught.value.__cause__)


async def test_reference_download_is_time_capped(monkeypatch: pytest.MonkeyPatch):
    """A reference server that never answers is given up after the reference timeout."""
    import time

    monkeypatch.setattr(pipeline_module, "REFERENCE_TIMEOUT", 0.5)
    async with RawHttpServer() as raw:
        raw.stall = 10
        async with pipeline_for(settings_for({"a": openai_backend(raw.base_url)})) as pipeline:
            started = time.monotonic()
            with pytest.raises(ReferenceImageError):
                await fetch_references(pipeline.session, [raw.url("/slow.png")])
            assert time.monotonic() - started < 2


async def test_non_http_reference_in_chat_is_never_fetched(app: App, keyed_upstream: FakeOpenAI):
    """An image segment whose URL is file:// is not a reference: the job draws from text only."""
    from nonebot_plugin_llm2pic.matchers.draw import image_send_timeout, pic_cmd

    message = Message("/pic 画成油画") + MessageSegment.image("file:///etc/passwd")
    message[-1].data["url"] = "file:///etc/shadow"
    event = group_message(message, user_id=40003)
    async with app.test_matcher(pic_cmd) as ctx:
        bot = ctx.create_bot(base=Bot, adapter=ctx.create_adapter(base=Adapter), self_id=SELF_ID)
        ctx.receive_event(bot, event)
        ctx.should_call_send(event, "收到，正在画…", result={"message_id": 1}, reply_message=True)
        image = Message(MessageSegment.image(keyed_upstream.image))
        ctx.should_call_send(
            event,
            image + MessageSegment.text("\n提示词：画成油画"),
            result={"message_id": 2},
            reply_message=True,
            _timeout=image_send_timeout(len(keyed_upstream.image)),
        )
    assert [r.path for r in keyed_upstream.requests] == ["/v1/images/generations"]


# --- saved files ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "../../../../tmp/evil",
        "/etc/passwd",
        "..\\..\\windows",
        "a/b/../../../c",
        "\x00evil",
        "CON",
        "x" * 300,
    ],
)
def test_saved_images_stay_in_the_directory(tmp_path: Path, text: str):
    """Whatever the request text, prompt or backend name, saved files land in the directory."""
    directory = tmp_path / "data" / "images"
    result = DrawResult(
        image=ProcessedImage(png(), "image/png", 32, 24, reencoded=False),
        prompt=text,
        backend=text,
        seed=None,
        timings={"prompt": 0.0},
    )
    path = save_result(directory, result, text)
    written = sorted(p.resolve() for p in tmp_path.rglob("*") if p.is_file())
    assert written == sorted([path.resolve(), path.with_suffix(".json").resolve()])
    assert all(p.parent == directory.resolve() for p in written)
    assert json.loads(path.with_suffix(".json").read_text("utf-8"))["request"] == text


async def test_protocol_error_text_holds_no_payload(logs: Logs):
    """A malformed answer quoting a 200 KB base64 image yields a short error and short logs."""
    import base64
    import os

    async with RawHttpServer() as raw:
        body = {"data": [{"b64_json": base64.b64encode(os.urandom(150_000)).decode()}]}
        raw.script.append(http_response(body, content_length=30))  # the rest is "extra data"
        async with pipeline_for(settings_for({"a": openai_backend(raw.base_url)})) as pipeline:
            with pytest.raises(BackendError) as caught:
                await pipeline.run(JOB)
    assert max(len(text) for text in error_texts(caught.value)[:3]) < 1000
    assert max(map(len, logs.lines())) < 2000


async def test_echoed_key_without_known_prefix_is_masked():
    """A relay echoing a key of any shape in its error body never gets it into the error."""
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from nonebot_plugin_llm2pic.exceptions import BackendStatusError
    from nonebot_plugin_llm2pic.transport import RequestOptions, new_session, request_json

    key = "relaytoken0123456789abcdef"

    async def echo(request: web.Request) -> web.Response:
        given = request.headers["Authorization"].removeprefix("Bearer ")
        return web.json_response({"error": {"message": f"key {given} has no credit"}}, status=402)

    app = web.Application()
    app.router.add_post("/v1/x", echo)
    async with TestServer(app, host="127.0.0.1", port=0) as server, new_session() as session:
        options = RequestOptions(
            backend="relay", timeout=5, headers={"Authorization": f"Bearer {key}"}
        )
        with pytest.raises(BackendStatusError) as info:
            await request_json(session, "POST", str(server.make_url("/v1/x")), options, json={})
    assert key not in str(info.value)
    assert key not in info.value.user_message
    assert key not in info.value.body
    assert "has no credit" in str(info.value)


@pytest.mark.parametrize("filler", [" " * 1190, "A" * 1189 + " "], ids=["blank", "base64"])
@pytest.mark.parametrize(
    "key", ["relaytoken0123456789abcdef", "sk-proj-0123456789abcdef"], ids=["known-key", "key-like"]
)
def test_key_cut_at_the_excerpt_boundary_is_masked(filler: str, key: str):
    """A key straddling the end of what an excerpt reads (1200 bytes) is masked, not shown cut."""
    from nonebot_plugin_llm2pic.transport import RequestOptions, safe_excerpt

    RequestOptions(backend="relay", timeout=5, headers={"Authorization": f"Bearer {key}"})
    body = f"error {filler}{key} has no credit".encode()
    assert body.index(key.encode()) == 1196  # the first 4 characters fall inside the 1200
    assert key[:4] not in safe_excerpt(body)
