"""Golden-image tests for ``imaging``: inputs are generated deterministically, never stored.

Sanity timing on the dev machine (2 cores, median of 5, photo-like gradient + noise PNG,
crop 40 px + JPEG q90 + base64): 1024² ≈ 33 ms, 2048² ≈ 135 ms; PNG decoding is most of it.
Not asserted here (timing tests flake); ``bench/`` measures the budgets.
"""

from __future__ import annotations

import functools
import io
import random
import struct
import zlib

import pytest
from PIL import Image, ImageChops, ImageCms, ImageDraw, ImageStat, JpegImagePlugin

from nonebot_plugin_llm2pic import imaging
from nonebot_plugin_llm2pic.exceptions import FilteredImageError, ImageError
from nonebot_plugin_llm2pic.imaging import (
    MAX_IMAGE_PIXELS,
    CropSpec,
    convert_image,
    process_image,
    process_image_async,
    sniff_mime,
)
from nonebot_plugin_llm2pic.settings import CropPosition, SendFormat

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


@functools.cache
def illustration(width: int, height: int) -> Image.Image:
    """Flat colour shapes with dark outlines, like cel-shaded anime: PNG beats JPEG on it."""
    image = Image.new("RGB", (width, height), (250, 240, 220))
    draw = ImageDraw.Draw(image)
    w, h = width, height
    draw.ellipse((w // 10, h // 10, w * 6 // 10, h * 7 // 10), (240, 120, 150), (40, 30, 30), 3)
    draw.rectangle((w // 2, h // 2, w * 9 // 10, h * 9 // 10), (90, 160, 230), (40, 30, 30), 3)
    draw.polygon([(0, h), (w // 3, h // 2), (w * 2 // 3, h)], (120, 200, 110), (40, 30, 30))
    return image


@functools.cache
def night(width: int, height: int) -> Image.Image:
    """A dark night photo: sky fading from luma ~25 to ~5 under grain, a few lights; not blank."""
    rng = random.Random(5)
    sky = (
        Image.linear_gradient("L")
        .resize((width, height))
        .point([25 - v * 20 // 255 for v in range(256)])
    )
    grain = Image.frombytes("L", (width, height), rng.randbytes(width * height)).point(
        [v % 3 for v in range(256)]
    )
    luma = ImageChops.add(sky, grain)
    image = Image.merge("RGB", (luma, luma, luma.point(lambda v: v + 4)))
    draw = ImageDraw.Draw(image)
    for x in range(width // 8, width, width // 4):
        draw.ellipse((x, height * 3 // 4, x + 4, height * 3 // 4 + 4), (255, 220, 150))
    return image


def halves(left: tuple[int, int, int], right: tuple[int, int, int]) -> Image.Image:
    """A 64x64 picture, ``left`` colour on the left half, ``right`` on the right."""
    image = Image.new("RGB", (64, 64), left)
    image.paste(right, (32, 0, 64, 64))
    return image


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
    """``original`` without a crop and under the cap returns the input object, not re-encoded."""
    data = encode(photo(64, 48), "PNG")
    result = process_image(data, crop=None, max_bytes=BIG_CAP, send_format="original")
    assert result.data is data
    assert (result.mime, result.width, result.height, result.reencoded) == (
        "image/png",
        64,
        48,
        False,
    )


@pytest.mark.parametrize(("position", "pixels"), list(CROP_BOXES))
def test_crop_flat_png_stays_lossless(position: CropPosition, pixels: int) -> None:
    """A flat illustration is cropped to the exact region and stays PNG, pixel for pixel."""
    source = illustration(200, 120)
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
        encode(photo(300, 200), "GIF"),
        crop=CropSpec("left", 20),
        max_bytes=BIG_CAP,
        send_format="jpeg",
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


def test_oversize_transparent_image_is_downscaled_png_with_alpha() -> None:
    """A transparent image whose PNG is over the cap stays PNG (never WebP) and is downscaled."""
    source = transparent(600, 600)
    data = encode(source, "PNG")
    result = process_image(data, crop=None, max_bytes=len(data) // 3)
    assert result.mime == "image/png"
    assert len(result.data) <= len(data) // 3
    assert result.width < 600
    assert decode(result.data).mode == "RGBA"


def test_impossible_cap_raises() -> None:
    """A cap no encoding can meet ends in ImageError after a bounded number of attempts."""
    with pytest.raises(ImageError, match="could not fit"):
        process_image(encode(photo(400, 400), "PNG"), crop=None, max_bytes=200)


@pytest.mark.parametrize("pixels", [60, 100, 500])
def test_crop_removing_half_or_more_is_skipped(pixels: int) -> None:
    """A crop that would remove half or more of the height is skipped, not applied."""
    data = encode(photo(100, 120), "PNG")
    result = process_image(
        data, crop=CropSpec("bottom", pixels), max_bytes=BIG_CAP, send_format="original"
    )
    assert result.data is data
    assert result.height == 120


def test_zero_pixel_crop_is_no_crop() -> None:
    """crop_pixels = 0 leaves the image untouched."""
    data = encode(photo(100, 100), "PNG")
    result = process_image(data, crop=CropSpec("top", 0), max_bytes=BIG_CAP, send_format="original")
    assert result.data is data


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
        process_image(data[:-12], crop=None, max_bytes=BIG_CAP, send_format="original")


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


# --- send_format ---------------------------------------------------------------------------------


def jpeg_444(image: Image.Image) -> bytes:
    """What ``auto``/``jpeg`` encode: JPEG q90 with full-resolution chroma."""
    return encode(image, "JPEG", quality=90, subsampling=0)


def test_auto_sends_photo_as_jpeg_444() -> None:
    """``auto`` sends an opaque photo as JPEG q90 4:4:4 when that saves at least 30 %."""
    source = texture(640, 480)
    data = encode(source, "PNG")
    result = process_image(data, crop=None, max_bytes=BIG_CAP)
    output = decode(result.data)
    assert (result.mime, result.reencoded) == ("image/jpeg", True)
    assert len(result.data) <= 0.7 * len(data)
    assert JpegImagePlugin.get_sampling(output) == 0  # 4:4:4
    assert mean_error(output, source) < 5


def test_auto_keeps_flat_illustration_as_is() -> None:
    """``auto`` sends a flat illustration's PNG as is: the JPEG would not be 30 % smaller."""
    data = encode(illustration(640, 480), "PNG")
    result = process_image(data, crop=None, max_bytes=BIG_CAP)
    assert result.data is data


@pytest.mark.parametrize(("margin", "expected"), [(1.001, "image/jpeg"), (0.999, "image/png")])
def test_jpeg_saving_threshold(monkeypatch: pytest.MonkeyPatch, margin: float, expected: str):
    """The JPEG is sent exactly when its size is at most JPEG_SAVING of the original's."""
    source = photo(320, 240)
    data = encode(source, "PNG")
    ratio = len(jpeg_444(source)) / len(data)
    monkeypatch.setattr(imaging, "JPEG_SAVING", ratio * margin)
    assert process_image(data, crop=None, max_bytes=BIG_CAP).mime == expected


def test_original_sends_photo_as_is() -> None:
    """``original`` sends a photo PNG untouched even where JPEG would be much smaller."""
    data = encode(photo(640, 480), "PNG")
    assert process_image(data, crop=None, max_bytes=BIG_CAP, send_format="original").data is data


def test_auto_keeps_transparent_png_as_is() -> None:
    """``auto`` never turns an image with transparency into JPEG: its PNG is sent as is."""
    data = encode(transparent(300, 300), "PNG")
    assert process_image(data, crop=None, max_bytes=BIG_CAP).data is data


def test_jpeg_format_converts_flat_png() -> None:
    """``jpeg`` converts even where PNG is smaller, with 4:4:4 chroma."""
    result = process_image(
        encode(illustration(200, 150), "PNG"), crop=None, max_bytes=BIG_CAP, send_format="jpeg"
    )
    assert result.mime == "image/jpeg"
    assert JpegImagePlugin.get_sampling(decode(result.data)) == 0


def test_jpeg_format_flattens_alpha_on_white() -> None:
    """``jpeg`` composites transparency onto white (the top row of the source is transparent)."""
    result = process_image(
        encode(transparent(200, 200), "PNG"), crop=None, max_bytes=BIG_CAP, send_format="jpeg"
    )
    output = decode(result.data)
    assert (result.mime, output.mode) == ("image/jpeg", "RGB")
    top_row = output.crop((0, 0, 200, 1))
    assert min(ImageStat.Stat(top_row).mean) > 250


def test_png_format_converts_jpeg_losslessly() -> None:
    """``png`` turns a JPEG result into a PNG with exactly the JPEG's decoded pixels."""
    data = encode(photo(200, 150), "JPEG")
    result = process_image(data, crop=None, max_bytes=BIG_CAP, send_format="png")
    assert result.mime == "image/png"
    assert same_pixels(decode(result.data), decode(data))


@pytest.mark.parametrize(("fmt", "send_format"), [("JPEG", "jpeg"), ("PNG", "png")])
def test_named_format_already_matching_is_sent_as_is(fmt: str, send_format: SendFormat) -> None:
    """``jpeg``/``png`` leave a result that already has that format untouched."""
    data = encode(photo(200, 150), fmt)
    assert process_image(data, crop=None, max_bytes=BIG_CAP, send_format=send_format).data is data


@pytest.mark.parametrize("send_format", ["auto", "original"])
def test_opaque_webp_becomes_jpeg(send_format: SendFormat) -> None:
    """An opaque WebP from a backend is sent as JPEG, whatever its size, even with ``original``."""
    source = illustration(200, 150)
    data = encode(source, "WEBP", lossless=True)
    result = process_image(data, crop=None, max_bytes=BIG_CAP, send_format=send_format)
    assert result.mime == "image/jpeg"
    assert mean_error(decode(result.data), source) < 3


@pytest.mark.parametrize("send_format", ["auto", "original", "png"])
def test_transparent_webp_becomes_png_with_alpha(send_format: SendFormat) -> None:
    """A transparent WebP is sent as PNG with every pixel and its alpha kept."""
    source = transparent(120, 80)
    data = encode(source, "WEBP", lossless=True)
    result = process_image(data, crop=None, max_bytes=BIG_CAP, send_format=send_format)
    output = decode(result.data)
    assert (result.mime, output.mode) == ("image/png", "RGBA")
    assert same_pixels(output, decode(data))


def test_crop_of_jpeg_stays_jpeg() -> None:
    """A cropped JPEG result is re-encoded as JPEG even when that saves little (never PNG)."""
    data = encode(illustration(300, 200), "JPEG", quality=85)
    result = process_image(data, crop=CropSpec("bottom", 20), max_bytes=BIG_CAP)
    assert (result.mime, result.height) == ("image/jpeg", 180)


def test_oversize_444_jpeg_falls_back_to_420_before_lower_quality() -> None:
    """Over the cap, the next try is q90 with 4:2:0 chroma: same quality, fewer bytes."""
    source = photo(640, 480)
    cap = (len(jpeg_444(source)) + len(encode(source, "JPEG", quality=90, subsampling=2))) // 2
    result = process_image(encode(source, "PNG"), crop=None, max_bytes=cap)
    output = decode(result.data)
    assert JpegImagePlugin.get_sampling(output) == 2  # 4:2:0
    assert result.data == encode(source, "JPEG", quality=90, subsampling=2)


# --- blank results -------------------------------------------------------------------------------


@pytest.mark.parametrize("send_format", ["auto", "original", "jpeg", "png"])
def test_black_placeholder_is_filtered(send_format: SendFormat) -> None:
    """An all-black picture (a safety checker's placeholder) is never sent, in any format."""
    data = encode(Image.new("RGB", (512, 512)), "PNG")
    with pytest.raises(FilteredImageError, match="blank") as info:
        process_image(data, crop=None, max_bytes=BIG_CAP, send_format=send_format)
    assert info.value.user_message == "图片被过滤了（可能触发了安全审核），换个说法再试试"


@pytest.mark.parametrize(
    ("left", "right", "blank"),
    [
        ((128, 128, 128), (129, 129, 129), True),  # luma stddev 0.5 < 1
        ((126, 126, 126), (130, 130, 130), False),  # stddev 2
        ((0, 0, 0), (4, 4, 4), True),  # stddev 2, but every luma value <= 4
        ((0, 0, 0), (5, 5, 5), False),  # stddev 2.5, max 5
    ],
)
def test_blank_thresholds(left: tuple[int, int, int], right: tuple[int, int, int], blank: bool):
    """Blank means luma stddev below 1.0 or no luma value above 4; just past either is sent."""
    data = encode(halves(left, right), "PNG")
    if blank:
        with pytest.raises(FilteredImageError):
            process_image(data, crop=None, max_bytes=BIG_CAP)
    else:
        assert process_image(data, crop=None, max_bytes=BIG_CAP).data is data


def test_dark_night_photo_is_not_blank() -> None:
    """A dark but real night photo is delivered, not mistaken for a placeholder."""
    source = night(400, 300)
    result = process_image(encode(source, "PNG"), crop=None, max_bytes=BIG_CAP)
    assert (result.width, result.height) == (400, 300)
