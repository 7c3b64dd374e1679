"""Pure Pillow post-processing: sniff, validate, crop, re-encode to a size cap (SPEC §4, §6).

Everything here is synchronous bytes → bytes work with no NoneBot import, so the CLI and the
benchmarks use it as is; ``process_image_async`` runs it in the worker thread (``worker.py``) so
the event loop never decodes pixels.

Cost model (SPEC §6): re-encoding a photo as PNG costs about 5x a JPEG q90, so the original bytes
are returned untouched unless a crop is asked for or they exceed the size cap, and a re-encode
picks JPEG for opaque images (PNG only when small, WebP/PNG only for real transparency).
Animated GIF/WebP inputs are treated as stills: a re-encode keeps the first frame.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from typing import cast

from PIL import Image

from .exceptions import ImageError
from .settings import CropPosition
from .worker import in_worker

logger = logging.getLogger("nonebot_plugin_llm2pic")


MAX_IMAGE_PIXELS = 64 * 1024 * 1024
"""Decompression-bomb guard, checked from the header before any pixel is decoded."""

SMALL_IMAGE_PIXELS = 512 * 512
"""Opaque PNGs up to this many pixels stay PNG on re-encode: lossless and still cheap."""

JPEG_QUALITIES = (90, 80, 70)
"""Tried in turn for opaque images until the result fits ``max_bytes``."""

WEBP_QUALITIES = (90, 80, 70)
"""Tried in turn for transparent images whose PNG does not fit ``max_bytes``."""

DOWNSCALE_QUALITY = 75
"""Quality used once lowering quality alone did not fit and the image is being downscaled."""

MAX_DOWNSCALE_STEPS = 6
"""Bound on downscale attempts; each step shrinks by at least 10% and at most 50%."""

MIN_EDGE_PIXELS = 16
"""Never downscale an edge below this; give up with ``ImageError`` instead."""

CONVERT_QUALITY = 90
"""Lossy quality for ``convert_image`` (CLI ``-o out.jpg/webp``)."""

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)

_PIL_FORMAT = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP", "image/gif": "GIF"}
_MIME_BY_PIL_FORMAT = {fmt: mime for mime, fmt in _PIL_FORMAT.items()}

_OUTPUT_MIME = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
}

# Modes whose pixels are not RGB/grey: their ICC profile would mislabel the colours once the
# pixels are converted to RGB, so it is dropped.
_FOREIGN_COLOUR_MODES = frozenset({"CMYK", "YCbCr", "LAB", "HSV"})

# Errors Pillow raises for unreadable or truncated data (UnidentifiedImageError is an OSError).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError)


@dataclass(frozen=True)
class CropSpec:
    """Remove ``pixels`` rows/columns from one edge (watermark removal, ``[generation]``)."""

    position: CropPosition
    pixels: int


@dataclass(frozen=True)
class ProcessedImage:
    """The image to send; ``data`` is the input object itself when ``reencoded`` is false."""

    data: bytes
    mime: str
    width: int
    height: int
    reencoded: bool


def sniff_mime(data: bytes) -> str | None:
    """Return the MIME type from the magic bytes (PNG, JPEG, WebP, GIF), or None."""
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def process_image(data: bytes, *, crop: CropSpec | None, max_bytes: int) -> ProcessedImage:
    """Validate, optionally crop, and fit ``data`` under ``max_bytes`` (> 0) for sending.

    Without a crop and within the cap the input object comes back unchanged. A crop that would
    remove half or more of the image along its axis is skipped (logged): ``crop_pixels`` is a
    fixed count meant for full-size results, and a small image must not be cut to a sliver.
    Raises ``ImageError`` for non-images, truncated data, bombs, or when nothing fits.
    """
    image, mime = _open(data)
    with image:
        box = _crop_box(image.size, crop)
        if box is None and len(data) <= max_bytes:
            width, height = image.size
            _check_whole(image, mime)
            return ProcessedImage(data, mime, width, height, reencoded=False)
        _decode(image, mime)
        icc = _icc_profile(image)
        work = image.crop(box) if box is not None else image
        return _encode_within(work, source_mime=mime, icc=icc, max_bytes=max_bytes)


async def process_image_async(
    data: bytes, *, crop: CropSpec | None, max_bytes: int
) -> ProcessedImage:
    """``process_image`` in the image worker thread, so decoding never blocks the event loop."""
    return await in_worker(process_image, data, crop=crop, max_bytes=max_bytes)


def convert_image(data: bytes, fmt: str) -> bytes:
    """Convert to ``fmt`` (``png``, ``jpg``/``jpeg``, ``webp``; a leading dot is fine).

    Returns ``data`` itself when it already has that format. JPEG has no alpha, so transparent
    areas are flattened onto white.
    """
    target = _OUTPUT_MIME.get(fmt.lower().lstrip("."))
    if target is None:
        raise ImageError(
            f"unsupported output format {fmt!r} (use png, jpg or webp)",
            user_message="不支持的图片格式，请用 png、jpg 或 webp",
        )
    image, mime = _open(data)
    with image:
        _decode(image, mime)
        if mime == target:
            return data
        icc = _icc_profile(image)
        has_alpha = _has_transparency(image)
        if target == "image/jpeg":
            work = _flatten(image) if has_alpha else _opaque(image)
        else:
            work = image.convert("RGBA") if has_alpha else _opaque(image)
        return _save(work, _PIL_FORMAT[target], CONVERT_QUALITY, icc)


def _open(data: bytes) -> tuple[Image.Image, str]:
    """Open lazily (header only) with the format the magic bytes name, and apply the bomb guard."""
    mime = sniff_mime(data)
    if mime is None:
        raise ImageError(
            f"not a PNG/JPEG/WebP/GIF image (starts with {data[:8].hex()})",
            user_message="生成结果不是图片",
        )
    try:
        image = Image.open(io.BytesIO(data), formats=[_PIL_FORMAT[mime]])
    except Image.DecompressionBombError as err:
        raise _bomb_error(str(err)) from err
    except _DECODE_ERRORS as err:
        raise ImageError(
            f"unreadable {mime} header: {err}", user_message="生成的图片已损坏，无法读取"
        ) from err
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        image.close()
        raise _bomb_error(f"{width}x{height} exceeds {MAX_IMAGE_PIXELS} pixels")
    return image, mime


def _bomb_error(detail: str) -> ImageError:
    return ImageError(
        f"image too large to decode safely: {detail}", user_message="生成的图片尺寸过大，已拒绝"
    )


def _decode(image: Image.Image, mime: str) -> None:
    """Decode the pixels (first frame), turning truncation and corruption into ``ImageError``."""
    try:
        image.load()
    except _DECODE_ERRORS as err:
        raise _corrupt(mime, err) from err


def _corrupt(mime: str, err: BaseException) -> ImageError:
    return ImageError(
        f"{mime} data is truncated or corrupt: {err}", user_message="生成的图片数据不完整"
    )


def _check_whole(image: Image.Image, mime: str) -> None:
    """Reject truncated data that is sent as is, decoding the pixels only where needed.

    A PNG is checked chunk by chunk up to IEND, CRCs included (~1 ms for a 1024² photo, where
    decoding takes ~25 ms); other formats decode, which is cheap for them.
    """
    if mime != "image/png":
        _decode(image, mime)
        return
    try:
        image.verify()
    except _DECODE_ERRORS as err:
        raise _corrupt(mime, err) from err


def _crop_box(size: tuple[int, int], crop: CropSpec | None) -> tuple[int, int, int, int] | None:
    """The box to keep, or None when there is nothing (sensible) to crop."""
    if crop is None or crop.pixels <= 0:
        return None
    width, height = size
    along = height if crop.position in ("top", "bottom") else width
    if crop.pixels * 2 >= along:
        logger.warning(
            "crop of %d px from the %s skipped: the image is only %dx%d",
            crop.pixels,
            crop.position,
            width,
            height,
        )
        return None
    n = crop.pixels
    match crop.position:
        case "top":
            return (0, n, width, height)
        case "bottom":
            return (0, 0, width, height - n)
        case "left":
            return (n, 0, width, height)
        case "right":
            return (0, 0, width - n, height)


def _icc_profile(image: Image.Image) -> bytes | None:
    """The ICC profile to carry over, unless the pixels leave its colour space (CMYK → RGB)."""
    return None if image.mode in _FOREIGN_COLOUR_MODES else image.info.get("icc_profile")


def _has_transparency(image: Image.Image) -> bool:
    """True only if some pixel is not fully opaque (an all-255 alpha band is not transparency)."""
    if image.mode not in ("RGBA", "LA", "PA") and "transparency" not in image.info:
        return False
    alpha = image.convert("RGBA").getchannel("A")
    low, _high = cast("tuple[int, int]", alpha.getextrema())  # one band: (min, max)
    return low < 255


def _opaque(image: Image.Image) -> Image.Image:
    """RGB or L, the modes every target format (JPEG included) stores without surprises."""
    return image if image.mode in ("RGB", "L") else image.convert("RGB")


def _flatten(image: Image.Image) -> Image.Image:
    """Composite a transparent image onto white (for JPEG)."""
    rgba = image.convert("RGBA")
    background = Image.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


def _save(image: Image.Image, fmt: str, quality: int | None, icc: bytes | None) -> bytes:
    buffer = io.BytesIO()
    params: dict[str, object] = {}
    if icc:
        params["icc_profile"] = icc
    if fmt in ("JPEG", "WEBP") and quality is not None:
        params["quality"] = quality
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _encode_within(
    image: Image.Image, *, source_mime: str, icc: bytes | None, max_bytes: int
) -> ProcessedImage:
    """Encode with the cheapest fitting format, then lower quality, then downscale."""
    if _has_transparency(image):
        work = image.convert("RGBA")
        plan: list[tuple[str, int | None]] = [("PNG", None)]
        plan += [("WEBP", q) for q in WEBP_QUALITIES]
        lossy = "WEBP"
    else:
        work = _opaque(image)
        plan = []
        if source_mime == "image/png" and work.width * work.height <= SMALL_IMAGE_PIXELS:
            plan.append(("PNG", None))
        plan += [("JPEG", q) for q in JPEG_QUALITIES]
        lossy = "JPEG"

    encoded = b""
    for fmt, quality in plan:
        encoded = _save(work, fmt, quality, icc)
        if len(encoded) <= max_bytes:
            return _result(encoded, fmt, work)

    # Bytes scale roughly with pixel count, so shrink both edges by sqrt(cap / size), with a
    # margin; clamped so a step always makes progress but never throws away most of the image.
    for _ in range(MAX_DOWNSCALE_STEPS):
        factor = min(0.9, max(0.5, math.sqrt(max_bytes / len(encoded)) * 0.95))
        size = (round(work.width * factor), round(work.height * factor))
        if min(size) < MIN_EDGE_PIXELS:
            break
        work = work.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
        encoded = _save(work, lossy, DOWNSCALE_QUALITY, icc)
        if len(encoded) <= max_bytes:
            return _result(encoded, lossy, work)
    raise ImageError(
        f"could not fit the image under {max_bytes} bytes (last attempt {len(encoded)} bytes)",
        user_message="图片太大，压缩后仍超过发送上限",
    )


def _result(encoded: bytes, fmt: str, image: Image.Image) -> ProcessedImage:
    return ProcessedImage(
        encoded, _MIME_BY_PIL_FORMAT[fmt], image.width, image.height, reencoded=True
    )
