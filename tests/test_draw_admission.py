"""What is decided before the ack: known failures, the backend of a request with references,
who is addressed; and reference downloads through `plugin.download_proxy` (nonebug + fakes)."""

from __future__ import annotations

from nonebot.adapters.onebot.v11 import Message, MessageSegment
from nonebot.adapters.onebot.v11.event import Reply, Sender
from nonebug import App

from . import test_draw
from .fakes.openai_server import FakeOpenAI, make_png
from .test_draw import expect_ack_and_image, make_bot, new_user
from .utils import group_message

upstream = test_draw.upstream
"""The fake OpenAI Images upstream routed as the default backend, jobs inline (test_draw's)."""


def with_image(text: str, url: str) -> Message:
    message = Message(text) + MessageSegment.image(url)
    message[-1].data["url"] = url
    return message


def reply_to_image(url: str) -> Reply:
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


async def test_persona_name_addresses_the_bot(app: App, upstream: FakeOpenAI):
    """「小红，想看看樱花」 with persona.name 小红 (not a NICKNAME) fires the weak trigger."""
    from nonebot_plugin_llm2pic import state
    from nonebot_plugin_llm2pic.matchers.draw import natural

    state.store.set("persona.name", "小红")
    event = group_message("小红，想看看樱花", user_id=new_user())
    async with app.test_matcher(natural) as ctx:
        bot = make_bot(ctx)
        ctx.receive_event(bot, event)
        ctx.should_pass_rule(natural)
        expect_ack_and_image(ctx, event, upstream.image)
    assert "小红" not in upstream.requests[-1].json["prompt"]


async def test_group_admin_is_told_flags_are_for_superusers(app: App, upstream: FakeOpenAI):
    """A group admin's `/pic -r` is refused naming superusers, not 管理员."""
    from nonebot_plugin_llm2pic.matchers.draw import pic_cmd

    event = group_message("/pic -r a cat", user_id=new_user(), role="admin")
    async with app.test_matcher(pic_cmd) as ctx:
        bot = make_bot(ctx)
        ctx.receive_event(bot, event)
        ctx.should_call_send(event, "只有超级用户可以使用 -r / -b 参数", result={"message_id": 1})
    assert upstream.requests == []


async def test_references_unsupported_refused_before_ack(app: App, upstream: FakeOpenAI):
    """An image request for a backend without reference support gets one refusal, no ack,
    and costs no quota."""
    from nonebot_plugin_llm2pic import state
    from nonebot_plugin_llm2pic.matchers.draw import pic_cmd

    state.store.set("routing.default", "zimage")
    user = new_user()
    before = await state.quota.usage(user_id=str(user), group_id="777")
    upstream.files["ref.png"] = (make_png(8, 8), "image/png")
    event = group_message(with_image("/pic 画成油画", upstream.url("/files/ref.png")), user_id=user)
    async with app.test_matcher(pic_cmd) as ctx:
        bot = make_bot(ctx)
        ctx.receive_event(bot, event)
        ctx.should_call_send(
            event,
            "绘图服务 zimage 不支持参考图，请只用文字描述",
            result={"message_id": 1},
            reply_message=True,
        )
    assert upstream.requests == []
    assert await state.quota.usage(user_id=str(user), group_id="777") == before


async def test_reference_request_goes_to_the_style_it_names(app: App, upstream: FakeOpenAI):
    """「画成动漫风格」 on a reply to an image goes to routing.anime, chosen before any LLM call,
    although routing.default cannot take references."""
    from nonebot_plugin_llm2pic import state
    from nonebot_plugin_llm2pic.matchers.draw import natural

    state.store.set("routing.default", "zimage")
    state.store.set("routing.anime", "openai")
    reference = make_png(16, 16, (9, 8, 7))
    upstream.files["ref.png"] = (reference, "image/png")
    reply = reply_to_image(upstream.url("/files/ref.png"))
    event = group_message("画成动漫风格", user_id=new_user(), to_me=True, reply=reply)
    async with app.test_matcher(natural) as ctx:
        bot = make_bot(ctx)
        ctx.receive_event(bot, event)
        expect_ack_and_image(ctx, event, upstream.image)
    edit = upstream.requests[-1]
    assert edit.path == "/v1/images/edits"
    assert [p.data for p in edit.parts if p.name == "image[]"] == [reference]


async def test_reference_download_uses_download_proxy(app: App, upstream: FakeOpenAI):
    """Chat images are fetched through plugin.download_proxy, never through llm.proxy."""
    from nonebot_plugin_llm2pic import state
    from nonebot_plugin_llm2pic.matchers.draw import pic_cmd

    reference = make_png(12, 12, (3, 3, 3))
    async with FakeOpenAI() as proxy:
        proxy.files["ref.png"] = (reference, "image/png")
        state.store.set("plugin.download_proxy", f'"{proxy.url("")}"')
        state.store.set("llm.proxy", '"http://127.0.0.1:9"')  # nothing listens there
        event = group_message(
            with_image("/pic 画成油画", upstream.url("/files/ref.png")), user_id=new_user()
        )
        async with app.test_matcher(pic_cmd) as ctx:
            bot = make_bot(ctx)
            ctx.receive_event(bot, event)
            expect_ack_and_image(ctx, event, upstream.image)
    assert [r.path for r in proxy.requests] == ["/files/ref.png"]
    assert [p.data for p in upstream.requests[-1].parts if p.name == "image[]"] == [reference]
