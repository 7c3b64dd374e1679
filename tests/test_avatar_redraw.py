"""Avatars on a text-only backend: the vision LLM sees the avatar and the prompt redraws it."""

from __future__ import annotations

from nonebot_plugin_llm2pic.avatars import avatar_for
from nonebot_plugin_llm2pic.pipeline import DrawJob, Pipeline
from nonebot_plugin_llm2pic.settings import parse_settings
from nonebot_plugin_llm2pic.transport import new_session

from .fakes.gradio_server import FakeGradio
from .fakes.harness import gradio_backend
from .fakes.openai_server import FakeOpenAI, make_png
from .fakes.vision_llm import FakeVisionLlm


async def test_avatar_redrawn_on_text_only_backend(fake: FakeOpenAI):
    """「把我画成猫娘」 on the default Gradio backend: the LLM sees the avatar, Gradio draws."""
    fake.files["avatar-5.png"] = (make_png(32, 32, (220, 30, 30)), "image/png")
    async with FakeGradio() as gradio, FakeVisionLlm() as llm:
        settings = parse_settings(
            {
                "backends": {"zimage": gradio_backend(gradio.base_url)},
                "llm": {"base_url": llm.base_url, "model": "vision-model"},
            }
        )
        avatar = avatar_for(f"{fake.url('/files')}/avatar-{{user_id}}.png?s=640", "5")
        async with new_session() as session:
            pipeline = Pipeline(session, lambda: settings)
            result = await pipeline.run(DrawJob(text="把我画成猫娘", references=(avatar,)))
    assert [image.colour for image in llm.seen] == ["red"]
    assert result.prompt.startswith("a red picture")
    assert result.backend == "zimage"
    assert llm.violations == []
