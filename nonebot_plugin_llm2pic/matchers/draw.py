"""Drawing requests from chat: `/pic`, natural language and selfies (docs/architecture.md).

Handlers parse the request, refuse what is known to fail (banned words, an unreadable reply,
references no backend takes, an unknown backend), let ``limits.admit`` decide on cooldown, queue
and quota, acknowledge, and hand the job to a tracked background task. Every accepted request
ends in exactly one outcome: its pictures (one message, or one merged forward), or one short
Chinese reason. Each picture is one unit of daily quota; units of pictures not delivered are
given back. Delivered pictures are kept in ``state.recent`` for replies and "再来一张".
"""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

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
from ..backends import ReferenceImage
from ..config import data_dir
from ..exceptions import Llm2PicError, ReferenceImageError
from ..history import HistoryEntry
from ..intent import Intent, aspect_hint, detect_intent, picture_count
from ..limits import AdmissionLimits, Refusal, Reservation, Ticket, admit
from ..pipeline import Batch, DrawJob, DrawResult, ReferenceSource, plan_backend, save_result
from ..prompt_writer import judge_intent, llm_sees_images
from ..recent import RecentPicture
from ..settings import Settings, effective, switched_off
from ..vision import LabelledImage, fetch_vision_image
from ..worker import in_worker
from .characters import avatars, replied_picture, with_own_avatar
from .recall import recall_later
from .record import message_text, sending_picture
from .usage import left_text, pic_help, pictures_left

if TYPE_CHECKING:
    import aiohttp  # imported lazily (transport.py says why)

IMAGE_SEND_TIMEOUT = 60.0
IMAGE_SEND_TIMEOUT_PER_MB = 40.0
IMAGE_SEND_TIMEOUT_MAX = 300.0
"""OneBot image uploads are slow on NapCat/LLOneBot (65–130 s for 1.4–2.1 MB PNGs in one
report), so the wait for the send is ``IMAGE_SEND_TIMEOUT`` plus ``IMAGE_SEND_TIMEOUT_PER_MB``
per MB of image, capped."""
OUTBOX_KEEP = 20
"""Files kept in the `send_mode = "file"` outbox; older ones are deleted."""
PIC_USAGE = "用法：/pic [-n 张数] <描述>，/pic help 查看更多"
PIC_FLAGS_USAGE = "（-r 直接用描述当提示词，-b <后端> 指定后端）"
UNEXPECTED_ERROR = "出错了，请稍后再试"
AGAIN_WINDOW = 30 * 60
"""A user's own last picture is what "再来一张" redraws for this many seconds."""
NOTHING_TO_REDRAW = "还没有可以重画的图，说说想画什么吧"

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
    capped: int = 0
    """More pictures were asked for than ``max_images_per_request``: this cap was applied."""


# --- matchers ------------------------------------------------------------------------------------


def _group_of(event: MessageEvent) -> str | None:
    return str(event.group_id) if isinstance(event, GroupMessageEvent) else None


def _settings_for(event: MessageEvent) -> Settings:
    """The settings in force where the event came from: its group's, or the global ones."""
    return effective(state.store.settings, _group_of(event))


def _enabled_here(event: MessageEvent) -> bool:
    settings = _settings_for(event)
    return settings.plugin.enabled and event.get_user_id() not in settings.plugin.blocked_users


def _switched_off_here(event: MessageEvent) -> bool:
    """A group switched off with `/llm2pic off` (not one never switched on in whitelist mode)."""
    settings = state.store.settings
    group_id = _group_of(event)
    return (
        group_id is not None
        and settings.plugin.enabled
        and switched_off(settings, group_id)
        and event.get_user_id() not in settings.plugin.blocked_users
    )


async def _pic_rule(bot: Bot, event: MessageEvent) -> bool:
    if isinstance(event, GroupMessageEvent):
        return _enabled_here(event) or _switched_off_here(event)
    if state.store.settings.plugin.groups_default == "off" and not await SUPERUSER(bot, event):
        return False  # whitelist mode: private chats answer superusers only
    return _enabled_here(event)


async def _natural_rule(bot: Bot, event: GroupMessageEvent, matcher_state: T_State) -> bool:
    """A drawing or selfie request in a group that should fire (explicit, or weak and confirmed)."""
    if not _enabled_here(event):
        return False
    settings = _settings_for(event)
    text, by_name = _strip_persona_name(event.get_plaintext().strip(), settings.persona.name)
    subjects = avatars(event, settings, text, in_request=False)
    intent = detect_intent(text, has_image=_has_image(event) or bool(subjects))
    intent = with_own_avatar(intent, text, settings)
    if intent.kind == "draw" and not settings.plugin.natural_language:
        return False
    if intent.kind == "selfie" and not settings.plugin.selfie:
        return False
    if intent.kind not in ("draw", "selfie"):
        return False
    addressed = event.is_tome() or by_name or replied_picture(event) is not None
    if settings.plugin.require_mention and not addressed:
        return False
    if not intent.explicit and not addressed:
        if not (settings.llm.judge_intent and settings.llm.configured):
            return False
        history = _history(event, settings)
        session = state.get_pipeline().session
        images = await _pictures_for_judge(session, event, settings)
        if not await judge_intent(session, settings, text, history, images):
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


async def _pictures_for_judge(
    session: aiohttp.ClientSession, event: MessageEvent, settings: Settings
) -> tuple[LabelledImage, ...]:
    """The pictures a message carries or replies to, for the intent judge; best effort."""
    llm = settings.llm
    if not llm_sees_images(llm):
        return ()
    urls = _image_urls(event.original_message)
    if event.reply is not None:
        urls += _image_urls(event.reply.message)
    seen: list[LabelledImage] = []
    for url in urls[: llm.vision_max_images]:
        try:
            image = await fetch_vision_image(
                session,
                url,
                detail=llm.vision_detail,
                max_side=llm.vision_max_side,
                proxy=settings.plugin.download_proxy,
            )
        except ReferenceImageError as err:
            logger.info(f"llm2pic: picture not shown to the intent judge: {err}")
            continue
        seen.append(LabelledImage(f"参考图 {len(seen) + 1}", image))
    return tuple(seen)


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
    """`/pic [-n N] [-r] [-b NAME] <描述>`, `/pic help`, `/pic 额度`."""
    settings = await _fresh_settings(event)
    if not settings.plugin.enabled:  # switched off here: say so once per user per window
        window = max(settings.limits.user_cooldown_seconds, 1.0)
        if state.limiter.should_notify(event.get_user_id(), window=window):
            await matcher.finish("本群已关闭画图")
        await matcher.finish()
    may_flag = settings.plugin.allow_flags or await SUPERUSER(bot, event)
    usage = PIC_USAGE + (PIC_FLAGS_USAGE if may_flag else "")
    plain = arg.extract_plain_text().strip()
    if plain in ("help", "帮助", "额度"):
        exempt = settings.limits.superusers_exempt and await SUPERUSER(bot, event)
        left = await pictures_left(settings, event.get_user_id(), _group_of(event), exempt=exempt)
        if plain == "额度":
            await matcher.finish(left_text(left))
        await matcher.finish(pic_help(settings, may_flag=may_flag, left=left))
    try:
        count, raw, backend, text = parse_pic_args(plain)
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
        count=count or picture_count(text),
    )
    await _start(bot, event, await _with_references(bot, event, job, natural=False))


@natural.handle()
async def handle_natural(bot: Bot, event: GroupMessageEvent, matcher_state: T_State) -> None:
    """A natural-language or selfie request that passed the rule."""
    settings = await _fresh_settings(event)
    intent: Intent = matcher_state["intent"]
    text, _ = _strip_persona_name(event.get_plaintext().strip(), settings.persona.name)
    job = DrawJob(
        text=intent.subject or text,
        selfie=intent.kind == "selfie",
        aspect=aspect_hint(text),
        history=_history(event, settings),
        count=intent.count,
    )
    if intent.again is not None:
        source = _again_source(event)
        if source is None and intent.again == "alone":
            await _reply(bot, event, settings, NOTHING_TO_REDRAW)
            return
        if source is not None:
            await _start(bot, event, Request(_again_job(job, intent, text, source), natural=True))
            return
    await _start(bot, event, await _with_references(bot, event, job, natural=True))


def _again_source(event: MessageEvent) -> RecentPicture | None:
    """The picture "再来一张" redraws: the replied one, the user's own recent one, the group's."""
    group_id = _group_of(event)
    return (
        replied_picture(event)
        or state.recent.last_by_user(group_id, event.get_user_id(), AGAIN_WINDOW)
        or state.recent.last_in_group(group_id)
    )


def _again_job(job: DrawJob, intent: Intent, text: str, source: RecentPicture) -> DrawJob:
    """Draw ``source`` again: alone with its prompt and a new seed, amended through the LLM."""
    job = replace(
        job,
        references=source.references,
        aspect=aspect_hint(text) or aspect_hint(source.request_text),
    )
    if intent.again == "alone":
        return replace(
            job,
            text=source.request_text,
            prompt=source.prompt,
            style=source.style,
            previous_seed=source.seed,
        )
    return replace(job, text=text, previous_prompt=source.prompt)


def parse_pic_args(text: str) -> tuple[int, bool, str | None, str]:
    """Leading ``-n N``, ``-r/--raw`` and ``-b/--backend NAME`` flags, then the description.

    ``N`` is 0 when not given. The description, as typed, keeps its quotes and apostrophes
    (「写着"你好"的牌子」, "a cat's toy").
    """
    rest = text.strip()
    count, raw, backend = 0, False, None
    while rest.startswith("-"):
        flag, rest = _first_word(rest)
        if flag in ("-n", "--count") and rest and (number := _first_word(rest)[0]).isdigit():
            if int(number) < 1:
                raise ValueError(flag)
            count, rest = int(number), _first_word(rest)[1]
        elif flag in ("-r", "--raw"):
            raw = True
        elif flag in ("-b", "--backend") and rest:
            backend, rest = _first_word(rest)
        elif flag.startswith("--backend="):
            backend = flag.split("=", 1)[1]
        else:
            raise ValueError(flag)
    return count, raw, backend, rest


def _first_word(text: str) -> tuple[str, str]:
    """The first whitespace-separated word of ``text`` and the rest, stripped."""
    word, *rest = text.split(maxsplit=1)
    return word, rest[0] if rest else ""


# --- acceptance ----------------------------------------------------------------------------------


async def _fresh_settings(event: MessageEvent) -> Settings:
    """The event's settings, the file re-read first if it changed on disk.

    Only a changed file is re-read in a thread: a thread hop for every request would let
    requests arriving together overtake each other before admission (first come, first served).
    """
    if state.store.changed_on_disk():
        await asyncio.to_thread(state.store.refresh_if_changed)
    return _settings_for(event)


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
    """Add the reference images of the message, of the message it replies to, and avatars.

    A reply to one of the bot's recent pictures uses the kept picture and its prompt.
    """
    urls: list[ReferenceSource] = [*_image_urls(event.original_message)]
    unreadable = False
    reply = event.reply
    picture = replied_picture(event)
    if picture is not None:
        urls.append(ReferenceImage(data=picture.image, mime=picture.mime))
        job = replace(job, previous_prompt=picture.prompt)
    elif reply is None and any(seg.type == "reply" for seg in event.original_message):
        reply_id = next(seg.data["id"] for seg in event.original_message if seg.type == "reply")
        try:  # the adapter's own get_msg failed or was skipped: try once more
            fetched = await bot.get_msg(message_id=int(reply_id))
            urls += _image_urls(Message(fetched["message"]))
        except (ActionFailed, NetworkError, KeyError, ValueError, TypeError):
            unreadable = True
    elif reply is not None:
        urls += _image_urls(reply.message)
    urls += avatars(event, state.store.settings, event.get_plaintext(), in_request=True)
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
    settings = _settings_for(event)
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
    most = limits.max_images_per_request
    if request.job.count > most:
        request = replace(request, job=replace(request.job, count=most), capped=most)
    count = request.job.count
    exempt = limits.superusers_exempt and await SUPERUSER(bot, event)
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
        units=count,
        exempt=exempt,
    )
    if isinstance(outcome, Refusal):
        message = outcome.message
        if outcome.reason == "quota" and count > 1:
            left = await pictures_left(
                settings, event.get_user_id(), _group_of(event), exempt=exempt
            )
            if left:
                message = f"今天只剩 {left} 张了，画不了 {count} 张，少要几张吧"
        await _refuse(bot, event, settings, request, message)
        return
    ack_id = None
    if settings.plugin.ack_message:
        ahead = outcome.ticket.ahead(backend)
        waits = ahead >= limits.max_concurrency  # it will queue: say how many are before it
        ack = settings.plugin.ack_message + (f"（前面还有 {ahead} 个）" if waits else "")
        if request.capped:
            ack += f"（一次最多 {request.capped} 张）"
        ack_id = await _reply(bot, event, settings, ack)
    ack = _Sent(ack_id, time.monotonic()) if ack_id is not None else None
    await state.spawn(_run_job(bot, event, request, outcome.ticket, outcome.reservation, ack))


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


@dataclass(frozen=True)
class _Sent:
    """A message the bot sent: its id and when (``time.monotonic()``), for recalls."""

    message_id: int
    at: float


async def _run_job(
    bot: Bot,
    event: MessageEvent,
    request: Request,
    ticket: Ticket,
    reservation: Reservation | None,
    ack: _Sent | None,
) -> None:
    """Run the pipeline, send the outcome, give back the units of undelivered pictures."""
    job = request.job
    delivered = 0
    try:
        settings = _settings_for(event)
        batch = await state.get_pipeline().run_batch(job, ticket, settings=settings)
        if settings.plugin.save_images:
            for result in batch.results:
                await asyncio.to_thread(save_result, data_dir() / "images", result, job.text)
        note = _batch_note(batch, request.capped if ack is None else 0)
        sent = await _send_batch(bot, event, settings, batch, note)
        if sent is not None:
            delivered = len(batch.results)
            _remember(event, job, batch, sent)
            if settings.plugin.recall_after > 0:
                recall_later(
                    bot,
                    sent.message_id,
                    group_id=_numeric_group(event),
                    sent_at=sent.at,
                    delay=settings.plugin.recall_after,
                )
    except Llm2PicError as err:
        logger.warning(f"llm2pic job failed: {err}")
        await _reply(bot, event, _settings_for(event), err.user_message)
    except asyncio.CancelledError:
        raise
    except Exception as err:  # the boundary: never a stack trace in chat, never silence
        logger.opt(exception=err).error("llm2pic job crashed")
        await _reply(bot, event, _settings_for(event), UNEXPECTED_ERROR)
    finally:
        ticket.close()
        if reservation is not None and delivered < reservation.units:
            unused = replace(reservation, units=reservation.units - delivered)
            await asyncio.shield(state.quota.release(unused))
        if ack is not None and _settings_for(event).plugin.recall_ack:
            recall_later(bot, ack.message_id, group_id=_numeric_group(event), sent_at=ack.at)


def _numeric_group(event: MessageEvent) -> int | None:
    return event.group_id if isinstance(event, GroupMessageEvent) else None


def _batch_note(batch: Batch, capped: int) -> str:
    """What the pictures' message says besides them: failures, and the cap when no ack said it."""
    notes = []
    if batch.failed:
        notes.append(f"有 {batch.failed} 张没画出来")
    if capped:
        notes.append(f"一次最多 {capped} 张")
    return "（" + "，".join(notes) + "）" if notes else ""


def _remember(event: MessageEvent, job: DrawJob, batch: Batch, sent: _Sent) -> None:
    """Keep the delivered pictures for replies to them and for "再来一张"."""
    now = time.time()
    for result in batch.results:
        state.recent.add(
            RecentPicture(
                message_id=str(sent.message_id),
                group_id=_group_of(event),
                user_id=event.get_user_id(),
                prompt=result.prompt,
                style=batch.style,
                backend=result.backend,
                seed=result.seed,
                image=result.image.data,
                mime=result.image.mime,
                references=batch.references,
                request_text=job.text,
                created=now,
            )
        )


async def _send_batch(
    bot: Bot, event: MessageEvent, settings: Settings, batch: Batch, note: str
) -> _Sent | None:
    """Send the pictures once, as one message or one merged forward; None when that failed.

    A failure becomes a text notice, never a resend.
    """
    images = [await _image_segment(settings, result) for result in batch.results]
    text = ""
    if settings.plugin.show_prompt:
        text += f"\n提示词：{batch.results[0].prompt}"
    text += note and f"\n{note}"
    size = sum(len(result.image.data) for result in batch.results)
    forward = settings.plugin.multi_image == "forward" and len(images) > 1
    try:
        with sending_picture(batch.results[0].prompt):
            if forward:
                answer = await _send_forward(bot, event, settings, images, text.strip(), size)
            else:
                message = Message(images)
                if text:
                    message += MessageSegment.text(text)
                answer = await bot.send(
                    event,
                    message,
                    reply_message=settings.plugin.reply_to_request,
                    _timeout=image_send_timeout(size),
                )
    except (NetworkError, ApiNotAvailable) as err:
        logger.warning(f"llm2pic image send timed out or failed: {err!r}")
        await _reply(bot, event, settings, "图片发送超时，可能已经发出；如果没看到，请稍后再试")
        return None
    except ActionFailed as err:
        logger.warning(f"llm2pic image send refused: {err}")
        await _reply(bot, event, settings, "图片发送失败（可能被风控或图片过大），请稍后再试")
        return None
    return _Sent(_message_id(answer), time.monotonic())


async def _image_segment(settings: Settings, result: DrawResult) -> MessageSegment:
    if settings.plugin.send_mode == "file":
        return MessageSegment.image(await asyncio.to_thread(_write_send_file, result))
    # Encoded in the image worker: given bytes, the adapter would base64 them on the loop.
    return MessageSegment.image(await in_worker(_base64_uri, result.image.data))


async def _send_forward(
    bot: Bot,
    event: MessageEvent,
    settings: Settings,
    images: list[MessageSegment],
    text: str,
    size: int,
) -> object:
    """One merged forward: a node per picture (and one for the text) from the bot itself.

    ``size``: the pictures' bytes, for the send timeout.
    """
    name = settings.persona.name or "画图"
    contents = [Message(image) for image in images] + ([Message(text)] if text else [])
    nodes = [
        MessageSegment.node_custom(user_id=int(bot.self_id), nickname=name, content=content)
        for content in contents
    ]
    if isinstance(event, GroupMessageEvent):
        return await bot.call_api(
            "send_group_forward_msg",
            group_id=event.group_id,
            messages=nodes,
            _timeout=image_send_timeout(size),
        )
    return await bot.call_api(
        "send_private_forward_msg",
        user_id=event.user_id,
        messages=nodes,
        _timeout=image_send_timeout(size),
    )


def _message_id(answer: object) -> int:
    """The ``message_id`` OneBot returned for a send (0 when it gave none)."""
    if isinstance(answer, dict):
        try:
            return int(answer.get("message_id") or 0)
        except (TypeError, ValueError):
            return 0
    return 0


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


async def _reply(bot: Bot, event: MessageEvent, settings: Settings, text: str) -> int | None:
    """A text reply, quoting the request when configured; its message id (None: not sent).

    A failed send is only logged.
    """
    try:
        answer = await bot.send(event, text, reply_message=settings.plugin.reply_to_request)
    except (ActionFailed, NetworkError, ApiNotAvailable) as err:
        # ApiNotAvailable: the OneBot connection is gone. Raising here would skip the job that
        # owns the queue place and quota unit just taken for this request, leaking both.
        logger.warning(f"llm2pic reply failed: {err!r}")
        return None
    return _message_id(answer) or None
