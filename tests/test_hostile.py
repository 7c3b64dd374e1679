"""Hostile answers and edits: every one is refused with a reason, nothing crashes.

Upstream answers run through the whole `Pipeline` against local fakes (the aiohttp fake, or a raw
TCP server for lying headers). Admin values go through the real `SettingsStore`; the property
tests state the contract for any input: an accepted edit round-trips, a rejected one leaves the
file byte-for-byte unchanged.
"""

from __future__ import annotations

import base64
import json
import shutil
import time
from pathlib import Path

import pytest
import tomlkit
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from nonebot_plugin_llm2pic.exceptions import (
    BackendConnectionError,
    EndpointNotFoundError,
    ImageError,
    Llm2PicError,
    ResponseTooLargeError,
    SettingsError,
    StreamError,
    UpstreamError,
)
from nonebot_plugin_llm2pic.pipeline import DrawJob
from nonebot_plugin_llm2pic.settings_store import SettingsStore, example_text
from nonebot_plugin_llm2pic.sse import ServerSentEvent, SSEDecoder
from nonebot_plugin_llm2pic.transport import MAX_RESPONSE_BYTES

from .fakes.gradio_server import FakeGradio, sse
from .fakes.harness import (
    elapsed,
    gradio_backend,
    openai_backend,
    pipeline_for,
    png,
    png_claiming,
    settings_for,
)
from .fakes.llm_server import FakeLlm
from .fakes.openai_server import FakeOpenAI, Reply
from .fakes.raw_http import RawHttpServer, http_response

JOB = DrawJob(text="一只猫")
DEEP = "[" * 100_000 + "]" * 100_000
"""Valid JSON nested deeper than Python's recursion limit."""


@pytest.fixture
def fake(fake: FakeOpenAI) -> FakeOpenAI:
    """The shared fake upstream with a 32×24 picture, long enough to cut a stream inside it."""
    fake.image = png()
    return fake


@pytest.fixture
async def raw():
    async with RawHttpServer() as server:
        yield server


def images_answer(b64: str) -> dict:
    return {"created": 0, "data": [{"b64_json": b64}]}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- image bytes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "error", "reply"),
    [
        (b64(b"GIF? no: plain text pretending"), UpstreamError, "绘图服务 a 返回的图片无效"),
        (b64(b"<html>rate limited</html>"), UpstreamError, "绘图服务 a 返回的图片无效"),
        (b64(png(64, 64)[:120]), ImageError, "生成的图片数据不完整"),
        (b64(png_claiming(30000, 30000)), ImageError, "生成的图片尺寸过大，已拒绝"),
        (b64(png_claiming(9000, 9000)), ImageError, "生成的图片尺寸过大，已拒绝"),
        (
            b64(png())[:40] + "!!!$$$***" + b64(png())[40:],
            UpstreamError,
            "绘图服务 a 返回的图片无效",
        ),
        (
            "data:image/png;base64," + b64(b"%PDF-1.7 not a png"),
            UpstreamError,
            "绘图服务 a 返回的图片无效",
        ),
    ],
    ids=[
        "text",
        "html",
        "truncated-png",
        "bomb-header",
        "bomb-over-guard",
        "b64-garbage",
        "data-url-lies",
    ],
)
async def test_bad_image_bytes_are_refused(fake: FakeOpenAI, payload: str, error, reply: str):
    """Non-images, truncated PNGs, bombs and garbage base64: one reason, then business as usual."""
    fake.replies.append(Reply(status=200, body=images_answer(payload)))
    settings = settings_for({"a": openai_backend(fake.base_url)})
    async with pipeline_for(settings) as pipeline:
        started = time.monotonic()
        with pytest.raises(error) as caught:
            await pipeline.run(JOB)
        assert elapsed(started) < 5  # a bomb is refused from its header, never decoded
        assert caught.value.user_message == reply
        assert (await pipeline.run(JOB)).image.data == fake.image


async def test_chat_data_url_claiming_png_holds_html(fake: FakeOpenAI):
    """Chat mode: a markdown data URL labelled image/png that holds HTML is refused."""
    fake.replies.append(
        Reply(
            status=200,
            body={
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {
                            "role": "assistant",
                            "content": f"![x](data:image/png;base64,{b64(b'<html>hi</html>')})",
                        },
                    }
                ]
            },
        )
    )
    settings = settings_for({"a": openai_backend(fake.base_url, mode="chat")})
    async with pipeline_for(settings) as pipeline:
        with pytest.raises(UpstreamError) as caught:
            await pipeline.run(JOB)
    assert caught.value.user_message == "绘图服务 a 返回的图片无效"


# --- bodies ---------------------------------------------------------------------------------------


async def test_endless_body_rejected_at_the_cap(fake: FakeOpenAI):
    """A body that never ends (100 MB and more) is cut at the cap, not read into memory."""
    fake.endless = b'{"data": [{"b64_json": "' + b"A" * 65536
    settings = settings_for({"a": openai_backend(fake.base_url)})
    async with pipeline_for(settings) as pipeline:
        with pytest.raises(ResponseTooLargeError) as caught:
            await pipeline.run(JOB)
        assert caught.value.user_message == "绘图服务 a 返回的数据过大"
        assert fake.sent_bytes < MAX_RESPONSE_BYTES + 16 * 1024 * 1024  # we hung up near the cap
        fake.endless = b""
        assert (await pipeline.run(JOB)).image.data == fake.image


async def test_declared_100mb_rejected_before_reading(raw: RawHttpServer):
    """`Content-Length: 100 MB` is refused from the header alone."""
    raw.script.append(http_response(b'{"data": []}', content_length=100 * 1024 * 1024))
    settings = settings_for({"a": openai_backend(raw.base_url)})
    async with pipeline_for(settings) as pipeline:
        started = time.monotonic()
        with pytest.raises(ResponseTooLargeError):
            await pipeline.run(JOB)
        assert elapsed(started) < 1


@pytest.mark.parametrize(
    ("answer", "error", "reply"),
    [
        # Claims more than it sends, then hangs up: a cut body, never a partial image.
        (
            http_response(images_answer(b64(png())), content_length=5000),
            StreamError,
            "生成中断，请稍后再试",
        ),
        # Claims less than it sends: the JSON we read is cut short.
        (
            http_response(images_answer(b64(png())), content_length=30),
            BackendConnectionError,
            "无法连接绘图服务 a",
        ),
        (None, StreamError, "生成中断，请稍后再试"),
        (http_response(DEEP), UpstreamError, "绘图服务 a 返回了无法解析的结果"),
        (http_response('{"data": "nope"}'), UpstreamError, "绘图服务 a 返回的图片无效"),
        (http_response("null"), UpstreamError, "绘图服务 a 返回的图片无效"),
        (http_response('{"data": [null, 1]}'), UpstreamError, "绘图服务 a 返回的图片无效"),
        (
            http_response("<html>gateway</html>", content_type="text/html"),
            EndpointNotFoundError,
            "绘图服务 a 找不到 API 接口，请检查 base_url 是否以 API 前缀（如 /v1）结尾",
        ),
        (
            http_response("data: " + DEEP + "\n\n", content_type="text/event-stream"),
            StreamError,
            "生成中断，请稍后再试",
        ),
        (b"HTTP/1.1 banana\r\n\r\n", BackendConnectionError, "无法连接绘图服务 a"),
    ],
    ids=[
        "length-too-long",
        "length-too-short",
        "no-headers",
        "deep-json",
        "data-not-list",
        "null",
        "data-null-item",
        "html",
        "deep-sse-event",
        "bad-status-line",
    ],
)
async def test_lying_and_malformed_answers(
    raw: RawHttpServer, fake: FakeOpenAI, answer, error, reply: str
):
    """Lying lengths, missing headers, deep or odd JSON: one typed error with a clear reason."""
    raw.script.append(answer)
    settings = settings_for({"a": openai_backend(raw.base_url)})
    async with pipeline_for(settings) as pipeline:
        with pytest.raises(error) as caught:
            await pipeline.run(JOB)
    assert caught.value.user_message == reply
    assert raw.connections == 1


async def test_gradio_deeply_nested_complete_event():
    """A Gradio `complete` event nested past the recursion limit is a clean "no image" error."""
    async with FakeGradio() as gradio:
        gradio.stream = [f"event: complete\ndata: {DEEP}\n\n".encode()]
        settings = settings_for({"z": gradio_backend(gradio.base_url)})
        async with pipeline_for(settings) as pipeline:
            with pytest.raises(UpstreamError) as caught:
                await pipeline.run(JOB)
            assert caught.value.user_message == "绘图服务 z 没有返回图片"
            gradio.stream = [sse("error", DEEP)]
            with pytest.raises(UpstreamError):
                await pipeline.run(JOB)


async def test_llm_answering_deep_json_still_draws(fake: FakeOpenAI):
    """An LLM answer nested past the recursion limit is cleaned as text; drawing goes on."""
    async with FakeLlm(answer='{"prompt": ' + DEEP + "}") as llm:
        settings = settings_for(
            {"a": openai_backend(fake.base_url)},
            llm={"base_url": llm.base_url, "model": "m", "timeout": 5},
        )
        async with pipeline_for(settings) as pipeline:
            result = await pipeline.run(JOB)
    assert result.image.data == fake.image


async def test_llm_whole_body_deep_json_falls_back(fake: FakeOpenAI, raw: RawHttpServer):
    """An LLM whose whole body is deep JSON falls back to the request text."""
    raw.fallback = http_response(DEEP)
    settings = settings_for(
        {"a": openai_backend(fake.base_url)},
        llm={"base_url": raw.base_url, "model": "m", "timeout": 5},
    )
    async with pipeline_for(settings) as pipeline:
        result = await pipeline.run(JOB)
    assert result.prompt == "一只猫"


# --- admin values ---------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> SettingsStore:
    path = tmp_path / "llm2pic.toml"
    path.write_text(example_text(), "utf-8")
    store = SettingsStore(path)
    store.load()
    return store


@pytest.mark.parametrize(
    ("key", "raw", "fragment"),
    [
        ("limits.max_queue", "9" * 400, "max_queue"),
        ("limits.job_timeout", "1e999", "job_timeout"),
        ("limits.user_cooldown_seconds", "inf", "有限"),  # crashed the cooldown reply
        ("llm.temperature", "nan", "temperature"),
        ("limits.user_daily_quota", str(2**63), "64 位"),
        ("plugin.blocked_users", "5", "应为列表"),
        ("plugin.blocked_users", "[{a = 1}]", "blocked_users"),
        ("routing.fallback", '["zimage", "ghost"]', "没有启用名为"),
        ("backends.zimage", '"just text"', "backends.zimage"),
        ("backends.evil", '{type = "shell", base_url = "x"}', "type"),
        ("limits.quota_timezone", '"../../etc/passwd"', "quota_timezone"),
        ("plugin.send_mode", '"ftp"', "send_mode"),
        ("limits.max_queue", "1\n[evil]\nx = 1", "max_queue"),
        ("persona.name", "\ud800", "persona.name"),
    ],
)
def test_hostile_admin_values_leave_file_unchanged(
    store: SettingsStore, key: str, raw: str, fragment: str
):
    """Huge, wrong-typed or injecting values are refused naming the key; the file is untouched."""
    before = store.path.read_bytes()
    settings_before = store.settings
    with pytest.raises(SettingsError) as caught:
        store.set(key, raw)
    assert fragment in str(caught.value)
    assert store.path.read_bytes() == before
    assert store.settings is settings_before


@pytest.mark.parametrize(
    "raw",
    ['"x"\n[evil]\nkey = 1', 'x"\n[evil]', "a = 1\n[plugin]\nenabled = false", "'''\n[evil]"],
)
def test_toml_injection_in_a_string_is_just_text(store: SettingsStore, raw: str):
    """A string value carrying a table header stays one string; no table or key is added."""
    store.set("persona.description", raw)
    document = tomlkit.parse(store.path.read_text("utf-8")).unwrap()
    assert "evil" not in document
    assert document["plugin"]["enabled"] is True
    assert store.settings.persona.description in (raw, raw.strip())
    assert SettingsStore(store.path).load() == store.settings


# --- properties -----------------------------------------------------------------------------------

EDIT_KEYS = [
    "persona.name",
    "persona.description",
    "plugin.ack_message",
    "plugin.show_prompt",
    "plugin.max_send_bytes",
    "plugin.blocked_users",
    "plugin.send_mode",
    "limits.max_queue",
    "limits.user_cooldown_seconds",
    "limits.job_timeout",
    "generation.crop_position",
    "generation.crop_pixels",
    "generation.banned_words",
    "routing.default",
    "routing.fallback",
    "llm.temperature",
    "backends.zimage.steps",
    "backends.openai.model",
    "backends.new.type",
    "nope.key",
    "plugin.nope",
]

_scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(
        [
            "true",
            "false",
            "True",
            "yes",
            "",
            " ",
            '""',
            "[]",
            "{}",
            "nan",
            "inf",
            "zimage",
            '"openai"',
            '["zimage"]',
            '["a", 1]',
            "bottom",
            '"file"',
        ]
    ),
    st.text(max_size=40),
    st.text(alphabet="\"[]{}=\n\\'#., abc1", max_size=30),
)


@hyp_settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(key=st.sampled_from(EDIT_KEYS), raw=_scalars)
def test_any_edit_round_trips_or_changes_nothing(tmp_path: Path, key: str, raw: str):
    """Property: an accepted edit reads back the same (live and from disk); a rejected one is a
    `SettingsError` that leaves the file byte-for-byte unchanged."""
    path = tmp_path / "prop" / "llm2pic.toml"
    shutil.rmtree(path.parent, ignore_errors=True)
    path.parent.mkdir(parents=True)
    path.write_text(example_text(), "utf-8")
    store = SettingsStore(path)
    store.load()
    before = path.read_bytes()
    try:
        result = store.set(key, raw)
    except SettingsError:
        assert path.read_bytes() == before
        assert store.settings == SettingsStore(path).load()
        return
    except Llm2PicError as err:  # any other plugin error would be a wrong kind of refusal
        raise AssertionError(f"{key}={raw!r} raised {type(err).__name__}: {err}") from err
    fresh = SettingsStore(path)
    assert fresh.load() == store.settings
    assert fresh.last_error is None
    assert store.get(key) == result.value
    tomlkit.parse(path.read_text("utf-8"))  # still valid TOML


@hyp_settings(max_examples=30, deadline=None)
@given(data=st.text(max_size=200))
def test_any_persona_text_is_stored_verbatim_or_refused(data: str):
    """Property: free text set as a string key reads back exactly (modulo outer spaces)."""
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "llm2pic.toml"
        path.write_text(example_text(), "utf-8")
        store = SettingsStore(path)
        store.load()
        before = path.read_bytes()
        try:
            store.set("persona.description", data)
        except SettingsError:
            assert path.read_bytes() == before
            return
        stored = SettingsStore(path).load().persona.description
        assert stored == store.settings.persona.description
        assert json.dumps(stored) in (json.dumps(data.strip()), json.dumps(_toml_string(data)))


def _toml_string(data: str) -> object:
    """What a value typed as a TOML string literal means (``"a"`` → ``a``)."""
    try:
        return tomlkit.parse(f"v = {data.strip()}").unwrap()["v"]
    except Exception:
        return data.strip()


# An SSE stream built from events, so the expected decoding is known, not just self-consistent.
_sse_value = st.text(
    alphabet=st.characters(blacklist_characters="\r\n\0", blacklist_categories=("Cs",)),
    max_size=12,
)
_sse_event = st.fixed_dictionaries(
    {
        "event": st.one_of(st.none(), _sse_value.filter(lambda v: v != "")),
        "data": st.lists(
            st.one_of(
                _sse_value, st.sampled_from(['{"b64_json": "iVBOR="}', ":", " lead", "[DONE]"])
            ),
            min_size=1,
            max_size=4,
        ),
        "id": st.one_of(st.none(), _sse_value),
        "comment": st.one_of(st.none(), _sse_value),
    }
)


def _encode_events(events: list[dict], ends: list[str], bom: bool) -> tuple[bytes, list]:
    lines: list[str] = []
    expected = []
    last_id = ""
    for event in events:
        if event["comment"] is not None:
            lines.append(":" + event["comment"])
        if event["event"] is not None:
            lines.append("event: " + event["event"])
        lines += ["data: " + value for value in event["data"]]
        if event["id"] is not None:
            lines.append("id: " + event["id"])
            last_id = event["id"]
        lines.append("")
        expected.append(
            ServerSentEvent(
                event=event["event"] or "message", data="\n".join(event["data"]), id=last_id
            )
        )
    pieces: list[str] = []
    for i, line in enumerate(lines):
        end = ends[i % len(ends)]
        if not line and end == "\n" and pieces and pieces[-1].endswith("\r"):
            end = "\r"  # CR then a bare LF would be one CRLF, swallowing the blank line
        pieces.append(line + end)
    text = "".join(pieces)
    return ("\ufeff" if bom else "").encode() + text.encode(), expected


def _decode_chunks(stream: bytes, cuts: list[int]) -> list[ServerSentEvent]:
    points = sorted({min(cut, len(stream)) for cut in cuts})
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for a, b in zip([0, *points], [*points, len(stream)], strict=False):
        events += decoder.feed(stream[a:b])
    return events + decoder.close()


@hyp_settings(max_examples=100, deadline=None)
@given(
    events=st.lists(_sse_event, max_size=6),
    ends=st.lists(st.sampled_from(["\n", "\r", "\r\n"]), min_size=1, max_size=4),
    bom=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=10),
)
def test_sse_any_stream_any_chunking_decodes_to_its_events(events, ends, bom, cuts):
    """Property: any event stream (any line ends, comments, ids, BOM), cut anywhere, decodes to
    exactly the events it was built from."""
    stream, expected = _encode_events(events, ends, bom)
    assert _decode_chunks(stream, cuts) == expected


@hyp_settings(max_examples=25, deadline=None)
@given(
    piece=st.text(
        alphabet=st.characters(blacklist_characters="\r\n\0", blacklist_categories=("Cs",)),
        min_size=1,
        max_size=3,
    ),
    lead=st.sampled_from(["", " ", "  "]),
    chunk=st.integers(min_value=1, max_value=70_000),
    end=st.sampled_from(["\n", "\r", "\r\n"]),
)
def test_sse_long_lines_decode_like_short_ones(piece: str, lead: str, chunk: int, end: str):
    """Property: a data line past the decoder's batch size (a base64 image), in any chunk size,
    keeps every character, multi-byte ones cut across chunks included."""
    value = lead + piece * (70_000 // len(piece.encode()) + 1)
    stream = f"data:{value}{end}{end}".encode()
    cuts = list(range(chunk, len(stream), chunk))
    expected = value[1:] if value.startswith(" ") else value
    assert _decode_chunks(stream, cuts) == [ServerSentEvent(data=expected)]
