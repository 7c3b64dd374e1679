"""Pictures reach the prompt writer through the whole pipeline, against a fake vision LLM.

The LLM is ``fakes.vision_llm.FakeVisionLlm``: it checks every image part and answers with the
dominant colour of each picture it decoded, so a colour in the backend's prompt proves the
picture was seen. Backends are the Gradio fake (text-only: the Z-Image layout has no image
input) and the OpenAI fake (images/edits takes references); chat pictures are served by the
OpenAI fake's ``/files`` route.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from nonebot_plugin_llm2pic import prompt_writer
from nonebot_plugin_llm2pic.exceptions import (
    RedrawError,
    ReferenceImageError,
    ReferencesUnsupportedError,
    VisionRefusedError,
)
from nonebot_plugin_llm2pic.history import HistoryEntry, PostedImage
from nonebot_plugin_llm2pic.pipeline import DrawJob, plan_backend, reference_plan
from nonebot_plugin_llm2pic.prompt_writer import judge_intent, probe_llm_vision
from nonebot_plugin_llm2pic.settings import Settings
from nonebot_plugin_llm2pic.transport import new_session
from nonebot_plugin_llm2pic.vision import LabelledImage, prepare_image

from .fakes.gradio_server import FakeGradio
from .fakes.harness import gradio_backend, openai_backend, pipeline_for, settings_for
from .fakes.openai_server import FakeOpenAI
from .fakes.vision_llm import FakeVisionLlm

RED = (220, 30, 30)
BLUE = (30, 60, 220)
GREEN = (40, 170, 60)
EXPIRED_BODY = b'{"retcode":-5503007,"retmsg":"download url has expired"}'


@pytest.fixture(autouse=True)
def _forget_text_only_models() -> Iterator[None]:
    """The text-only memory lives until restart: each test runs as in a fresh process."""
    prompt_writer.TEXT_ONLY_MODELS.clear()
    yield
    prompt_writer.TEXT_ONLY_MODELS.clear()


@pytest.fixture
async def llm() -> AsyncIterator[FakeVisionLlm]:
    async with FakeVisionLlm() as server:
        yield server


@pytest.fixture
async def gradio() -> AsyncIterator[FakeGradio]:
    async with FakeGradio() as server:
        yield server


@pytest.fixture
async def edits() -> AsyncIterator[FakeOpenAI]:
    """An images backend (takes references); its ``/files`` route also hosts chat pictures."""
    async with FakeOpenAI() as server:
        yield server


def picture(
    colour: tuple[int, int, int], size: tuple[int, int] = (64, 48), fmt: str = "PNG"
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=fmt)
    return buffer.getvalue()


def host(server: FakeOpenAI, name: str, data: bytes, mime: str = "image/png") -> str:
    """Serve ``data`` at a URL, like QQ's CDN serves a chat picture."""
    server.files[name] = (data, mime)
    return server.url(f"/files/{name}")


def llm_table(llm: FakeVisionLlm, **overrides: Any) -> dict[str, Any]:
    return {"base_url": llm.base_url, "model": "vision-model", "timeout": 10, **overrides}


def on_gradio(
    llm: FakeVisionLlm, gradio: FakeGradio, edits: FakeOpenAI | None = None, **llm_keys: Any
) -> Settings:
    """Gradio by default; the images backend as the fallback when given."""
    backends = {"zimage": gradio_backend(gradio.base_url)}
    routing: dict[str, Any] = {}
    if edits is not None:
        backends["openai"] = openai_backend(edits.base_url)
        routing["fallback"] = ["openai"]
    return settings_for(backends, llm=llm_table(llm, **llm_keys), routing=routing)


def on_edits(llm: FakeVisionLlm, edits: FakeOpenAI, **llm_keys: Any) -> Settings:
    return settings_for({"openai": openai_backend(edits.base_url)}, llm=llm_table(llm, **llm_keys))


def gradio_prompt(gradio: FakeGradio) -> str:
    return gradio.call_bodies()[-1]["data"][0]


def image_parts(body: dict[str, Any]) -> list[Any]:
    return [
        part
        for message in body["messages"]
        if isinstance(message["content"], list)
        for part in message["content"]
        if part["type"] == "image_url"
    ]


def system_text(body: dict[str, Any]) -> str:
    return body["messages"][0]["content"]


# --- the backend plan ------------------------------------------------------------------------


def test_plan_redraws_on_a_text_only_backend_when_the_llm_sees(llm: FakeVisionLlm) -> None:
    """A photo for the text-only default backend is redrawn there when the LLM has vision."""
    settings = settings_for(
        {"zimage": gradio_backend("http://g")}, llm=llm_table(llm), routing={"fallback": []}
    )
    plan = reference_plan(DrawJob("画成动漫风", references=("http://x/a.png",)), settings)
    assert (plan.use, plan.candidates) == ("redraw", ("zimage",))


@pytest.mark.parametrize(
    "llm_keys", [{"vision": "off"}, {"base_url": ""}], ids=["vision-off", "no-llm"]
)
def test_plan_refuses_without_sight(llm: FakeVisionLlm, llm_keys: dict[str, Any]) -> None:
    """Without an LLM that sees, a text-only backend and no fallback refuse before the ack."""
    settings = settings_for({"zimage": gradio_backend("http://g")}, llm=llm_table(llm, **llm_keys))
    with pytest.raises(ReferencesUnsupportedError) as caught:
        plan_backend(DrawJob("画成动漫风", references=("http://x/a.png",)), settings)
    assert caught.value.user_message == "绘图服务 zimage 不支持参考图，请只用文字描述"


def test_plan_edits_where_the_backend_takes_references(llm: FakeVisionLlm) -> None:
    """A backend that takes references edits them, even when the LLM could redraw."""
    settings = settings_for({"openai": openai_backend("http://o/v1")}, llm=llm_table(llm))
    plan = reference_plan(DrawJob("画成动漫风", references=("http://x/a.png",)), settings)
    assert (plan.use, plan.candidates) == ("edit", ("openai",))


def test_plan_raw_request_cannot_redraw(llm: FakeVisionLlm) -> None:
    """`-r` skips the LLM, so a text-only backend falls back to one that takes references."""
    settings = settings_for(
        {"zimage": gradio_backend("http://g"), "openai": openai_backend("http://o/v1")},
        llm=llm_table(llm),
        routing={"fallback": ["openai"]},
    )
    job = DrawJob("anime style", raw=True, references=("http://x/a.png",))
    assert reference_plan(job, settings) == reference_plan(job, settings, sight=False)
    assert reference_plan(job, settings).candidates == ("openai",)


# --- redraw and edit -------------------------------------------------------------------------


async def test_photo_redrawn_on_text_only_gradio(
    llm: FakeVisionLlm, gradio: FakeGradio, tmp_path: Path
) -> None:
    """A red photo + 「画成动漫风」 on Gradio: drawn from a prompt carrying red, no upload."""
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(picture(RED, (800, 600), "JPEG"))
    async with pipeline_for(on_gradio(llm, gradio)) as pipeline:
        result = await pipeline.run(DrawJob("画成动漫风", references=(photo,)))
    assert "a red picture" in gradio_prompt(gradio)
    assert result.backend == "zimage"
    assert [(image.label, image.colour) for image in llm.seen] == [("参考图 1", "red")]
    assert "cannot: it draws from your prompt alone" in system_text(llm.bodies[-1])
    assert not any(path.endswith("/upload") for path in gradio.paths())
    assert llm.violations == []


async def test_photo_edited_on_images_backend(llm: FakeVisionLlm, edits: FakeOpenAI) -> None:
    """The same on an edits backend: the LLM sees it and writes an edit; the edit gets the photo."""
    photo = picture(RED)
    url = host(edits, "photo.png", photo)
    async with pipeline_for(on_edits(llm, edits)) as pipeline:
        await pipeline.run(DrawJob("画成动漫风", references=(url,)))
    edit = edits.requests[-1]
    assert edit.path == "/v1/images/edits"
    assert [p.data for p in edit.parts if p.name == "image[]"] == [photo]
    prompt = next(p.data.decode() for p in edit.parts if p.name == "prompt")
    assert "a red picture" in prompt
    assert "Write an edit instruction" in system_text(llm.bodies[-1])
    assert [image.label for image in llm.seen] == ["参考图 1"]


@pytest.mark.parametrize("mode", ["refuse", "no_endpoints"])
async def test_text_only_model_redraw_is_refused_then_known(
    llm: FakeVisionLlm, gradio: FakeGradio, tmp_path: Path, mode: Any
) -> None:
    """A model refusing pictures fails the redraw clearly; the next request is refused up front."""
    llm.mode = mode
    photo = tmp_path / "photo.png"
    photo.write_bytes(picture(RED))
    job = DrawJob("画成动漫风", references=(photo,))
    settings = on_gradio(llm, gradio)
    async with pipeline_for(settings) as pipeline:
        with pytest.raises(RedrawError) as caught:
            await pipeline.run(job)
    assert "zimage 不支持参考图" in caught.value.user_message
    assert "模型不接受图片" in caught.value.user_message
    assert gradio.call_bodies() == []
    with pytest.raises(ReferencesUnsupportedError):
        plan_backend(job, settings)  # known before the ack from now on
    assert len(llm.bodies) == 1


@pytest.mark.parametrize("mode", ["refuse", "no_endpoints"])
async def test_text_only_model_redraw_moves_to_fallback_that_edits(
    llm: FakeVisionLlm, gradio: FakeGradio, edits: FakeOpenAI, tmp_path: Path, mode: Any
) -> None:
    """With a fallback that takes references, the photo is edited there, text-only."""
    llm.mode = mode
    photo = tmp_path / "photo.png"
    photo.write_bytes(picture(RED))
    async with pipeline_for(on_gradio(llm, gradio, edits)) as pipeline:
        result = await pipeline.run(DrawJob("画成动漫风", references=(photo,)))
        assert result.backend == "openai"
        assert edits.requests[-1].path == "/v1/images/edits"
        assert [image_parts(body) != [] for body in llm.bodies] == [True, False]
        await pipeline.run(DrawJob("画成动漫风", references=(photo,)))
    assert image_parts(llm.bodies[-1]) == []  # the model is known to be text-only now
    assert gradio.call_bodies() == []


@pytest.mark.parametrize("mode", ["refuse", "no_endpoints"])
async def test_text_only_model_edit_retries_without_pictures(
    llm: FakeVisionLlm, edits: FakeOpenAI, mode: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """An edit goes on text-only after the refusal; one INFO line; later calls send none."""
    llm.mode = mode
    url = host(edits, "photo.png", picture(RED))
    caplog.set_level("INFO", logger="nonebot_plugin_llm2pic")
    async with pipeline_for(on_edits(llm, edits)) as pipeline:
        await pipeline.run(DrawJob("画成动漫风", references=(url,)))
        await pipeline.run(DrawJob("画成动漫风", references=(url,)))
    assert [image_parts(body) != [] for body in llm.bodies] == [True, False, False]
    assert edits.requests[-1].path == "/v1/images/edits"
    lines = [r for r in caplog.records if "takes no pictures" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].levelname == "INFO"


async def test_vision_on_reports_the_refusal(llm: FakeVisionLlm, edits: FakeOpenAI) -> None:
    """`vision = "on"`: a model refusing pictures fails the job with a clear reply."""
    llm.mode = "refuse"
    url = host(edits, "photo.png", picture(RED))
    async with pipeline_for(on_edits(llm, edits, vision="on")) as pipeline:
        with pytest.raises(VisionRefusedError) as caught:
            await pipeline.run(DrawJob("画成动漫风", references=(url,)))
    assert "vision-model 不接受图片" in caught.value.user_message
    assert not any(r.path == "/v1/images/edits" for r in edits.requests)


async def test_other_llm_errors_are_not_text_only(edits: FakeOpenAI) -> None:
    """A 400 that names no image word is an ordinary failure: nothing is remembered."""
    async with FakeVisionLlm() as llm:
        url = host(edits, "photo.png", picture(RED))
        llm.max_images = 0  # every picture breaks the fake's contract: a 400 without image words
        async with pipeline_for(on_edits(llm, edits)) as pipeline:
            await pipeline.run(DrawJob("画成动漫风", references=(url,)))
    assert prompt_writer.TEXT_ONLY_MODELS == set()
    assert len(llm.bodies) == 1  # no retry without pictures
    assert edits.requests[-1].path == "/v1/images/edits"


async def test_vision_off_never_sends_pictures(llm: FakeVisionLlm, edits: FakeOpenAI) -> None:
    """`vision = "off"`: the edit still happens; the LLM gets text only."""
    url = host(edits, "photo.png", picture(RED))
    async with pipeline_for(on_edits(llm, edits, vision="off")) as pipeline:
        await pipeline.run(DrawJob("画成动漫风", references=(url,)))
    assert image_parts(llm.bodies[-1]) == []
    assert "not shown to you" in llm.bodies[-1]["messages"][1]["content"]


# --- chat pictures ---------------------------------------------------------------------------


def posted(sender: str, url: str, sub_type: int = 0) -> HistoryEntry:
    return HistoryEntry(sender, "[图片]", 0.0, images=(PostedImage(url, sub_type),))


async def test_chat_picture_offered_when_pointed_at(
    llm: FakeVisionLlm, gradio: FakeGradio, edits: FakeOpenAI
) -> None:
    """「画一只这种颜色的猫」 with a blue picture in the chat: the LLM sees it, labelled."""
    history = (posted("小明", host(edits, "blue.png", picture(BLUE))),)
    settings = on_gradio(llm, gradio, vision_chat_images=1)
    async with pipeline_for(settings) as pipeline:
        await pipeline.run(DrawJob("画一只这种颜色的猫", history=history))
    assert [(image.label, image.colour) for image in llm.seen] == [("群聊图片，来自 小明", "blue")]
    assert "a blue picture" in gradio_prompt(gradio)
    assert "## Chat pictures" in system_text(llm.bodies[-1])


@pytest.mark.parametrize(
    ("text", "chat_images"),
    [("画一只猫", 1), ("画一只这种颜色的猫", 0)],
    ids=["not-pointed-at", "chat-images-0"],
)
async def test_chat_picture_not_offered(
    llm: FakeVisionLlm, gradio: FakeGradio, edits: FakeOpenAI, text: str, chat_images: int
) -> None:
    """Chat pictures stay out unless the request points at one and `vision_chat_images` > 0."""
    history = (posted("小明", host(edits, "blue.png", picture(BLUE))),)
    settings = on_gradio(llm, gradio, vision_chat_images=chat_images)
    async with pipeline_for(settings) as pipeline:
        await pipeline.run(DrawJob(text, history=history))
    assert image_parts(llm.bodies[-1]) == []
    assert not edits.requests  # not even downloaded


async def test_chat_pictures_newest_first_no_stickers_expired_skipped(
    llm: FakeVisionLlm, gradio: FakeGradio, edits: FakeOpenAI
) -> None:
    """Stickers never, an expired link skipped silently, the newest pictures up to the cap."""
    history = (
        posted("甲", host(edits, "old.png", picture(GREEN))),
        posted("乙", host(edits, "blue.png", picture(BLUE))),
        posted("丙", host(edits, "gone.png", EXPIRED_BODY, "application/json")),
        posted("丁", edits.url("/files/deleted.png")),
        posted("戊", host(edits, "sticker.png", picture(RED)), sub_type=1),
    )
    settings = on_gradio(llm, gradio, vision_chat_images=1)
    async with pipeline_for(settings) as pipeline:
        await pipeline.run(DrawJob("照着那张画一只猫", history=history))
    assert [(image.label, image.colour) for image in llm.seen] == [("群聊图片，来自 乙", "blue")]
    fetched = [r.path for r in edits.requests]
    assert "/files/sticker.png" not in fetched
    assert "/files/old.png" not in fetched


async def test_references_first_then_chat_pictures_within_the_cap(
    llm: FakeVisionLlm, gradio: FakeGradio, edits: FakeOpenAI
) -> None:
    """References come first; chat pictures fill what `vision_max_images` leaves; no duplicate."""
    reply_url = host(edits, "red.png", picture(RED))
    history = (
        posted("甲", host(edits, "green.png", picture(GREEN))),
        posted("乙", host(edits, "blue.png", picture(BLUE))),
        posted("丙", reply_url),  # the replied-to picture is in the chat too
    )
    llm.max_images = 2
    settings = on_gradio(llm, gradio, vision_chat_images=3, vision_max_images=2)
    async with pipeline_for(settings) as pipeline:
        await pipeline.run(DrawJob("照着这张画", references=(reply_url,), history=history))
    assert [(image.label, image.colour) for image in llm.seen] == [
        ("参考图 1", "red"),
        ("群聊图片，来自 乙", "blue"),
    ]
    assert llm.violations == []


async def test_chat_pictures_come_through_download_proxy(
    llm: FakeVisionLlm, gradio: FakeGradio, edits: FakeOpenAI
) -> None:
    """Chat pictures are fetched through `plugin.download_proxy` (the link itself is dead)."""
    host(edits, "blue.png", picture(BLUE))
    history = (posted("小明", "http://127.0.0.1:9/files/blue.png"),)  # nothing listens there
    settings = settings_for(
        {"zimage": gradio_backend(gradio.base_url)},
        llm=llm_table(llm, vision_chat_images=1),
        plugin={"download_proxy": edits.url("")},
    )
    async with pipeline_for(settings) as pipeline:
        await pipeline.run(DrawJob("照着这张画一只猫", history=history))
    assert [image.colour for image in llm.seen] == ["blue"]
    assert [r.path for r in edits.requests] == ["/files/blue.png"]


# --- inputs ----------------------------------------------------------------------------------


def gif_red_then_blue() -> bytes:
    frames = [Image.new("RGB", (40, 30), RED), Image.new("RGB", (40, 30), BLUE)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def rgba_red_dot() -> bytes:
    """Transparent but for a small red square: flattened on white, mostly white."""
    image = Image.new("RGBA", (60, 60), (0, 0, 0, 0))
    image.paste((220, 30, 30, 255), (25, 25, 35, 35))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def noisy_photo() -> bytes:
    """A 4000×3000 JPEG of noise over red: heavy to encode, mostly red."""
    noise = Image.effect_noise((4000, 3000), 40).convert("RGB")
    image = Image.blend(Image.new("RGB", (4000, 3000), RED), noise, 0.15)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("make", "colour", "detail"),
    [
        (gif_red_then_blue, "red", "low"),
        (rgba_red_dot, "white", "low"),
        (noisy_photo, "red", "high"),
    ],
    ids=["gif-first-frame", "rgba-on-white", "oversized"],
)
async def test_awkward_references_reach_the_llm_prepared(
    llm: FakeVisionLlm, gradio: FakeGradio, tmp_path: Path, make, colour: str, detail: str
) -> None:
    """GIF by its first frame, alpha on white, a big photo shrunk under the caps the fake checks."""
    path = tmp_path / "ref"
    path.write_bytes(make())
    llm.expect_detail = detail
    settings = on_gradio(llm, gradio, vision_detail=detail, vision_max_side=1024)
    async with pipeline_for(settings) as pipeline:
        await pipeline.run(DrawJob("画成动漫风", references=(path,)))
    assert [image.colour for image in llm.seen] == [colour]
    assert llm.violations == []  # the fake checks JPEG, detail, longest side and size


async def test_corrupt_reference_gets_a_clear_reply(
    llm: FakeVisionLlm, gradio: FakeGradio, tmp_path: Path
) -> None:
    """A truncated picture is refused with the not-an-image reply; nothing reaches the LLM."""
    path = tmp_path / "broken.png"
    path.write_bytes(picture(RED)[:60])
    async with pipeline_for(on_gradio(llm, gradio)) as pipeline:
        with pytest.raises(ReferenceImageError) as caught:
            await pipeline.run(DrawJob("画成动漫风", references=(path,)))
    assert caught.value.user_message == "参考图不是有效的图片，请换一张"
    assert llm.bodies == []
    assert gradio.call_bodies() == []


async def test_expired_reference_gets_a_clear_reply(
    llm: FakeVisionLlm, gradio: FakeGradio, edits: FakeOpenAI
) -> None:
    """A replied-to picture whose link expired is answered, not skipped."""
    url = host(edits, "gone.png", EXPIRED_BODY, "application/json")
    async with pipeline_for(on_gradio(llm, gradio)) as pipeline:
        with pytest.raises(ReferenceImageError) as caught:
            await pipeline.run(DrawJob("画成动漫风", references=(url,)))
    assert caught.value.user_message == "参考图不是有效的图片，请换一张"
    assert llm.bodies == []


# --- judge, selfie, check --------------------------------------------------------------------


def labelled(colour: tuple[int, int, int]) -> LabelledImage:
    return LabelledImage("参考图 1", prepare_image(picture(colour), detail="low", max_side=1024))


async def test_judge_sees_the_picture(llm: FakeVisionLlm, gradio: FakeGradio) -> None:
    """The intent judge gets the replied-to picture with the message."""
    async with new_session() as session:
        await judge_intent(
            session, on_gradio(llm, gradio), "你也来一张这样的", (), images=[labelled(BLUE)]
        )
    assert [(image.label, image.colour) for image in llm.seen] == [("参考图 1", "blue")]
    assert "你也来一张这样的" in llm.calls[-1].text


async def test_selfie_redraws_the_picture_with_the_bot(
    llm: FakeVisionLlm, gradio: FakeGradio, tmp_path: Path
) -> None:
    """A selfie with a picture on a text-only backend: the LLM sees it and draws the bot so."""
    path = tmp_path / "pose.png"
    path.write_bytes(picture(GREEN))
    async with pipeline_for(on_gradio(llm, gradio)) as pipeline:
        await pipeline.run(DrawJob("你也来一张这样的", selfie=True, references=(path,)))
    assert "a green picture" in gradio_prompt(gradio)
    assert "the bot itself takes the place" in system_text(llm.bodies[-1])


@pytest.mark.parametrize(
    ("mode", "detail"),
    [
        ("vision", "accepted a test picture (answered: a red picture)"),
        ("refuse", "text-only model: pictures will not be sent"),
        ("no_endpoints", "text-only model: pictures will not be sent"),
    ],
)
async def test_check_probes_a_test_picture(
    llm: FakeVisionLlm, gradio: FakeGradio, mode: Any, detail: str
) -> None:
    """`check` sends one tiny picture labelled 参考图 1 and says whether the LLM took it."""
    llm.mode = mode
    async with new_session() as session:
        result = await probe_llm_vision(session, on_gradio(llm, gradio))
    assert result.detail == detail
    assert llm.violations == []
    assert prompt_writer.TEXT_ONLY_MODELS == set()  # a probe teaches the running bot nothing


async def test_check_fails_a_text_only_model_under_vision_on(
    llm: FakeVisionLlm, gradio: FakeGradio
) -> None:
    """With `vision = "on"` a model refusing the test picture is an error for `check`."""
    llm.mode = "refuse"
    async with new_session() as session:
        with pytest.raises(VisionRefusedError):
            await probe_llm_vision(session, on_gradio(llm, gradio, vision="on"))
