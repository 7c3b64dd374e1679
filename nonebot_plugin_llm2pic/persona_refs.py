"""The bot's face: ``persona.reference_images`` loaded, and described once for text-only backends.

Entries are image files (relative to the config file, inside its folder or the data dir) or
http(s) URLs. They are optional context for selfies: an entry that cannot be read is logged and
skipped, never a refusal. ``PersonaLooks`` keeps the vision LLM's description of a set of images
by their content hash, in memory and in a JSON file in the data dir, so each set is described
once. No NoneBot imports.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .backends import ReferenceImage
from .exceptions import BackendError, Llm2PicError
from .imaging import sniff_mime
from .settings import is_url, reference_problem, resolve_reference
from .settings_store import atomic_write
from .transport import RequestOptions, download

if TYPE_CHECKING:
    import aiohttp  # imported lazily (transport.py says why)

log = logging.getLogger("nonebot_plugin_llm2pic")

PERSONA_MAX_BYTES = 20 * 1024 * 1024
"""Largest persona reference image read or downloaded."""
PERSONA_TIMEOUT = 30.0
MAX_PERSONA_IMAGES = 4
"""Persona images sent along with one selfie (backends take few references)."""
LOOKS_FILENAME = "persona_looks.json"


@dataclass(frozen=True)
class PersonaImage:
    """One entry of ``persona.reference_images`` as ``check`` and ``persona ref list`` see it."""

    entry: str
    path: Path | None
    """The resolved file; None for a URL."""
    size: int | None
    """Bytes on disk; None for a URL or a file that cannot be read."""
    problem: str = ""
    """Why it cannot be used ("" when it can, as far as can be told without a download)."""


def inspect(entries: Sequence[str], roots: tuple[Path, ...]) -> list[PersonaImage]:
    """Each entry resolved and checked (files: inside the roots, present, an image)."""
    found = []
    for entry in entries:
        if is_url(entry):
            found.append(PersonaImage(entry, None, None))
            continue
        path = resolve_reference(entry, roots)
        problem = reference_problem(entry, roots)
        size = None
        if not problem:
            try:
                size = path.stat().st_size
                with path.open("rb") as file:
                    head = file.read(64)
                problem = "" if sniff_mime(head) else "不是图片"
            except OSError:
                problem = "找不到文件"
        found.append(PersonaImage(entry, path, size, problem))
    return found


async def load_persona_images(
    session: aiohttp.ClientSession,
    entries: Sequence[str],
    roots: tuple[Path, ...],
    *,
    proxy: str = "",
) -> tuple[ReferenceImage, ...]:
    """The usable persona images, in order, at most ``MAX_PERSONA_IMAGES``; others are logged."""
    options = RequestOptions(
        backend="形象参考图",
        timeout=PERSONA_TIMEOUT,
        read_timeout=PERSONA_TIMEOUT,
        max_bytes=PERSONA_MAX_BYTES,
        proxy=proxy or None,
    )
    images: list[ReferenceImage] = []
    for entry in entries:
        if len(images) == MAX_PERSONA_IMAGES:
            break
        try:
            if is_url(entry):
                data, _ = await download(session, entry, options)
            else:
                data = await asyncio.to_thread(_read_file, entry, roots)
        except (BackendError, OSError, ValueError) as err:
            log.warning("persona reference image %s skipped: %s", entry, err)
            continue
        mime = sniff_mime(data)
        if mime is None:
            log.warning("persona reference image %s skipped: not an image", entry)
            continue
        images.append(ReferenceImage(data=data, mime=mime))
    return tuple(images)


def _read_file(entry: str, roots: tuple[Path, ...]) -> bytes:
    problem = reference_problem(entry, roots)
    if problem:
        raise ValueError(problem)
    with resolve_reference(entry, roots).open("rb") as file:
        data = file.read(PERSONA_MAX_BYTES + 1)
    if len(data) > PERSONA_MAX_BYTES:
        raise ValueError(f"larger than {PERSONA_MAX_BYTES} bytes")
    return data


def content_key(images: Sequence[ReferenceImage]) -> str:
    """A hash of the images' bytes, in order: the description cache's key."""
    digest = hashlib.sha256()
    for image in images:
        digest.update(hashlib.sha256(image.data).digest())
    return digest.hexdigest()


Describe = Callable[[tuple[ReferenceImage, ...]], Awaitable[str]]
"""Asks a vision LLM what the character in the images looks like."""


class PersonaLooks:
    """Descriptions of persona image sets, by content hash; persisted as JSON in ``path``."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._looks: dict[str, str] | None = None
        self._failed: set[str] = set()
        """Sets whose description failed since start: not asked again until a restart."""
        self._lock = asyncio.Lock()

    async def describe(self, images: tuple[ReferenceImage, ...], ask: Describe) -> str:
        """The cached description of ``images``, asking ``ask`` once; "" when it cannot."""
        if not images:
            return ""
        key = content_key(images)
        async with self._lock:  # two selfies at once make one call
            looks = await asyncio.to_thread(self._load) if self._looks is None else self._looks
            self._looks = looks
            if key in looks or key in self._failed:
                return looks.get(key, "")
            try:
                text = " ".join((await ask(images)).split())
            except Llm2PicError as err:
                log.warning("persona images could not be described: %s", err)
                text = ""
            if not text:
                self._failed.add(key)
                return ""
            looks[key] = text
            await asyncio.to_thread(self._save, dict(looks))
            return text

    def _load(self) -> dict[str, str]:
        if self.path is None:
            return {}
        try:
            data = json.loads(self.path.read_text("utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            log.warning("persona looks cache %s unreadable, starting afresh: %s", self.path, err)
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): v for k, v in data.items() if isinstance(v, str)}

    def _save(self, looks: dict[str, str]) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, json.dumps(looks, ensure_ascii=False, indent=2))
        except OSError as err:
            log.warning("persona looks cache %s not saved: %s", self.path, err)
