"""Admin commands: `/llm2pic show|get|set|unset|reload|status|on|off`.

Superusers may do everything; group owners/admins only `on`/`off`; anyone else gets no effect
and no reply. ``plugin.enabled = false`` never disables these commands.
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
from ..settings_store import RUNNING_CHAT, is_secret_key, toml_value
from ..state import groups, store

USAGE = (
    "用法：/llm2pic show [节] | get <键> | set <键> <值> | unset <键> | reload | status"
    " | on | off\n"
    "键用点号路径，如 limits.user_cooldown_seconds、backends.openai.model"
)
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

    if verb in ("on", "off"):
        if group_id is None:
            await matcher.finish("请在要开关的群里发送这个命令")
        await asyncio.to_thread(groups.set_enabled, group_id, verb == "on")
        await matcher.finish("本群已开启画图" if verb == "on" else "本群已关闭画图")
    if not is_superuser:
        await matcher.finish()  # owners/admins may only switch their group: no effect, no reply

    await asyncio.to_thread(store.refresh_if_changed)  # the CLI may have edited the file
    match verb:
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
            reply = _status()
        case _:
            reply = USAGE
    await matcher.finish(_clip(reply))


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


def _status() -> str:
    disabled = "、".join(sorted(groups.disabled)) or "无"
    lines = [f"配置文件：{store.path}", f"关闭画图的群：{disabled}"]
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
