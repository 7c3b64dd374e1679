"""Withdrawing the bot's own messages: the ack once the outcome is out, pictures after a delay.

QQ refuses a member's recall of its own message after two minutes; an admin or owner may recall
any time. So past ``RECALL_WINDOW`` seconds a recall is tried only when the bot is the group's
admin or owner. Recalls run as tracked background tasks and never hold up a job; a failed recall
is only logged.
"""

from __future__ import annotations

import asyncio
import time

from nonebot import logger
from nonebot.adapters.onebot.v11 import ActionFailed, ApiNotAvailable, Bot, NetworkError

from .. import state

RECALL_WINDOW = 110.0
"""Seconds after sending within which any bot may recall its message (QQ allows 120)."""

_warned_delays: set[float] = set()


def recall_later(
    bot: Bot, message_id: int, *, group_id: int | None, sent_at: float, delay: float = 0.0
) -> None:
    """Withdraw ``message_id`` ``delay`` seconds from now, in the background.

    ``sent_at`` is the ``time.monotonic()`` of the send, for the recall window.
    """
    if delay > RECALL_WINDOW and delay not in _warned_delays:
        _warned_delays.add(delay)
        logger.warning(
            f"llm2pic: plugin.recall_after = {delay:g} s is past the {RECALL_WINDOW:g} s a member "
            "may recall in; pictures are withdrawn only where the bot is a group admin or owner"
        )
    state.background(_recall(bot, message_id, group_id=group_id, sent_at=sent_at, delay=delay))


async def _recall(
    bot: Bot, message_id: int, *, group_id: int | None, sent_at: float, delay: float
) -> None:
    if delay > 0:
        await asyncio.sleep(delay)
    try:
        late = time.monotonic() - sent_at > RECALL_WINDOW
        if late and not (group_id is not None and await _is_group_admin(bot, group_id)):
            logger.info(f"llm2pic: not recalling message {message_id}: too late for a member")
            return
        await bot.delete_msg(message_id=message_id)
    except (ActionFailed, NetworkError, ApiNotAvailable) as err:
        logger.warning(f"llm2pic: recall of message {message_id} failed: {err!r}")


async def _is_group_admin(bot: Bot, group_id: int) -> bool:
    """Whether the bot is the group's admin or owner (a failed lookup counts as no)."""
    try:
        info = await bot.get_group_member_info(
            group_id=group_id, user_id=int(bot.self_id), no_cache=True
        )
    except (ActionFailed, NetworkError, ApiNotAvailable) as err:
        logger.warning(f"llm2pic: cannot read the bot's role in group {group_id}: {err!r}")
        return False
    return isinstance(info, dict) and info.get("role") in ("admin", "owner")
