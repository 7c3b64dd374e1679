"""Recalls through nonebug's API mock: the 110 s window, the admin exception, failures logged."""

from __future__ import annotations

import time

from nonebot.adapters.onebot.v11 import ActionFailed
from nonebug import App

from .test_draw import make_bot

LATE = 200.0
"""Seconds since sending: past the window a member may recall in."""


async def test_recall_within_the_window_deletes_the_message(app: App):
    """A message sent moments ago is withdrawn without asking the bot's role."""
    from nonebot_plugin_llm2pic.matchers.recall import _recall

    async with app.test_api() as ctx:
        bot = make_bot(ctx)
        ctx.should_call_api("delete_msg", {"message_id": 5}, result=None)
        await _recall(bot, 5, group_id=777, sent_at=time.monotonic(), delay=0)


async def test_late_recall_skipped_for_a_member_bot(app: App):
    """Past 110 s a bot that is a plain member does not try (QQ would refuse)."""
    from nonebot_plugin_llm2pic.matchers.recall import _recall

    async with app.test_api() as ctx:
        bot = make_bot(ctx)
        ctx.should_call_api(
            "get_group_member_info",
            {"group_id": 777, "user_id": 2000, "no_cache": True},
            result={"role": "member"},
        )
        await _recall(bot, 5, group_id=777, sent_at=time.monotonic() - LATE, delay=0)


async def test_late_recall_done_by_an_admin_bot(app: App):
    """Past 110 s a bot that is the group's admin or owner still withdraws the message."""
    from nonebot_plugin_llm2pic.matchers.recall import _recall

    async with app.test_api() as ctx:
        bot = make_bot(ctx)
        ctx.should_call_api(
            "get_group_member_info",
            {"group_id": 777, "user_id": 2000, "no_cache": True},
            result={"role": "owner"},
        )
        ctx.should_call_api("delete_msg", {"message_id": 5}, result=None)
        await _recall(bot, 5, group_id=777, sent_at=time.monotonic() - LATE, delay=0)


async def test_failed_recall_is_only_logged(app: App):
    """A refused delete_msg raises nothing."""
    from nonebot_plugin_llm2pic.matchers.recall import _recall

    async with app.test_api() as ctx:
        bot = make_bot(ctx)
        ctx.should_call_api(
            "delete_msg", {"message_id": 5}, exception=ActionFailed(retcode=1200, msg="no")
        )
        await _recall(bot, 5, group_id=777, sent_at=time.monotonic(), delay=0)
