"""One drawing job: references → prompt writer → backend(s) → post-processing.

No NoneBot imports: the chat matchers and the CLI `draw` verb both run jobs through here.
Routing: the prompt writer's judged style (or a selfie) picks `routing.anime` / `routing.real`,
else `routing.default`; a request with reference images has its backend, and how the images are
used, fixed before the LLM call (``reference_plan``). On failure `routing.fallback` is tried in
order, except after a content-policy refusal or when the user chose the backend with `-b`.
`limits.job_timeout` bounds everything, reference downloads included.

A selfie brings the persona's reference images (``persona.reference_images``) when there are any:
a backend that takes references gets them along and the prompt keeps that character; otherwise a
vision LLM describes them once and the description stands in for an empty `persona.appearance`.
They are context only: they never move a job to another backend and never refuse one.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import random
import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from .avatars import Avatar, fetch_avatar
from .backends import (
    Aspect,
    BatchImageBackend,
    GeneratedImage,
    GenerationRequest,
    ImageBackend,
    ReferenceImage,
    create_backend,
)
from .exceptions import (
    BackendError,
    BackendUnavailableError,
    ContentPolicyError,
    JobTimeoutError,
    Llm2PicError,
    RedrawError,
    ReferenceImageError,
    ReferencesUnsupportedError,
    VisionRefusedError,
)
from .history import HistoryEntry
from .imaging import CropSpec, ProcessedImage, process_image_async, sniff_mime
from .intent import style_hint
from .limits import JobQueue, Ticket
from .persona_refs import PersonaLooks, load_persona_images
from .prompt_writer import (
    ReferenceUse,
    WrittenPrompt,
    describe_look,
    finalize_prompt,
    llm_sees_images,
    write_prompt,
)
from .settings import GradioBackendSettings, Settings
from .transport import RequestOptions, download
from .vision import LabelledImage, images_for_llm

if TYPE_CHECKING:
    import aiohttp  # imported lazily (transport.py says why)

log = logging.getLogger("nonebot_plugin_llm2pic")

T = TypeVar("T")

LATENCY_SAMPLES = 200
"""Latencies kept per backend for the median in `/llm2pic status`."""


ReferenceSource = str | Path | ReferenceImage | Avatar
"""Where a reference image comes from: an http(s) URL (chat), a local file (the CLI only), bytes
already at hand (a picture the bot sent), or a member's avatar."""

PERSONA_LOOK = "the character shown in the reference images (same face, hair and outfit)"
"""The selfie's look when the persona's reference images go along to the backend."""

AGAIN_SEEDS = (1, 1_000_000)
"""Range of the fresh seed an "again" request draws with (Gradio apps cap seeds near here)."""


@dataclass(frozen=True)
class DrawJob:
    """What one request asks for, parsed at the edge (matcher or CLI)."""

    text: str
    selfie: bool = False
    raw: bool = False
    backend: str | None = None
    references: tuple[ReferenceSource, ...] = ()
    """Reference images, fetched by ``Pipeline.run`` within the job's timeout."""
    aspect: Aspect | None = None
    history: tuple[HistoryEntry, ...] = ()
    count: int = 1
    """Pictures to draw from one prompt."""
    prompt: str | None = None
    """A finished prompt to draw again: no LLM call (``style`` routes it as before)."""
    style: str | None = None
    previous_prompt: str = ""
    """The prompt of the picture this request amends, shown to the LLM as context."""
    previous_seed: int | None = None
    """The seed of the picture drawn again: a new one is used."""


@dataclass(frozen=True)
class Batch:
    """The pictures of one job (at least one) and what made them."""

    results: tuple[DrawResult, ...]
    failed: int
    """Pictures that could not be drawn (or were filtered)."""
    references: tuple[ReferenceImage, ...]
    style: str | None


@dataclass(frozen=True)
class DrawResult:
    """A finished job: the image ready to send and how it was made."""

    image: ProcessedImage
    prompt: str
    backend: str
    seed: int | None
    timings: dict[str, float]


@dataclass
class _Counts:
    ok: int = 0
    failed: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))


class BackendStats:
    """Per-backend success/failure counts and latencies since start, for `status`."""

    def __init__(self) -> None:
        self._counts: dict[str, _Counts] = {}

    def record(self, backend: str, *, ok: bool, seconds: float) -> None:
        counts = self._counts.setdefault(backend, _Counts())
        if ok:
            counts.ok += 1
            counts.latencies.append(seconds)
        else:
            counts.failed += 1

    def summary(self) -> dict[str, tuple[int, int, float | None]]:
        """``{backend: (ok, failed, median seconds of successes or None)}``."""
        return {
            name: (c.ok, c.failed, statistics.median(c.latencies) if c.latencies else None)
            for name, c in sorted(self._counts.items())
        }


def selfie_backend(settings: Settings) -> str:
    """Where selfies go: `routing.selfie`, else `routing.anime`, else `routing.default`."""
    return settings.routing.selfie or settings.routing.anime or settings.routing.default


def primary_backend(settings: Settings, *, selfie: bool, style: str | None = None) -> str:
    """The backend routing picks before any fallback (the `[routing]` table)."""
    routing = settings.routing
    if selfie:
        return selfie_backend(settings)
    if style == "anime":
        return routing.anime or routing.default
    if style == "real":
        return routing.real or routing.default
    return routing.default


@dataclass(frozen=True)
class ReferencePlan:
    """How a request's reference images are used, and the backends to try, in order."""

    use: ReferenceUse
    """``edit``: the backend receives the images; ``redraw``: the LLM describes them and the
    backend draws that text alone."""
    candidates: tuple[str, ...]


def reference_plan(job: DrawJob, settings: Settings, *, sight: bool | None = None) -> ReferencePlan:
    """How a request with reference images is drawn; fixed before the LLM call.

    The first choice is `-b NAME`, else for a selfie the selfie backend, else the style the
    request text names (动漫/二次元 → `routing.anime`, 写实/照片 → `routing.real`), else
    `routing.default`. If it takes references, it edits them (with the `routing.fallback`
    backends that take them after it); else, when the LLM sees pictures (``sight``, by default
    from the config and the models known to be text-only), the LLM redraws them there (any
    fallback after it); else the fallbacks that take references edit them. `-b` allows no
    other backend. Raises ``ReferencesUnsupportedError`` when nothing can use the images. This
    is the one place that decides how a request's images are used.
    """
    if sight is None:
        sight = not job.raw and llm_sees_images(settings.llm)
    if job.backend:
        names = [job.backend]
    else:
        style = None if job.selfie else style_hint(job.text)
        first = primary_backend(settings, selfie=job.selfie, style=style)
        names = list(dict.fromkeys([first, *settings.routing.fallback]))
    able = tuple(
        n for n in names if n in settings.backends and settings.backends[n].supports_references
    )
    if sight and names[0] not in able:
        return ReferencePlan("redraw", tuple(names))
    if not able:
        raise ReferencesUnsupportedError(
            f"none of {names} takes reference images", backend=names[0]
        )
    return ReferencePlan("edit", able)


def plan_backend(job: DrawJob, settings: Settings) -> str:
    """The backend a job queues on when accepted; raises the failures known in advance.

    Known in advance: reference images that nothing can use (routing names are validated with
    the config, and `-b NAME` by the caller). The prompt writer's style may still move a job
    without references to another backend (it then queues there).
    """
    if job.references:
        return reference_plan(job, settings).candidates[0]
    return job.backend or primary_backend(settings, selfie=job.selfie)


class Pipeline:
    """Runs jobs with one shared HTTP session, the job queue and the live settings."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: Callable[[], Settings],
        queue: JobQueue | None = None,
        *,
        roots: tuple[Path, ...] = (),
        looks: PersonaLooks | None = None,
    ) -> None:
        self.session = session
        self.settings = settings
        self.queue = queue or JobQueue()
        self.roots = roots
        """Config folder first, then the data dir: where persona reference files may live."""
        self.looks = looks or PersonaLooks(None)
        self.stats = BackendStats()
        self._backends: dict[str, tuple[object, ImageBackend]] = {}
        self._batch_ok: dict[str, bool] = {}
        """Whether a backend's endpoint gave every picture asked of one call (unknown: try);
        forgotten when the backend's settings change."""

    def backend(self, name: str) -> ImageBackend:
        """The backend object for a name, rebuilt when its settings changed."""
        backend_settings = self.settings().backends.get(name)
        if backend_settings is None:
            raise BackendUnavailableError(
                f"no enabled backend named {name!r}", backend=name, reason="unknown"
            )
        cached = self._backends.get(name)
        if cached is None or cached[0] is not backend_settings:
            cached = (backend_settings, create_backend(name, backend_settings, self.session))
            self._backends[name] = cached
            self._batch_ok.pop(name, None)
        return cached[1]

    async def run(
        self, job: DrawJob, ticket: Ticket | None = None, *, settings: Settings | None = None
    ) -> DrawResult:
        """Run a one-picture job within `limits.job_timeout`; raise an `Llm2PicError` on failure.

        ``settings``: those of the group the job serves (default: the live global ones).
        """
        batch = await self.run_batch(replace(job, count=1), ticket, settings=settings)
        return batch.results[0]

    async def run_batch(
        self, job: DrawJob, ticket: Ticket | None = None, *, settings: Settings | None = None
    ) -> Batch:
        """Draw ``job.count`` pictures of one prompt within `limits.job_timeout`.

        ``settings`` as for ``run``. Raises the first failure only when no picture was drawn.
        """
        settings = settings or self.settings()
        own_ticket = ticket is None
        if ticket is None:
            ticket = self.queue.accept(
                max_queue=settings.limits.max_queue, backend=plan_backend(job, settings)
            )
        try:
            return await asyncio.wait_for(
                self._run(job, ticket, settings), settings.limits.job_timeout
            )
        except asyncio.TimeoutError:
            raise JobTimeoutError(f"job exceeded {settings.limits.job_timeout:g}s") from None
        finally:
            if own_ticket:
                ticket.close()

    async def _run(self, job: DrawJob, ticket: Ticket, settings: Settings) -> Batch:
        timings: dict[str, float] = {}
        references: tuple[ReferenceImage, ...] = ()
        if job.references:
            started = time.perf_counter()
            references = await fetch_references(
                self.session, job.references, proxy=settings.plugin.download_proxy
            )
            timings["references"] = time.perf_counter() - started
        plan = reference_plan(job, settings) if job.references else None
        started = time.perf_counter()
        persona_images, prompt_settings = await self._persona(job, settings)
        if job.prompt is not None:
            prompt, style = job.prompt, job.style
        else:
            prompt, style, plan = await self._prompt(job, prompt_settings, references, plan)
        timings["prompt"] = time.perf_counter() - started

        request = GenerationRequest(
            prompt=prompt,
            negative_prompt=settings.generation.negative_prompt,
            references=(
                (references if plan is not None and plan.use == "edit" else ()) + persona_images
            )[:MAX_REFERENCES],
            aspect=job.aspect,
        )
        started = time.perf_counter()
        candidates = list(plan.candidates) if plan else self._candidates(job, settings, style)
        images, errors = await self._draw(candidates, request, ticket, settings, job)
        timings["generate"] = time.perf_counter() - started

        started = time.perf_counter()
        generation = settings.generation
        crop = (
            CropSpec(generation.crop_position, generation.crop_pixels)
            if generation.crop_enabled and generation.crop_pixels
            else None
        )
        # max_send_bytes bounds the whole message: each picture gets its share.
        max_bytes = settings.plugin.max_send_bytes // max(len(images), 1)
        processed = await asyncio.gather(
            *(
                process_image_async(
                    image.data,
                    crop=crop,
                    max_bytes=max_bytes,
                    send_format=settings.plugin.send_format,
                )
                for image in images
            ),
            return_exceptions=True,
        )
        timings["process"] = time.perf_counter() - started
        results = []
        for image, outcome in zip(images, processed, strict=True):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, Llm2PicError):
                    raise outcome
                errors.append(outcome)
                continue
            results.append(DrawResult(outcome, prompt, image.backend, image.seed, timings))
        if not results:
            raise errors[0]
        if errors:
            log.warning("%d of %d pictures failed, first: %s", len(errors), job.count, errors[0])
        return Batch(tuple(results), job.count - len(results), references, style)

    async def _draw(
        self,
        candidates: list[str],
        request: GenerationRequest,
        ticket: Ticket,
        settings: Settings,
        job: DrawJob,
    ) -> tuple[list[GeneratedImage], list[Llm2PicError]]:
        """``job.count`` pictures at once, within the backends' concurrency limits.

        A backend that takes ``n`` is asked for all in one call first (and remembered when its
        endpoint returns fewer); the rest are single calls, each with its own slot and fallbacks.
        Seeds differ where the backend takes one. Returns the images and the failures.
        """
        explicit = bool(job.backend)
        images: list[GeneratedImage] = []
        first = candidates[0]
        if job.count > 1:
            backend = self.backend(first)
            if isinstance(backend, BatchImageBackend) and self._batch_ok.get(first, True):
                batch = replace(request, n=job.count)
                try:
                    images = await self._in_slot(
                        first, ticket, settings, lambda: backend.generate_batch(batch)
                    )
                except BackendError as err:
                    log.warning("backend %s failed a batch of %d: %s", first, job.count, err)
                    if explicit or not err.fallback:
                        raise
                self._batch_ok[first] = len(images) >= job.count
        seeds = self._seeds(first, settings, job)
        tickets = [ticket] + [ticket.companion(first) for _ in range(job.count - len(images) - 1)]
        try:
            outcomes = await asyncio.gather(
                *(
                    self._first_success(
                        candidates, replace(request, seed=seed), own, settings, explicit=explicit
                    )
                    for own, seed in zip(tickets, seeds[len(images) :], strict=False)
                ),
                return_exceptions=True,
            )
        finally:
            for own in tickets[1:]:
                own.close()
        errors: list[Llm2PicError] = []
        for outcome in outcomes:
            if isinstance(outcome, Llm2PicError):
                errors.append(outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                images.append(outcome)
        return images, errors

    @staticmethod
    def _seeds(name: str, settings: Settings, job: DrawJob) -> list[int | None]:
        """Seeds for ``job.count`` pictures on backend ``name``: differing where it takes one.

        A backend with a fixed seed counts up from it; one with a random seed (-1) draws each
        picture with its own random seed anyway. Drawing again always uses a new seed.
        """
        backend = settings.backends.get(name)
        if not isinstance(backend, GradioBackendSettings):
            return [None] * job.count
        if job.prompt is not None:
            start = random.randint(*AGAIN_SEEDS)
            if start == job.previous_seed:
                start += 1
        elif backend.seed >= 0 and job.count > 1:
            start = backend.seed
        else:
            return [None] * job.count
        return [start + index for index in range(job.count)]

    async def _prompt(
        self,
        job: DrawJob,
        settings: Settings,
        references: tuple[ReferenceImage, ...],
        plan: ReferencePlan | None,
    ) -> tuple[str, str | None, ReferencePlan | None]:
        """The final prompt, the judged style, and the reference plan it was written for.

        A redraw whose LLM could not see the pictures (a text-only model, or any failure) is
        planned again without sight: a fallback backend that takes references edits them, else
        the job fails with ``RedrawError``.
        """
        custom = settings.generation.custom_prompt_add
        if job.raw:
            return finalize_prompt(job.text, custom), None, plan
        images: tuple[LabelledImage, ...] = ()
        if llm_sees_images(settings.llm):
            images = await images_for_llm(
                self.session,
                settings.llm,
                references=[reference.data for reference in references],
                request_text=job.text,
                history=job.history,
                skip_urls={source for source in job.references if isinstance(source, str)},
                proxy=settings.plugin.download_proxy,
            )
        try:
            written = await self._write(job, settings, plan, images)
        except ContentPolicyError:
            raise
        except Llm2PicError as err:
            if plan is None or plan.use != "redraw" or settings.llm.vision == "on":
                raise
            plan = self._sightless_plan(job, settings, plan, err)
            written = await self._write(job, settings, plan, ())
        return finalize_prompt(written.prompt, custom), written.style, plan

    async def _write(
        self,
        job: DrawJob,
        settings: Settings,
        plan: ReferencePlan | None,
        images: tuple[LabelledImage, ...],
    ) -> WrittenPrompt:
        style_of = settings.backends.get(
            plan.candidates[0] if plan else plan_backend(job, settings)
        )
        return await write_prompt(
            self.session,
            settings,
            job.text,
            job.history,
            selfie=job.selfie,
            prompt_style=style_of.prompt_style if style_of else "natural",
            previous_prompt=job.previous_prompt,
            use=plan.use if plan else None,
            images=images,
        )

    @staticmethod
    def _sightless_plan(
        job: DrawJob, settings: Settings, failed: ReferencePlan, err: Llm2PicError
    ) -> ReferencePlan:
        """The plan once a redraw's LLM saw nothing: edit on a fallback, else ``RedrawError``."""
        try:
            plan = reference_plan(job, settings, sight=False)
        except ReferencesUnsupportedError:
            reason = "模型不接受图片" if isinstance(err, VisionRefusedError) else err.user_message
            raise RedrawError(
                f"redraw impossible: {err}", backend=failed.candidates[0], reason=reason
            ) from err
        log.info(
            "redraw on %s failed (%s); editing on %s", failed.candidates[0], err, plan.candidates[0]
        )
        return plan

    async def _persona(
        self, job: DrawJob, settings: Settings
    ) -> tuple[tuple[ReferenceImage, ...], Settings]:
        """A selfie's persona images to send along, and the settings the prompt is written with.

        The backend takes references: the images go along and the look names them. Otherwise,
        with `persona.appearance` empty and an LLM that may see images, their cached
        description becomes the look. Unreadable images are skipped (logged), never an error.
        """
        persona = settings.persona
        if not (job.selfie and persona.reference_images and not job.raw):
            return (), settings
        images = await load_persona_images(
            self.session, persona.reference_images, self.roots, proxy=settings.plugin.download_proxy
        )
        if not images:
            return (), settings
        backend = settings.backends.get(plan_backend(job, settings))
        appearance = persona.appearance.strip()
        if backend is not None and backend.supports_references:
            return images, _with_appearance(
                settings, ", ".join(filter(None, [PERSONA_LOOK, appearance]))
            )
        if appearance or not llm_sees_images(settings.llm):
            return (), settings
        look = await self.looks.describe(
            images, lambda found: describe_look(self.session, settings, found)
        )
        return (), _with_appearance(settings, look) if look else settings

    def _candidates(self, job: DrawJob, settings: Settings, style: str | None) -> list[str]:
        """Backends to try in order (a request without references)."""
        if job.backend:
            return [job.backend]
        first = primary_backend(settings, selfie=job.selfie, style=style)
        return list(dict.fromkeys([first, *settings.routing.fallback]))

    async def _first_success(
        self,
        candidates: list[str],
        request: GenerationRequest,
        ticket: Ticket,
        settings: Settings,
        *,
        explicit: bool,
    ) -> GeneratedImage:
        """Try the candidates in order until one draws (fallback rules: module docstring)."""
        for index, name in enumerate(candidates):
            try:
                return await self._generate(name, request, ticket, settings)
            except BackendError as err:
                log.warning("backend %s failed: %s", name, err)
                if explicit or not err.fallback or index == len(candidates) - 1:
                    raise
        raise AssertionError("routing produced no candidate backend")

    async def _generate(
        self, name: str, request: GenerationRequest, ticket: Ticket, settings: Settings
    ) -> GeneratedImage:
        """One picture from one backend, its own retries included, holding a slot there."""
        backend = self.backend(name)
        backend_settings = settings.backends.get(name)
        if request.references and not (backend_settings and backend_settings.supports_references):
            request = replace(request, references=())  # only a selfie's optional persona images
        return await self._in_slot(name, ticket, settings, lambda: backend.generate(request))

    async def _in_slot(
        self, name: str, ticket: Ticket, settings: Settings, call: Callable[[], Awaitable[T]]
    ) -> T:
        """Run one backend ``call`` holding a slot of backend ``name``; count it in stats."""
        started = time.perf_counter()
        try:
            async with ticket.slot(name, max_concurrency=settings.limits.max_concurrency):
                outcome = await call()
        except BackendError:
            self.stats.record(name, ok=False, seconds=time.perf_counter() - started)
            raise
        self.stats.record(name, ok=True, seconds=time.perf_counter() - started)
        return outcome


REFERENCE_MAX_BYTES = 20 * 1024 * 1024
"""Largest reference image accepted from chat."""
REFERENCE_TIMEOUT = 30.0
MAX_REFERENCES = 4
"""More reference images than this in one request are ignored (backends take few)."""


async def fetch_references(
    session: aiohttp.ClientSession, sources: Sequence[ReferenceSource], *, proxy: str = ""
) -> tuple[ReferenceImage, ...]:
    """Fetch reference images: URLs over http(s) only, local files (CLI); capped, images only.

    Images already at hand (a picture the bot sent) pass through as they are.
    """
    options = RequestOptions(
        backend="参考图",
        timeout=REFERENCE_TIMEOUT,
        read_timeout=REFERENCE_TIMEOUT,
        max_bytes=REFERENCE_MAX_BYTES,
        proxy=proxy or None,
    )
    references = []
    for source in sources[:MAX_REFERENCES]:
        if isinstance(source, ReferenceImage):
            references.append(source)
            continue
        if isinstance(source, Avatar):
            references.append(await fetch_avatar(session, source, replace(options, backend="头像")))
            continue
        if isinstance(source, Path):
            data = await asyncio.to_thread(_read_reference_file, source)
        else:
            try:
                data, _ = await download(session, source, options)
            except BackendError as err:
                raise ReferenceImageError(f"reference download failed: {err}") from err
        mime = sniff_mime(data)
        if mime is None:
            raise ReferenceImageError(
                "reference is not an image", user_message="参考图不是有效的图片，请换一张"
            )
        references.append(ReferenceImage(data=data, mime=mime))
    return tuple(references)


def _read_reference_file(path: Path) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(REFERENCE_MAX_BYTES + 1)
    except OSError as err:
        raise ReferenceImageError(
            f"cannot read reference {path}: {err}", user_message=f"读不了参考图 {path}"
        ) from err
    if len(data) > REFERENCE_MAX_BYTES:
        raise ReferenceImageError(
            f"reference {path} is larger than {REFERENCE_MAX_BYTES} bytes",
            user_message="参考图太大了",
        )
    return data


def _with_appearance(settings: Settings, appearance: str) -> Settings:
    """``settings`` with another `persona.appearance` (for writing one prompt)."""
    persona = settings.persona.model_copy(update={"appearance": appearance})
    return settings.model_copy(update={"persona": persona})


_saved_counter = itertools.count()


def save_result(directory: Path, result: DrawResult, request_text: str) -> Path:
    """Write the image and a JSON sidecar (request, prompt, backend, seed, timings).

    File names come from the clock and a counter only, never from chat text, so nothing a
    member sends can steer the path outside ``directory``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    stem = f"{stamp}-{os.getpid()}-{next(_saved_counter)}"
    extension = result.image.mime.split("/")[-1].replace("jpeg", "jpg")
    image_path = directory / f"{stem}.{extension}"
    image_path.write_bytes(result.image.data)
    sidecar = {
        "request": request_text,
        "prompt": result.prompt,
        "backend": result.backend,
        "seed": result.seed,
        "timings": {k: round(v, 3) for k, v in result.timings.items()},
        "width": result.image.width,
        "height": result.image.height,
    }
    (directory / f"{stem}.json").write_text(
        json.dumps(sidecar, ensure_ascii=False, indent=2), "utf-8"
    )
    return image_path
