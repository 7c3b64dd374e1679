"""Upstream faults through the whole pipeline: one clear error, no image, no leak.

Each test runs the real `Pipeline` against local fakes, checks the one `Llm2PicError` the chat
would show (its `user_message`), that no image came out, that the queue is back to zero and no
task of ours is left (`harness.pipeline_for` asserts that on exit), and that the next job works.
"""

from __future__ import annotations

import time

import pytest

from nonebot_plugin_llm2pic.exceptions import (
    BackendAuthError,
    BackendError,
    BackendStatusError,
    BackendTimeoutError,
    ContentPolicyError,
    FilteredImageError,
    JobTimeoutError,
    Llm2PicError,
    QuotaExhaustedError,
    ReferenceImageError,
    StreamError,
    UpstreamError,
)
from nonebot_plugin_llm2pic.pipeline import DrawJob, Pipeline, fetch_references

from .fakes.gradio_server import FakeGradio, sse, zimage_outputs
from .fakes.harness import (
    blank_png,
    elapsed,
    gradio_backend,
    openai_backend,
    pipeline_for,
    png,
    settings_for,
)
from .fakes.llm_server import FakeLlm
from .fakes.openai_server import FakeOpenAI, Reply

JOB = DrawJob(text="一只猫")
QUOTA_TEXT = "You have exceeded your GPU quota (60s requested vs. 0s left). Try again in 1:00:00"
QUOTA_REPLY = "绘图服务 z 的额度已用完，请稍后再试或换用其他服务"
"""How QUOTA_TEXT reaches the chat: translated (the English goes to the log only)."""
APP_TEXT = "Server stopped unexpectedly."


@pytest.fixture
def fake(fake: FakeOpenAI) -> FakeOpenAI:
    """The shared fake upstream with a 32×24 picture, long enough to cut a stream inside it."""
    fake.image = png()
    return fake


@pytest.fixture
async def spare():
    """The fallback backend's upstream: a second fake with a different picture."""
    async with FakeOpenAI() as server:
        server.image = png(20, 20, (250, 250, 0))
        yield server


@pytest.fixture
async def gradio():
    async with FakeGradio() as server:
        yield server


async def fails_then_recovers(
    pipeline: Pipeline, error: type[Llm2PicError], user_message: str, fix
) -> Llm2PicError:
    """Run a job that must fail with exactly this error, undo the fault, run one that works."""
    with pytest.raises(error) as caught:
        await pipeline.run(JOB)
    assert caught.value.user_message == user_message
    fix()
    result = await pipeline.run(JOB)
    assert result.image.data
    return caught.value


# --- streams cut and connections dropped ---------------------------------------------------------


async def test_stream_cut_mid_image_retried_then_interrupted(fake: FakeOpenAI):
    """SSE cut inside the base64: retried, then "生成中断"; no partial image; next job works."""
    fake.cut_after = 200  # inside the completed event's b64_json
    settings = settings_for({"a": openai_backend(fake.base_url, use_sse=True, retries=1)})
    async with pipeline_for(settings) as pipeline:
        await fails_then_recovers(
            pipeline, StreamError, "生成中断，请稍后再试", lambda: setattr(fake, "cut_after", None)
        )
    assert len(fake.requests) == 3  # two attempts, then the job that works


async def test_connection_closed_before_headers(fake: FakeOpenAI):
    """The upstream hangs up before any header: retried, then one "中断" error."""
    fake.hangups = 2
    settings = settings_for({"a": openai_backend(fake.base_url, retries=1)})
    async with pipeline_for(settings) as pipeline:
        await fails_then_recovers(pipeline, StreamError, "生成中断，请稍后再试", lambda: None)
    assert len(fake.requests) == 3


async def test_one_hangup_is_absorbed_by_a_retry(fake: FakeOpenAI):
    """A single dropped connection costs a retry, not the job."""
    fake.hangups = 1
    settings = settings_for({"a": openai_backend(fake.base_url, retries=1)})
    async with pipeline_for(settings) as pipeline:
        result = await pipeline.run(JOB)
    assert result.image.data == fake.image


# --- statuses -------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_failure_not_retried_names_backend(fake: FakeOpenAI, status: int):
    """401/403: one request, no retry, "认证失败" naming the backend."""
    fake.replies.append(Reply(status=status, body={"error": {"message": "denied"}}))
    settings = settings_for({"a": openai_backend(fake.base_url, retries=2)})
    async with pipeline_for(settings) as pipeline:
        await fails_then_recovers(pipeline, BackendAuthError, "绘图服务 a 认证失败", lambda: None)
    assert len(fake.requests) == 2  # the failing one (never retried) and the next job


async def test_429_retry_after_is_waited(fake: FakeOpenAI):
    """429 with Retry-After: 1 → the retry comes about a second later and succeeds."""
    fake.replies.append(
        Reply(status=429, body={"error": {"message": "slow down"}}, headers={"Retry-After": "1"})
    )
    settings = settings_for({"a": openai_backend(fake.base_url, retries=1)})
    async with pipeline_for(settings) as pipeline:
        started = time.monotonic()
        result = await pipeline.run(JOB)
    assert 0.9 <= elapsed(started) < 3
    assert result.image.data == fake.image
    assert len(fake.requests) == 2


async def test_503_retry_after_exhausted_then_fallback(fake: FakeOpenAI, spare: FakeOpenAI):
    """503s with Retry-After are waited for, then the fallback backend draws."""
    for _ in range(2):
        fake.replies.append(
            Reply(
                status=503, body={"error": {"message": "overloaded"}}, headers={"Retry-After": "1"}
            )
        )
    settings = settings_for(
        {"a": openai_backend(fake.base_url, retries=1), "b": openai_backend(spare.base_url)},
        routing={"fallback": ["b"]},
    )
    async with pipeline_for(settings) as pipeline:
        started = time.monotonic()
        result = await pipeline.run(JOB)
    assert elapsed(started) >= 0.9
    assert (result.backend, result.image.data) == ("b", spare.image)
    assert len(fake.requests) == 2
    assert pipeline.stats.summary()["a"][:2] == (0, 1)


async def test_500_burst_longer_than_retries_fails_once(fake: FakeOpenAI):
    """A burst of 500s outlasting the retries gives one "HTTP 500" error; the next job works."""
    for _ in range(2):
        fake.replies.append(Reply(status=500))
    settings = settings_for({"a": openai_backend(fake.base_url, retries=1)})
    async with pipeline_for(settings) as pipeline:
        await fails_then_recovers(
            pipeline, BackendStatusError, "绘图服务 a 出错（HTTP 500）", lambda: None
        )
    assert len(fake.requests) == 3


async def test_500_burst_shorter_than_retries_succeeds(fake: FakeOpenAI):
    """One 500 inside the retry budget is invisible to the user."""
    fake.replies.append(Reply(status=500))
    settings = settings_for({"a": openai_backend(fake.base_url, retries=1)})
    async with pipeline_for(settings) as pipeline:
        result = await pipeline.run(JOB)
    assert result.image.data == fake.image


# --- slow upstreams -------------------------------------------------------------------------------


async def test_slow_loris_is_cut_by_the_total_timeout(fake: FakeOpenAI):
    """Bytes trickling faster than the idle timeout still fail at the attempt's total timeout."""
    fake.chunk_size, fake.chunk_delay = 16, 0.05  # the ~1 KB answer would take ~3.5 s
    settings = settings_for({"a": openai_backend(fake.base_url, timeout=0.6)})
    async with pipeline_for(settings) as pipeline:
        started = time.monotonic()
        with pytest.raises(BackendTimeoutError) as caught:
            await pipeline.run(JOB)
        assert elapsed(started) < 2
        assert caught.value.user_message == "绘图服务 a 超时"
        fake.chunk_size = 0
        assert (await pipeline.run(JOB)).image.data == fake.image


async def test_gradio_heartbeats_forever_time_out(gradio: FakeGradio):
    """A Gradio stream that only ever sends heartbeats fails at the attempt timeout."""
    gradio.stream = [sse("heartbeat", None)] * 200
    gradio.stream_delay = 0.05
    settings = settings_for({"z": gradio_backend(gradio.base_url, timeout=0.6)})
    async with pipeline_for(settings) as pipeline:
        started = time.monotonic()
        with pytest.raises(BackendTimeoutError):
            await pipeline.run(JOB)
        assert elapsed(started) < 2
        gradio.stream, gradio.stream_delay = [sse("complete", zimage_outputs())], 0.0
        assert (await pipeline.run(JOB)).backend == "z"


async def test_job_timeout_bounds_everything(fake: FakeOpenAI):
    """`limits.job_timeout` ends a job whose upstream never answers, retries included."""
    fake.delay = 5
    settings = settings_for(
        {"a": openai_backend(fake.base_url, retries=2)}, limits={"job_timeout": 0.5}
    )
    async with pipeline_for(settings) as pipeline:
        started = time.monotonic()
        with pytest.raises(JobTimeoutError) as caught:
            await pipeline.run(JOB)
        assert elapsed(started) < 1.5
        assert caught.value.user_message == "画图超时了，请稍后再试"


# --- Gradio error events --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "error", "reply"),
    [
        (None, UpstreamError, "绘图服务 z 报错（未给出原因）"),
        (APP_TEXT, UpstreamError, f"绘图服务 z 报错：{APP_TEXT}"),
        ({"error": APP_TEXT}, UpstreamError, f"绘图服务 z 报错：{APP_TEXT}"),
        (QUOTA_TEXT, QuotaExhaustedError, QUOTA_REPLY),
        ({"error": QUOTA_TEXT}, QuotaExhaustedError, QUOTA_REPLY),
    ],
)
async def test_gradio_error_fails_fast_with_its_text(
    gradio: FakeGradio, data, error: type[BackendError], reply: str
):
    """`event: error` ends the job at once (no retry), quoting unknown text, translating known."""
    gradio.stream = [sse("heartbeat", None), sse("error", data)]
    settings = settings_for({"z": gradio_backend(gradio.base_url, retries=2, timeout=30)})
    async with pipeline_for(settings) as pipeline:
        started = time.monotonic()

        def fix() -> None:
            gradio.stream = [sse("complete", zimage_outputs())]

        await fails_then_recovers(pipeline, error, reply, fix)
        assert elapsed(started) < 2
    assert len(gradio.paths("POST")) == 2  # one /call per job: the error was not retried


# --- the prompt writer ----------------------------------------------------------------------------


async def test_llm_down_falls_back_to_request_text(fake: FakeOpenAI):
    """Nothing listens at the LLM's address: the request text is the prompt; drawing goes on."""
    settings = settings_for(
        {"a": openai_backend(fake.base_url)},
        llm={"base_url": "http://127.0.0.1:9/v1", "model": "m", "timeout": 2},
    )
    async with pipeline_for(settings) as pipeline:
        result = await pipeline.run(JOB)
    assert result.prompt == "一只猫"
    assert fake.requests[-1].json["prompt"] == "一只猫"


async def test_llm_slow_falls_back_within_its_timeout(fake: FakeOpenAI):
    """An LLM slower than `llm.timeout` is abandoned after it; drawing goes on."""
    async with FakeLlm() as llm:
        llm.delay = 3
        settings = settings_for(
            {"a": openai_backend(fake.base_url)},
            llm={"base_url": llm.base_url, "model": "m", "timeout": 0.4},
        )
        async with pipeline_for(settings) as pipeline:
            started = time.monotonic()
            result = await pipeline.run(JOB)
            assert elapsed(started) < 1.5
    assert result.prompt == "一只猫"


async def test_llm_content_policy_refusal_refuses_the_job(fake: FakeOpenAI, spare: FakeOpenAI):
    """The LLM refusing the request's content ends the job: no backend draws the raw text."""
    async with FakeLlm() as llm:
        llm.status = 400
        llm.error_body = (
            '{"error": {"message": "The response was filtered due to the prompt triggering '
            'content management policy.", "type": null, "code": "content_filter"}}'
        )
        settings = settings_for(
            {"a": openai_backend(fake.base_url), "b": openai_backend(spare.base_url)},
            routing={"fallback": ["b"]},
            llm={"base_url": llm.base_url, "model": "m"},
        )
        async with pipeline_for(settings) as pipeline:
            with pytest.raises(ContentPolicyError) as caught:
                await pipeline.run(JOB)
    assert caught.value.user_message == "提示词模型（LLM）拒绝了这个请求（内容审核未通过）"
    assert fake.requests == []
    assert spare.requests == []


# --- reference images -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reply"),
    [
        ("missing.png", "参考图下载失败（可能已过期），请重新发送图片"),
        ("page.html", "参考图不是有效的图片，请换一张"),
    ],
)
async def test_bad_reference_url(fake: FakeOpenAI, name: str, reply: str):
    """A reference that 404s or serves HTML is one clear refusal, and nothing is drawn."""
    fake.files["page.html"] = (b"<html><body>QQ image expired</body></html>", "text/html")
    settings = settings_for({"a": openai_backend(fake.base_url)})
    async with pipeline_for(settings) as pipeline:
        with pytest.raises(ReferenceImageError) as caught:
            await fetch_references(pipeline.session, [fake.url(f"/files/{name}")])
        assert caught.value.user_message == reply
        assert (await pipeline.run(JOB)).image.data == fake.image
    assert [r.path for r in fake.requests] == [f"/files/{name}", "/v1/images/generations"]


# --- fallback routing -----------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["500", "401", "hangup", "gradio_error"])
async def test_fallback_used_after_backend_failure(
    fake: FakeOpenAI, spare: FakeOpenAI, gradio: FakeGradio, fault: str
):
    """After 5xx, 401, a dropped connection or a Gradio error, `routing.fallback` draws."""
    primary = openai_backend(fake.base_url)
    if fault == "500":
        fake.replies.append(Reply(status=500))
    elif fault == "401":
        primary["api_key"] = "sk-wrong"
    elif fault == "hangup":
        fake.hangups = 1
    else:
        gradio.stream = [sse("error", QUOTA_TEXT)]
        primary = gradio_backend(gradio.base_url)
    settings = settings_for(
        {"a": primary, "b": openai_backend(spare.base_url)}, routing={"fallback": ["b"]}
    )
    async with pipeline_for(settings) as pipeline:
        result = await pipeline.run(JOB)
    assert (result.backend, result.image.data) == ("b", spare.image)
    assert len(spare.requests) == 1


async def test_no_fallback_after_content_policy(fake: FakeOpenAI, spare: FakeOpenAI):
    """A content-policy refusal is final: the fallback backend is never asked."""
    fake.replies.append(
        Reply(
            status=400,
            body={
                "error": {
                    "code": "content_policy_violation",
                    "message": "Your request was rejected by the safety system.",
                }
            },
        )
    )
    settings = settings_for(
        {"a": openai_backend(fake.base_url, retries=2), "b": openai_backend(spare.base_url)},
        routing={"fallback": ["b"]},
    )
    async with pipeline_for(settings) as pipeline:
        with pytest.raises(ContentPolicyError) as caught:
            await pipeline.run(JOB)
    assert caught.value.user_message == "绘图服务 a 拒绝了这个请求（内容审核未通过）"
    assert len(fake.requests) == 1
    assert spare.requests == []


async def test_blank_result_is_filtered_without_fallback(fake: FakeOpenAI, spare: FakeOpenAI):
    """A blank picture is withheld as filtered, like a content-policy refusal: no fallback."""
    fake.image = blank_png()
    settings = settings_for(
        {"a": openai_backend(fake.base_url, retries=2), "b": openai_backend(spare.base_url)},
        routing={"fallback": ["b"]},
    )
    async with pipeline_for(settings) as pipeline:
        with pytest.raises(FilteredImageError) as caught:
            await pipeline.run(JOB)
    assert caught.value.user_message == "图片被过滤了（可能触发了安全审核），换个说法再试试"
    assert len(fake.requests) == 1
    assert spare.requests == []


async def test_no_fallback_when_user_picked_backend(fake: FakeOpenAI, spare: FakeOpenAI):
    """With `-b a` a failure of a is reported, never silently drawn by another backend."""
    fake.replies.append(Reply(status=500))
    settings = settings_for(
        {"a": openai_backend(fake.base_url), "b": openai_backend(spare.base_url)},
        routing={"fallback": ["b"]},
    )
    async with pipeline_for(settings) as pipeline:
        with pytest.raises(BackendStatusError) as caught:
            await pipeline.run(DrawJob(text="一只猫", backend="a"))
    assert caught.value.user_message == "绘图服务 a 出错（HTTP 500）"
    assert spare.requests == []


async def test_every_fallback_failing_reports_the_last(fake: FakeOpenAI, spare: FakeOpenAI):
    """When the fallback fails too, the user hears the last backend's reason, once."""
    fake.replies.append(Reply(status=500))
    spare.replies.append(Reply(status=401, body={"error": {"message": "bad key"}}))
    settings = settings_for(
        {"a": openai_backend(fake.base_url), "b": openai_backend(spare.base_url)},
        routing={"fallback": ["b"]},
    )
    async with pipeline_for(settings) as pipeline:
        with pytest.raises(BackendAuthError) as caught:
            await pipeline.run(JOB)
    assert caught.value.user_message == "绘图服务 b 认证失败"
    assert pipeline.stats.summary() == {"a": (0, 1, None), "b": (0, 1, None)}


# --- end to end -----------------------------------------------------------------------------------


async def test_faults_end_to_end(tmp_path, fake: FakeOpenAI, spare: FakeOpenAI, gradio: FakeGradio):
    """Through `serve` and OneBot v11, one bot meets each fault in turn: every request gets its
    ack and exactly one outcome (read strictly in order, so a stray extra reply would fail the
    next step), and the queue is empty at the end."""
    import base64

    from .fakes.harness import SECRET, png_claiming
    from .onebot_client import OneBotClient, ServeProcess, message_segments, message_text
    from .test_chat_e2e import sent_image, write_config

    fake.api_key = SECRET  # every step's replies and the whole log are searched for it below
    server = ServeProcess(tmp_path)
    write_config(
        server,
        fake,
        routing={"fallback": ["spare"]},
        backends={
            "openai": openai_backend(fake.base_url, retries=1, api_key=SECRET),
            "spare": openai_backend(spare.base_url),
            "sse": openai_backend(fake.base_url, use_sse=True, api_key=SECRET),
            "bad": openai_backend(fake.base_url, api_key="sk-wrong"),
            "z": gradio_backend(gradio.base_url),
        },
    )
    await server.start()
    try:
        async with OneBotClient(server.ws_url) as client:

            async def outcome(text: str, user_id: int = 10000):
                await client.group_message(text, user_id=user_id)
                ack = await client.next_call("send_msg")
                assert message_text(ack.params["message"]) == "收到，正在画…"
                done = await client.next_call("send_msg")
                assert SECRET not in message_text(done.params["message"])
                return done

            async def fails(text: str, reply: str, user_id: int = 10000) -> None:
                done = await outcome(text, user_id)
                assert message_text(done.params["message"]) == reply
                assert not message_segments(done.params["message"], "image")

            # Stream cut mid-image.
            fake.cut_after = 200
            await fails("/pic -b sse 猫", "生成中断，请稍后再试")
            fake.cut_after = None
            # 401: no retry, the backend is named.
            await fails("/pic -b bad 猫", "绘图服务 bad 认证失败")
            # 503 with Retry-After: waited, retried, drawn.
            fake.replies.append(Reply(status=503, headers={"Retry-After": "1"}))
            started = time.monotonic()
            assert sent_image(await outcome("/pic -b openai 猫")).size == (32, 24)
            assert elapsed(started) >= 0.9
            # Gradio error event: fast, its known text translated.
            gradio.stream = [sse("error", QUOTA_TEXT)]
            started = time.monotonic()
            await fails("/pic -b z 猫", QUOTA_REPLY)
            assert elapsed(started) < 3
            # Not an image; a decompression bomb.
            for data, reply in [
                (b"<html>no</html>", "绘图服务 openai 返回的图片无效"),
                (png_claiming(30000, 30000), "生成的图片尺寸过大，已拒绝"),
            ]:
                fake.replies.append(
                    Reply(
                        status=200, body={"data": [{"b64_json": base64.b64encode(data).decode()}]}
                    )
                )
                await fails("/pic -b openai 猫", reply)
            # A response larger than the cap.
            gradio.stream = [sse("complete", zimage_outputs())]
            gradio.oversized_file = b"\x89PNG" + b"\0" * 65532
            await fails("/pic -b z 猫", "绘图服务 z 返回的数据过大")
            # 5xx on the default backend for a member: the fallback draws.
            fake.replies += [Reply(status=500), Reply(status=500)]
            assert sent_image(await outcome("/pic 猫", user_id=601)).size == (20, 20)
            # LLM down: the request text is the prompt, drawing goes on.
            for key, value in [("llm.base_url", '"http://127.0.0.1:9/v1"'), ("llm.model", "m")]:
                await client.private_message(f"/llm2pic set {key} {value}", user_id=10000)
                reply = message_text((await client.next_call("send_msg")).params["message"])
                assert reply.startswith("已设置")
            assert sent_image(await outcome("/pic 一只兔子", user_id=602))
            assert fake.requests[-1].json["prompt"] == "一只兔子"
            # Nothing left queued or running, and nothing more to say.
            await client.private_message("/llm2pic status", user_id=10000)
            status = message_text((await client.next_call("send_msg")).params["message"])
            assert "排队中：0，正在画：0" in status
            await client.no_call(within=0.5)
    finally:
        await server.stop()
    assert SECRET not in server.log_path.read_text("utf-8", errors="replace")
