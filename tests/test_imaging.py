"""Golden-image tests for ``imaging``: inputs are generated deterministically, never stored.

Sanity timing on the dev machine (2 cores, median of 5, photo-like gradient + noise PNG,
crop 40 px + JPEG q90 + base64): 1024² ≈ 33 ms, 2048² ≈ 135 ms; PNG decoding is most of it.
Not asserted here (timing tests flake); ``bench/`` measures the SPEC §6 budgets.
"""

from __future__ import annotations

import functools
import io
import random
import struct
import zlib

import pytest
from PIL import Image, ImageChops, ImageCms, ImageStat

from nonebot_plugin_llm2pic.exceptions import ImageError
from nonebot_plugin_llm2pic.imaging import (
    MAX_IMAGE_PIXELS,
    CropSpec,
    convert_image,
    process_image,
    process_image_async,
    sniff_mime,
)
from nonebot_plugin_llm2pic.settings import CropPosition

BIG_CAP = 50_000_000


@functools.cache
def photo(width: int, height: int, *, seed: int = 1, mode: str = "RGB") -> Image.Image:
    """Gradient plus seeded noise: photo-like and hard to compress (cached: do not mutate)."""
    rng = random.Random(seed)
    bands = []
    for band in range(3):
        gradient = Image.linear_gradient("L").rotate(band * 90).resize((width, height))
        grain = Image.frombytes("L", (width, height), rng.randbytes(width * height))
        bands.append(Image.blend(gradient, grain, 0.2))
    image = Image.merge("RGB", bands)
    return image if mode == "RGB" else image.convert(mode)


def texture(width: int, height: int, *, seed: int = 3) -> Image.Image:
    """Smooth random structure: JPEG keeps it well, yet a 1 px shift changes it a lot."""
    rng = random.Random(seed)
    small = (width // 8, height // 8)
    coarse = Image.frombytes("RGB", small, rng.randbytes(small[0] * small[1] * 3))
    return coarse.resize((width, height), Image.Resampling.BICUBIC)


def transparent(width: int, height: int) -> Image.Image:
    """A photo with a real alpha gradient (some pixels fully transparent)."""
    image = photo(width, height, seed=2).convert("RGBA")
    image.putalpha(Image.linear_gradient("L").resize((width, height)))
    return image


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def same_pixels(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and ImageChops.difference(a, b).getbbox() is None


def mean_error(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute per-channel difference (for lossy paths)."""
    assert a.size == b.size
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / len(a.getbands())


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG claiming huge dimensions with a few bytes of pixel data: a decompression bomb."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 1024))
        + png_chunk(b"IEND", b"")
    )


CROP_BOXES: dict[tuple[CropPosition, int], tuple[int, int, int, int]] = {
    # (position, pixels) on a 200x120 image -> the box that must remain
    ("top", 10): (0, 10, 200, 120),
    ("bottom", 10): (0, 0, 200, 110),
    ("left", 30): (30, 0, 200, 120),
    ("right", 30): (0, 0, 170, 120),
}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (encode(photo(8, 8), "PNG"), "image/png"),
        (encode(photo(8, 8), "JPEG"), "image/jpeg"),
        (encode(photo(8, 8), "WEBP"), "image/webp"),
        (encode(photo(8, 8), "GIF"), "image/gif"),
        (b"GIF87a" + b"\0" * 10, "image/gif"),
        (b"RIFF\0\0\0\0WAVEfmt ", None),
        (b"<html>not an image</html>", None),
        (b"", None),
    ],
)
def test_sniff_mime(data: bytes, expected: str | None) -> None:
    """Magic bytes decide the MIME type; anything else is None."""
    assert sniff_mime(data) == expected


def test_no_change_returns_the_same_bytes_object() -> None:
    """Without a crop and under the cap, the input object itself comes back, not re-encoded."""
    data = encode(photo(64, 48), "PNG")
    result = process_image(data, crop=None, max_bytes=BIG_CAP)
    assert result.data is data
    assert (result.mime, result.width, result.height, result.reencoded) == (
        "image/png",
        64,
        48,
        False,
    )


@pytest.mark.parametrize(("position", "pixels"), list(CROP_BOXES))
def test_crop_small_png_is_lossless(position: CropPosition, pixels: int) -> None:
    """A small opaque PNG is cropped to the exact region and stays PNG, pixel for pixel."""
    source = photo(200, 120)
    result = process_image(
        encode(source, "PNG"), crop=CropSpec(position, pixels), max_bytes=BIG_CAP
    )
    expected = source.crop(CROP_BOXES[position, pixels])
    assert result.reencoded
    assert result.mime == "image/png"
    assert (result.width, result.height) == expected.size
    assert same_pixels(decode(result.data), expected)


@pytest.mark.parametrize("position", ["top", "bottom", "left", "right"])
def test_crop_large_photo_becomes_jpeg_close_to_region(position: CropPosition) -> None:
    """A large opaque photo is cropped and re-encoded as JPEG q90 close to the expected region."""
    source = texture(600, 600)
    result = process_image(encode(source, "PNG"), crop=CropSpec(position, 40), max_bytes=BIG_CAP)
    box = {
        "top": (0, 40, 600, 600),
        "bottom": (0, 0, 600, 560),
        "left": (40, 0, 600, 600),
        "right": (0, 0, 560, 600),
    }[position]
    output = decode(result.data)
    assert result.mime == "image/jpeg"
    assert output.mode == "RGB"
    assert output.size == (result.width, result.height) == source.crop(box).size
    # Measured: ~3.3 for the right region, ~10 when shifted by 1 px, ~67 by 40 px.
    assert mean_error(output, source.crop(box)) < 5


def test_transparency_is_kept_as_png() -> None:
    """An image with real transparency is cropped to PNG with its alpha intact."""
    source = transparent(600, 600)
    result = process_image(encode(source, "PNG"), crop=CropSpec("bottom", 40), max_bytes=BIG_CAP)
    output = decode(result.data)
    assert result.mime == "image/png"
    assert output.mode == "RGBA"
    assert same_pixels(output, source.crop((0, 0, 600, 560)))


def test_opaque_alpha_band_is_not_transparency() -> None:
    """An RGBA image whose alpha is all 255 is treated as a photo (JPEG)."""
    source = photo(600, 600).convert("RGBA")
    result = process_image(encode(source, "PNG"), crop=CropSpec("top", 10), max_bytes=BIG_CAP)
    assert result.mime == "image/jpeg"
    assert decode(result.data).mode == "RGB"


def test_palette_gif_is_cropped_to_rgb_jpeg() -> None:
    """A palette GIF is converted to RGB before encoding, with the cropped size."""
    result = process_image(
        encode(photo(300, 200), "GIF"), crop=CropSpec("left", 20), max_bytes=BIG_CAP
    )
    output = decode(result.data)
    assert (result.mime, output.mode, output.size) == ("image/jpeg", "RGB", (280, 200))


def test_cmyk_jpeg_is_converted_to_rgb() -> None:
    """A CMYK JPEG is re-encoded in RGB (what QQ clients display)."""
    result = process_image(
        encode(photo(600, 600, mode="CMYK"), "JPEG"),
        crop=CropSpec("right", 10),
        max_bytes=BIG_CAP,
    )
    assert decode(result.data).mode == "RGB"


def test_icc_profile_survives_reencode() -> None:
    """The source's ICC profile is attached to the re-encoded JPEG."""
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = encode(photo(600, 600), "PNG", icc_profile=icc)
    result = process_image(data, crop=CropSpec("bottom", 40), max_bytes=BIG_CAP)
    assert decode(result.data).info.get("icc_profile") == icc


def test_oversize_photo_without_crop_is_reencoded_under_cap() -> None:
    """A PNG above max_bytes becomes a JPEG that fits, at full size when quality suffices."""
    data = encode(photo(640, 640), "PNG")
    cap = len(data) // 3
    result = process_image(data, crop=None, max_bytes=cap)
    assert result.reencoded
    assert result.mime == "image/jpeg"
    assert len(result.data) <= cap
    assert (result.width, result.height) == (640, 640)


def test_tight_cap_downscales_keeping_aspect_ratio() -> None:
    """When lowering quality is not enough, the image is downscaled until it fits."""
    data = encode(photo(1200, 600), "PNG")
    result = process_image(data, crop=None, max_bytes=40_000)
    output = decode(result.data)
    assert len(result.data) <= 40_000
    assert output.size == (result.width, result.height)
    assert result.width < 1200
    assert abs(result.width / result.height - 2) < 0.02


def test_oversize_transparent_image_becomes_webp_with_alpha() -> None:
    """A transparent image whose PNG is over the cap falls back to WebP and keeps alpha."""
    source = transparent(600, 600)
    data = encode(source, "PNG")
    result = process_image(data, crop=None, max_bytes=len(data) // 3)
    assert result.mime == "image/webp"
    assert len(result.data) <= len(data) // 3
    assert decode(result.data).mode == "RGBA"


def test_impossible_cap_raises() -> None:
    """A cap no encoding can meet ends in ImageError after a bounded number of attempts."""
    with pytest.raises(ImageError, match="could not fit"):
        process_image(encode(photo(400, 400), "PNG"), crop=None, max_bytes=200)


@pytest.mark.parametrize("pixels", [60, 100, 500])
def test_crop_removing_half_or_more_is_skipped(pixels: int) -> None:
    """A crop that would remove half or more of the height is skipped, not applied."""
    data = encode(photo(100, 120), "PNG")
    result = process_image(data, crop=CropSpec("bottom", pixels), max_bytes=BIG_CAP)
    assert result.data is data
    assert result.height == 120


def test_zero_pixel_crop_is_no_crop() -> None:
    """crop_pixels = 0 leaves the image untouched."""
    data = encode(photo(100, 100), "PNG")
    assert process_image(data, crop=CropSpec("top", 0), max_bytes=BIG_CAP).data is data


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"<!DOCTYPE html><p>502 Bad Gateway</p>", "not a PNG/JPEG/WebP/GIF"),
        (b"", "not a PNG/JPEG/WebP/GIF"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 20, "unreadable image/png header"),
        (png_header_only(9000, 9000), "too large"),  # over our guard, under Pillow's
        (png_header_only(40000, 40000), "too large"),  # Pillow's own DecompressionBombError
    ],
)
def test_open_rejects_bad_input(data: bytes, reason: str) -> None:
    """Non-images, broken headers and decompression bombs raise ImageError with a reason."""
    with pytest.raises(ImageError, match=reason) as info:
        process_image(data, crop=None, max_bytes=BIG_CAP)
    assert info.value.user_message


def test_bomb_guard_uses_header_dimensions() -> None:
    """The guard trips exactly above MAX_IMAGE_PIXELS, from the header alone."""
    side = int(MAX_IMAGE_PIXELS**0.5)
    with pytest.raises(ImageError, match="too large"):
        process_image(png_header_only(side + 1, side + 1), crop=None, max_bytes=BIG_CAP)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_truncated_image_is_rejected(fmt: str) -> None:
    """Data cut in the middle of the pixels fails to decode and raises ImageError."""
    data = encode(photo(300, 300), fmt)
    with pytest.raises(ImageError, match=r"truncated|unreadable"):
        process_image(data[: len(data) // 2], crop=None, max_bytes=BIG_CAP)


def test_png_cut_between_chunks_is_rejected() -> None:
    """A PNG sent as is but missing its final IEND chunk is rejected as truncated."""
    data = encode(photo(300, 300), "PNG")
    assert data.endswith(b"IEND\xaeB`\x82")
    with pytest.raises(ImageError, match="truncated"):
        process_image(data[:-12], crop=None, max_bytes=BIG_CAP)


async def test_async_wrapper_matches_sync() -> None:
    """process_image_async gives the same result as process_image."""
    data = encode(photo(200, 120), "PNG")
    crop = CropSpec("bottom", 10)
    assert await process_image_async(data, crop=crop, max_bytes=BIG_CAP) == process_image(
        data, crop=crop, max_bytes=BIG_CAP
    )


@pytest.mark.parametrize(
    ("source_fmt", "target", "mime"),
    [
        ("PNG", "jpg", "image/jpeg"),
        ("PNG", ".JPEG", "image/jpeg"),
        ("PNG", "webp", "image/webp"),
        ("JPEG", "png", "image/png"),
        ("WEBP", "png", "image/png"),
        ("GIF", "jpg", "image/jpeg"),
    ],
)
def test_convert_image_to_each_format(source_fmt: str, target: str, mime: str) -> None:
    """convert_image produces the requested format with the same dimensions."""
    source = photo(120, 80)
    converted = convert_image(encode(source, source_fmt), target)
    assert sniff_mime(converted) == mime
    assert decode(converted).size == (120, 80)


def test_convert_to_png_is_lossless() -> None:
    """Converting a lossless WebP to PNG keeps every pixel."""
    source = photo(120, 80)
    converted = convert_image(encode(source, "WEBP", lossless=True), "png")
    assert same_pixels(decode(converted).convert("RGB"), source)


def test_convert_same_format_returns_input() -> None:
    """When the format already matches, the input object is returned unchanged."""
    data = encode(photo(50, 50), "JPEG")
    assert convert_image(data, "jpeg") is data


def test_convert_transparent_to_jpeg_flattens_onto_white() -> None:
    """Fully transparent pixels become white in a JPEG."""
    source = Image.new("RGBA", (64, 64), (255, 0, 0, 0))
    output = decode(convert_image(encode(source, "PNG"), "jpg"))
    assert min(ImageStat.Stat(output).mean) > 250


def test_convert_keeps_alpha_in_webp() -> None:
    """A transparent PNG converted to WebP keeps its alpha channel."""
    output = decode(convert_image(encode(transparent(64, 64), "PNG"), "webp"))
    assert output.mode == "RGBA"


def test_convert_rejects_unknown_format() -> None:
    """An unsupported target extension raises ImageError naming the format."""
    with pytest.raises(ImageError, match="bmp"):
        convert_image(encode(photo(8, 8), "PNG"), "bmp")
