"""Pure Pillow post-processing: sniff, validate, reject blanks, crop, pick the bytes to send.

Everything here is synchronous bytes → bytes work with no NoneBot import, so the CLI and the
benchmarks use it as is; ``process_image_async`` runs it in the worker thread (``worker.py``) so
the event loop never decodes pixels.

What is sent (``plugin.send_format``): QQ uploads of multi-MB PNGs take minutes through some
OneBot implementations, so by default an opaque image goes out as JPEG q90 with full-resolution
chroma whenever that saves at least 30 % of the bytes (photos: typically 70–80 %), and as is
otherwise (flat illustrations, text, where PNG is smaller anyway). Transparency stays PNG. WebP
is always converted, since QQ clients show it badly. Cost model: a PNG encode of a photo costs
about 10x a JPEG q90, so PNG is only encoded when the JPEG did not pay off, which happens on flat
content where PNG encoding is cheap. Animated GIF/WebP inputs are treated as stills: a re-encode
keeps the first frame.
"""

from __future__ import annotations

import functools
import io
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from PIL import Image, ImageStat

from .exceptions import FilteredImageError, ImageError
from .settings import CropPosition, SendFormat
from .worker import in_worker

logger = logging.getLogger("nonebot_plugin_llm2pic")


MAX_IMAGE_PIXELS = 64 * 1024 * 1024
"""Decompression-bomb guard, checked from the header before any pixel is decoded."""

JPEG_SAVING = 0.7
"""``auto`` sends the JPEG only when it is at most this share of the original's bytes."""

JPEG_STEPS: tuple[tuple[int, int], ...] = ((90, 0), (90, 2), (80, 2), (70, 2))
"""(quality, chroma subsampling) tried in turn until an opaque image fits ``max_bytes``; the
first is what ``auto`` and ``jpeg`` send (0 = 4:4:4, keeping coloured edges and text sharp;
2 = 4:2:0, about half the bytes on photos)."""

BLANK_LUMA_STDDEV = 1.0
BLANK_LUMA_MAX = 4
"""A result whose luma standard deviation is below ``BLANK_LUMA_STDDEV``, or whose every luma
value is at most ``BLANK_LUMA_MAX``, is a safety checker's placeholder and is not sent."""

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
_LOSSY_MIMES = frozenset({"image/jpeg", "image/webp"})

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


def process_image(
    data: bytes, *, crop: CropSpec | None, max_bytes: int, send_format: SendFormat = "auto"
) -> ProcessedImage:
    """Validate, reject a blank result, optionally crop, and pick the bytes to send.

    ``send_format``: ``auto`` sends an opaque image as JPEG q90 4:4:4 when that is at most
    ``JPEG_SAVING`` of the original's bytes, else as is; ``original`` sends it as is; ``jpeg`` and
    ``png`` convert (JPEG flattens transparency onto white). Transparency stays PNG in ``auto`` and
    ``original``; WebP is always converted (JPEG, or PNG with transparency). Once a crop forces a
    re-encode, ``original`` follows the ``auto`` rule (PNG when the JPEG does not pay off).
    When the input object itself is chosen it comes back unchanged (``reencoded`` false).

    Whatever is chosen must fit ``max_bytes`` (> 0): above it, lower JPEG settings and then
    downscaling are tried (transparent images: PNG downscaled). A crop that would remove half or
    more of the image along its axis is skipped (logged): ``crop_pixels`` is a fixed count meant
    for full-size results, and a small image must not be cut to a sliver.
    Raises ``FilteredImageError`` for a blank result, ``ImageError`` for non-images, truncated
    data, bombs, or when nothing fits.
    """
    image, mime = _open(data)
    with image:
        _decode(image, mime)
        _reject_blank(image)
        box = _crop_box(image.size, crop)
        work = image.crop(box) if box is not None else image
        transparent = _has_transparency(work)
        alpha = transparent and send_format != "jpeg"
        if alpha:
            work = work.convert("RGBA")
        else:
            work = _flatten(work) if transparent else _opaque(work)
        icc = _icc_profile(image)
        encode = _encoder(work, icc)
        as_is = box is None and mime != "image/webp"
        chosen = _preferred(data, mime, encode, send_format, alpha=alpha, as_is=as_is)
        if len(chosen) <= max_bytes:
            if chosen is data:
                _check_whole(data, mime)
                return ProcessedImage(data, mime, work.width, work.height, reencoded=False)
            return _result(chosen, work)
        return _fit(work, encode, icc, alpha=alpha, max_bytes=max_bytes)


async def process_image_async(
    data: bytes, *, crop: CropSpec | None, max_bytes: int, send_format: SendFormat = "auto"
) -> ProcessedImage:
    """``process_image`` in the image worker thread, so decoding never blocks the event loop."""
    return await in_worker(
        process_image, data, crop=crop, max_bytes=max_bytes, send_format=send_format
    )


def output_mime(fmt: str) -> str:
    """The MIME type ``convert_image`` writes for ``fmt``; ``ImageError`` when it has none."""
    target = _OUTPUT_MIME.get(fmt.lower().lstrip("."))
    if target is None:
        raise ImageError(
            f"unsupported output format {fmt!r} (use png, jpg or webp)",
            user_message="不支持的图片格式，请用 png、jpg 或 webp",
        )
    return target


def convert_image(data: bytes, fmt: str) -> bytes:
    """Convert to ``fmt`` (``png``, ``jpg``/``jpeg``, ``webp``; a leading dot is fine).

    Returns ``data`` itself when it already has that format. JPEG has no alpha, so transparent
    areas are flattened onto white.
    """
    target = output_mime(fmt)
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


def _check_whole(data: bytes, mime: str) -> None:
    """Reject a PNG sent as is that is cut or corrupt after its pixels (decoding stops there).

    ``verify`` walks every chunk up to IEND, CRCs included (~1 ms for a 1024² photo); it needs
    a freshly opened image. Other formats were checked by decoding them.
    """
    if mime != "image/png":
        return
    image, _ = _open(data)
    with image:
        try:
            image.verify()
        except _DECODE_ERRORS as err:
            raise _corrupt(mime, err) from err


def _reject_blank(image: Image.Image) -> None:
    """Raise ``FilteredImageError`` when the picture is blank (a safety checker's placeholder).

    One luma histogram at full resolution: ~1 ms at 1024², ~4 ms at 2048², about what making a
    downscaled copy costs, and exact (averaging would lower the deviation and hide bright pixels).
    """
    stat = ImageStat.Stat(image.convert("L"))
    stddev = stat.stddev[0]
    _low, high = stat.extrema[0]
    if stddev < BLANK_LUMA_STDDEV or high <= BLANK_LUMA_MAX:
        raise FilteredImageError(
            f"blank result filtered ({image.width}x{image.height}, luma stddev {stddev:.2f}, "
            f"max {high})"
        )


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


def _save(
    image: Image.Image,
    fmt: str,
    quality: int | None,
    icc: bytes | None,
    subsampling: int | None = None,
) -> bytes:
    buffer = io.BytesIO()
    params: dict[str, object] = {}
    if icc:
        params["icc_profile"] = icc
    if fmt in ("JPEG", "WEBP") and quality is not None:
        params["quality"] = quality
    if fmt == "JPEG" and subsampling is not None:
        params["subsampling"] = subsampling
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


_Encode = Callable[[str, int | None, int | None], bytes]


def _encoder(image: Image.Image, icc: bytes | None) -> _Encode:
    """``encode(fmt, quality, subsampling)`` for ``image``, each encoding computed once."""

    @functools.cache
    def encode(fmt: str, quality: int | None = None, subsampling: int | None = None) -> bytes:
        return _save(image, fmt, quality, icc, subsampling)

    return encode


def _preferred(
    data: bytes, mime: str, encode: _Encode, send_format: SendFormat, *, alpha: bool, as_is: bool
) -> bytes:
    """The bytes ``send_format`` asks for before the size cap; ``data`` itself means as is.

    ``as_is``: the original may be sent (no crop, not WebP); ``alpha``: transparency is kept.
    """
    jpeg_quality, jpeg_subsampling = JPEG_STEPS[0]
    if send_format == "jpeg":
        if as_is and mime == "image/jpeg":
            return data
        return encode("JPEG", jpeg_quality, jpeg_subsampling)
    if send_format == "png":
        return data if as_is and mime == "image/png" else encode("PNG", None, None)
    if alpha:
        return data if as_is else encode("PNG", None, None)
    if send_format == "original" and as_is:
        return data
    jpeg = encode("JPEG", jpeg_quality, jpeg_subsampling)
    # A lossy source that must be re-encoded anyway goes out as JPEG: PNG would only be bigger.
    if len(jpeg) <= JPEG_SAVING * len(data) or (not as_is and mime in _LOSSY_MIMES):
        return jpeg
    return data if as_is else encode("PNG", None, None)


def _fit(
    image: Image.Image, encode: _Encode, icc: bytes | None, *, alpha: bool, max_bytes: int
) -> ProcessedImage:
    """Lower the JPEG settings, then downscale, until the image fits ``max_bytes``.

    A transparent image stays PNG and is only downscaled.
    """
    fmt = "PNG" if alpha else "JPEG"
    steps: tuple[tuple[int | None, int | None], ...] = ((None, None),) if alpha else JPEG_STEPS
    encoded = b""
    for quality, subsampling in steps:
        encoded = encode(fmt, quality, subsampling)
        if len(encoded) <= max_bytes:
            return _result(encoded, image)

    # Bytes scale roughly with pixel count, so shrink both edges by sqrt(cap / size), with a
    # margin; clamped so a step always makes progress but never throws away most of the image.
    quality = None if alpha else DOWNSCALE_QUALITY
    work = image
    for _ in range(MAX_DOWNSCALE_STEPS):
        factor = min(0.9, max(0.5, math.sqrt(max_bytes / len(encoded)) * 0.95))
        size = (round(work.width * factor), round(work.height * factor))
        if min(size) < MIN_EDGE_PIXELS:
            break
        work = work.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
        encoded = _save(work, fmt, quality, icc)
        if len(encoded) <= max_bytes:
            return _result(encoded, work)
    raise ImageError(
        f"could not fit the image under {max_bytes} bytes (last attempt {len(encoded)} bytes)",
        user_message="图片太大，压缩后仍超过发送上限",
    )


def _result(encoded: bytes, image: Image.Image) -> ProcessedImage:
    mime = sniff_mime(encoded)
    assert mime is not None, "Pillow wrote an unknown format"
    return ProcessedImage(encoded, mime, image.width, image.height, reencoded=True)
