"""Pictures in from group chat (nonebug): a reply to a photo is redrawn on the default Gradio
backend by a vision LLM, selfies and the intent judge see the picture, and what cannot work is
refused before the ack."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nonebot.adapters.onebot.v11 import Message, MessageSegment
from nonebot.adapters.onebot.v11.event import Reply, Sender
from nonebug import App
from PIL import Image

from nonebot_plugin_llm2pic import prompt_writer

from .fakes.gradio_server import IMAGE_PATH, FakeGradio
from .fakes.openai_server import FakeOpenAI
from .fakes.vision_llm import FakeVisionLlm
from .test_draw import ACK, expect_ack_and_image, make_bot, new_user
from .utils import group_message

RED = (220, 30, 30)
BLUE = (30, 60, 220)


def photo(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (320, 240), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture
async def setup(
    config_file: Path, inline_jobs: None
) -> AsyncIterator[tuple[FakeVisionLlm, FakeGradio, FakeOpenAI]]:
    """The default zimage backend on the Gradio fake, a vision LLM, and a picture host."""
    from nonebot_plugin_llm2pic import state

    prompt_writer.TEXT_ONLY_MODELS.clear()
    async with FakeVisionLlm() as llm, FakeGradio() as gradio, FakeOpenAI() as cdn:
        state.store.set("backends.zimage.base_url", f'"{gradio.base_url}"')
        state.store.set("backends.zimage.retries", "0")
        state.store.set("llm.base_url", f'"{llm.base_url}"')
        state.store.set("llm.model", "vision-model")
        state.store.set("limits.user_cooldown_seconds", "0")
        yield llm, gradio, cdn
    prompt_writer.TEXT_ONLY_MODELS.clear()


def replying_to(cdn: FakeOpenAI, colour: tuple[int, int, int]) -> Reply:
    """A reply segment quoting a photo of one colour, hosted like QQ's CDN."""
    cdn.files["photo.jpg"] = (photo(colour), "image/jpeg")
    url = cdn.url("/files/photo.jpg")
    quoted = Message(MessageSegment.image(url))
    quoted[0].data["url"] = url
    return Reply(
        time=0,
        message_type="group",
        message_id=1,
        real_id=1,
        sender=Sender(user_id=1),
        message=quoted,
    )


def expect_ack_and_picture(ctx, event, gradio: FakeGradio) -> None:
    expect_ack_and_image(ctx, event, gradio.files[IMAGE_PATH])


async def test_reply_to_photo_redrawn_on_gradio(app: App, setup) -> None:
    """Replying 「画成动漫风」 to a red photo draws on zimage from a prompt carrying red."""
    from nonebot_plugin_llm2pic.matchers.draw import natural

    llm, gradio, cdn = setup
    event = group_message("画成动漫风", user_id=new_user(), reply=replying_to(cdn, RED))
    async with app.test_matcher(natural) as ctx:
        bot = make_bot(ctx)
        ctx.receive_event(bot, event)
        expect_ack_and_picture(ctx, event, gradio)
    assert "a red picture" in gradio.call_bodies()[-1]["data"][0]
    assert [(image.label, image.colour) for image in llm.seen] == [("参考图 1", "red")]


async def test_reply_to_photo_refused_before_ack_without_vision(app: App, setup) -> None:
    """With `llm.vision = "off"` the same request is refused at once: no ack, nothing fetched."""
    from nonebot_plugin_llm2pic import state
    from nonebot_plugin_llm2pic.matchers.draw import natural

    llm, gradio, cdn = setup
    state.store.set("llm.vision", "off")
    event = group_message("画成动漫风", user_id=new_user(), reply=replying_to(cdn, RED))
    async with app.test_matcher(natural) as ctx:
        bot = make_bot(ctx)
        ctx.receive_event(bot, event)
        ctx.should_call_send(
            event,
            "绘图服务 zimage 不支持参考图，请只用文字描述",
            result={"message_id": 1},
            reply_message=True,
        )
    assert llm.bodies == []
    assert cdn.requests == []
    assert gradio.requests == []


async def test_selfie_like_the_replied_picture(app: App, setup) -> None:
    """「你也来一张这样的」 replying to a picture: a selfie drawn from what the LLM saw."""
    from nonebot_plugin_llm2pic.matchers.draw import natural

    llm, gradio, cdn = setup
    event = group_message("你也来一张这样的", user_id=new_user(), reply=replying_to(cdn, BLUE))
    async with app.test_matcher(natural) as ctx:
        bot = make_bot(ctx)
        ctx.receive_event(bot, event)
        expect_ack_and_picture(ctx, event, gradio)
    assert "a blue picture" in gradio.call_bodies()[-1]["data"][0]
    system = llm.bodies[-1]["messages"][0]["content"]
    assert "the bot itself takes the place" in system


async def test_judge_sees_the_replied_picture(app: App, setup) -> None:
    """A weak trigger replying to a picture goes to the judge with the picture."""
    from nonebot_plugin_llm2pic import state
    from nonebot_plugin_llm2pic.matchers.draw import natural

    llm, _, cdn = setup
    state.store.set("llm.judge_intent", "true")
    event = group_message("想看看这样的", user_id=new_user(), reply=replying_to(cdn, BLUE))
    async with app.test_matcher(natural) as ctx:
        bot = make_bot(ctx)
        ctx.receive_event(bot, event)
        ctx.should_not_pass_rule(natural)  # the fake answers a prompt, not "yes"
    assert [(image.label, image.colour) for image in llm.seen] == [("参考图 1", "blue")]
    assert "Newest message" in llm.calls[-1].text


async def test_text_only_model_found_mid_job_then_refused_up_front(app: App, setup) -> None:
    """A model refusing pictures: the first redraw fails after the ack, the next before it."""
    from nonebot_plugin_llm2pic.matchers.draw import natural

    llm, gradio, cdn = setup
    llm.mode = "no_endpoints"
    failed = (
        "绘图服务 zimage 不支持参考图，提示词模型（LLM）也没能看图（模型不接受图片），"
        "请只用文字描述"
    )
    event = group_message("画成动漫风", user_id=new_user(), reply=replying_to(cdn, RED))
    async with app.test_matcher(natural) as ctx:
        bot = make_bot(ctx)
        ctx.receive_event(bot, event)
        ctx.should_call_send(event, ACK, result={"message_id": 1}, reply_message=True)
        ctx.should_call_send(event, failed, result={"message_id": 2}, reply_message=True)
    event = group_message("画成动漫风", user_id=new_user(), reply=replying_to(cdn, RED))
    async with app.test_matcher(natural) as ctx:
        bot = make_bot(ctx)
        ctx.receive_event(bot, event)
        ctx.should_call_send(
            event,
            "绘图服务 zimage 不支持参考图，请只用文字描述",
            result={"message_id": 3},
            reply_message=True,
        )
    assert len(llm.bodies) == 1
    assert gradio.call_bodies() == []
