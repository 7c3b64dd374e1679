"""Admin commands: `/llm2pic show|get|set|unset|reload|status|on|off|group`.

Superusers may do everything, and edit any group's table from anywhere with
`/llm2pic group <群号> …`. In a group its owner/admins may switch it off (and on, unless
whitelist mode is on) and edit its persona texts and trigger/reply switches with
`/llm2pic group set …`; anyone else gets no effect and no reply. ``plugin.enabled = false``
never disables these commands.
"""

from __future__ import annotations

import asyncio

from nonebot import get_bots, get_driver, logger, on_command
from nonebot.adapters import Bot, Event, Message
from nonebot.adapters.onebot.v11 import GROUP_ADMIN, GROUP_OWNER, GroupMessageEvent
from nonebot.matcher import Matcher
from nonebot.params import CommandArg
from nonebot.permission import SUPERUSER

from .. import state
from ..exceptions import SettingsError
from ..limits import quota_day
from ..settings import effective, switched_off
from ..settings_store import RUNNING_CHAT, is_secret_key, toml_value
from ..state import store
from .persona_admin import persona_command
from .usage import ADMIN_HELP

USAGE = (
    "用法：/llm2pic show [节] | get <键> | set <键> <值> | unset <键> | reload | status"
    " | on | off | group [群号] show|get|set|unset …\n"
    "键用点号路径，如 limits.user_cooldown_seconds、backends.openai.model"
)
GROUP_USAGE = "用法：/llm2pic group [群号] show [节] | get <键> | set <键> <值> | unset <键>"
GROUP_ADMIN_KEYS = (
    "persona.name",
    "persona.description",
    "persona.appearance",
    "plugin.natural_language",
    "plugin.selfie",
    "plugin.require_mention",
    "plugin.ack_message",
    "plugin.show_prompt",
    "plugin.reply_to_request",
)
"""What a group's owner/admins may set in their group's table (superusers: any group key)."""
PERSONA_MAX_CHARS = 500
"""Longest persona text a group owner/admin may set."""
MAX_REPLY_CHARS = 3000
"""Keep a `show` reply within what a QQ message comfortably carries."""

admin_cmd = on_command(
    "llm2pic",
    permission=SUPERUSER | GROUP_ADMIN | GROUP_OWNER,
    priority=max(store.settings.plugin.priority - 1, 1),
    block=True,
)


@admin_cmd.handle()
async def handle_admin(bot: Bot, event: Event, matcher: Matcher, arg: Message = CommandArg()):
    """Dispatch one admin sub-command and reply with its outcome."""
    verb, _, rest = arg.extract_plain_text().strip().partition(" ")
    rest = rest.strip()
    is_superuser = await SUPERUSER(bot, event)
    group_id = str(event.group_id) if isinstance(event, GroupMessageEvent) else None

    await asyncio.to_thread(store.refresh_if_changed)  # the CLI may have edited the file
    if verb in ("on", "off"):
        if group_id is None:
            await matcher.finish(
                "请在要开关的群里发送，或私聊：/llm2pic group <群号> set plugin.enabled true|false"
            )
        await matcher.finish(await _switch(group_id, verb == "on", is_superuser))
    if verb == "group":
        await matcher.finish(_clip(await _group(rest, group_id, is_superuser)))
    if not is_superuser:
        await matcher.finish()  # owners/admins: only the commands above; no effect, no reply

    match verb:
        case "show" if group_id is not None:
            reply = await _run(_show_here, group_id, rest)
        case "show":
            reply = await _run(store.show, rest)
        case "get":
            reply = await _run(_get, rest)
        case "set":
            key, _, value = rest.partition(" ")
            if not key or not value.strip():
                reply = "用法：/llm2pic set <键> <值>"
            elif is_secret_key(key) and group_id is not None:
                reply = (
                    f"未修改：{key} 是密钥，只能私聊我设置。这个密钥已经发在群里、等于公开了，"
                    "请到服务商那里作废它、换一个新的，再私聊我设置"
                )
            else:
                reply = await _run(_set, key, value)
        case "unset":
            reply = await _run(_unset, rest) if rest else "用法：/llm2pic unset <键>"
        case "reload":
            reply = await _run(_reload)
        case "status":
            reply = await _status(group_id)
        case "help":
            reply = ADMIN_HELP
        case "persona":
            reply = await persona_command(bot, event, rest)
        case _:
            reply = USAGE
    await matcher.finish(_clip(reply))


async def _switch(group_id: str, on: bool, is_superuser: bool) -> str:
    """`/llm2pic on|off` in a group: its own ``plugin.enabled``."""
    if on and not is_superuser and store.settings.plugin.groups_default == "off":
        return "白名单模式下只有超级用户可以开启本群"
    reply = await _run(_set_group, group_id, "plugin.enabled", "true" if on else "false")
    if reply.startswith("未修改"):
        return reply
    if on and not store.settings.plugin.enabled:
        return "本群已开启画图（但全局开关 plugin.enabled = false，仍不会画图）"
    return "本群已开启画图" if on else "本群已关闭画图"


async def _group(rest: str, here: str | None, is_superuser: bool) -> str:
    """`/llm2pic group [群号] show|get|set|unset …` on one group's table."""
    first, _, tail = rest.partition(" ")
    target = here
    if first.isdigit():
        if not is_superuser and first != here:
            return "只有超级用户可以设置其他群"
        target, rest = first, tail.strip()
    if target is None:
        return "私聊时请写群号：" + GROUP_USAGE.removeprefix("用法：")
    sub, _, args = rest.partition(" ")
    key, _, value = args.strip().partition(" ")
    if sub in ("set", "unset") and not is_superuser and key not in GROUP_ADMIN_KEYS:
        return "群主和管理员只能修改：" + "、".join(GROUP_ADMIN_KEYS)
    too_long = key.startswith("persona.") and len(value.strip()) > PERSONA_MAX_CHARS
    match sub:
        case "show":
            return await _run(store.show_group, target, args.strip())
        case "get" if key:
            return await _run(_get_group, target, key)
        case "set" if too_long and not is_superuser:
            return f"未修改：{key} 最多 {PERSONA_MAX_CHARS} 个字"
        case "set" if key and value.strip():
            return await _run(_set_group, target, key, value)
        case "unset" if key:
            return await _run(_unset_group, target, key)
    return GROUP_USAGE


def _show_here(group_id: str, section: str) -> str:
    """A superuser's `show` in a group: the whole effective config, the group's own marked."""
    return store.show_group(group_id, section, everything=True)


def _get_group(group_id: str, key: str) -> str:
    value, own = store.get_group(group_id, key)
    return f"{key} = {toml_value(value)}" + ("（本群设置）" if own else "（全局设置）")


def _set_group(group_id: str, key: str, value: str) -> str:
    result = store.set_group(group_id, key, value)
    return f"已设置群 {group_id} 的 {key} = {toml_value(result.value)}，已生效"


def _unset_group(group_id: str, key: str) -> str:
    store.unset_group(group_id, key)
    value, _ = store.get_group(group_id, key)
    return f"已删除群 {group_id} 的 {key}，恢复全局值 {toml_value(value)}"


async def _run(func, *args: str) -> str:
    """Store calls touch the file: run them off the event loop; errors become replies."""
    try:
        return await asyncio.to_thread(func, *args)
    except SettingsError as err:
        return f"未修改：{err}"


def _get(key: str) -> str:
    if not key:
        return "用法：/llm2pic get <键>"
    value = store.get(key)
    return store.show(key) if isinstance(value, dict) else f"{key} = {toml_value(value)}"


def _set(key: str, value: str) -> str:
    result = store.set(key, value)
    note = "（需要重启机器人才生效）" if result.needs_restart else "，已生效"
    return f"已设置 {result.key} = {toml_value(result.value)}{note}"


def _unset(key: str) -> str:
    store.unset(key)
    try:
        return f"已删除 {key}，恢复默认值 {toml_value(store.get(key))}"
    except SettingsError:  # a whole table (e.g. a custom backend) has no default
        return f"已删除 {key}"


async def _status(group_id: str | None = None) -> str:
    settings = store.settings
    lines = [f"配置文件：{store.path}"]
    if settings.plugin.groups_default == "off":
        allowed = [g for g in sorted(settings.groups) if effective(settings, g).plugin.enabled]
        lines.append(f"白名单模式，开启画图的群：{'、'.join(allowed) or '无'}")
    else:
        disabled = [g for g in sorted(settings.groups) if switched_off(settings, g)]
        lines.append(f"关闭画图的群：{'、'.join(disabled) or '无'}")
    if group_id is not None:
        lines += await _group_status(group_id)
    if store.last_error:
        lines.append(f"配置错误（正在使用{RUNNING_CHAT[store.source]}）：{store.last_error}")
    lines.append(f"排队中：{state.queue.waiting}，正在画：{state.queue.running}")
    summary = state.pipeline.stats.summary() if state.pipeline else {}
    for name, (ok, failed, median) in summary.items():
        latency = f"，中位耗时 {median:.1f} 秒" if median is not None else ""
        lines.append(f"后端 {name}：成功 {ok}，失败 {failed}{latency}")
    if not summary:
        lines.append("启动以来还没有画过图")
    return "\n".join(lines)


async def _group_status(group_id: str) -> list[str]:
    """This group's switch, its own settings and today's drawings against its limit."""
    settings = store.settings
    here = effective(settings, group_id)
    table = settings.groups.get(group_id, {})
    own = [f"{section}.{name}" for section, values in table.items() for name in values]
    tz = settings.limits.quota_timezone
    _, used = await state.quota.usage(user_id="", group_id=group_id, tz=tz)
    limit = here.limits.group_daily_quota
    return [
        f"本群：{'开启' if here.plugin.enabled else '关闭'}画图",
        f"本群设置：{'、'.join(own) or '无'}",
        f"本群今日已画：{used}/{limit or '不限'}（{quota_day(tz)}）",
    ]


def _reload() -> str:
    try:
        store.reload()
    except SettingsError as err:
        return f"配置文件有误，正在使用{RUNNING_CHAT[store.source]}：{err}"
    return "已重新加载配置"


def _clip(text: str) -> str:
    return text if len(text) <= MAX_REPLY_CHARS else text[: MAX_REPLY_CHARS - 10] + "\n…（已截断）"


async def notify_invalid_config(error: SettingsError) -> bool:
    """Tell each superuser who is a friend of a bot, in private, that the file turned invalid.

    Returns False while no bot is connected (try again later); superusers who are not friends
    only get the log line.
    """
    bots = get_bots()
    if not bots:
        return False
    superusers = get_driver().config.superusers
    text = (
        f"llm2pic 配置文件 {store.path.name} 有错误，正在使用{RUNNING_CHAT[store.source]}：{error}"
    )
    for bot in bots.values():
        try:
            friends = {str(friend["user_id"]) for friend in await bot.call_api("get_friend_list")}
            for user_id in sorted(superusers & friends):
                await bot.call_api("send_private_msg", user_id=int(user_id), message=_clip(text))
        except Exception as err:  # one unreachable bot must not stop the others
            logger.warning(f"llm2pic: could not tell superusers about the config error: {err}")
    return True


state.invalid_config_handlers.append(notify_invalid_config)
