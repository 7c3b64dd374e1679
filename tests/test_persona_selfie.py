"""Selfies with a face: persona reference images through the real pipeline and local fakes."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from nonebot_plugin_llm2pic.persona_refs import PersonaLooks
from nonebot_plugin_llm2pic.pipeline import PERSONA_LOOK, DrawJob, Pipeline
from nonebot_plugin_llm2pic.settings import Settings, parse_settings
from nonebot_plugin_llm2pic.transport import new_session

from .fakes.gradio_server import FakeGradio
from .fakes.harness import gradio_backend, openai_backend
from .fakes.openai_server import FakeOpenAI
from .fakes.vision_llm import FakeVisionLlm


def png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 48), colour).save(buffer, format="PNG")
    return buffer.getvalue()


RED, BLUE = png((220, 30, 30)), png((30, 60, 220))


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """A config folder holding two persona pictures in persona/."""
    (tmp_path / "persona").mkdir()
    (tmp_path / "persona" / "red.png").write_bytes(RED)
    (tmp_path / "persona" / "blue.png").write_bytes(BLUE)
    return tmp_path


@pytest.fixture
async def openai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
async def gradio() -> AsyncIterator[FakeGradio]:
    async with FakeGradio() as fake:
        yield fake


def settings(config_dir: Path, backends: dict[str, Any], **tables: Any) -> Settings:
    persona = {
        "reference_images": ["persona/red.png", "persona/blue.png"],
        **tables.pop("persona", {}),
    }
    routing = {"default": next(iter(backends)), **tables.pop("routing", {})}
    data = {"backends": backends, "persona": persona, "routing": routing, **tables}
    return parse_settings(data, (config_dir,))


async def run(
    config_dir: Path, current: Settings, *jobs: DrawJob, looks: PersonaLooks | None = None
):
    async with new_session() as session:
        pipeline = Pipeline(session, lambda: current, roots=(config_dir,), looks=looks)
        return [await pipeline.run(job) for job in jobs]


async def test_selfie_on_edits_backend_carries_persona_images(config_dir: Path, openai: FakeOpenAI):
    """A selfie on a backend that takes references sends the persona pictures and names them."""
    current = settings(config_dir, {"openai": openai_backend(openai.base_url)})
    await run(config_dir, current, DrawJob(text="来张自拍", selfie=True))
    edit = openai.requests[-1]
    assert edit.path == "/v1/images/edits"
    assert [part.data for part in edit.parts if part.name == "image[]"] == [RED, BLUE]
    prompt = next(part.data for part in edit.parts if part.name == "prompt").decode()
    assert PERSONA_LOOK in prompt


async def test_drawing_that_is_not_a_selfie_has_no_persona_images(
    config_dir: Path, openai: FakeOpenAI
):
    """Persona pictures go only with selfies."""
    current = settings(config_dir, {"openai": openai_backend(openai.base_url)})
    await run(config_dir, current, DrawJob(text="一只猫"))
    assert openai.requests[-1].path == "/v1/images/generations"


async def test_selfie_routes_to_routing_selfie(config_dir: Path, openai: FakeOpenAI):
    """routing.selfie wins over routing.anime for a selfie."""
    backends = {
        "plain": openai_backend(openai.base_url, model="plain-model"),
        "anime": openai_backend(openai.base_url, model="anime-model"),
        "face": openai_backend(openai.base_url, model="face-model"),
    }
    current = settings(config_dir, backends, routing={"anime": "anime", "selfie": "face"})
    [result] = await run(config_dir, current, DrawJob(text="来张自拍", selfie=True))
    assert result.backend == "face"


async def test_selfie_on_text_only_backend_without_vision_uses_appearance(
    config_dir: Path, gradio: FakeGradio
):
    """No way to use the pictures: the selfie is drawn from persona.appearance, not refused."""
    current = settings(
        config_dir,
        {"zimage": gradio_backend(gradio.base_url)},
        persona={"appearance": "green hair, yellow raincoat"},
    )
    [result] = await run(config_dir, current, DrawJob(text="来张自拍", selfie=True))
    assert "green hair, yellow raincoat" in result.prompt
    assert gradio.paths("POST")  # drawn on the text-only backend, no upload


async def test_text_only_selfies_describe_persona_once(
    config_dir: Path, gradio: FakeGradio, tmp_path: Path
):
    """Two selfies on a text-only backend: one description call, both prompts carry it."""
    async with FakeVisionLlm() as llm:
        current = settings(
            config_dir,
            {"zimage": gradio_backend(gradio.base_url)},
            llm={"base_url": llm.base_url, "model": "vision-model"},
        )
        looks = PersonaLooks(tmp_path / "looks.json")
        selfie = DrawJob(text="来张自拍", selfie=True)
        await run(config_dir, current, selfie, selfie, looks=looks)
    described = [call for call in llm.calls if call.images]
    assert [[image.colour for image in call.images] for call in described] == [["red", "blue"]]
    writes = [call for call in llm.calls if not call.images]
    assert len(writes) == 2
    assert all('appearance: "a red picture, a blue picture"' in call.text for call in writes)
    assert llm.violations == []


async def test_persona_appearance_wins_over_description(config_dir: Path, gradio: FakeGradio):
    """With persona.appearance set, the pictures are not described for a text-only backend."""
    async with FakeVisionLlm() as llm:
        current = settings(
            config_dir,
            {"zimage": gradio_backend(gradio.base_url)},
            llm={"base_url": llm.base_url, "model": "vision-model"},
            persona={"appearance": "green hair"},
        )
        await run(config_dir, current, DrawJob(text="来张自拍", selfie=True))
    assert [call for call in llm.calls if call.images] == []


async def test_unreadable_persona_images_never_refuse(config_dir: Path, openai: FakeOpenAI):
    """Missing persona files are skipped: the selfie is still drawn."""
    (config_dir / "persona" / "red.png").unlink()
    (config_dir / "persona" / "blue.png").write_text("not a picture")
    current = settings(config_dir, {"openai": openai_backend(openai.base_url)})
    [result] = await run(config_dir, current, DrawJob(text="来张自拍", selfie=True))
    assert result.image.data
    assert openai.requests[-1].path == "/v1/images/generations"
