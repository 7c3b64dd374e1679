"""The gradio backend against real Gradio apps (6.x and 4.x) on loopback and a fake for faults.

The real apps are ``tests/gradio_apps/zimage_app.py`` started once per module: Gradio 6 from this
venv, Gradio 4 from ``.venv-gradio4`` (skipped locally when that venv is missing, a failure under
``CI``). The fake (``tests/fakes/gradio_server.py``) covers what a real app cannot easily do.
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from nonebot_plugin_llm2pic.backends import gradio as gradio_module
from nonebot_plugin_llm2pic.backends.base import Aspect, GenerationRequest, ReferenceImage
from nonebot_plugin_llm2pic.backends.gradio import (
    GradioBackend,
    fill_template,
    find_image_ref,
    resolution_for,
)
from nonebot_plugin_llm2pic.exceptions import (
    BackendError,
    BackendStatusError,
    BackendTimeoutError,
    BackendUnavailableError,
    QuotaExhaustedError,
    ReferencesUnsupportedError,
    ResponseTooLargeError,
    StreamError,
    UpstreamError,
)
from nonebot_plugin_llm2pic.intent import aspect_hint
from nonebot_plugin_llm2pic.settings import GradioBackendSettings

from .fakes.gradio_server import (
    IMAGE_PATH,
    UPLOAD_PATH,
    FakeGradio,
    file_data,
    make_png,
    sse,
    zimage_outputs,
)
from .fakes.raw_http import RawHttpServer, http_response

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "tests" / "gradio_apps" / "zimage_app.py"
GRADIO4_PYTHON = ROOT / ".venv-gradio4" / "bin" / "python"
STARTUP_TIMEOUT = 90.0
APP_SCALE = 16  # zimage_app.SCALE: the app paints resolution / 16
QUOTA_TEXT = "You have exceeded your free ZeroGPU quota"
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""Loopback polling must not go through an HTTP(S)_PROXY from the environment."""


def prompt_colour(prompt: str) -> tuple[int, int, int]:
    """Mirrors ``zimage_app.prompt_colour`` (importing the app would import gradio here)."""
    digest = hashlib.sha256(prompt.encode()).digest()
    return digest[0], digest[1], digest[2]


def settings(base_url: str, **overrides: Any) -> GradioBackendSettings:
    """Backend settings for tests: quick timeouts, no retries unless asked."""
    return GradioBackendSettings(
        type="gradio", base_url=base_url, **{"timeout": 20, "retries": 0, **overrides}
    )


def pixels(data: bytes) -> Image.Image:
    """Decode result bytes (fails the test when they are not an image)."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return image.convert("RGB")


# --- real Gradio apps --------------------------------------------------------------------------


@dataclass
class RealApp:
    """A zimage_app subprocess; ``major`` is the Gradio major version it runs."""

    major: int
    process: subprocess.Popen[bytes]
    base_url: str
    log: Path

    def wait_ready(self) -> None:
        """Poll ``/config`` until the app answers (Gradio needs a few seconds to start)."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"gradio {self.major} app exited: {self.log.read_text()[-2000:]}")
            try:
                with _DIRECT.open(f"{self.base_url}/config", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        pytest.fail(f"gradio {self.major} app did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


REDUCED_CHOICES = (
    "512x512 ( 1:1 )",
    "1024x1024 ( 1:1 )",
    "1024x1536 ( 2:3 )",
    "1536x1024 ( 3:2 )",
    "768x1344 ( 4:7 )",
)
"""The resolution dropdown of the operator's local app (issue 10): no 16:9 or 9:16 entry."""


def _launch(python: Path | str, major: int, tmp: Path, choices: tuple[str, ...] = ()) -> RealApp:
    port = _free_port()
    log = tmp / f"gradio{major}{'-reduced' if choices else ''}.log"
    env = {
        **os.environ,
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "GRADIO_TEMP_DIR": str(tmp / f"gradio{major}-files"),
    }
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                str(python),
                str(APP),
                "--port",
                str(port),
                *(arg for choice in choices for arg in ("--resolution", choice)),
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp,
        )
    return RealApp(major, process, f"http://127.0.0.1:{port}", log)


@pytest.fixture(scope="module")
def real_apps(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[tuple[int, bool], RealApp]]:
    """Start every app at once (they boot in parallel), stop them after the module.

    Keyed by (Gradio major, reduced resolution list).
    """
    tmp = tmp_path_factory.mktemp("gradio-apps")
    pythons: dict[int, Path | str] = {6: sys.executable}
    if GRADIO4_PYTHON.exists():
        pythons[4] = GRADIO4_PYTHON
    apps = {
        (major, reduced): _launch(python, major, tmp, REDUCED_CHOICES if reduced else ())
        for major, python in pythons.items()
        for reduced in (False, True)
    }
    yield apps
    for app in apps.values():
        app.stop()


GRADIO_MAJORS = [
    pytest.param(6, id="gradio6"),
    pytest.param(4, id="gradio4", marks=pytest.mark.gradio4),
]


def _ready_app(apps: dict[tuple[int, bool], RealApp], major: int, *, reduced: bool) -> RealApp:
    if (major, reduced) not in apps:
        if os.environ.get("CI"):
            pytest.fail(f"{GRADIO4_PYTHON} is missing; CI must install it")
        pytest.skip(f"no {GRADIO4_PYTHON} (see tests/gradio_apps/requirements-gradio4.txt)")
    app = apps[(major, reduced)]
    app.wait_ready()
    return app


@pytest.fixture(scope="module", params=GRADIO_MAJORS)
def real_app(request: pytest.FixtureRequest, real_apps: dict[tuple[int, bool], RealApp]) -> RealApp:
    """One running app per Gradio major version."""
    return _ready_app(real_apps, request.param, reduced=False)


@pytest.fixture(scope="module", params=GRADIO_MAJORS)
def reduced_app(
    request: pytest.FixtureRequest, real_apps: dict[tuple[int, bool], RealApp]
) -> RealApp:
    """The same app offering only ``REDUCED_CHOICES``, per Gradio major version."""
    return _ready_app(real_apps, request.param, reduced=True)


async def test_real_app_draws_prompt_resolution_steps_shift(
    real_app: RealApp, session: aiohttp.ClientSession
) -> None:
    """The default Z-Image layout reaches the app: prompt colour, size, steps and shift arrive."""
    backend = GradioBackend(
        "zimage",
        settings(real_app.base_url, resolution="1152x864 ( 4:3 )", steps=9, shift=2.5),
        session,
    )
    result = await backend.generate(GenerationRequest(prompt="a red fox"))
    image = pixels(result.data)
    assert result.mime == "image/png"
    assert image.size == (1152 // APP_SCALE, 864 // APP_SCALE)
    assert image.getpixel((0, 0)) == (9, 25, 0)
    assert image.getpixel((5, 5)) == prompt_colour("a red fox")


@pytest.mark.parametrize(
    ("aspect", "size"),
    [("landscape", (1280, 720)), ("portrait", (720, 1280)), ("square", (1024, 1024))],
)
async def test_real_app_aspect_picks_resolution(
    real_app: RealApp, session: aiohttp.ClientSession, aspect: Aspect, size: tuple[int, int]
) -> None:
    """An aspect hint becomes a resolution string the Space's dropdown accepts."""
    backend = GradioBackend("zimage", settings(real_app.base_url), session)
    result = await backend.generate(GenerationRequest(prompt="sea", aspect=aspect))
    assert pixels(result.data).size == (size[0] // APP_SCALE, size[1] // APP_SCALE)


@pytest.mark.parametrize(
    ("text", "size"),
    [("来张竖图的自拍", (768, 1344)), ("帮我画个横图的日落", (1536, 1024)), ("方图", (1024, 1024))],
    ids=["portrait", "landscape", "square"],
)
async def test_real_app_reduced_choices_aspect_hint(
    reduced_app: RealApp, session: aiohttp.ClientSession, text: str, size: tuple[int, int]
) -> None:
    """竖图/横图/方图 on an app without 9:16 or 16:9 draw the nearest size it offers."""
    backend = GradioBackend("zimage", settings(reduced_app.base_url), session)
    result = await backend.generate(GenerationRequest(prompt="sunset", aspect=aspect_hint(text)))
    assert pixels(result.data).size == (size[0] // APP_SCALE, size[1] // APP_SCALE)


async def test_real_app_reduced_choices_nearest_area(
    reduced_app: RealApp, session: aiohttp.ClientSession
) -> None:
    """Between two choices of the hinted shape, the one nearest the configured area wins."""
    backend = GradioBackend(
        "zimage", settings(reduced_app.base_url, resolution="1024x1536 ( 2:3 )"), session
    )
    result = await backend.generate(GenerationRequest(prompt="sea", aspect="square"))
    assert pixels(result.data).size == (1024 // APP_SCALE, 1024 // APP_SCALE)


async def test_real_app_fixed_seed_is_used_and_reported(
    real_app: RealApp, session: aiohttp.ClientSession
) -> None:
    """seed >= 0 turns random_seed off; the seed the app reports comes back."""
    backend = GradioBackend("zimage", settings(real_app.base_url, seed=4242), session)
    result = await backend.generate(GenerationRequest(prompt="a cat"))
    assert result.seed == 4242


async def test_real_app_random_seed_is_reported(
    real_app: RealApp, session: aiohttp.ClientSession
) -> None:
    """seed = -1 asks the app for a random seed and reports the one it used."""
    backend = GradioBackend("zimage", settings(real_app.base_url, seed=-1), session)
    result = await backend.generate(GenerationRequest(prompt="a cat"))
    assert result.seed is not None
    assert 1 <= result.seed <= 1_000_000


async def test_real_app_quota_error_fails_fast(
    real_app: RealApp, session: aiohttp.ClientSession
) -> None:
    """gr.Error fails at once; its ZeroGPU quota text (6.13+) is translated, not quoted."""
    backend = GradioBackend("zimage", settings(real_app.base_url, retries=2), session)
    started = time.monotonic()
    with pytest.raises(BackendError) as caught:
        await backend.generate(GenerationRequest(prompt="quota test"))
    assert time.monotonic() - started < 5  # no retries, no waiting for a timeout
    if real_app.major >= 6:
        assert isinstance(caught.value, QuotaExhaustedError)
        assert caught.value.user_message == "绘图服务 zimage 的额度已用完，请稍后再试或换用其他服务"
        assert QUOTA_TEXT in str(caught.value)
    else:  # Gradio 4 sends `data: null`
        assert caught.value.user_message == "绘图服务 zimage 报错（未给出原因）"


async def test_real_app_reference_image_is_uploaded(
    real_app: RealApp, session: aiohttp.ClientSession
) -> None:
    """{image} gets the uploaded reference as FileData; the /edit endpoint inverts it."""
    backend = GradioBackend(
        "edit",
        settings(real_app.base_url, api_name="edit", inputs=["{image}", "{prompt}"]),
        session,
    )
    reference = ReferenceImage(data=make_png(12, 6, (10, 20, 30)), mime="image/png")
    result = await backend.generate(GenerationRequest(prompt="invert", references=(reference,)))
    image = pixels(result.data)
    assert image.size == (12, 6)
    assert image.getpixel((3, 3)) == (245, 235, 225)


async def test_real_app_probe(real_app: RealApp, session: aiohttp.ClientSession) -> None:
    """probe reads /config: the Gradio version and the endpoint URL with the right prefix."""
    backend = GradioBackend("zimage", settings(real_app.base_url), session)
    status = (await backend.probe()).detail
    prefix = "/gradio_api" if real_app.major >= 5 else ""
    assert status.startswith(f"gradio {real_app.major}.")
    assert f"{real_app.base_url}{prefix}/call/generate" in status


async def test_real_app_probe_missing_endpoint(
    real_app: RealApp, session: aiohttp.ClientSession
) -> None:
    """probe fails when the configured api_name is not an endpoint of the app."""
    backend = GradioBackend("zimage", settings(real_app.base_url, api_name="nope"), session)
    with pytest.raises(BackendUnavailableError):
        await backend.probe()


# --- fake server: wire details and faults ------------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakeGradio]:
    async with FakeGradio() as server:
        yield server


@pytest.fixture
async def fake4() -> AsyncIterator[FakeGradio]:
    async with FakeGradio(prefix="") as server:
        yield server


async def test_default_layout_body(fake: FakeGradio, session: aiohttp.ClientSession) -> None:
    """Without `inputs` the POST body is the Z-Image /generate layout, typed values included."""
    await GradioBackend("zimage", settings(fake.base_url), session).generate(
        GenerationRequest(prompt="a cat")
    )
    assert fake.call_bodies() == [{"data": ["a cat", "1024x1024 ( 1:1 )", -1, 8, 3.0, True, []]}]


async def test_custom_inputs_template(fake: FakeGradio, session: aiohttp.ClientSession) -> None:
    """A lone placeholder keeps its type; placeholders inside text are substituted."""
    inputs = [
        "{prompt}",
        "neg: {negative_prompt}",
        "{width}x{height}",
        "{seed}",
        "{random_seed}",
        7,
    ]
    backend = GradioBackend(
        "sd", settings(fake.base_url, inputs=inputs, seed=5, resolution="768x512"), session
    )
    await backend.generate(GenerationRequest(prompt="a cat", negative_prompt="blurry"))
    assert fake.call_bodies() == [{"data": ["a cat", "neg: blurry", "768x512", 5, False, 7]}]


@pytest.mark.parametrize("prefix", ["/gradio_api", ""], ids=["gradio6", "gradio4"])
async def test_aspect_picks_from_config_choices(
    session: aiohttp.ClientSession, prefix: str
) -> None:
    """The hint's resolution comes from the dropdown /config lists ([label, value] pairs)."""
    async with FakeGradio(prefix=prefix) as server:
        server.resolution_choices = [[c, c] for c in REDUCED_CHOICES]
        backend = GradioBackend("zimage", settings(server.base_url), session)
        await backend.generate(GenerationRequest(prompt="a cat", aspect="portrait"))
        await backend.generate(GenerationRequest(prompt="a cat", aspect="landscape"))
        assert [body["data"][1] for body in server.call_bodies()] == [
            "768x1344 ( 4:7 )",
            "1536x1024 ( 3:2 )",
        ]
        assert server.paths().count("/config") == 1


async def test_aspect_choices_follow_custom_template_slot(
    fake: FakeGradio, session: aiohttp.ClientSession
) -> None:
    """A custom template's lone {resolution} maps to its input; bare-string choices work too."""
    fake.resolution_choices = ["832x1216", "1216x832", "1024x1024"]
    inputs = ["{prompt}", "{resolution}", "{seed}"]
    backend = GradioBackend(
        "sd", settings(fake.base_url, inputs=inputs, resolution="1024x1024"), session
    )
    await backend.generate(GenerationRequest(prompt="a cat", aspect="portrait"))
    assert fake.call_bodies()[0]["data"][1] == "832x1216"


async def test_aspect_without_usable_choice_keeps_resolution(
    fake: FakeGradio, session: aiohttp.ClientSession
) -> None:
    """A dropdown with no WxH choice leaves the configured resolution alone."""
    fake.resolution_choices = [["Auto", "auto"]]
    backend = GradioBackend("zimage", settings(fake.base_url, resolution="auto"), session)
    await backend.generate(GenerationRequest(prompt="a cat", aspect="landscape"))
    assert fake.call_bodies()[0]["data"][1] == "auto"


async def test_gradio4_paths(fake4: FakeGradio, session: aiohttp.ClientSession) -> None:
    """Without api_prefix in /config every route is used at the root (Gradio 4)."""
    backend = GradioBackend("zimage", settings(fake4.base_url), session)
    result = await backend.generate(GenerationRequest(prompt="a cat"))
    assert result.data == fake4.files[IMAGE_PATH]
    assert fake4.paths() == [
        "/config",
        "/call/generate",
        "/call/generate/e0123",
        f"/file={IMAGE_PATH}",
    ]


async def test_config_is_fetched_once(fake: FakeGradio, session: aiohttp.ClientSession) -> None:
    """The API prefix is detected once per backend object."""
    backend = GradioBackend("zimage", settings(fake.base_url), session)
    await backend.generate(GenerationRequest(prompt="one"))
    await backend.generate(GenerationRequest(prompt="two"))
    assert fake.paths().count("/config") == 1


async def test_token_sent_on_every_request(
    fake: FakeGradio, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An env: token goes out as a Bearer header on config, upload, call, stream and file."""
    monkeypatch.setenv("TEST_HF_TOKEN", "hf_secret123")
    backend = GradioBackend(
        "zimage",
        settings(fake.base_url, token="env:TEST_HF_TOKEN", inputs=["{prompt}", "{image}"]),
        session,
    )
    reference = ReferenceImage(data=make_png(), mime="image/png")
    await backend.generate(GenerationRequest(prompt="x", references=(reference,)))
    assert len(fake.requests) == 5
    assert {r.headers.get("Authorization") for r in fake.requests} == {"Bearer hf_secret123"}


async def test_token_not_sent_to_foreign_host(
    fake: FakeGradio, session: aiohttp.ClientSession
) -> None:
    """An output URL on another host is downloaded without the token."""
    async with FakeGradio() as other:
        fake.stream = [
            sse("complete", [file_data(None, other.base_url + f"/gradio_api/file={IMAGE_PATH}")])
        ]
        backend = GradioBackend("zimage", settings(fake.base_url, token="hf_secret123"), session)
        result = await backend.generate(GenerationRequest(prompt="x"))
        assert result.data == other.files[IMAGE_PATH]
        assert "Authorization" not in other.requests[0].headers


async def test_reference_upload_body(fake: FakeGradio, session: aiohttp.ClientSession) -> None:
    """The reference is uploaded as multipart `files` and sent as FileData with meta."""
    backend = GradioBackend(
        "edit", settings(fake.base_url, inputs=["{image}", "{prompt}"]), session
    )
    reference = ReferenceImage(data=make_png(3, 3), mime="image/png")
    await backend.generate(GenerationRequest(prompt="x", references=(reference,)))
    upload = next(r for r in fake.requests if r.path == "/gradio_api/upload")
    assert b'name="files"' in upload.body
    assert reference.data in upload.body
    image = fake.call_bodies()[0]["data"][0]
    assert image["path"] == UPLOAD_PATH
    assert image["meta"] == {"_type": "gradio.FileData"}


async def test_references_unsupported(fake: FakeGradio, session: aiohttp.ClientSession) -> None:
    """A template without {image} refuses references instead of ignoring them."""
    backend = GradioBackend("zimage", settings(fake.base_url), session)
    assert not backend.supports_references
    reference = ReferenceImage(data=make_png(), mime="image/png")
    with pytest.raises(ReferencesUnsupportedError) as caught:
        await backend.generate(GenerationRequest(prompt="x", references=(reference,)))
    assert caught.value.user_message == "绘图服务 zimage 不支持参考图，请只用文字描述"
    assert caught.value.fallback
    assert fake.requests == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, "绘图服务 zimage 报错（未给出原因）"),
        ({"error": None}, "绘图服务 zimage 报错（未给出原因）"),
        (
            {
                "error": f"{QUOTA_TEXT} (60s requested vs. 3s left).",
                "title": "ZeroGPU quota exceeded",
            },
            "绘图服务 zimage 的额度已用完，请稍后再试或换用其他服务",
        ),
        (
            {"error": 'Server busy. <a href="https://hf.co/status">Status</a> page.'},
            "绘图服务 zimage 报错：Server busy. Status page.",
        ),
        ("Server stopped unexpectedly.", "绘图服务 zimage 报错：Server stopped unexpectedly."),
    ],
    ids=["null", "error-null", "zerogpu", "html", "string"],
)
async def test_error_event_fails_fast(
    fake: FakeGradio, session: aiohttp.ClientSession, data: Any, message: str
) -> None:
    """Every `event: error` form fails at once with its text (translated if known), no retry."""
    fake.stream = [sse("heartbeat", None), sse("error", data)]
    backend = GradioBackend("zimage", settings(fake.base_url, retries=3), session)
    with pytest.raises(BackendError) as caught:
        await backend.generate(GenerationRequest(prompt="x"))
    assert caught.value.user_message == message
    assert caught.value.fallback
    assert len(fake.call_bodies()) == 1


async def test_heartbeats_then_complete(fake: FakeGradio, session: aiohttp.ClientSession) -> None:
    """Heartbeats and intermediate `generating` events are waited through."""
    fake.stream = [
        sse("heartbeat", None),
        sse("generating", zimage_outputs(file_data("/tmp/gradio/partial.png"))),
        sse("heartbeat", None),
        sse("complete", zimage_outputs(seed=99)),
    ]
    fake.stream_delay = 0.05
    result = await GradioBackend("zimage", settings(fake.base_url), session).generate(
        GenerationRequest(prompt="x")
    )
    assert result.data == fake.files[IMAGE_PATH]
    assert result.seed == 99


async def test_stream_cut_is_retried_then_stream_error(
    fake: FakeGradio, session: aiohttp.ClientSession
) -> None:
    """A stream cut mid-event is a StreamError, retried `retries` times."""
    fake.stream = [sse("heartbeat", None), b'event: complete\ndata: [[{"image": {"pa']
    fake.cut_stream = True
    backend = GradioBackend("zimage", settings(fake.base_url, retries=1), session)
    with pytest.raises(StreamError):
        await backend.generate(GenerationRequest(prompt="x"))
    assert len(fake.call_bodies()) == 2


async def test_stream_end_without_complete(
    fake: FakeGradio, session: aiohttp.ClientSession
) -> None:
    """A stream that ends cleanly without `complete` or `error` is a StreamError."""
    fake.stream = [sse("heartbeat", None)]
    with pytest.raises(StreamError):
        await GradioBackend("zimage", settings(fake.base_url), session).generate(
            GenerationRequest(prompt="x")
        )


async def test_attempt_timeout(fake: FakeGradio, session: aiohttp.ClientSession) -> None:
    """Heartbeats forever do not outlive the per-attempt timeout."""
    fake.stream = [sse("heartbeat", None)] * 100
    fake.stream_delay = 0.1
    backend = GradioBackend("zimage", settings(fake.base_url, timeout=1), session)
    started = time.monotonic()
    with pytest.raises(BackendTimeoutError):
        await backend.generate(GenerationRequest(prompt="x"))
    assert time.monotonic() - started < 3


async def test_post_5xx_is_retried(fake: FakeGradio, session: aiohttp.ClientSession) -> None:
    """A 503 on the /call POST is retried and the next attempt succeeds."""
    fake.call_failures = [503]
    backend = GradioBackend("zimage", settings(fake.base_url, retries=1), session)
    result = await backend.generate(GenerationRequest(prompt="x"))
    assert result.data == fake.files[IMAGE_PATH]
    assert len(fake.call_bodies()) == 2


async def test_post_5xx_without_retries(fake: FakeGradio, session: aiohttp.ClientSession) -> None:
    """With retries exhausted the 5xx surfaces as BackendStatusError with its status."""
    fake.call_failures = [500]
    with pytest.raises(BackendStatusError) as caught:
        await GradioBackend("zimage", settings(fake.base_url), session).generate(
            GenerationRequest(prompt="x")
        )
    assert caught.value.status == 500


async def test_non_image_file_rejected(fake: FakeGradio, session: aiohttp.ClientSession) -> None:
    """An output file whose magic bytes are not an image is refused."""
    fake.files[IMAGE_PATH] = b"<html>Sign in to continue</html>"
    with pytest.raises(UpstreamError) as caught:
        await GradioBackend("zimage", settings(fake.base_url), session).generate(
            GenerationRequest(prompt="x")
        )
    assert caught.value.user_message == "绘图服务 zimage 返回的图片无效"


async def test_oversized_file_rejected(
    fake: FakeGradio, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file growing past the cap is abandoned while it streams."""
    monkeypatch.setattr(gradio_module, "MAX_IMAGE_BYTES", 256 * 1024)
    fake.oversized_file = make_png()[:16] + bytes(64 * 1024)
    with pytest.raises(ResponseTooLargeError):
        await GradioBackend("zimage", settings(fake.base_url), session).generate(
            GenerationRequest(prompt="x")
        )


def _output_shapes(base: str) -> dict[str, Any]:
    url = f"{base}/gradio_api/file={IMAGE_PATH}"
    return {
        "filedata-path": file_data(),
        "filedata-url-only": file_data(None, url),
        "filedata-relative-url": file_data(None, f"/gradio_api/file={IMAGE_PATH}"),
        "gallery-filedata": [file_data()],
        "gallery-urls": [url, url],
        "plain-url": url,
        "server-path": IMAGE_PATH,
    }


@pytest.mark.parametrize("shape", list(_output_shapes("")))
async def test_output_shapes(fake: FakeGradio, session: aiohttp.ClientSession, shape: str) -> None:
    """FileData (path or url), galleries of FileData or URL strings, plain URLs all download."""
    fake.stream = [sse("complete", [_output_shapes(fake.base_url)[shape]])]
    result = await GradioBackend("zimage", settings(fake.base_url), session).generate(
        GenerationRequest(prompt="x")
    )
    assert result.data == fake.files[IMAGE_PATH]
    assert result.mime == "image/png"


@pytest.mark.parametrize("url", ["http://", "http://[bad/image.png"])
async def test_unusable_output_url(
    fake: FakeGradio, session: aiohttp.ClientSession, url: str
) -> None:
    """An output URL that does not parse is an UpstreamError, not a bare ValueError."""
    fake.stream = [sse("complete", [url])]
    with pytest.raises(UpstreamError):
        await GradioBackend("zimage", settings(fake.base_url), session).generate(
            GenerationRequest(prompt="x")
        )


async def test_probe_odd_dependencies(session: aiohttp.ClientSession) -> None:
    """A /config whose dependencies are not a list means no endpoint, not a TypeError."""
    async with RawHttpServer() as raw:
        raw.script = [http_response({"version": "6.0.0", "dependencies": 1})]
        backend = GradioBackend("zimage", settings(raw.url("")), session)
        with pytest.raises(BackendUnavailableError):
            await backend.probe()


async def test_output_index(fake: FakeGradio, session: aiohttp.ClientSession) -> None:
    """output_index picks which output holds the image."""
    fake.stream = [sse("complete", ["some text", file_data()])]
    backend = GradioBackend("zimage", settings(fake.base_url, output_index=1), session)
    result = await backend.generate(GenerationRequest(prompt="x"))
    assert result.data == fake.files[IMAGE_PATH]


async def test_output_index_out_of_range(fake: FakeGradio, session: aiohttp.ClientSession) -> None:
    """An output_index past the outputs is a clear UpstreamError."""
    backend = GradioBackend("zimage", settings(fake.base_url, output_index=5), session)
    with pytest.raises(UpstreamError) as caught:
        await backend.generate(GenerationRequest(prompt="x"))
    assert caught.value.user_message == "绘图服务 zimage 没有返回图片"


@pytest.mark.parametrize(("configured", "expected"), [(7, 7), (-1, None)])
async def test_seed_without_report(
    fake: FakeGradio, session: aiohttp.ClientSession, configured: int, expected: int | None
) -> None:
    """Without a seed among the outputs the sent seed is reported (none when random)."""
    fake.stream = [sse("complete", [[file_data()]])]
    backend = GradioBackend("zimage", settings(fake.base_url, seed=configured), session)
    result = await backend.generate(GenerationRequest(prompt="x"))
    assert result.seed == expected


# --- pure helpers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("configured", "aspect", "choices", "expected"),
    [
        ("1024x1024 ( 1:1 )", None, REDUCED_CHOICES, "1024x1024 ( 1:1 )"),
        ("1024x1024 ( 1:1 )", "square", REDUCED_CHOICES, "1024x1024 ( 1:1 )"),
        ("1024x1024 ( 1:1 )", "portrait", REDUCED_CHOICES, "768x1344 ( 4:7 )"),
        ("1024x1024 ( 1:1 )", "landscape", REDUCED_CHOICES, "1536x1024 ( 3:2 )"),
        ("512x512 ( 1:1 )", "square", REDUCED_CHOICES, "512x512 ( 1:1 )"),
        ("1536x1024 ( 3:2 )", "square", REDUCED_CHOICES, "1024x1024 ( 1:1 )"),
        ("640x640", "square", REDUCED_CHOICES, "512x512 ( 1:1 )"),
        ("1024x1024 ( 1:1 )", "landscape", ("auto", "fast"), "1024x1024 ( 1:1 )"),
        ("1024x1024 ( 1:1 )", "landscape", (), "1024x1024 ( 1:1 )"),
        ("1024x1024 ( 1:1 )", "landscape", None, "1024x1024 ( 1:1 )"),
        ("1024x1024", "landscape", None, "1344x768"),
        ("768x512", "portrait", None, "512x768"),
        ("768x512", "landscape", None, "768x512"),
        ("auto", "landscape", None, "auto"),
    ],
)
def test_resolution_for(
    configured: str, aspect: Aspect | None, choices: tuple[str, ...] | None, expected: str
) -> None:
    """Hints pick among the app's choices (ratio, then area); free inputs get a turned size."""
    assert resolution_for(configured, aspect, choices) == expected


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("{seed}", 42),
        ("{random_seed}", True),
        ("{shift}", 3.5),
        ("seed={seed}, {prompt}!", "seed=42, cat!"),
        ("{image}", {"path": "/up/x.png"}),
        ("ref: {image}", "ref: /up/x.png"),
        ("{unknown}", "{unknown}"),
        (["{seed}"], ["{seed}"]),
        (None, None),
    ],
)
def test_fill_template(item: Any, expected: Any) -> None:
    """Template items: typed lone placeholders, substituted strings, other items untouched."""
    values = {
        "prompt": "cat",
        "negative_prompt": "",
        "seed": 42,
        "resolution": "1024x1024 ( 1:1 )",
        "width": 1024,
        "height": 1024,
        "steps": 8,
        "shift": 3.5,
        "random_seed": True,
        "image": {"path": "/up/x.png"},
    }
    assert fill_template(item, values) == expected


def test_find_image_ref_skips_empty_gallery_items() -> None:
    """A gallery entry without an image (a video item) is skipped for the next one."""
    video = {"video": file_data(), "caption": None}
    image = {"image": file_data("/tmp/b.png"), "caption": "b"}
    assert find_image_ref([video, image]) == file_data("/tmp/b.png")
