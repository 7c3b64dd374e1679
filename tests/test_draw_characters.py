"""Avatars and the bot's own pictures as references, through nonebug against local fakes.

The default backend is the `openai` fake (it takes references: `images/edits`); avatars come from
the same fake's `/files/…` route through `plugin.avatar_url`.
"""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import pytest
from nonebot.adapters.onebot.v11 import ActionFailed, Adapter, Bot, Message, MessageSegment
from nonebot.adapters.onebot.v11.event import Reply, Sender
from nonebug import App

from .fakes.openai_server import FakeOpenAI, make_png
from .utils import SELF_ID, group_message

ACK = "收到，正在画…"
_users = itertools.count(50000)
MEMBER = 333
PHOTO = make_png(20, 20, (5, 150, 5))
PLACEHOLDER = make_png(10, 10, (128, 128, 128))


@pytest.fixture
async def upstream(config_file: Path, inline_jobs: None, monkeypatch: pytest.MonkeyPatch):
    """The openai fake as default backend and avatar host; jobs run inline."""
    from nonebot_plugin_llm2pic import avatars, state

    async with FakeOpenAI() as fake:
        fake.files["photo.png"] = (PHOTO, "image/png")
        state.store.set("backends.openai.base_url", f'"{fake.base_url}"')
        state.store.set("backends.openai.api_key", "sk-test")
        state.store.set("routing.default", "openai")
        state.store.set("limits.user_cooldown_seconds", "0")
        state.store.set("plugin.avatar_url", f'"{fake.url("/files")}/avatar-{{user_id}}.png?s=640"')
        monkeypatch.setattr(avatars, "PLACEHOLDER_MD5", {hashlib.md5(PLACEHOLDER).hexdigest()})
        yield fake


def avatar(fake: FakeOpenAI, user: int) -> bytes:
    """Serve a distinct avatar for ``user`` and return its bytes."""
    data = make_png(12, 12, (user % 251, 40, 90))
    fake.files[f"avatar-{user}.png"] = (data, "image/png")
    return data


def new_user() -> int:
    return next(_users)


def make_bot(ctx) -> Bot:
    return ctx.create_bot(base=Bot, adapter=ctx.create_adapter(base=Adapter), self_id=SELF_ID)


def sent_images(fake: FakeOpenAI) -> list[bytes]:
    edit = fake.requests[-1]
    assert edit.path == "/v1/images/edits"
    return [part.data for part in edit.parts if part.name == "image[]"]


def expect_picture(ctx, event, fake: FakeOpenAI, message_id: int = 2) -> None:
    from nonebot_plugin_llm2pic.matchers.draw import image_send_timeout

    ctx.should_call_send(event, ACK, result={"message_id": 1}, reply_message=True)
    ctx.should_call_send(
        event,
        Message(MessageSegment.image(fake.image)),
        result={"message_id": message_id},
        reply_message=True,
        _timeout=image_send_timeout(len(fake.image)),
    )


async def draws(app: App, event, fake: FakeOpenAI, *, message_id: int = 2) -> None:
    """``event`` passes the natural rule and gets the ack, then the picture."""
    from nonebot_plugin_llm2pic.matchers.draw import natural

    async with app.test_matcher(natural) as ctx:
        ctx.receive_event(make_bot(ctx), event)
        ctx.should_pass_rule(natural)
        expect_picture(ctx, event, fake, message_id)


async def ignored(app: App, event) -> None:
    from nonebot_plugin_llm2pic.matchers.draw import natural

    async with app.test_matcher(natural) as ctx:
        ctx.receive_event(make_bot(ctx), event)
        ctx.should_not_pass_rule(natural)


def members_mode() -> None:
    from nonebot_plugin_llm2pic.state import store

    store.set("plugin.avatar_subjects", "members")


# --- the sender's own avatar --------------------------------------------------------------------


@pytest.mark.parametrize("text", ["把我画成猫娘", "我的动漫形象", "我的Q版头像来一个"])
async def test_own_avatar_requests(app: App, upstream: FakeOpenAI, text: str):
    """Requests about the sender's own looks draw from the sender's avatar, unaddressed too."""
    user = new_user()
    face = avatar(upstream, user)
    await draws(app, group_message(text, user_id=user), upstream)
    assert sent_images(upstream) == [face]


async def test_weak_own_avatar_needs_mention(app: App, upstream: FakeOpenAI):
    """「二次元的我」 alone is ignored; addressed to the bot it draws the sender's avatar."""
    user = new_user()
    face = avatar(upstream, user)
    await ignored(app, group_message("二次元的我", user_id=user))
    await draws(app, group_message("二次元的我", user_id=user, to_me=True), upstream)
    assert sent_images(upstream) == [face]


@pytest.mark.parametrize(
    "text", ["帮我画一只猫", "给我画个头像", "我想你帮我画一张二次元壁纸", "画一个我喜欢的动漫形象"]
)
async def test_asking_words_are_not_subjects(app: App, upstream: FakeOpenAI, text: str):
    """帮我/给我/我想/我喜欢 ask for a drawing; no avatar goes with it."""
    user = new_user()
    avatar(upstream, user)
    await draws(app, group_message(text, user_id=user), upstream)
    assert upstream.requests[-1].path == "/v1/images/generations"


@pytest.mark.parametrize("text", ["把123456画成动漫风", "把我家猫画成动漫风"])
async def test_numbers_and_my_cat_are_not_subjects(app: App, upstream: FakeOpenAI, text: str):
    """A QQ number typed as text, or 我家…, names nobody's avatar: nothing to draw from."""
    members_mode()
    await ignored(app, group_message(text, user_id=new_user()))
    assert upstream.requests == []


async def test_avatars_off(app: App, upstream: FakeOpenAI):
    """With avatar_subjects = "off", 「我的动漫形象」 is not a request."""
    from nonebot_plugin_llm2pic.state import store

    store.set("plugin.avatar_subjects", "off")
    await ignored(app, group_message("我的动漫形象", user_id=new_user()))


async def test_placeholder_avatar_answered(app: App, upstream: FakeOpenAI):
    """The default avatar (large and small) is answered 「TA 没有设置头像」, nothing drawn."""
    from nonebot_plugin_llm2pic.matchers.draw import natural

    user = new_user()
    upstream.files[f"avatar-{user}.png"] = (PLACEHOLDER, "image/png")
    event = group_message("把我画成猫娘", user_id=user)
    async with app.test_matcher(natural) as ctx:
        ctx.receive_event(make_bot(ctx), event)
        ctx.should_call_send(event, ACK, result={"message_id": 1}, reply_message=True)
        ctx.should_call_send(event, "TA 没有设置头像", result={"message_id": 2}, reply_message=True)
    assert [r.path for r in upstream.requests] == [f"/files/avatar-{user}.png"] * 2


async def test_avatar_download_failure_answered(app: App, upstream: FakeOpenAI):
    """An avatar that cannot be fetched gets a clear reply."""
    from nonebot_plugin_llm2pic.matchers.draw import natural

    event = group_message("把我画成猫娘", user_id=new_user())  # no avatar served: 404
    async with app.test_matcher(natural) as ctx:
        ctx.receive_event(make_bot(ctx), event)
        ctx.should_call_send(event, ACK, result={"message_id": 1}, reply_message=True)
        ctx.should_call_send(
            event, "头像下载失败，请稍后再试", result={"message_id": 2}, reply_message=True
        )


# --- members ------------------------------------------------------------------------------------


def at_request(*segments: MessageSegment | str) -> Message:
    message = Message()
    for segment in segments:
        message += segment
    return message


async def test_member_avatar_when_members_on(app: App, upstream: FakeOpenAI):
    """「把@某人画成动漫风」 draws from that member's avatar with avatar_subjects = "members"."""
    members_mode()
    face = avatar(upstream, MEMBER)
    message = at_request("把", MessageSegment.at(MEMBER), "画成动漫风")
    await draws(app, group_message(message, user_id=new_user()), upstream)
    assert sent_images(upstream) == [face]


async def test_member_not_a_subject_when_self(app: App, upstream: FakeOpenAI):
    """With the default "self", an @member is no subject and the message no request."""
    avatar(upstream, MEMBER)
    message = at_request("把", MessageSegment.at(MEMBER), "画成动漫风")
    await ignored(app, group_message(message, user_id=new_user()))
    assert upstream.requests == []


async def test_bot_and_everyone_are_not_subjects(app: App, upstream: FakeOpenAI):
    """@bot and @全体成员 never become avatars; the @member next to them does."""
    members_mode()
    face = avatar(upstream, MEMBER)
    message = at_request(
        MessageSegment.at(SELF_ID),
        MessageSegment.at("all"),
        "把",
        MessageSegment.at(MEMBER),
        "画成动漫风",
    )
    await draws(app, group_message(message, user_id=new_user(), to_me=True), upstream)
    assert sent_images(upstream) == [face]


async def test_reply_with_automatic_at_uses_the_photo(app: App, upstream: FakeOpenAI):
    """A reply to a member's photo carries QQ's automatic @: the photo is used, not the avatar."""
    members_mode()
    avatar(upstream, MEMBER)
    photo = MessageSegment.image(upstream.url("/files/photo.png"))
    photo.data["url"] = upstream.url("/files/photo.png")
    reply = Reply(
        time=0,
        message_type="group",
        message_id=71,
        real_id=71,
        sender=Sender(user_id=MEMBER),
        message=Message(photo),
    )
    original = at_request(MessageSegment.reply(71), MessageSegment.at(MEMBER), " 画成动漫风")
    event = group_message(original, user_id=new_user(), reply=reply)
    event.message = Message("画成动漫风")  # what the adapter leaves after taking the reply out
    await draws(app, event, upstream)
    assert sent_images(upstream) == [PHOTO]


# --- the bot's own pictures ---------------------------------------------------------------------


async def test_reply_to_bot_picture_edits_it_without_get_msg(app: App, upstream: FakeOpenAI):
    """A reply to the bot's picture is addressed to it and edits the kept bytes, get_msg failing."""
    from nonebot_plugin_llm2pic.matchers.draw import natural

    user = new_user()
    await draws(app, group_message("画一只橘猫", user_id=user), upstream, message_id=9001)
    first_prompt = upstream.requests[-1].json["prompt"]
    message = at_request(MessageSegment.reply(9001), "把背景换成海边")
    event = group_message(message, user_id=user)  # not to_me: the adapter's get_msg failed
    async with app.test_matcher(natural) as ctx:
        bot = make_bot(ctx)
        ctx.receive_event(bot, event)
        ctx.should_pass_rule(natural)
        expect_picture(ctx, event, upstream, 9002)
    assert sent_images(upstream) == [upstream.image]
    prompt = next(p.data for p in upstream.requests[-1].parts if p.name == "prompt").decode()
    assert prompt.startswith(first_prompt)  # no LLM: the old prompt plus the amendment


async def test_redraw_request_on_bot_picture(app: App, upstream: FakeOpenAI):
    """「这张再画一次」 replying to the bot's picture draws it again from its prompt."""
    user = new_user()
    await draws(app, group_message("画一只橘猫", user_id=user), upstream, message_id=9101)
    first = upstream.requests[-1].json["prompt"]
    message = at_request(MessageSegment.reply(9101), "这张再画一次")
    await draws(app, group_message(message, user_id=user), upstream, message_id=9102)
    again = upstream.requests[-1]
    assert (again.path, again.json["prompt"]) == ("/v1/images/generations", first)


async def test_reply_to_unknown_message_still_unreadable(app: App, upstream: FakeOpenAI):
    """A reply to a message that is neither kept nor fetchable is still answered as before."""
    from nonebot_plugin_llm2pic.matchers.draw import natural

    message = at_request(MessageSegment.reply(4444), "画成水彩风")
    event = group_message(message, user_id=new_user(), to_me=True)
    async with app.test_matcher(natural) as ctx:
        ctx.receive_event(make_bot(ctx), event)
        ctx.should_call_api(
            "get_msg", {"message_id": 4444}, exception=ActionFailed(retcode=-5503007)
        )
        ctx.should_call_send(
            event,
            "找不到你回复的那条消息（可能太久了），请重新发送图片",
            result={"message_id": 1},
            reply_message=True,
        )


async def test_reply_to_bot_picture_counts_as_mention(app: App, upstream: FakeOpenAI):
    """With require_mention on, a reply to the bot's kept picture is addressed to the bot."""
    from nonebot_plugin_llm2pic.state import store

    user = new_user()
    await draws(app, group_message("画一只橘猫", user_id=user), upstream, message_id=9201)
    store.set("plugin.require_mention", "true")
    message = at_request(MessageSegment.reply(9201), "把背景换成海边")
    await draws(app, group_message(message, user_id=user), upstream, message_id=9202)
    assert sent_images(upstream) == [upstream.image]


async def test_pic_command_with_own_avatar(app: App, upstream: FakeOpenAI):
    """`/pic 把我画成油画` sends the sender's avatar too."""
    from nonebot_plugin_llm2pic.matchers.draw import pic_cmd

    user = new_user()
    face = avatar(upstream, user)
    event = group_message("/pic 把我画成油画", user_id=user)
    async with app.test_matcher(pic_cmd) as ctx:
        ctx.receive_event(make_bot(ctx), event)
        expect_picture(ctx, event, upstream)
    assert sent_images(upstream) == [face]
