"""Vision preparation: a chat picture becomes a small JPEG data URL, or a clear error."""

from __future__ import annotations

import base64
import io
import os
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from PIL import Image

from nonebot_plugin_llm2pic.exceptions import ReferenceImageError
from nonebot_plugin_llm2pic.settings import VisionDetail
from nonebot_plugin_llm2pic.transport import new_session
from nonebot_plugin_llm2pic.vision import (
    DATA_URL_PREFIX,
    MAX_DATA_URL_BYTES,
    NOT_AN_IMAGE_REPLY,
    ImageGoneError,
    VisionImage,
    fetch_vision_image,
    prepare_image,
    prepare_image_async,
)

from .fakes import LoopbackServer
from .fakes.harness import png_claiming

RED = (220, 30, 30)
BLUE = (30, 60, 220)
WHITE = (255, 255, 255)


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def decoded(prepared: VisionImage) -> Image.Image:
    """The JPEG inside the data URL, loaded (fails unless it is a whole JPEG)."""
    assert prepared.data_url.startswith(DATA_URL_PREFIX)
    jpeg = base64.b64decode(prepared.data_url[len(DATA_URL_PREFIX) :], validate=True)
    assert len(jpeg) == prepared.jpeg_bytes
    image = Image.open(io.BytesIO(jpeg), formats=["JPEG"])
    image.load()
    return image


def near(pixel: object, colour: tuple[int, int, int], tolerance: int = 40) -> bool:
    assert isinstance(pixel, tuple)
    return all(abs(a - b) <= tolerance for a, b in zip(pixel[:3], colour, strict=True))


def halves(
    size: tuple[int, int], left: tuple[int, ...], right: tuple[int, ...], mode: str
) -> Image.Image:
    """An image whose left half is ``left`` and right half ``right``."""
    image = Image.new(mode, size, left)
    image.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return image


def noise_jpeg(width: int, height: int) -> bytes:
    """Random pixels at high quality: the worst case for JPEG size."""
    image = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    return encode(image, "JPEG", quality=95)


def test_oversized_photo_shrinks_to_512_for_low_detail() -> None:
    """A 4000×3000 JPEG comes out 512×384 for detail low, aspect kept."""
    data = encode(Image.new("RGB", (4000, 3000), RED), "JPEG")
    prepared = prepare_image(data, detail="low", max_side=1024)
    assert (prepared.width, prepared.height) == (512, 384)
    assert decoded(prepared).size == (512, 384)


def test_high_detail_shrinks_to_max_side() -> None:
    """detail high uses vision_max_side as the longest side."""
    data = encode(Image.new("RGB", (3000, 4000), RED), "JPEG")
    prepared = prepare_image(data, detail="high", max_side=800)
    assert (prepared.width, prepared.height) == (600, 800)


def test_low_detail_never_exceeds_a_smaller_max_side() -> None:
    """vision_max_side below 512 bounds detail low too."""
    data = encode(Image.new("RGB", (1000, 1000), RED), "PNG")
    prepared = prepare_image(data, detail="low", max_side=300)
    assert (prepared.width, prepared.height) == (300, 300)


def test_tiny_image_is_not_upscaled() -> None:
    """A 40×30 picture stays 40×30."""
    data = encode(Image.new("RGB", (40, 30), BLUE), "PNG")
    prepared = prepare_image(data, detail="high", max_side=1024)
    assert (prepared.width, prepared.height) == (40, 30)
    assert near(decoded(prepared).getpixel((20, 15)), BLUE)


def test_content_part_carries_the_data_url_and_detail() -> None:
    """The content part is OpenAI's image_url shape with the detail asked for."""
    prepared = prepare_image(
        encode(Image.new("RGB", (8, 8), RED), "PNG"), detail="auto", max_side=64
    )
    assert prepared.content_part() == {
        "type": "image_url",
        "image_url": {"url": prepared.data_url, "detail": "auto"},
    }


def test_truncated_jpeg_is_refused() -> None:
    """A JPEG cut in half is refused with the clear reference-image reply."""
    data = encode(Image.new("RGB", (400, 300), RED), "JPEG")
    with pytest.raises(ReferenceImageError) as caught:
        prepare_image(data[: len(data) // 2], detail="low", max_side=1024)
    assert caught.value.user_message == NOT_AN_IMAGE_REPLY


def test_corrupt_header_is_refused() -> None:
    """PNG magic followed by garbage is refused."""
    with pytest.raises(ReferenceImageError):
        prepare_image(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20, detail="low", max_side=1024)


def test_html_is_refused() -> None:
    """An HTML page (what an expired CDN link may serve) is never prepared."""
    page = b"<!DOCTYPE html><html><body>404 Not Found</body></html>"
    with pytest.raises(ReferenceImageError) as caught:
        prepare_image(page, detail="low", max_side=1024)
    assert caught.value.user_message == NOT_AN_IMAGE_REPLY


def test_decompression_bomb_is_refused() -> None:
    """A header claiming 20000×20000 pixels is refused before decoding."""
    with pytest.raises(ReferenceImageError):
        prepare_image(png_claiming(20000, 20000), detail="low", max_side=1024)


def test_animated_gif_uses_the_first_frame() -> None:
    """Of a red-then-blue GIF, the red first frame is sent."""
    frames = [Image.new("RGB", (64, 64), RED), Image.new("RGB", (64, 64), BLUE)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    prepared = prepare_image(data, detail="low", max_side=1024)
    assert near(decoded(prepared).getpixel((32, 32)), RED)


def test_transparent_pixels_become_white() -> None:
    """An RGBA PNG is flattened on white: the clear half is white, the opaque half red."""
    image = halves((200, 100), (0, 0, 0, 0), (*RED, 255), "RGBA")
    prepared = decoded(prepare_image(encode(image, "PNG"), detail="low", max_side=1024))
    assert near(prepared.getpixel((20, 50)), WHITE, tolerance=8)
    assert near(prepared.getpixel((180, 50)), RED)


def test_gif_transparency_becomes_white() -> None:
    """A palette GIF's transparent colour is flattened on white too."""
    image = halves((100, 100), (0, 0, 0), RED, "RGB").convert("P")
    black = image.getpixel((10, 10))
    prepared = decoded(
        prepare_image(encode(image, "GIF", transparency=black), detail="low", max_side=1024)
    )
    assert near(prepared.getpixel((10, 50)), WHITE, tolerance=8)


def test_exif_orientation_is_applied() -> None:
    """A landscape JPEG tagged "rotate 90° clockwise" arrives upright, its left half on top."""
    image = halves((200, 100), RED, BLUE, "RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the viewer rotates 90° clockwise
    prepared = decoded(prepare_image(encode(image, "JPEG", exif=exif), detail="low", max_side=1024))
    assert prepared.size == (100, 200)
    assert near(prepared.getpixel((50, 20)), RED)
    assert near(prepared.getpixel((50, 180)), BLUE)


def test_cmyk_jpeg_becomes_rgb() -> None:
    """A CMYK JPEG (print workflows) is sent as an RGB JPEG of the right colour."""
    image = Image.new("CMYK", (300, 200), (0, 255, 255, 0))  # full magenta + yellow: red
    prepared = decoded(prepare_image(encode(image, "JPEG"), detail="low", max_side=1024))
    assert prepared.mode == "RGB"
    assert near(prepared.getpixel((150, 100)), (255, 0, 0), tolerance=50)


def test_noise_fits_the_data_url_cap() -> None:
    """Even a 4000×3000 noise JPEG at 2048 px fits in 300 KB (quality steps, then smaller)."""
    prepared = prepare_image(noise_jpeg(4000, 3000), detail="high", max_side=2048)
    assert len(prepared.data_url) <= MAX_DATA_URL_BYTES
    assert prepared.width < 2048  # had to shrink below max_side to fit
    assert decoded(prepared).size == (prepared.width, prepared.height)


@pytest.mark.parametrize("detail", ["low", "high"])
def test_photo_data_url_is_within_the_cap(detail: VisionDetail) -> None:
    """A 2048² noisy photo's data URL is at most 300 KB whatever the detail."""
    image = Image.frombytes("RGB", (2048, 2048), os.urandom(2048 * 2048 * 3))
    image = Image.blend(Image.new("RGB", image.size, BLUE), image, 0.3)
    prepared = prepare_image(encode(image, "PNG"), detail=detail, max_side=1024)
    assert len(prepared.data_url) <= MAX_DATA_URL_BYTES


async def test_async_preparation_matches_sync() -> None:
    """The worker-thread wrapper returns what the synchronous function does."""
    data = encode(Image.new("RGB", (700, 500), RED), "PNG")
    assert await prepare_image_async(data, detail="low", max_side=1024) == prepare_image(
        data, detail="low", max_side=1024
    )


class ImageHost(LoopbackServer):
    """Serves fixed answers by path, like a CDN whose links may expire."""

    def __init__(self, answers: dict[str, tuple[int, bytes, str]]) -> None:
        self.answers = answers

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/{name}", self._serve)

    async def _serve(self, request: web.Request) -> web.Response:
        status, body, content_type = self.answers[request.match_info["name"]]
        return web.Response(status=status, body=body, content_type=content_type)


EXPIRED_QQ = b'{"retcode":-5503007,"retmsg":"download url has expired","data":null}'


@pytest.fixture
async def host() -> AsyncIterator[ImageHost]:
    answers = {
        "photo.jpg": (200, encode(Image.new("RGB", (1600, 1200), RED), "JPEG"), "image/jpeg"),
        "gone.jpg": (404, b"not found", "text/plain"),
        "expired.jpg": (200, EXPIRED_QQ, "application/json"),
        "page.jpg": (200, b"<html><body>hello</body></html>", "text/html"),
        "broken.jpg": (502, b"bad gateway", "text/plain"),
    }
    async with ImageHost(answers) as server:
        yield server


async def fetch(host: ImageHost, name: str) -> VisionImage:
    session = new_session()
    try:
        return await fetch_vision_image(session, host.url(f"/{name}"), detail="low", max_side=1024)
    finally:
        await session.close()


async def test_fetch_prepares_a_downloaded_picture(host: ImageHost) -> None:
    """A chat picture's URL is downloaded and prepared."""
    prepared = await fetch(host, "photo.jpg")
    assert (prepared.width, prepared.height) == (512, 384)


@pytest.mark.parametrize("name", ["gone.jpg", "expired.jpg"])
async def test_fetch_of_an_expired_url_is_image_gone(host: ImageHost, name: str) -> None:
    """A 404, or QQ's 200 "download url has expired" answer, raises ImageGoneError."""
    with pytest.raises(ImageGoneError):
        await fetch(host, name)


async def test_fetch_of_a_page_is_not_an_image(host: ImageHost) -> None:
    """An HTML page is refused as not an image, not taken for an expired link."""
    with pytest.raises(ReferenceImageError) as caught:
        await fetch(host, "page.jpg")
    assert not isinstance(caught.value, ImageGoneError)
    assert caught.value.user_message == NOT_AN_IMAGE_REPLY


async def test_fetch_server_error_is_not_image_gone(host: ImageHost) -> None:
    """A 5xx is a download failure, not an expired link."""
    with pytest.raises(ReferenceImageError) as caught:
        await fetch(host, "broken.jpg")
    assert not isinstance(caught.value, ImageGoneError)
