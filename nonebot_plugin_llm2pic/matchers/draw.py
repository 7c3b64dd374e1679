"""Drawing requests from chat: `/pic`, natural language and selfies (docs/architecture.md).

Handlers parse the request, refuse what is known to fail (banned words, an unreadable reply,
references no backend takes, an unknown backend), let ``limits.admit`` decide on cooldown, queue
and quota, acknowledge, and hand the job to a tracked background task. Every accepted request
ends in exactly one outcome reply: the image, or one short Chinese reason.
"""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass, replace
from pathlib import Path

from nonebot import logger, on_command, on_message
from nonebot.adapters.onebot.v11 import (
    ActionFailed,
    ApiNotAvailable,
    Bot,
    GroupMessageEvent,
    Message,
    MessageEvent,
    MessageSegment,
    NetworkError,
)
from nonebot.matcher import Matcher
from nonebot.params import CommandArg
from nonebot.permission import SUPERUSER
from nonebot.typing import T_State

from .. import state
from ..config import data_dir
from ..exceptions import Llm2PicError
from ..history import HistoryEntry
from ..intent import aspect_hint, detect_intent
from ..limits import AdmissionLimits, Refusal, Reservation, Ticket, admit
from ..pipeline import DrawJob, DrawResult, plan_backend, save_result
from ..prompt_writer import judge_intent
from ..settings import Settings
from ..worker import in_worker
from .record import message_text, sending_picture

IMAGE_SEND_TIMEOUT = 60.0
IMAGE_SEND_TIMEOUT_PER_MB = 40.0
IMAGE_SEND_TIMEOUT_MAX = 300.0
"""OneBot image uploads are slow on NapCat/LLOneBot (65–130 s for 1.4–2.1 MB PNGs in one
report), so the wait for the send is ``IMAGE_SEND_TIMEOUT`` plus ``IMAGE_SEND_TIMEOUT_PER_MB``
per MB of image, capped."""
OUTBOX_KEEP = 20
"""Files kept in the `send_mode = "file"` outbox; older ones are deleted."""
PIC_USAGE = "用法：/pic <描述>"
PIC_FLAGS_USAGE = "（-r 直接用描述当提示词，-b <后端> 指定后端）"
UNEXPECTED_ERROR = "出错了，请稍后再试"

settings_at_start = state.store.settings
PRIORITY = settings_at_start.plugin.priority


@dataclass(frozen=True)
class Request:
    """A drawing request as a handler sees it, before acceptance."""

    job: DrawJob
    natural: bool
    """Natural-language trigger: limit refusals are answered at most once per window."""
    reply_unreadable: bool = False
    """The message quotes another one that could not be fetched (expired, pre-restart)."""


# --- matchers ------------------------------------------------------------------------------------


def _enabled_here(event: MessageEvent) -> bool:
    settings = state.store.settings
    if not settings.plugin.enabled or event.get_user_id() in settings.plugin.blocked_users:
        return False
    return not isinstance(event, GroupMessageEvent) or state.groups.is_enabled(str(event.group_id))


async def _pic_rule(event: MessageEvent) -> bool:
    return _enabled_here(event)


async def _natural_rule(bot: Bot, event: GroupMessageEvent, matcher_state: T_State) -> bool:
    """A drawing or selfie request in a group that should fire (explicit, or weak and confirmed)."""
    if not _enabled_here(event):
        return False
    settings = state.store.settings
    text, by_name = _strip_persona_name(event.get_plaintext().strip(), settings.persona.name)
    intent = detect_intent(text, has_image=_has_image(event))
    if intent.kind == "draw" and not settings.plugin.natural_language:
        return False
    if intent.kind == "selfie" and not settings.plugin.selfie:
        return False
    if intent.kind not in ("draw", "selfie"):
        return False
    addressed = event.is_tome() or by_name
    if settings.plugin.require_mention and not addressed:
        return False
    if not intent.explicit and not addressed:
        if not (settings.llm.judge_intent and settings.llm.configured):
            return False
        history = _history(event, settings)
        if not await judge_intent(state.get_pipeline().session, settings, text, history):
            return False
    matcher_state["intent"] = intent
    return True


def _strip_persona_name(text: str, name: str) -> tuple[str, bool]:
    """``text`` without a leading ``persona.name`` (「小画，想看看樱花」), and whether it had one.

    The persona's name calls the bot like a NoneBot ``NICKNAME`` does, with or without one set.
    """
    if not name or not text.startswith(name):
        return text, False
    return text[len(name) :].lstrip(" ,，:：!！~～、"), True


def _has_image(event: MessageEvent) -> bool:
    """The message carries an image, or replies to one (or to a message we could not read)."""
    if any(seg.type in ("image", "reply") for seg in event.original_message):
        return True
    return event.reply is not None and any(seg.type == "image" for seg in event.reply.message)


pic_cmd = on_command(
    settings_at_start.plugin.command, rule=_pic_rule, priority=PRIORITY, block=True
)
natural = on_message(rule=_natural_rule, priority=PRIORITY + 1, block=True)


@pic_cmd.handle()
async def handle_pic(
    bot: Bot, event: MessageEvent, matcher: Matcher, arg: Message = CommandArg()
) -> None:
    """`/pic [-r] [-b NAME] <描述>`."""
    settings = await _fresh_settings()
    may_flag = settings.plugin.allow_flags or await SUPERUSER(bot, event)
    usage = PIC_USAGE + (PIC_FLAGS_USAGE if may_flag else "")
    try:
        raw, backend, text = parse_pic_args(arg.extract_plain_text())
    except ValueError:
        await matcher.finish(usage)
    if not text:
        await matcher.finish(usage)
    if (raw or backend) and not may_flag:
        await matcher.finish("只有超级用户可以使用 -r / -b 参数")
    if backend and backend not in settings.backends:
        names = "、".join(sorted(settings.backends))
        await matcher.finish(f"没有名为 {backend} 的后端，可用：{names}")
    job = DrawJob(
        text=text,
        raw=raw,
        backend=backend,
        aspect=aspect_hint(text),
        history=_history(event, settings),
    )
    await _start(bot, event, await _with_references(bot, event, job, natural=False))


@natural.handle()
async def handle_natural(bot: Bot, event: GroupMessageEvent, matcher_state: T_State) -> None:
    """A natural-language or selfie request that passed the rule."""
    settings = await _fresh_settings()
    intent = matcher_state["intent"]
    text, _ = _strip_persona_name(event.get_plaintext().strip(), settings.persona.name)
    job = DrawJob(
        text=intent.subject or text,
        selfie=intent.kind == "selfie",
        aspect=aspect_hint(text),
        history=_history(event, settings),
    )
    await _start(bot, event, await _with_references(bot, event, job, natural=True))


def parse_pic_args(text: str) -> tuple[bool, str | None, str]:
    """Leading ``-r/--raw`` and ``-b/--backend NAME`` flags, then the description as typed.

    The description keeps its quotes and apostrophes (「写着"你好"的牌子」, "a cat's toy").
    """
    rest = text.strip()
    raw, backend = False, None
    while rest.startswith("-"):
        flag, rest = _first_word(rest)
        if flag in ("-r", "--raw"):
            raw = True
        elif flag in ("-b", "--backend") and rest:
            backend, rest = _first_word(rest)
        elif flag.startswith("--backend="):
            backend = flag.split("=", 1)[1]
        else:
            raise ValueError(flag)
    return raw, backend, rest


def _first_word(text: str) -> tuple[str, str]:
    """The first whitespace-separated word of ``text`` and the rest, stripped."""
    word, *rest = text.split(maxsplit=1)
    return word, rest[0] if rest else ""


# --- acceptance ----------------------------------------------------------------------------------


async def _fresh_settings() -> Settings:
    """The live settings, re-read first if the file changed on disk.

    Only a changed file is re-read in a thread: a thread hop for every request would let
    requests arriving together overtake each other before admission (first come, first served).
    """
    if state.store.changed_on_disk():
        await asyncio.to_thread(state.store.refresh_if_changed)
    return state.store.settings


def _history(event: MessageEvent, settings: Settings) -> tuple[HistoryEntry, ...]:
    """Recent chat of the event's group for the prompt writer, without the request itself."""
    if not isinstance(event, GroupMessageEvent):
        return ()
    entries = state.history.recent(
        str(event.group_id),
        limit=settings.llm.context_message_limit + 1,
        minutes=settings.llm.context_time_minutes,
    )
    if (
        entries
        and not entries[-1].is_bot
        and entries[-1].text == message_text(event.original_message)
    ):
        entries = entries[:-1]  # the request itself is passed separately
    return tuple(
        entries[-settings.llm.context_message_limit :] if settings.llm.context_message_limit else ()
    )


async def _with_references(
    bot: Bot, event: MessageEvent, job: DrawJob, *, natural: bool
) -> Request:
    """Add the reference image URLs of the message and of the message it replies to."""
    urls = _image_urls(event.original_message)
    unreadable = False
    reply = event.reply
    if reply is None and any(seg.type == "reply" for seg in event.original_message):
        reply_id = next(seg.data["id"] for seg in event.original_message if seg.type == "reply")
        try:  # the adapter's own get_msg failed or was skipped: try once more
            fetched = await bot.get_msg(message_id=int(reply_id))
            urls += _image_urls(Message(fetched["message"]))
        except (ActionFailed, NetworkError, KeyError, ValueError, TypeError):
            unreadable = True
    elif reply is not None:
        urls += _image_urls(reply.message)
    return Request(
        job=replace(job, references=tuple(urls)),
        natural=natural,
        reply_unreadable=unreadable and not urls,
    )


def _image_urls(message: Message) -> list[str]:
    urls = []
    for segment in message:
        if segment.type == "image":
            url = segment.data.get("url") or segment.data.get("file") or ""
            if url.startswith(("http://", "https://")):
                urls.append(url)
    return urls


async def _start(bot: Bot, event: MessageEvent, request: Request) -> None:
    """Refuse what is known to fail or what the limits turn away; else acknowledge and run."""
    settings = state.store.settings
    lowered = request.job.text.lower()
    if any(word and word.lower() in lowered for word in settings.generation.banned_words):
        await _reply(bot, event, settings, "这个描述包含不允许的内容，换一个吧")
        return
    if request.reply_unreadable:
        await _reply(bot, event, settings, "找不到你回复的那条消息（可能太久了），请重新发送图片")
        return
    try:
        backend = plan_backend(request.job, settings)
    except Llm2PicError as err:
        await _reply(bot, event, settings, err.user_message)
        return

    limits = settings.limits
    outcome = await admit(
        limiter=state.limiter,
        queue=state.queue,
        quota=state.quota,
        limits=AdmissionLimits(
            cooldown=limits.user_cooldown_seconds,
            per_minute=limits.user_per_minute,
            user_daily_quota=limits.user_daily_quota,
            group_daily_quota=limits.group_daily_quota,
            max_queue=limits.max_queue,
            quota_timezone=limits.quota_timezone,
        ),
        user_id=event.get_user_id(),
        group_id=str(event.group_id) if isinstance(event, GroupMessageEvent) else None,
        backend=backend,
        exempt=limits.superusers_exempt and await SUPERUSER(bot, event),
    )
    if isinstance(outcome, Refusal):
        await _refuse(bot, event, settings, request, outcome.message)
        return
    if settings.plugin.ack_message:
        ahead = outcome.ticket.ahead(backend)
        waits = ahead >= limits.max_concurrency  # it will queue: say how many are before it
        ack = settings.plugin.ack_message + (f"（前面还有 {ahead} 个）" if waits else "")
        await _reply(bot, event, settings, ack)
    await state.spawn(_run_job(bot, event, request.job, outcome.ticket, outcome.reservation))


async def _refuse(
    bot: Bot, event: MessageEvent, settings: Settings, request: Request, text: str
) -> None:
    """Answer a refused request; natural-language ones at most once per user per window."""
    if request.natural and not state.limiter.should_notify(
        event.get_user_id(), window=max(settings.limits.user_cooldown_seconds, 1.0)
    ):
        return
    await _reply(bot, event, settings, text)


# --- the job -------------------------------------------------------------------------------------


async def _run_job(
    bot: Bot, event: MessageEvent, job: DrawJob, ticket: Ticket, reservation: Reservation | None
) -> None:
    """Run the pipeline, send the outcome; release quota on failure."""
    delivered = False
    try:
        result = await state.get_pipeline().run(job, ticket)
        settings = state.store.settings
        if settings.plugin.save_images:
            await asyncio.to_thread(save_result, data_dir() / "images", result, job.text)
        delivered = await _send_result(bot, event, settings, result)
    except Llm2PicError as err:
        logger.warning(f"llm2pic job failed: {err}")
        await _reply(bot, event, state.store.settings, err.user_message)
    except asyncio.CancelledError:
        raise
    except Exception as err:  # the boundary: never a stack trace in chat, never silence
        logger.opt(exception=err).error("llm2pic job crashed")
        await _reply(bot, event, state.store.settings, UNEXPECTED_ERROR)
    finally:
        ticket.close()
        if reservation is not None and not delivered:
            await asyncio.shield(state.quota.release(reservation))


async def _send_result(
    bot: Bot, event: MessageEvent, settings: Settings, result: DrawResult
) -> bool:
    """Send the image once; a failure becomes a text notice, never a resend."""
    if settings.plugin.send_mode == "file":
        path = await asyncio.to_thread(_write_send_file, result)
        message = Message(MessageSegment.image(path))
    else:
        # Encoded in the image worker: given bytes, the adapter would base64 them on the loop.
        message = Message(MessageSegment.image(await in_worker(_base64_uri, result.image.data)))
    if settings.plugin.show_prompt:
        message += MessageSegment.text(f"\n提示词：{result.prompt}")
    try:
        with sending_picture(result.prompt):
            await bot.send(
                event,
                message,
                reply_message=settings.plugin.reply_to_request,
                _timeout=image_send_timeout(len(result.image.data)),
            )
    except (NetworkError, ApiNotAvailable) as err:
        logger.warning(f"llm2pic image send timed out or failed: {err!r}")
        await _reply(bot, event, settings, "图片发送超时，可能已经发出；如果没看到，请稍后再试")
        return False
    except ActionFailed as err:
        logger.warning(f"llm2pic image send refused: {err}")
        await _reply(bot, event, settings, "图片发送失败（可能被风控或图片过大），请稍后再试")
        return False
    return True


def image_send_timeout(size: int) -> float:
    """Seconds to wait for the OneBot send of an image of ``size`` bytes."""
    return min(IMAGE_SEND_TIMEOUT_MAX, IMAGE_SEND_TIMEOUT + IMAGE_SEND_TIMEOUT_PER_MB * size / 1e6)


def _base64_uri(data: bytes) -> str:
    """The ``base64://`` file value OneBot takes for inline images."""
    return "base64://" + base64.b64encode(data).decode("ascii")


def _write_send_file(result: DrawResult) -> Path:
    """`send_mode = "file"`: a file the OneBot implementation on this host can read."""
    directory = data_dir() / "outbox"
    directory.mkdir(parents=True, exist_ok=True)
    for old in sorted(directory.iterdir())[:-OUTBOX_KEEP]:
        old.unlink(missing_ok=True)
    extension = result.image.mime.split("/")[-1]
    path = directory / f"{time.time_ns()}.{extension}"
    path.write_bytes(result.image.data)
    return path


async def _reply(bot: Bot, event: MessageEvent, settings: Settings, text: str) -> None:
    """A text reply, quoting the request when configured; a failed send is only logged."""
    try:
        await bot.send(event, text, reply_message=settings.plugin.reply_to_request)
    except (ActionFailed, NetworkError, ApiNotAvailable) as err:
        # ApiNotAvailable: the OneBot connection is gone. Raising here would skip the job that
        # owns the queue place and quota unit just taken for this request, leaking both.
        logger.warning(f"llm2pic reply failed: {err!r}")
