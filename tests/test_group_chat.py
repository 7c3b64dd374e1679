"""Per-group settings from chat through nonebug: who may edit what, whitelist mode, and drawing
with each group's own limits."""

from __future__ import annotations

from pathlib import Path

import pytest
from nonebug import App

from .conftest import SUPERUSER_ID
from .fakes.openai_server import FakeOpenAI
from .test_admin import read_config, run_admin
from .test_draw import expect_ack_and_image, image_message, make_bot, new_user, send_timeout
from .test_draw import upstream as draw_upstream  # noqa: F401 - a fixture
from .utils import group_message, private_message

ADMIN = int(SUPERUSER_ID)
ADMIN_ONLY = "群主和管理员只能修改：" + "、".join(
    [
        "persona.name",
        "persona.description",
        "persona.appearance",
        "plugin.natural_language",
        "plugin.selfie",
        "plugin.require_mention",
        "plugin.ack_message",
        "plugin.show_prompt",
        "plugin.reply_to_request",
    ]
)


@pytest.fixture
def upstream(draw_upstream: FakeOpenAI) -> FakeOpenAI:  # noqa: F811 - the fixture above
    """test_draw's fake OpenAI upstream, routed as the default backend; jobs run inline."""
    return draw_upstream


def group_table(config_file: Path, group_id: str = "777") -> dict:
    return read_config(config_file).get("groups", {}).get(group_id, {})


# --- editing a group's table -------------------------------------------------------------------


async def test_superuser_sets_any_group_from_private(app: App, config_file: Path):
    """A superuser edits another group's quota from a private chat."""
    await run_admin(
        app,
        private_message("/llm2pic group 123456 set limits.user_daily_quota 5", user_id=ADMIN),
        "已设置群 123456 的 limits.user_daily_quota = 5，已生效",
    )
    assert group_table(config_file, "123456") == {"limits": {"user_daily_quota": 5}}


async def test_superuser_in_group_edits_that_group(app: App, config_file: Path):
    """Without a group id, `/llm2pic group set` in a group edits that group's table."""
    await run_admin(
        app,
        group_message("/llm2pic group set routing.default openai", user_id=ADMIN),
        '已设置群 777 的 routing.default = "openai"，已生效',
    )
    assert group_table(config_file) == {"routing": {"default": "openai"}}


@pytest.mark.parametrize("role", ["owner", "admin"])
async def test_owner_and_admin_set_persona(app: App, config_file: Path, role: str):
    """A group's owner or admin may set its persona texts."""
    await run_admin(
        app,
        group_message("/llm2pic group set persona.name 小红", user_id=321, role=role),
        '已设置群 777 的 persona.name = "小红"，已生效',
    )
    assert group_table(config_file) == {"persona": {"name": "小红"}}


@pytest.mark.parametrize(
    "command",
    [
        "/llm2pic group set limits.user_daily_quota 50",
        "/llm2pic group set routing.default openai",
        "/llm2pic group set plugin.enabled true",
        "/llm2pic group unset limits.user_daily_quota",
    ],
)
async def test_admin_cannot_touch_quota_or_routing(app: App, config_file: Path, command: str):
    """A group admin's edit of anything but persona and the trigger switches is refused."""
    before = config_file.read_bytes()
    await run_admin(app, group_message(command, user_id=321, role="admin"), ADMIN_ONLY)
    assert config_file.read_bytes() == before


async def test_admin_persona_text_capped(app: App, config_file: Path):
    """A group admin's persona text over 500 characters is refused; a superuser's is not."""
    before = config_file.read_bytes()
    long_text = "长" * 501
    await run_admin(
        app,
        group_message(f"/llm2pic group set persona.description {long_text}", role="admin"),
        "未修改：persona.description 最多 500 个字",
    )
    assert config_file.read_bytes() == before
    await run_admin(
        app,
        group_message(f"/llm2pic group set persona.description {long_text}", user_id=ADMIN),
        f'已设置群 777 的 persona.description = "{long_text}"，已生效',
    )


async def test_admin_cannot_edit_another_group(app: App, config_file: Path):
    """A group admin naming another group's id is refused."""
    before = config_file.read_bytes()
    await run_admin(
        app,
        group_message("/llm2pic group 888 set persona.name 小红", user_id=321, role="admin"),
        "只有超级用户可以设置其他群",
    )
    assert config_file.read_bytes() == before


async def test_member_gets_nothing(app: App, config_file: Path):
    """A plain member's `/llm2pic group set` does not pass the permission check."""
    from nonebot.adapters.onebot.v11 import Bot

    from nonebot_plugin_llm2pic.matchers.admin import admin_cmd

    before = config_file.read_bytes()
    async with app.test_matcher(admin_cmd) as ctx:
        bot = ctx.create_bot(base=Bot)
        ctx.receive_event(bot, group_message("/llm2pic group set persona.name x", user_id=555))
        ctx.should_not_pass_permission(admin_cmd)
    assert config_file.read_bytes() == before


async def test_admin_get_show_unset(app: App, config_file: Path):
    """get says whose value it is, show marks the group's own, unset brings the global back."""
    from nonebot_plugin_llm2pic.state import store

    store.set_group("777", "persona.name", "小红")
    await run_admin(
        app,
        group_message("/llm2pic group get persona.name", role="admin"),
        'persona.name = "小红"（本群设置）',
    )
    await run_admin(
        app,
        group_message("/llm2pic group get persona.appearance", role="admin"),
        'persona.appearance = ""（全局设置）',
    )
    shown = store.show_group("777")
    assert 'name = "小红" # 本群' in shown
    await run_admin(app, group_message("/llm2pic group show", role="admin"), shown)
    await run_admin(
        app,
        group_message("/llm2pic group unset persona.name", role="owner"),
        '已删除群 777 的 persona.name，恢复全局值 "小画"',
    )
    assert group_table(config_file) == {}


async def test_group_in_private_needs_an_id(app: App, config_file: Path):
    """`/llm2pic group show` in a private chat asks for the group id."""
    from nonebot_plugin_llm2pic.matchers.admin import GROUP_USAGE

    await run_admin(
        app,
        private_message("/llm2pic group show", user_id=ADMIN),
        "私聊时请写群号：" + GROUP_USAGE.removeprefix("用法："),
    )


async def test_superuser_show_in_group_marks_overrides(app: App, config_file: Path):
    """A superuser's `show limits` in a group shows the effective values, the group's marked."""
    from nonebot_plugin_llm2pic.state import store

    store.set_group("777", "limits.user_daily_quota", "5")
    shown = store.show_group("777", "limits", everything=True)
    assert "user_daily_quota = 5 # 本群" in shown
    assert "max_queue = 20\n" in shown
    await run_admin(app, group_message("/llm2pic show limits", user_id=ADMIN), shown)


async def test_status_in_group_counts_against_group_limit(app: App, config_file: Path):
    """`status` in a group shows its switch, its own keys and today's count against its limit.

    A group no other test draws in, so the count is this test's alone."""
    from nonebot_plugin_llm2pic.matchers.admin import _status
    from nonebot_plugin_llm2pic.state import quota, store

    store.set_group("4242", "limits.group_daily_quota", "7")
    reservation = await quota.reserve(user_id="1", group_id="4242", user_limit=0, group_limit=0)
    try:
        text = await _status("4242")
        assert "本群：开启画图" in text
        assert "本群设置：limits.group_daily_quota" in text
        assert "本群今日已画：1/7" in text
        await run_admin(app, group_message("/llm2pic status", user_id=ADMIN, group_id=4242), text)
    finally:
        await quota.release(reservation)


# --- on/off and whitelist mode -----------------------------------------------------------------


async def test_whitelist_owner_on_refused_superuser_on_works(app: App, config_file: Path):
    """In whitelist mode an owner's `on` is refused and changes nothing; a superuser's works."""
    from nonebot_plugin_llm2pic.settings import effective
    from nonebot_plugin_llm2pic.state import store

    store.set("plugin.groups_default", "off")
    before = config_file.read_bytes()
    await run_admin(
        app,
        group_message("/llm2pic on", user_id=321, role="owner"),
        "白名单模式下只有超级用户可以开启本群",
    )
    assert config_file.read_bytes() == before
    assert not effective(store.settings, "777").plugin.enabled
    await run_admin(app, group_message("/llm2pic on", user_id=ADMIN), "本群已开启画图")
    assert effective(store.settings, "777").plugin.enabled


async def test_whitelist_owner_may_switch_off(app: App, config_file: Path):
    """In whitelist mode an owner may still switch an enabled group off."""
    from nonebot_plugin_llm2pic.state import store

    store.set("plugin.groups_default", "off")
    store.set_group("777", "plugin.enabled", "true")
    await run_admin(app, group_message("/llm2pic off", role="owner"), "本群已关闭画图")
    assert group_table(config_file) == {"plugin": {"enabled": False}}


async def test_whitelist_group_never_enabled_is_silent(app: App, upstream: FakeOpenAI):
    """In whitelist mode a group never switched on ignores `/pic` and natural requests."""
    from nonebot_plugin_llm2pic import state
    from nonebot_plugin_llm2pic.matchers.draw import natural, pic_cmd

    state.store.set("plugin.groups_default", "off")
    for matcher, text in ((pic_cmd, "/pic 一只猫"), (natural, "画一张猫咪的图片")):
        async with app.test_matcher(matcher) as ctx:
            bot = make_bot(ctx)
            ctx.receive_event(bot, group_message(text, user_id=new_user()))
            ctx.should_not_pass_rule(matcher)
    assert upstream.requests == []


async def test_whitelist_private_answers_superusers_only(app: App, upstream: FakeOpenAI):
    """In whitelist mode a private `/pic` from a member is ignored; a superuser's draws."""
    from nonebot_plugin_llm2pic import state
    from nonebot_plugin_llm2pic.matchers.draw import pic_cmd

    state.store.set("plugin.groups_default", "off")
    async with app.test_matcher(pic_cmd) as ctx:
        bot = make_bot(ctx)
        ctx.receive_event(bot, private_message("/pic 一只猫", user_id=new_user()))
        ctx.should_not_pass_rule(pic_cmd)
    event = private_message("/pic 一只猫", user_id=ADMIN)
    async with app.test_matcher(pic_cmd) as ctx:
        bot = make_bot(ctx)
        ctx.receive_event(bot, event)
        ctx.should_pass_rule(pic_cmd)
        expect_ack_and_image(ctx, event, upstream.image)


# --- drawing with a group's own settings -------------------------------------------------------


async def test_user_quota_counts_across_groups_with_group_ceiling(app: App, upstream: FakeOpenAI):
    """Two pictures in one group use up a group whose own user quota is 2."""
    from nonebot_plugin_llm2pic import state
    from nonebot_plugin_llm2pic.matchers.draw import pic_cmd

    state.store.set_group("777", "limits.user_daily_quota", "2")
    user = new_user()
    async with app.test_matcher(pic_cmd) as ctx:
        bot = make_bot(ctx)
        for text in ("/pic 猫", "/pic 狗"):
            event = group_message(text, user_id=user, group_id=778)
            ctx.receive_event(bot, event)
            expect_ack_and_image(ctx, event, upstream.image)
        refused = group_message("/pic 鸟", user_id=user, group_id=777)
        ctx.receive_event(bot, refused)
        ctx.should_call_send(
            refused,
            "你今天的画图次数用完了（2/2），明天再来吧",
            result={"message_id": 5},
            reply_message=True,
        )
    assert len(upstream.requests) == 2


async def test_group_cooldown_and_ack_apply_in_that_group(app: App, upstream: FakeOpenAI):
    """A group's own cooldown and ack text apply there; another group keeps the global ones."""
    from nonebot_plugin_llm2pic import state
    from nonebot_plugin_llm2pic.matchers.draw import pic_cmd

    state.store.set_group("777", "limits.user_cooldown_seconds", "60")
    state.store.set_group("777", "plugin.ack_message", "好的")
    user = new_user()
    first = group_message("/pic 猫", user_id=user)
    second = group_message("/pic 狗", user_id=user)
    elsewhere = group_message("/pic 鸟", user_id=new_user(), group_id=778)
    async with app.test_matcher(pic_cmd) as ctx:
        bot = make_bot(ctx)
        ctx.receive_event(bot, first)
        ctx.should_call_send(first, "好的", result={"message_id": 1}, reply_message=True)
        ctx.should_call_send(
            first,
            image_message(upstream.image),
            result={"message_id": 2},
            reply_message=True,
            _timeout=send_timeout(upstream.image),
        )
        ctx.receive_event(bot, second)
        ctx.should_call_send(
            second, "画得太快啦，请 60 秒后再试", result={"message_id": 3}, reply_message=True
        )
        ctx.receive_event(bot, elsewhere)
        expect_ack_and_image(ctx, elsewhere, upstream.image)
    assert len(upstream.requests) == 2


async def test_group_banned_words_add_to_global(app: App, upstream: FakeOpenAI):
    """A word banned only in one group is refused there and drawn elsewhere."""
    from nonebot_plugin_llm2pic import state
    from nonebot_plugin_llm2pic.matchers.draw import pic_cmd

    state.store.set_group("777", "generation.banned_words", '["狗"]')
    refused = group_message("/pic 狗", user_id=new_user())
    elsewhere = group_message("/pic 狗", user_id=new_user(), group_id=778)
    async with app.test_matcher(pic_cmd) as ctx:
        bot = make_bot(ctx)
        ctx.receive_event(bot, refused)
        ctx.should_call_send(
            refused,
            "这个描述包含不允许的内容，换一个吧",
            result={"message_id": 1},
            reply_message=True,
        )
        ctx.receive_event(bot, elsewhere)
        expect_ack_and_image(ctx, elsewhere, upstream.image)
    assert len(upstream.requests) == 1
