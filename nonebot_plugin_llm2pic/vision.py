"""Images for a vision LLM: any picture from chat → a small JPEG data URL content part.

``prepare_image`` is pure, synchronous Pillow work (no NoneBot): sniff and guard like
``imaging.py`` does, take a GIF's first frame, apply the EXIF orientation, flatten transparency
onto white, shrink (512 px for ``detail = "low"``, else ``vision_max_side``; never enlarge) and
encode as JPEG, lowering the quality from 85 to 60 and then the size until the data URL fits
``MAX_DATA_URL_BYTES``. Only what this module encoded ever reaches the LLM, so a non-image can
never be sent as one. The async wrappers run it in the image worker thread, so the event loop
never decodes pixels; ``fetch_vision_image`` downloads a chat picture first, with the same caps as
reference images.

``images_for_llm`` picks what the LLM sees for one request: its reference images first, labelled
「参考图 N」, then, only when ``vision_chat_images > 0`` and the request points at a picture
(这张, 同款, 照着…), the most recent pictures posted in the chat window, labelled 「群聊图片，来自
<昵称>」: fetched only then, never stickers, an expired one skipped silently.
"""

from __future__ import annotations

import base64
import io
import logging
import math
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image, ImageOps

from .exceptions import BackendError, BackendStatusError, ImageError, ReferenceImageError
from .history import HistoryEntry
from .imaging import _decode, _flatten, _opaque, _open, sniff_mime
from .intent import points_at_picture
from .settings import LlmSection, VisionDetail
from .transport import RequestOptions, download
from .worker import in_worker

if TYPE_CHECKING:
    import aiohttp  # imported lazily (transport.py says why)

DATA_URL_PREFIX = "data:image/jpeg;base64,"

MAX_DATA_URL_BYTES = 300_000
"""Largest data URL sent for one image (300 KB, counted in thousands to be safe either way)."""

LOW_DETAIL_SIDE = 512
"""Longest side for ``detail = "low"``: the provider looks at 512 px then anyway."""

JPEG_QUALITIES = (85, 75, 60)
"""Tried in turn; a photo fits at 85 almost always, noise needs the lower steps."""

DOWNSCALE_STEP_MIN = 0.5
DOWNSCALE_STEP_MAX = 0.9
"""Bounds of one shrink step once quality 60 still does not fit (at least 10 % smaller)."""

logger = logging.getLogger("nonebot_plugin_llm2pic")

NOT_AN_IMAGE_REPLY = "参考图不是有效的图片，请换一张"

_EXPIRED_BODY = re.compile(rb"expired", re.IGNORECASE)
"""QQ's CDN answers an expired link with 200 and ``{"retmsg":"download url has expired"}``."""
EXPIRED_PROBE_BYTES = 1024


class ImageGoneError(ReferenceImageError):
    """The picture's URL no longer serves it (4xx, or QQ's "expired" answer).

    A chat picture offered as context is skipped silently on this; a reference image the user
    asked for gets the inherited "可能已过期，请重新发送" reply.
    """


@dataclass(frozen=True)
class VisionImage:
    """A picture ready for the LLM: a JPEG data URL of at most ``MAX_DATA_URL_BYTES``."""

    data_url: str
    width: int
    height: int
    jpeg_bytes: int
    """Size of the JPEG itself (the data URL is about 4/3 of it)."""
    detail: VisionDetail

    def content_part(self) -> dict[str, object]:
        """The OpenAI chat content part carrying this image."""
        return {"type": "image_url", "image_url": {"url": self.data_url, "detail": self.detail}}


@dataclass(frozen=True)
class LabelledImage:
    """A picture for the LLM with the label the text gives it."""

    label: str
    image: VisionImage
    reference: bool = True
    """A reference image of the request (else a picture from the chat)."""


def longest_side(detail: VisionDetail, max_side: int) -> int:
    """The longest side an image is shrunk to for ``detail``."""
    return min(LOW_DETAIL_SIDE, max_side) if detail == "low" else max_side


def prepare_image(data: bytes, *, detail: VisionDetail, max_side: int) -> VisionImage:
    """Turn PNG/JPEG/WebP/GIF bytes into a ``VisionImage`` (synchronous; see the module doc).

    Raises ``ReferenceImageError`` for non-images, truncated or corrupt data and decompression
    bombs.
    """
    side = longest_side(detail, max_side)
    try:
        image, mime = _open(data)
        with image:
            # JPEG: decode at 1/2, 1/4 or 1/8 scale straight from the DCT (as thumbnail() would,
            # but before the pixels load, so that a corrupt file fails in _decode).
            image.draft(None, (side, side))
            _decode(image, mime)
            return _encode_within(_small_opaque(image, side), detail)
    except ImageError as err:
        raise ReferenceImageError(str(err), user_message=NOT_AN_IMAGE_REPLY) from err


async def prepare_image_async(data: bytes, *, detail: VisionDetail, max_side: int) -> VisionImage:
    """``prepare_image`` in the image worker thread."""
    return await in_worker(prepare_image, data, detail=detail, max_side=max_side)


async def fetch_vision_image(
    session: aiohttp.ClientSession,
    url: str,
    *,
    detail: VisionDetail,
    max_side: int,
    proxy: str = "",
) -> VisionImage:
    """Download a chat picture (http(s), capped like reference images) and prepare it.

    Raises ``ImageGoneError`` when the URL answers 4xx or says it expired, and
    ``ReferenceImageError`` for other download failures and for non-images.
    """
    # Imported at call time: the pipeline uses this module, so a top-level import is a cycle.
    from .pipeline import REFERENCE_MAX_BYTES, REFERENCE_TIMEOUT

    options = RequestOptions(
        backend="参考图",
        timeout=REFERENCE_TIMEOUT,
        read_timeout=REFERENCE_TIMEOUT,
        max_bytes=REFERENCE_MAX_BYTES,
        proxy=proxy or None,
    )
    try:
        data, _ = await download(session, url, options)
    except BackendStatusError as err:
        if err.status < 500:
            raise ImageGoneError(f"image URL answered HTTP {err.status}") from err
        raise ReferenceImageError(f"image download failed: {err}") from err
    except BackendError as err:
        raise ReferenceImageError(f"image download failed: {err}") from err
    if sniff_mime(data) is None and _EXPIRED_BODY.search(data[:EXPIRED_PROBE_BYTES]):
        raise ImageGoneError("image URL says it has expired")
    return await prepare_image_async(data, detail=detail, max_side=max_side)


def _small_opaque(image: Image.Image, side: int) -> Image.Image:
    """``image`` shrunk to ``side``, upright, transparency flattened on white (RGB or L)."""
    transparent = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    # Resized with its alpha (Pillow premultiplies it), flattened once small: cheaper.
    work = image.convert("RGBA") if transparent else _opaque(image)
    work.thumbnail((side, side))
    ImageOps.exif_transpose(work, in_place=True)
    return _flatten(work) if transparent else work


def _encode_within(image: Image.Image, detail: VisionDetail) -> VisionImage:
    """JPEG at falling quality, then smaller at the lowest quality, until the data URL fits."""
    qualities = list(JPEG_QUALITIES)
    while True:
        jpeg = _jpeg(image, qualities[0])
        url_bytes = _data_url_bytes(len(jpeg))
        if url_bytes <= MAX_DATA_URL_BYTES:
            data_url = DATA_URL_PREFIX + base64.b64encode(jpeg).decode("ascii")
            return VisionImage(data_url, image.width, image.height, len(jpeg), detail)
        if len(qualities) > 1:
            qualities.pop(0)
            continue
        # Bytes scale roughly with the pixel count: shrink both edges by sqrt(cap / size). A
        # 16 px JPEG is a few hundred bytes, so this ends.
        ratio = math.sqrt(MAX_DATA_URL_BYTES / url_bytes) * 0.95
        factor = min(DOWNSCALE_STEP_MAX, max(DOWNSCALE_STEP_MIN, ratio))
        size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
        image = image.resize(size, Image.Resampling.LANCZOS)


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _data_url_bytes(jpeg_bytes: int) -> int:
    return len(DATA_URL_PREFIX) + 4 * math.ceil(jpeg_bytes / 3)


async def images_for_llm(
    session: aiohttp.ClientSession,
    llm: LlmSection,
    *,
    references: Sequence[bytes],
    request_text: str,
    history: Sequence[HistoryEntry],
    skip_urls: Collection[str] = (),
    proxy: str = "",
) -> tuple[LabelledImage, ...]:
    """What the LLM sees for one request: references, then chat pictures it points at.

    At most ``llm.vision_max_images`` in all. A reference that is not an image raises
    ``ReferenceImageError``; a chat picture that cannot be had is skipped. ``skip_urls``: chat
    pictures that are references already (the replied-to one).
    """
    seen = [
        LabelledImage(
            f"参考图 {number}",
            await prepare_image_async(data, detail=llm.vision_detail, max_side=llm.vision_max_side),
        )
        for number, data in enumerate(references[: llm.vision_max_images], 1)
    ]
    room = min(llm.vision_chat_images, llm.vision_max_images - len(seen))
    if room > 0 and points_at_picture(request_text):
        seen += await _chat_pictures(session, llm, history, room, skip_urls, proxy)
    return tuple(seen)


async def _chat_pictures(
    session: aiohttp.ClientSession,
    llm: LlmSection,
    history: Sequence[HistoryEntry],
    room: int,
    skip_urls: Collection[str],
    proxy: str,
) -> list[LabelledImage]:
    """Up to ``room`` of the newest posted pictures (no stickers), oldest first."""
    found: list[LabelledImage] = []
    posted = [
        (entry.sender, image.url)
        for entry in history
        if not entry.is_bot
        for image in entry.images
        if image.sub_type == 0 and image.url not in skip_urls
    ]
    for sender, url in reversed(posted):
        if len(found) >= room:
            break
        try:
            image = await fetch_vision_image(
                session, url, detail=llm.vision_detail, max_side=llm.vision_max_side, proxy=proxy
            )
        except ImageGoneError:
            continue  # QQ's links expire; an old picture is simply not offered
        except ReferenceImageError as err:
            logger.info("chat picture skipped: %s", err)
            continue
        found.append(LabelledImage(f"群聊图片，来自 {sender}", image, reference=False))
    found.reverse()
    return found
