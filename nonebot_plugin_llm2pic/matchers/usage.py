"""What `/pic help`, `/pic 额度` and `/llm2pic help` answer, built from the live settings."""

from __future__ import annotations

from .. import state
from ..settings import LimitsSection, Settings

ADMIN_HELP = "\n".join(
    [
        "管理命令（超级用户；on/off 群主和管理员也可用）：",
        "/llm2pic show [节]　查看配置，如 /llm2pic show limits",
        "/llm2pic get <键>　查看一项，如 /llm2pic get limits.user_daily_quota",
        "/llm2pic set <键> <值>　修改一项，如 /llm2pic set limits.user_daily_quota 10",
        "/llm2pic unset <键>　恢复默认，如 /llm2pic unset plugin.ack_message",
        "/llm2pic reload　重新读取配置文件",
        "/llm2pic status　后端、队列和今天的用量",
        "/llm2pic on | off　开关本群的画图",
        "/llm2pic group [群号] show|get|set|unset …　本群设置，"
        "如 /llm2pic group set persona.name 小红",
        "/llm2pic help　本帮助",
    ]
)


def quota_left(
    limits: LimitsSection, user_used: int, group_used: int, *, in_group: bool
) -> int | None:
    """Pictures the user may still draw today here; None = no limit."""
    left = []
    if limits.user_daily_quota:
        left.append(limits.user_daily_quota - user_used)
    if in_group and limits.group_daily_quota:
        left.append(limits.group_daily_quota - group_used)
    return max(0, min(left)) if left else None


async def pictures_left(
    settings: Settings, user_id: str, group_id: str | None, *, exempt: bool
) -> int | None:
    """Today's pictures left for ``user_id`` in ``group_id`` (None: unlimited or exempt)."""
    if exempt:
        return None
    limits = settings.limits
    user_used, group_used = await state.quota.usage(
        user_id=user_id, group_id=group_id, tz=limits.quota_timezone
    )
    return quota_left(limits, user_used, group_used, in_group=group_id is not None)


def left_text(left: int | None) -> str:
    """「今天还能画 N 张」, or that there is no limit."""
    return "今天画图不限次数" if left is None else f"今天还能画 {left} 张"


def pic_help(settings: Settings, *, may_flag: bool, left: int | None) -> str:
    """`/pic help` for this user and group: what triggers are on, which flags they may use."""
    plugin = settings.plugin
    command = f"/{plugin.command}"
    most = settings.limits.max_images_per_request
    lines = [
        f"{command} <描述>　画一张，如 {command} 海边的日落",
        f"{command} -n 4 <描述>　一次画几张（最多 {most} 张）",
    ]
    if may_flag:
        backends = "、".join(sorted(settings.backends))
        lines += [
            f"{command} -r <英文提示词>　不经过 AI 改写，直接当提示词",
            f"{command} -b <后端> <描述>　指定后端（{backends}）",
        ]
    mention = "（要先 @我）" if plugin.require_mention else ""
    if plugin.natural_language:
        lines.append(f"群里直接说「画一只猫」「来三张星空」也行{mention}")
        lines.append("「再来一张」用上一张的提示词重画；「再来一张，但是要夜景」在上一张的基础上改")
        lines.append("回复一张图说「画成动漫风」，把它当参考图")
    if plugin.selfie:
        lines.append(f"「来张自拍」看看{settings.persona.name or '我'}{mention}")
    lines.append(f"{command} 额度　{left_text(left)}")
    return "\n".join(lines)
