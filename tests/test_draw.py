"""Drawing requests through nonebug: every matcher path and refusal, against a local upstream.

The image backend is the `openai` backend talking to the aiohttp fake in `fakes/openai_server`
(real HTTP on loopback); jobs run inline (the `inline_jobs` fixture) so nonebug sees the
outcome before its `test_matcher` block ends.
"""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import pytest
from nonebot.adapters.onebot.v11 import (
    ActionFailed,
    Adapter,
    Bot,
    Message,
    MessageSegment,
    NetworkError,
)
from nonebot.adapters.onebot.v11.event import Reply, Sender
from nonebug import App
from PIL import Image

from .conftest import SUPERUSER_ID
from .fakes.harness import blank_png
from .fakes.openai_server import FakeOpenAI, make_png
from .fakes.openai_server import Reply as FakeReply
from .utils import SELF_ID, group_message, private_message

ACK = "收到，正在画…"
_users = itertools.count(30000)


@pytest.fixture
async def upstream(config_file: Path, inline_jobs: None):
    """A fake OpenAI Images upstream routed as the default backend; jobs run inline."""
    from nonebot_plugin_llm2pic import state

    async with FakeOpenAI() as fake:
        fake.image = make_png(64, 48, (10, 120, 200))
        state.store.set("backends.openai.base_url", f'"{fake.base_url}"')
        state.store.set("backends.openai.api_key", "sk-test")
        state.store.set("routing.default", "openai")
        state.store.set("limits.user_cooldown_seconds", "0")
        yield fake


def new_user() -> int:
    """A user id no other test used, so cooldown and quota state never leak between tests."""
    return next(_users)


def image_message(data: bytes) -> Message:
    return Message(MessageSegment.image(data))


def expect_ack_and_image(ctx, event, image: bytes) -> None:
    """The acknowledgement, then the picture, both quoting the request."""
    ctx.should_call_send(event, ACK, result={"message_id": 1}, reply_message=True)
    ctx.should_call_send(
        event,
        image_message(image),
        result={"message_id": 2},
        reply_message=True,
        _timeout=send_timeout(image),
    )


def send_timeout(image: bytes) -> float:
    """The send timeout the plugin uses for this image."""
    from nonebot_plugin_llm2pic.matchers.draw import image_send_timeout

    return image_send_timeout(len(image))


def make_bot(ctx) -> Bot:
    adapter = ctx.create_adapter(base=Adapter)
    return ctx.create_bot(base=Bot, adapter=adapter, self_id=SELF_ID)


async def test_natural_request_sends_image_quoting_request(app: App, upstream: FakeOpenAI):
    """ "画一张猫咪的图片" → one ack, then the picture quoting the request."""
    from nonebot_plugin_llm2pic.matchers.draw import natural

    event = group_message("画一张猫咪的图片", user_id=new_user())
    async with app.test_matcher(natural) as ctx:
        bot = make_bot(ctx)
        ctx.receive_event(bot, event)
        ctx.should_pass_rule(natural)
        expect_ack_and_image(ctx, event, upstream.image)
    assert upstream.requests[-1].json["prompt"] == "猫咪"  # no LLM: the request is the prompt


@pytest.mark.parametrize(
    "text",
    ["这张图真好看", "别画了", "我在画画呢", "图片加载不出来", "今天天气不错"],
)
async def test_chatter_and_negative_intent_ignored(app: App, upstream: FakeOpenAI, text: str):
    """Talk about pictures and refusals never trigger a job."""
    from nonebot_plugin_llm2pic.matchers.draw import natural

    async with app.test_matcher(natural) as ctx:
        bot = make_bot(ctx)
        ctx.receive_event(bot, group_message(text, user_id=new_user()))
        ctx.should_not_pass_rule(natural)
    assert upstream.requests == []


async def test_weak_request_needs_mention(app: App, upstream: FakeOpenAI):
    """ "想看看樱花" fires only when addressed to the bot."""
    from nonebot_plugin_llm2pic.matchers.draw import natural

    async with app.test_matcher(natural) as ctx:
        bot = make_bot(ctx)
        ctx.receive_event(bot, group_message("想看看樱花", user_id=new_user()))
        ctx.should_not_pass_rule(natural)
    event = group_message("想看看樱花", user_id=new_user(), to_me=True)
    async with app.test_matcher(natural) as ctx:
        bot = make_bot(ctx)
        ctx.receive_event(bot, event)
        ctx.should_pass_rule(natural)
        expect_ack_and_image(ctx, event, upstream.image)


async def test_require_mention_blocks_unaddressed(app: App, upstream: FakeOpenAI):
    """With `plugin.require_mention`, even explicit requests need @bot."""
    from nonebot_plugin_llm2pic import state
    from nonebot_plugin_llm2pic.matchers.draw import natural

    state.store.set("plugin.require_mention", "true")
    async with app.test_matcher(natural) as ctx:
        bot = make_bot(ctx)
        ctx.receive_event(bot, group_message("画一只猫", user_id=new_user()))
        ctx.should_not_pass_rule(natural)


@pytest.mark.parametrize(
    ("key", "value", "text"),
    [
        ("plugin.enabled", "false", "画一只猫"),
        ("plugin.natural_language", "false", "画一只猫"),
        ("plugin.selfie", "false", "来张自拍"),
    ],
)
async def test_switches_silence_natural_triggers(app: App, upstream: FakeOpenAI, key, value, text):
    """The master switch, natural_language and selfie switches are honoured."""
    from nonebot_plugin_llm2pic import state
    from nonebot_plugin_llm2pic.matchers.draw import natural

    state.store.set(key, value)
    async with app.test_matcher(natural) as ctx:
        bot = make_bot(ctx)
        ctx.receive_event(bot, group_message(text, user_id=new_user()))
        ctx.should_not_pass_rule(natural)


async def test_group_off_and_blocked_user(app: App, upstream: FakeOpenAI):
    """A group switched off and a blocked user are ignored, `/pic` included."""
    from nonebot_plugin_llm2pic import state
    from nonebot_plugin_llm2pic.matchers.draw import pic_cmd

    state.groups.set_enabled("777", False)
    async with app.test_matcher(pic_cmd) as ctx:
        bot = make_bot(ctx)
        ctx.receive_event(bot, group_message("/pic 一只猫", user_id=new_user()))
        ctx.should_not_pass_rule(pic_cmd)
    state.groups.set_enabled("777", True)
    blocked = new_user()
    state.store.set("plugin.blocked_users", f'["{blocked}"]')
    async with app.test_matcher(pic_cmd) as ctx:
        bot = make_bot(ctx)
        ctx.receive_event(bot, group_message("/pic 一只猫", user_id=blocked))
        ctx.should_not_pass_rule(pic_cmd)


async def test_pic_command_in_private(app: App, upstream: FakeOpenAI):
    """`/pic` works in a private chat."""
    from nonebot_plugin_llm2pic.matchers.draw import pic_cmd

    event = private_message("/pic 一只戴帽子的狗", user_id=new_user())
    async with app.test_matcher(pic_cmd) as ctx:
        bot = make_bot(ctx)
        ctx.receive_event(bot, event)
        expect_ack_and_image(ctx, event, upstream.image)
    assert upstream.requests[-1].json["prompt"] == "一只戴帽子的狗"


FLAGS_USAGE = "用法：/pic <描述>（-r 直接用描述当提示词，-b <后端> 指定后端）"


@pytest.mark.parametrize(
    ("text", "user", "reply"),
    [
        ("/pic", None, "用法：/pic <描述>"),
        ("/pic -x 猫", None, "用法：/pic <描述>"),
        ("/pic", int(SUPERUSER_ID), FLAGS_USAGE),
        ("/pic -x 猫", int(SUPERUSER_ID), FLAGS_USAGE),
        ("/pic -r 猫", None, "只有超级用户可以使用 -r / -b 参数"),
        ("/pic -b openai 猫", None, "只有超级用户可以使用 -r / -b 参数"),
    ],
)
async def test_pic_usage_and_flag_permission(app: App, upstream: FakeOpenAI, text, user, reply):
    """No text → usage, showing the flags only to superusers; flags are superuser-only."""
    from nonebot_plugin_llm2pic.matchers.draw import pic_cmd

    event = group_message(text, user_id=user or new_user())
    async with app.test_matcher(pic_cmd) as ctx:
        bot = make_bot(ctx)
        ctx.receive_event(bot, event)
        ctx.should_call_send(event, reply, result={"message_id": 1})
    assert upstream.requests == []


async def test_pic_unknown_backend(app: App, upstream: FakeOpenAI):
    """`-b` with a name that is not a backend lists the ones there are."""
    from nonebot_plugin_llm2pic.matchers.draw import pic_cmd

    event = group_message("/pic -b nope 猫", user_id=int(SUPERUSER_ID))
    async with app.test_matcher(pic_cmd) as ctx:
        bot = make_bot(ctx)
        ctx.receive_event(bot, event)
        ctx.should_call_send(
            event, "没有名为 nope 的后端，可用：openai、zimage", result={"message_id": 1}
        )


async def test_raw_flag_skips_writer_but_adds_custom(app: App, upstream: FakeOpenAI):
    """`/pic -r` sends the text as the prompt, with custom_prompt_add appended."""
    from nonebot_plugin_llm2pic import state
    from nonebot_plugin_llm2pic.matchers.draw import pic_cmd

    state.store.set("generation.custom_prompt_add", '"masterpiece, best quality"')
    event = group_message("/pic -r a red fox, snow", user_id=int(SUPERUSER_ID))
    async with app.test_matcher(pic_cmd) as ctx:
        bot = make_bot(ctx)
        ctx.receive_event(bot, event)
        expect_ack_and_image(ctx, event, upstream.image)
    assert upstream.requests[-1].json["prompt"] == "a red fox, snow, masterpiece, best quality"


async def test_banned_word_refused(app: App, upstream: FakeOpenAI):
    """A request with a banned word is refused and nothing is drawn."""
    from nonebot_plugin_llm2pic import state
    from nonebot_plugin_llm2pic.matchers.draw import natural

    state.store.set("generation.banned_words", '["血腥"]')
    event = group_message("画一张血腥的图", user_id=new_user())
    async with app.test_matcher(natural) as ctx:
        bot = make_bot(ctx)
        ctx.receive_event(bot, event)
        ctx.should_call_send(
            event,
            "这个描述包含不允许的内容，换一个吧",
            result={"message_id": 1},
            reply_message=True,
        )
    assert upstream.requests == []


async def test_cooldown_refusal_once_per_window(app: App, upstream: FakeOpenAI):
    """Within the cooldown the next trigger gets one refusal, the one after that silence."""
    from nonebot_plugin_llm2pic import state
    from nonebot_plugin_llm2pic.matchers.draw import natural

    state.store.set("limits.user_cooldown_seconds", "60")
    user = new_user()
    first = group_message("画一只猫", user_id=user)
    second = group_message("画一只狗", user_id=user)
    third = group_message("画一只鸟", user_id=user)
    async with app.test_matcher(natural) as ctx:
        bot = make_bot(ctx)
        ctx.receive_event(bot, first)
        expect_ack_and_image(ctx, first, upstream.image)
        ctx.receive_event(bot, second)
        ctx.should_call_send(
            second, "画得太快啦，请 60 秒后再试", result={"message_id": 3}, reply_message=True
        )
        ctx.receive_event(bot, third)
    assert len(upstream.requests) == 1


async def test_daily_quota_persisted_and_released_on_failure(app: App, upstream: FakeOpenAI):
    """A failed job gives its quota unit back; a used-up quota is refused."""
    from nonebot_plugin_llm2pic import state
    from nonebot_plugin_llm2pic.matchers.draw import pic_cmd

    state.store.set("limits.user_daily_quota", "1")
    user = new_user()
    upstream.replies.append(FakeReply(status=400, body={"error": {"message": "bad size"}}))
    failing = group_message("/pic 猫", user_id=user)
    ok = group_message("/pic 狗", user_id=user)
    refused = group_message("/pic 鸟", user_id=user)
    async with app.test_matcher(pic_cmd) as ctx:
        bot = make_bot(ctx)
        ctx.receive_event(bot, failing)
        ctx.should_call_send(failing, ACK, result={"message_id": 1}, reply_message=True)
        ctx.should_call_send(
            failing,
            "绘图服务 openai 出错（HTTP 400）",
            result={"message_id": 2},
            reply_message=True,
        )
        ctx.receive_event(bot, ok)
        ctx.should_call_send(ok, ACK, result={"message_id": 3}, reply_message=True)
        ctx.should_call_send(
            ok,
            image_message(upstream.image),
            result={"message_id": 4},
            reply_message=True,
            _timeout=send_timeout(upstream.image),
        )
        ctx.receive_event(bot, refused)
        ctx.should_call_send(
            refused,
            "你今天的画图次数用完了（1/1），明天再来吧",
            result={"message_id": 5},
            reply_message=True,
        )
    assert await state.quota.usage(user_id=str(user), group_id=None) == (1, 0)


async def test_blank_result_is_withheld_and_quota_released(app: App, upstream: FakeOpenAI):
    """A blank picture is not sent: the user is told it was filtered and keeps the quota unit."""
    from nonebot_plugin_llm2pic import state
    from nonebot_plugin_llm2pic.matchers.draw import pic_cmd

    state.store.set("limits.user_daily_quota", "1")
    user = new_user()
    upstream.image = blank_png()
    event = group_message("/pic 猫", user_id=user)
    async with app.test_matcher(pic_cmd) as ctx:
        bot = make_bot(ctx)
        ctx.receive_event(bot, event)
        ctx.should_call_send(event, ACK, result={"message_id": 1}, reply_message=True)
        ctx.should_call_send(
            event,
            "图片被过滤了（可能触发了安全审核），换个说法再试试",
            result={"message_id": 2},
            reply_message=True,
        )
    assert await state.quota.usage(user_id=str(user), group_id=None) == (0, 0)


async def test_queue_full_is_busy(app: App, upstream: FakeOpenAI):
    """With the queue full the request is refused with a busy reply."""
    from nonebot_plugin_llm2pic import state
    from nonebot_plugin_llm2pic.matchers.draw import pic_cmd

    state.store.set("limits.max_queue", "1")
    waiting = state.queue.accept(max_queue=1)  # another job waiting for its slot
    event = group_message("/pic 猫", user_id=new_user())
    try:
        async with app.test_matcher(pic_cmd) as ctx:
            bot = make_bot(ctx)
            ctx.receive_event(bot, event)
            ctx.should_call_send(
                event, "排队的人太多了，请稍后再试", result={"message_id": 1}, reply_message=True
            )
    finally:
        waiting.close()
    assert upstream.requests == []


async def test_auth_failure_names_backend(app: App, upstream: FakeOpenAI):
    """A 401 upstream is not retried and the reply names the backend."""
    from nonebot_plugin_llm2pic import state
    from nonebot_plugin_llm2pic.matchers.draw import pic_cmd

    state.store.set("backends.openai.api_key", "sk-wrong")
    event = group_message("/pic 猫", user_id=new_user())
    async with app.test_matcher(pic_cmd) as ctx:
        bot = make_bot(ctx)
        ctx.receive_event(bot, event)
        ctx.should_call_send(event, ACK, result={"message_id": 1}, reply_message=True)
        ctx.should_call_send(
            event, "绘图服务 openai 认证失败", result={"message_id": 2}, reply_message=True
        )
    assert len(upstream.requests) == 1


async def test_crop_show_prompt_and_silent_ack(app: App, upstream: FakeOpenAI):
    """Crop on: the sent image is 40 px shorter; the prompt is shown; no ack when ""."""
    from nonebot_plugin_llm2pic import state
    from nonebot_plugin_llm2pic.matchers.draw import pic_cmd

    upstream.image = make_png(128, 128, (90, 200, 40))
    for key, value in [
        ("generation.crop_enabled", "true"),
        ("plugin.show_prompt", "true"),
        ("plugin.ack_message", '""'),
        ("plugin.reply_to_request", "false"),
    ]:
        state.store.set(key, value)
    event = group_message("/pic 草地", user_id=new_user())
    sent: list[Message] = []
    async with app.test_matcher(pic_cmd) as ctx:
        bot = make_bot(ctx)
        ctx.receive_event(bot, event)
        expected = _cropped_message(upstream.image, 40) + MessageSegment.text("\n提示词：草地")
        ctx.should_call_send(
            event,
            expected,
            result={"message_id": 1},
            reply_message=False,
            _timeout=send_timeout(_image_bytes(expected)),
        )
        sent.append(expected)
    image = Image.open(io.BytesIO(_image_bytes(sent[0])))
    assert image.size == (128, 88)


async def test_send_failure_becomes_text_notice(app: App, upstream: FakeOpenAI):
    """A refused image send is reported as text once and never resent."""
    from nonebot_plugin_llm2pic.matchers.draw import pic_cmd

    event = group_message("/pic 猫", user_id=new_user())
    async with app.test_matcher(pic_cmd) as ctx:
        bot = make_bot(ctx)
        ctx.receive_event(bot, event)
        ctx.should_call_send(event, ACK, result={"message_id": 1}, reply_message=True)
        ctx.should_call_send(
            event,
            image_message(upstream.image),
            reply_message=True,
            _timeout=send_timeout(upstream.image),
            exception=ActionFailed(retcode=1200),
        )
        ctx.should_call_send(
            event,
            "图片发送失败（可能被风控或图片过大），请稍后再试",
            result={"message_id": 2},
            reply_message=True,
        )


async def test_send_timeout_becomes_text_notice(app: App, upstream: FakeOpenAI):
    """A timed-out image send says it may have arrived; it is not resent."""
    from nonebot_plugin_llm2pic.matchers.draw import pic_cmd

    event = group_message("/pic 猫", user_id=new_user())
    async with app.test_matcher(pic_cmd) as ctx:
        bot = make_bot(ctx)
        ctx.receive_event(bot, event)
        ctx.should_call_send(event, ACK, result={"message_id": 1}, reply_message=True)
        ctx.should_call_send(
            event,
            image_message(upstream.image),
            reply_message=True,
            _timeout=send_timeout(upstream.image),
            exception=NetworkError("timeout"),
        )
        ctx.should_call_send(
            event,
            "图片发送超时，可能已经发出；如果没看到，请稍后再试",
            result={"message_id": 2},
            reply_message=True,
        )


@pytest.mark.parametrize(
    ("size", "seconds"), [(0, 60.0), (1_000_000, 100.0), (2_100_000, 144.0), (50_000_000, 300.0)]
)
def test_send_timeout_grows_with_image_size(app: App, size: int, seconds: float):
    """The image send waits 60 s plus 40 s per MB, at most 300 s."""
    from nonebot_plugin_llm2pic.matchers.draw import image_send_timeout

    assert image_send_timeout(size) == pytest.approx(seconds)


async def test_reply_to_image_reaches_backend(app: App, upstream: FakeOpenAI):
    """An image in the replied message is downloaded and sent to images/edits."""
    from nonebot_plugin_llm2pic.matchers.draw import natural

    reference = make_png(16, 16, (1, 2, 3))
    upstream.files["ref.png"] = (reference, "image/png")
    quoted = Message(MessageSegment.image(upstream.url("/files/ref.png")))
    quoted[0].data["url"] = upstream.url("/files/ref.png")
    reply = Reply(
        time=0,
        message_type="group",
        message_id=1,
        real_id=1,
        sender=Sender(user_id=1),
        message=quoted,
    )
    event = group_message("画成动漫风格", user_id=new_user(), to_me=True, reply=reply)
    async with app.test_matcher(natural) as ctx:
        bot = make_bot(ctx)
        ctx.receive_event(bot, event)
        expect_ack_and_image(ctx, event, upstream.image)
    edit = upstream.requests[-1]
    assert edit.path == "/v1/images/edits"
    assert [p.data for p in edit.parts if p.name == "image[]"] == [reference]


async def test_reference_that_is_not_an_image(app: App, upstream: FakeOpenAI):
    """A reference URL serving HTML is refused clearly; nothing is drawn."""
    from nonebot_plugin_llm2pic.matchers.draw import pic_cmd

    upstream.files["page.html"] = (b"<html>expired</html>", "text/html")
    url = upstream.url("/files/page.html")
    message = Message("/pic 画成油画") + MessageSegment.image(url)
    message[-1].data["url"] = url
    event = group_message(message, user_id=new_user())
    async with app.test_matcher(pic_cmd) as ctx:
        bot = make_bot(ctx)
        ctx.receive_event(bot, event)
        ctx.should_call_send(event, ACK, result={"message_id": 1}, reply_message=True)
        ctx.should_call_send(
            event, "参考图不是有效的图片，请换一张", result={"message_id": 2}, reply_message=True
        )
    assert all(r.path.startswith("/files") for r in upstream.requests)


async def test_unreadable_reply_is_answered(app: App, upstream: FakeOpenAI):
    """A reply whose original cannot be fetched (get_msg fails) is answered, not ignored."""
    from nonebot_plugin_llm2pic.matchers.draw import natural

    message = MessageSegment.reply(99) + MessageSegment.text("画成水彩风")
    event = group_message(message, user_id=new_user(), to_me=True)
    async with app.test_matcher(natural) as ctx:
        bot = make_bot(ctx)
        ctx.receive_event(bot, event)
        ctx.should_call_api("get_msg", {"message_id": 99}, exception=ActionFailed(retcode=-5503007))
        ctx.should_call_send(
            event,
            "找不到你回复的那条消息（可能太久了），请重新发送图片",
            result={"message_id": 1},
            reply_message=True,
        )


async def test_save_images_writes_sidecar(app: App, upstream: FakeOpenAI):
    """`save_images` keeps the image and a JSON sidecar under the data dir."""
    import json

    from nonebot_plugin_llm2pic import state
    from nonebot_plugin_llm2pic.config import data_dir
    from nonebot_plugin_llm2pic.matchers.draw import pic_cmd

    state.store.set("plugin.save_images", "true")
    before = (
        set((data_dir() / "images").glob("*.json")) if (data_dir() / "images").exists() else set()
    )
    event = group_message("/pic ../../etc/passwd 一只猫", user_id=new_user())
    async with app.test_matcher(pic_cmd) as ctx:
        bot = make_bot(ctx)
        ctx.receive_event(bot, event)
        expect_ack_and_image(ctx, event, upstream.image)
    new = set((data_dir() / "images").glob("*.json")) - before
    assert len(new) == 1
    sidecar = json.loads(new.pop().read_text("utf-8"))
    assert sidecar["backend"] == "openai"
    assert sidecar["request"] == "../../etc/passwd 一只猫"
    assert "sk-test" not in json.dumps(sidecar)


def _cropped_message(png: bytes, pixels: int) -> Message:
    from nonebot_plugin_llm2pic.imaging import CropSpec, process_image

    processed = process_image(png, crop=CropSpec("bottom", pixels), max_bytes=4_000_000)
    return image_message(processed.data)


def _image_bytes(message: Message) -> bytes:
    import base64

    file = message[0].data["file"]
    return base64.b64decode(file.removeprefix("base64://"))


async def test_file_send_mode_sends_a_local_path(app: App, upstream: FakeOpenAI, monkeypatch):
    """`send_mode = "file"` sends a file:// URI of the image under the data dir."""
    import time

    from nonebot_plugin_llm2pic import state
    from nonebot_plugin_llm2pic.config import data_dir
    from nonebot_plugin_llm2pic.matchers.draw import pic_cmd

    state.store.set("plugin.send_mode", "file")
    state.store.set("plugin.ack_message", '""')
    monkeypatch.setattr(time, "time_ns", lambda: 1234567890)  # the outbox file name
    path = data_dir() / "outbox" / "1234567890.png"
    event = group_message("/pic 猫", user_id=new_user())
    async with app.test_matcher(pic_cmd) as ctx:
        bot = make_bot(ctx)
        ctx.receive_event(bot, event)
        ctx.should_call_send(
            event,
            Message(MessageSegment.image(path)),
            result={"message_id": 1},
            reply_message=True,
            _timeout=send_timeout(upstream.image),
        )
    assert path.read_bytes() == upstream.image
