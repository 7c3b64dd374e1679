"""Delivered bytes and quality per ``plugin.send_format`` on a corpus of generated-like images.

What: each picture of a corpus this script draws itself is saved as PNG (what image backends
return), then put through ``imaging.process_image`` as the plugin does before sending, with
``send_format = "auto"`` and ``"original"``; beside them, the naive way (decode and re-encode
as PNG). For each: the bytes sent, their share of the original PNG, and SSIM against the original.

SSIM is scikit-image's ``structural_similarity`` with ``gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, channel_axis=2, data_range=255``: mean over R, G, B of an 11-px
Gaussian window (sigma 1.5), K1 0.01, K2 0.03. Transparent pictures are compared as seen on a
white chat background.

Corpus (1024², deterministic):
- photo-like: how diffusion outputs look at pixel level. Rendered at 512² and upscaled 2x
  (Lanczos), like a VAE decoder's soft detail: a smooth sky gradient under low-frequency
  variation (a blurred background), and a dozen subjects (ellipses, triangles) with lighting,
  anti-aliased edges and fractal texture at every scale from 1/32 of the picture to one pixel;
- photo-like with sensor grain (sigma 1.5 at 512²): a harder case, reported, not budgeted;
- real photo: scikit-image's ``astronaut`` (512², shipped with the package) upscaled to 1024² the
  same way, to check the synthetic rows against a real photograph;
- anime-flat: flat cel-shaded shapes with dark outlines over a gradient sky, anti-aliased;
- text-heavy: a white page of black and coloured text lines;
- with alpha: a sticker (shapes on a transparent background).

Budgets: with ``auto``, the photo-like picture ≤ 35 % of the original PNG at SSIM ≥ 0.98, and
never larger than the original on the flat illustration or the text. Exits non-zero if missed.

Run from the repository root: ``.venv/bin/python -m bench.delivery`` (about 20 s on 2 cores);
needs the ``bench`` extra (scikit-image).
"""

from __future__ import annotations

import io
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from skimage import data as skimage_data
from skimage.metrics import structural_similarity

from nonebot_plugin_llm2pic.imaging import process_image
from nonebot_plugin_llm2pic.settings import SendFormat

from ._stats import machine, verdict

SIZE = 1024
MAX_SEND_BYTES = 4_000_000
"""The default ``plugin.max_send_bytes``."""
ROUNDS = 3
"""Timed calls per way of sending (the time is for information only)."""
PHOTO_SHARE = 0.35
PHOTO_SSIM = 0.98


# --- corpus --------------------------------------------------------------------------------------


def _fractal(rng: np.random.Generator, size: int, cells: tuple[int, ...]) -> np.ndarray:
    """RGB noise with equal amplitude per octave (the 1/f spectrum of natural images), in ±1."""
    out = np.zeros((size, size, 3), np.float32)
    for count in cells:
        field = rng.standard_normal((count, count, 3)).astype(np.float32)
        for band in range(3):
            layer = Image.fromarray(field[:, :, band], mode="F")
            out[:, :, band] += np.asarray(layer.resize((size, size), Image.Resampling.BICUBIC))
    return out / np.abs(out).max()


def photo_like(grain: float = 0.0, seed: int = 1) -> Image.Image:
    """A generated-like photo (see the module docstring); ``grain`` adds sensor noise."""
    half = SIZE // 2
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, half, dtype=np.float32)[:, None, None]
    x = np.linspace(0, 1, half, dtype=np.float32)[None, :, None]
    top, bottom = np.array([90, 140, 210], np.float32), np.array([200, 170, 140], np.float32)
    background = top * (1 - y) + bottom * y + 50 * _fractal(rng, half, (4, 8, 16, 32))
    texture = 40 * _fractal(rng, half, (16, 32, 64, 128, 256, 512))
    mask = Image.new("L", (half, half), 0)
    colours = Image.new("RGB", (half, half))
    draw_mask, draw_colour = ImageDraw.Draw(mask), ImageDraw.Draw(colours)
    for _ in range(14):
        x0, y0 = (int(v) for v in rng.integers(0, half, 2))
        w, h = (int(v) for v in rng.integers(half // 10, half // 3, 2))
        colour = tuple(int(v) for v in rng.integers(20, 235, 3))
        if rng.random() < 0.5:
            box = (x0, y0, x0 + w, y0 + h)
            draw_mask.ellipse(box, fill=255)
            draw_colour.ellipse(box, fill=colour)
        else:
            points = [(x0, y0), (x0 + w, y0 + h // 3), (x0 + w // 2, y0 + h)]
            draw_mask.polygon(points, fill=255)
            draw_colour.polygon(points, fill=colour)
    alpha = np.asarray(mask.filter(ImageFilter.GaussianBlur(0.7)), np.float32)[:, :, None] / 255
    light = 1.15 - 0.15 * (x + y)  # lit from the top left
    subjects = np.asarray(colours, np.float32) * light + texture
    pixels = background * (1 - alpha) + subjects * alpha
    if grain:
        pixels += rng.normal(0, grain, pixels.shape)
    small = Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8))
    return small.resize((SIZE, SIZE), Image.Resampling.LANCZOS)


def real_photo() -> Image.Image:
    """scikit-image's astronaut photograph, upscaled 2x like the synthetic photo."""
    photo = Image.fromarray(skimage_data.astronaut()).convert("RGB")
    return photo.resize((SIZE, SIZE), Image.Resampling.LANCZOS)


def _supersampled(mode: str, background: tuple[int, ...], draw: Callable[..., None]) -> Image.Image:
    """Draw at 2x and downscale: anti-aliased edges like a real illustration."""
    big = Image.new(mode, (SIZE * 2, SIZE * 2), background)
    draw(ImageDraw.Draw(big), SIZE * 2)
    return big.resize((SIZE, SIZE), Image.Resampling.LANCZOS)


def anime_flat() -> Image.Image:
    """Flat cel-shaded shapes with dark outlines over a two-tone gradient sky."""
    outline = (50, 35, 40)

    def draw(canvas: ImageDraw.ImageDraw, s: int) -> None:
        for row in range(s // 2):  # sky gradient on the upper half
            t = row / (s // 2)
            canvas.line([(0, row), (s, row)], (int(120 + 100 * t), int(180 + 50 * t), 250))
        canvas.rectangle((0, s // 2, s, s), (110, 190, 120))
        canvas.ellipse((s // 4, s // 5, s * 3 // 4, s * 3 // 4), (255, 225, 205), outline, 8)
        canvas.pieslice((s // 4 - 20, s // 6, s * 3 // 4 + 20, s // 2), 180, 360, (90, 60, 130))
        canvas.pieslice((s // 4, s // 5, s * 3 // 4, s // 2), 180, 360, (120, 80, 170), outline, 8)
        for eye in (s * 2 // 5, s * 3 // 5 - 40):
            canvas.ellipse((eye, s * 2 // 5, eye + 40, s * 2 // 5 + 70), (60, 120, 200), outline, 6)
            canvas.ellipse((eye + 10, s * 2 // 5 + 8, eye + 22, s * 2 // 5 + 24), (255, 255, 255))
        canvas.polygon(
            [(s // 5, s), (s // 2, s * 7 // 10), (s * 4 // 5, s)], (240, 110, 140), outline, 8
        )
        canvas.arc((s * 9 // 20, s // 2, s * 11 // 20, s * 11 // 20), 20, 160, outline, 6)

    return _supersampled("RGB", (255, 255, 255), draw)


def text_heavy() -> Image.Image:
    """A white page of text lines: headings, body text in black, a few coloured lines."""
    font = ImageFont.load_default(size=44)
    heading = ImageFont.load_default(size=72)
    words = "the quick brown fox jumps over the lazy dog 0123456789 draw me a picture".split()

    def draw(canvas: ImageDraw.ImageDraw, s: int) -> None:
        y = 40
        for line in range(40):
            if line % 12 == 0:
                canvas.text((60, y), f"Chapter {line // 12 + 1}", (20, 20, 20), heading)
                y += 110
                continue
            text = " ".join(words[(line * 3 + k) % len(words)] for k in range(9))
            colour = (180, 30, 30) if line % 7 == 3 else (25, 25, 25)
            canvas.text((60, y), text, colour, font)
            y += 54

    return _supersampled("RGB", (255, 255, 255), draw)


def sticker() -> Image.Image:
    """Shapes with outlines on a transparent background (RGBA)."""

    def draw(canvas: ImageDraw.ImageDraw, s: int) -> None:
        canvas.ellipse(
            (s // 6, s // 6, s * 5 // 6, s * 5 // 6), (255, 200, 60, 255), (60, 40, 20, 255), 16
        )
        canvas.ellipse((s // 3, s * 2 // 5, s // 3 + 80, s * 2 // 5 + 120), (40, 30, 30, 255))
        canvas.ellipse(
            (s * 3 // 5, s * 2 // 5, s * 3 // 5 + 80, s * 2 // 5 + 120), (40, 30, 30, 255)
        )
        canvas.arc((s // 3, s // 2, s * 2 // 3, s * 3 // 4), 20, 160, (60, 40, 20, 255), 16)

    return _supersampled("RGBA", (0, 0, 0, 0), draw)


CORPUS: tuple[tuple[str, Callable[[], Image.Image], str], ...] = (
    ("photo-like", photo_like, "photo"),
    ("photo-like, sensor grain", lambda: photo_like(grain=1.5), "info"),
    ("real photo (astronaut)", real_photo, "info"),
    ("anime-flat", anime_flat, "flat"),
    ("text-heavy", text_heavy, "flat"),
    ("with alpha (sticker)", sticker, "flat"),
)
"""(name, generator, budget: photo = share and SSIM, flat = never larger, info = none)."""


# --- measuring -----------------------------------------------------------------------------------


def ssim(original: Image.Image, sent: bytes) -> float:
    """SSIM of the sent bytes against the original, as the module docstring defines it."""
    with Image.open(io.BytesIO(sent)) as image:
        received = _as_seen(image)
    value = structural_similarity(
        np.asarray(_as_seen(original)),
        np.asarray(received),
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        channel_axis=2,
        data_range=255,
    )
    return float(cast("float", value))  # a float unless full=True or gradient=True


def _as_seen(image: Image.Image) -> Image.Image:
    """RGB as shown on a white chat background."""
    rgba = image.convert("RGBA")
    background = Image.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class Sent:
    """One way of sending: bytes, their share of the original, format, SSIM, median time."""

    size: int
    share: float
    mime: str
    ssim: float
    seconds: float

    def cell(self) -> str:
        return f"{self.size / 1e3:>7.0f} KB {self.share:>4.0%} {self.ssim:.3f}"


def _encoded(data: bytes, send_format: SendFormat | None) -> tuple[bytes, str]:
    """``(bytes sent, MIME type)``; ``None`` = the naive way, a PNG re-encode."""
    if send_format is None:
        with Image.open(io.BytesIO(data)) as image:
            return png_bytes(image), "image/png"
    result = process_image(data, crop=None, max_bytes=MAX_SEND_BYTES, send_format=send_format)
    return result.data, result.mime


def send(data: bytes, original: Image.Image, send_format: SendFormat | None) -> Sent:
    """What is sent with ``send_format``, measured (``None`` = the naive PNG re-encode)."""
    times = []
    out, mime = b"", ""
    for _ in range(ROUNDS):
        started = time.perf_counter()
        out, mime = _encoded(data, send_format)
        times.append(time.perf_counter() - started)
    return Sent(
        len(out),
        len(out) / len(data),
        mime.removeprefix("image/"),
        ssim(original, out),
        statistics.median(times),
    )


def run() -> bool:
    print(f"Delivered bytes per send_format, {SIZE}² corpus — {machine()}")
    header = (
        f"{'picture':<26} {'original PNG':>12}  {'ancestor (PNG)':>18}  {'original':>18}  "
        f"{'auto':>24}  {'auto time':>9}  budget"
    )
    print(header)
    print("-" * len(header))
    ok = True
    for name, make, budget in CORPUS:
        image = make()
        data = png_bytes(image)
        ancestor, original = send(data, image, None), send(data, image, "original")
        auto = send(data, image, "auto")
        if budget == "photo":
            passed = auto.share <= PHOTO_SHARE and auto.ssim >= PHOTO_SSIM
            verdict_text = f"≤ {PHOTO_SHARE:.0%} at SSIM ≥ {PHOTO_SSIM}: {verdict(passed)}"
        elif budget == "flat":
            passed = auto.size <= len(data)
            verdict_text = f"≤ original: {verdict(passed)}"
        else:
            passed, verdict_text = True, "info"
        ok &= passed
        print(
            f"{name:<26} {len(data) / 1e3:>9.0f} KB  {ancestor.cell():>18}  "
            f"{original.cell():>18}  {auto.cell() + ' ' + auto.mime:>24}  "
            f"{auto.seconds * 1e3:>6.0f} ms  {verdict_text}"
        )
    print(
        "cells: bytes sent, share of the original PNG, SSIM against it; auto: format sent; "
        f"time: median of {ROUNDS} process_image calls (decode, blank check, encode)"
    )
    return ok


def main() -> None:
    sys.exit(0 if run() else 1)


if __name__ == "__main__":
    main()
