"""Output through nonebug: several pictures, quota per picture, forwards, "再来一张", help.

The image backend is the `openai` backend on the fake in `fakes/openai_server` (or the fake
Gradio app where seeds matter); jobs run inline, so nonebug sees every outcome.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nonebot.adapters.onebot.v11 import Message, MessageSegment
from nonebug import App

from .conftest import SUPERUSER_ID
from .fakes.gradio_server import IMAGE_PATH, FakeGradio
from .fakes.llm_server import FakeLlm
from .fakes.openai_server import FakeOpenAI
from .fakes.openai_server import Reply as FakeReply
from .test_draw import ACK, make_bot, new_user, upstream
from .utils import group_message

__all__ = ["upstream"]  # the fixture, shared with test_draw


def pictures(image: bytes, count: int, text: str = "") -> Message:
    message = Message([MessageSegment.image(image) for _ in range(count)])
    return message + MessageSegment.text(text) if text else message


def expect_pictures(ctx, event, image: bytes, count: int, text: str = "", message_id: int = 2):
    """The ack, then one message with ``count`` pictures quoting the request."""
    from nonebot_plugin_llm2pic.matchers.draw import image_send_timeout

    ctx.should_call_send(event, ACK, result={"message_id": 1}, reply_message=True)
    ctx.should_call_send(
        event,
        pictures(image, count, text),
        result={"message_id": message_id},
        reply_message=True,
        _timeout=image_send_timeout(len(image) * count),
    )


async def test_four_pictures_in_one_message(app: App, upstream: FakeOpenAI):
    """ "画4张猫" → one message holding four pictures, quoting the request."""
    from nonebot_plugin_llm2pic.matchers.draw import natural

    event = group_message("画4张猫", user_id=new_user())
    async with app.test_matcher(natural) as ctx:
        ctx.receive_event(make_bot(ctx), event)
        expect_pictures(ctx, event, upstream.image, 4)
    # The endpoint ignored n=4: one picture came back, the other three were drawn one by one.
    assert [r.json["n"] for r in upstream.requests] == [4, 1, 1, 1]


async def test_endpoint_honouring_n_draws_in_one_call(app: App, upstream: FakeOpenAI):
    """An images endpoint that returns `n` pictures is called once."""
    from nonebot_plugin_llm2pic.matchers.draw import natural

    upstream.honours_n = True
    event = group_message("来三张猫猫", user_id=new_user())
    async with app.test_matcher(natural) as ctx:
        ctx.receive_event(make_bot(ctx), event)
        expect_pictures(ctx, event, upstream.image, 3)
    assert [r.json["n"] for r in upstream.requests] == [3]


async def test_three_cats_is_one_picture(app: App, upstream: FakeOpenAI):
    """ "画三只猫" counts cats, not pictures: one picture of three cats."""
    from nonebot_plugin_llm2pic.matchers.draw import natural

    event = group_message("画三只猫", user_id=new_user())
    async with app.test_matcher(natural) as ctx:
        ctx.receive_event(make_bot(ctx), event)
        expect_pictures(ctx, event, upstream.image, 1)
    assert [(r.json["n"], r.json["prompt"]) for r in upstream.requests] == [(1, "三只猫")]


async def test_pic_n_flag_and_cap(app: App, upstream: FakeOpenAI):
    """`/pic -n 6` with a cap of 4 draws four and the ack says so."""
    from nonebot_plugin_llm2pic.matchers.draw import image_send_timeout, pic_cmd

    upstream.honours_n = True
    event = group_message("/pic -n 6 猫", user_id=new_user())
    async with app.test_matcher(pic_cmd) as ctx:
        ctx.receive_event(make_bot(ctx), event)
        ctx.should_call_send(
            event, ACK + "（一次最多 4 张）", result={"message_id": 1}, reply_message=True
        )
        ctx.should_call_send(
            event,
            pictures(upstream.image, 4),
            result={"message_id": 2},
            reply_message=True,
            _timeout=image_send_timeout(len(upstream.image) * 4),
        )
    assert [r.json["n"] for r in upstream.requests] == [4]


async def test_each_picture_takes_a_unit_of_quota(app: App, upstream: FakeOpenAI):
    """Four delivered pictures count four units of the user's and the group's quota."""
    from nonebot_plugin_llm2pic import state
    from nonebot_plugin_llm2pic.matchers.draw import natural

    upstream.honours_n = True
    user = new_user()
    before = await state.quota.usage(user_id=str(user), group_id="777")
    event = group_message("画4张猫", user_id=user)
    async with app.test_matcher(natural) as ctx:
        ctx.receive_event(make_bot(ctx), event)
        expect_pictures(ctx, event, upstream.image, 4)
    after = await state.quota.usage(user_id=str(user), group_id="777")
    assert (after[0] - before[0], after[1] - before[1]) == (4, 4)


async def test_request_over_the_remaining_quota_is_told_what_is_left(
    app: App, upstream: FakeOpenAI
):
    """With 1 of 5 pictures left, "画两张猫" is refused with how many are left."""
    from nonebot_plugin_llm2pic import state
    from nonebot_plugin_llm2pic.matchers.draw import natural

    upstream.honours_n = True
    state.store.set("limits.user_daily_quota", "5")
    user = new_user()
    event = group_message("画4张猫", user_id=user)
    async with app.test_matcher(natural) as ctx:
        ctx.receive_event(make_bot(ctx), event)
        expect_pictures(ctx, event, upstream.image, 4)
    event = group_message("画两张猫", user_id=user)
    async with app.test_matcher(natural) as ctx:
        ctx.receive_event(make_bot(ctx), event)
        ctx.should_call_send(
            event,
            "今天只剩 1 张了，画不了 2 张，少要几张吧",
            result={"message_id": 3},
            reply_message=True,
        )
    assert len(upstream.requests) == 1


async def test_partial_failure_sends_the_rest_and_releases_units(app: App, upstream: FakeOpenAI):
    """One of three pictures fails: two are sent with a note, the failed unit is given back."""
    from nonebot_plugin_llm2pic import state
    from nonebot_plugin_llm2pic.matchers.draw import image_send_timeout, natural

    state.store.set("backends.openai.retries", "0")
    refused = FakeReply(status=400, body={"error": {"message": "bad", "type": "invalid"}})
    upstream.replies = [refused, refused]  # the batch call, then one of the single calls
    user = new_user()
    event = group_message("画三张猫", user_id=user)
    async with app.test_matcher(natural) as ctx:
        ctx.receive_event(make_bot(ctx), event)
        ctx.should_call_send(event, ACK, result={"message_id": 1}, reply_message=True)
        ctx.should_call_send(
            event,
            pictures(upstream.image, 2, "\n（有 1 张没画出来）"),
            result={"message_id": 2},
            reply_message=True,
            _timeout=image_send_timeout(len(upstream.image) * 2),
        )
    assert await state.quota.usage(user_id=str(user), group_id=None) == (2, 0)


async def test_forward_holds_a_node_per_picture(app: App, upstream: FakeOpenAI):
    """`multi_image = "forward"`: one merged forward, nodes from the bot under the persona name."""
    from nonebot_plugin_llm2pic import state
    from nonebot_plugin_llm2pic.matchers.draw import image_send_timeout, natural

    upstream.honours_n = True
    state.store.set("plugin.multi_image", '"forward"')
    event = group_message("画两张猫", user_id=new_user())
    node = MessageSegment.node_custom(
        user_id=2000, nickname="小画", content=Message(MessageSegment.image(upstream.image))
    )
    async with app.test_matcher(natural) as ctx:
        ctx.receive_event(make_bot(ctx), event)
        ctx.should_call_send(event, ACK, result={"message_id": 1}, reply_message=True)
        ctx.should_call_api(
            "send_group_forward_msg",
            {
                "group_id": 777,
                "messages": [node, node],
                "_timeout": image_send_timeout(len(upstream.image) * 2),
            },
            result={"message_id": 5, "forward_id": "f"},
        )
    [entry] = state.history.recent("777", limit=1, minutes=5)
    assert (entry.text, entry.is_bot) == ("[图片：猫]", True)  # chat history shows the forward


@pytest.fixture
async def llm(upstream: FakeOpenAI):
    """A fake prompt-writer LLM configured beside the image upstream."""
    from nonebot_plugin_llm2pic import state

    async with FakeLlm('{"prompt": "a cat at night", "style": "real"}') as fake:
        state.store.set("llm.base_url", f'"{fake.base_url}"')
        state.store.set("llm.model", '"test-model"')
        yield fake


async def test_again_reuses_the_prompt_without_the_llm(app: App, upstream: FakeOpenAI, llm):
    """ "再来一张" draws the user's last prompt again with no LLM request."""
    from nonebot_plugin_llm2pic.matchers.draw import natural

    user = new_user()
    first = group_message("画一只猫", user_id=user)
    async with app.test_matcher(natural) as ctx:
        ctx.receive_event(make_bot(ctx), first)
        expect_pictures(ctx, first, upstream.image, 1)
    asked = len(llm.bodies)
    again = group_message("再来一张", user_id=user)
    async with app.test_matcher(natural) as ctx:
        ctx.receive_event(make_bot(ctx), again)
        expect_pictures(ctx, again, upstream.image, 1, message_id=3)
    assert len(llm.bodies) == asked
    assert [r.json["prompt"] for r in upstream.requests] == ["a cat at night"] * 2


async def test_again_with_words_gives_the_llm_the_last_prompt(app: App, upstream: FakeOpenAI, llm):
    """ "再来一张，但是要夜景" goes through the LLM with the last picture's prompt as context."""
    from nonebot_plugin_llm2pic.matchers.draw import natural

    user = new_user()
    first = group_message("画一只猫", user_id=user)
    async with app.test_matcher(natural) as ctx:
        ctx.receive_event(make_bot(ctx), first)
        expect_pictures(ctx, first, upstream.image, 1)
    again = group_message("再来一张，但是要夜景", user_id=user)
    async with app.test_matcher(natural) as ctx:
        ctx.receive_event(make_bot(ctx), again)
        expect_pictures(ctx, again, upstream.image, 1, message_id=3)
    asked = json.dumps(llm.bodies[-1], ensure_ascii=False)
    assert "a cat at night" in asked
    assert "但是要夜景" in asked


async def test_again_with_nothing_drawn_says_so(app: App, upstream: FakeOpenAI):
    """ "再来一张" in a group with no recent picture asks for a description."""
    from nonebot_plugin_llm2pic.matchers.draw import natural

    event = group_message("再来一张", user_id=new_user(), group_id=4242)
    async with app.test_matcher(natural) as ctx:
        ctx.receive_event(make_bot(ctx), event)
        ctx.should_call_send(
            event,
            "还没有可以重画的图，说说想画什么吧",
            result={"message_id": 1},
            reply_message=True,
        )
    assert upstream.requests == []


async def test_card_talk_is_not_a_drawing(app: App, upstream: FakeOpenAI):
    """ "再来一张牌就赢了" not addressed to the bot starts nothing."""
    from nonebot_plugin_llm2pic.matchers.draw import natural

    async with app.test_matcher(natural) as ctx:
        ctx.receive_event(make_bot(ctx), group_message("再来一张牌就赢了", user_id=new_user()))
        ctx.should_not_pass_rule(natural)


@pytest.fixture
async def gradio(config_file: Path, inline_jobs: None):
    """The fake Gradio app as the default backend (its pictures report seed 123456)."""
    from nonebot_plugin_llm2pic import state

    async with FakeGradio() as fake:
        state.store.set("backends.zimage.base_url", f'"{fake.base_url}"')
        state.store.set("routing.default", "zimage")
        state.store.set("limits.user_cooldown_seconds", "0")
        state.store.set("plugin.ack_message", '""')
        yield fake


async def test_again_draws_with_a_new_seed(app: App, gradio: FakeGradio):
    """ "再来一张" sends the same prompt with a fixed seed other than the last picture's."""
    from nonebot_plugin_llm2pic.matchers.draw import image_send_timeout, natural

    user = new_user()
    image = gradio.files[IMAGE_PATH]
    for text in ("画一只猫", "再来一张"):
        event = group_message(text, user_id=user)
        async with app.test_matcher(natural) as ctx:
            ctx.receive_event(make_bot(ctx), event)
            ctx.should_call_send(
                event,
                pictures(image, 1),
                result={"message_id": 9},
                reply_message=True,
                _timeout=image_send_timeout(len(image)),
            )
    first, again = (body["data"] for body in gradio.call_bodies())
    # Z-Image layout: prompt, resolution, seed, steps, shift, random_seed.
    assert first[0] == again[0] == "猫"
    assert (first[2], first[5]) == (-1, True)
    assert again[5] is False
    assert again[2] not in (-1, 123456)


async def test_pic_help_follows_the_live_config(app: App, upstream: FakeOpenAI):
    """`/pic help` shows the flags a member may use, the triggers that are on, pictures left."""
    from nonebot_plugin_llm2pic import state
    from nonebot_plugin_llm2pic.matchers.draw import pic_cmd
    from nonebot_plugin_llm2pic.matchers.usage import pic_help

    state.store.set("plugin.selfie", "false")
    state.store.set("limits.user_daily_quota", "7")
    event = group_message("/pic help", user_id=new_user())
    settings = state.store.settings
    expected = pic_help(settings, may_flag=False, left=7)
    assert "-r" not in expected
    assert "自拍" not in expected
    assert "还能画 7 张" in expected
    async with app.test_matcher(pic_cmd) as ctx:
        ctx.receive_event(make_bot(ctx), event)
        ctx.should_call_send(event, expected, result={"message_id": 1})


async def test_pic_help_shows_flags_to_superusers(app: App, upstream: FakeOpenAI):
    """A superuser's help lists -r and -b with the backends, and no limit on pictures."""
    from nonebot_plugin_llm2pic import state
    from nonebot_plugin_llm2pic.matchers.draw import pic_cmd
    from nonebot_plugin_llm2pic.matchers.usage import pic_help

    event = group_message("/pic help", user_id=int(SUPERUSER_ID))
    expected = pic_help(state.store.settings, may_flag=True, left=None)
    assert "-b <后端>" in expected
    assert "不限次数" in expected
    async with app.test_matcher(pic_cmd) as ctx:
        ctx.receive_event(make_bot(ctx), event)
        ctx.should_call_send(event, expected, result={"message_id": 1})


async def test_pic_quota_answers_what_is_left(app: App, upstream: FakeOpenAI):
    """`/pic 额度` answers the pictures left today (the smaller of user and group)."""
    from nonebot_plugin_llm2pic import state
    from nonebot_plugin_llm2pic.matchers.draw import pic_cmd

    state.store.set("limits.user_daily_quota", "9")
    state.store.set("limits.group_daily_quota", "0")
    event = group_message("/pic 额度", user_id=new_user())
    async with app.test_matcher(pic_cmd) as ctx:
        ctx.receive_event(make_bot(ctx), event)
        ctx.should_call_send(event, "今天还能画 9 张", result={"message_id": 1})


async def test_admin_help_lists_commands(app: App, config_file: Path):
    """`/llm2pic help` lists the admin commands, each with an example."""
    from nonebot_plugin_llm2pic.matchers.admin import admin_cmd
    from nonebot_plugin_llm2pic.matchers.usage import ADMIN_HELP

    assert "/llm2pic set limits.user_daily_quota 10" in ADMIN_HELP
    event = group_message("/llm2pic help", user_id=int(SUPERUSER_ID))
    async with app.test_matcher(admin_cmd) as ctx:
        ctx.receive_event(make_bot(ctx), event)
        ctx.should_call_send(event, ADMIN_HELP, result={"message_id": 1})
