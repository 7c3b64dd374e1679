"""A stand-in for the Z-Image-Turbo Space, for the gradio backend tests.

Same ``/generate`` signature as the real Space: prompt, resolution,
seed, steps, shift, random_seed, gallery → (gallery, "seed used", seed). Instead of a diffusion
model it paints a small deterministic PNG so tests can check what arrived:

* the fill colour comes from the prompt (``prompt_colour``);
* the size is the requested resolution divided by ``SCALE`` (1280x720 → 80x45);
* pixel (0, 0) holds ``(steps, round(shift * 10), 0)``.

A prompt containing ``QUOTA_TRIGGER`` raises the ZeroGPU quota ``gr.Error``. A second endpoint,
``/edit`` (image, prompt → image), returns the colour-inverted upload, for reference images.

Runs under Gradio 4.x and 6.x, offline: ``python tests/gradio_apps/zimage_app.py --port N``;
``--resolution "512x512 ( 1:1 )"`` (repeatable) replaces the dropdown's choices, like an app
that offers only a few sizes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random

# Before importing gradio: no analytics or version checks (the test machines have no internet).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gradio as gr
from PIL import Image, ImageOps

SCALE = 16
QUOTA_TRIGGER = "quota"
QUOTA_MESSAGE = (
    "You have exceeded your free ZeroGPU quota (60s requested vs. 12s left). Try again in 0:05:00."
)
MAX_RANDOM_SEED = 1_000_000

RES_CHOICES = [
    "1024x1024 ( 1:1 )", "1152x896 ( 9:7 )", "896x1152 ( 7:9 )", "1152x864 ( 4:3 )",
    "864x1152 ( 3:4 )", "1248x832 ( 3:2 )", "832x1248 ( 2:3 )", "1280x720 ( 16:9 )",
    "720x1280 ( 9:16 )", "1344x576 ( 21:9 )", "576x1344 ( 9:21 )",
    "1280x1280 ( 1:1 )", "1440x1120 ( 9:7 )", "1120x1440 ( 7:9 )", "1472x1104 ( 4:3 )",
    "1104x1472 ( 3:4 )", "1536x1024 ( 3:2 )", "1024x1536 ( 2:3 )", "1536x864 ( 16:9 )",
    "864x1536 ( 9:16 )", "1680x720 ( 21:9 )", "720x1680 ( 9:21 )",
    "1536x1536 ( 1:1 )", "1728x1344 ( 9:7 )", "1344x1728 ( 7:9 )", "1728x1296 ( 4:3 )",
    "1296x1728 ( 3:4 )", "1872x1248 ( 3:2 )", "1248x1872 ( 2:3 )", "2048x1152 ( 16:9 )",
    "1152x2048 ( 9:16 )", "2016x864 ( 21:9 )", "864x2016 ( 9:21 )",
]  # fmt: skip


def prompt_colour(prompt: str) -> tuple[int, int, int]:
    """The fill colour painted for ``prompt`` (tests import this to check the prompt arrived)."""
    digest = hashlib.sha256(prompt.encode()).digest()
    return digest[0], digest[1], digest[2]


def generate(prompt, resolution, seed, steps, shift, random_seed, gallery_images):
    """Paint the stand-in image; same inputs and outputs as the real Space's ``generate``."""
    if QUOTA_TRIGGER in prompt.lower():
        raise gr.Error(QUOTA_MESSAGE)
    width, height = (int(side) for side in resolution.split(" ")[0].split("x"))
    if random_seed or seed is None or int(seed) == -1:
        new_seed = random.randint(1, MAX_RANDOM_SEED)
    else:
        new_seed = int(seed)
    image = Image.new("RGB", (width // SCALE, height // SCALE), prompt_colour(prompt))
    image.putpixel((0, 0), (int(steps), round(float(shift) * 10), 0))
    # Newest first, like one of the Space's published variants.
    gallery = [image, *(item for item, _caption in gallery_images or [])]
    return gallery, str(new_seed), new_seed


def edit(image, prompt):
    """Return the uploaded image colour-inverted (the reference-image endpoint)."""
    return ImageOps.invert(image.convert("RGB"))


def build(choices: list[str] | None = None) -> gr.Blocks:
    """The Blocks app with ``/generate`` and ``/edit``; ``choices`` for the resolution input."""
    choices = choices or RES_CHOICES
    with gr.Blocks() as demo:
        prompt = gr.Textbox(label="Prompt")
        resolution = gr.Dropdown(choices=choices, value=choices[0], label="Width x Height (Ratio)")
        seed = gr.Number(label="Seed", value=42, precision=0)
        steps = gr.Slider(label="Steps", minimum=1, maximum=100, value=8, step=1)
        shift = gr.Slider(label="Time Shift", minimum=1.0, maximum=10.0, value=3.0, step=0.1)
        random_seed = gr.Checkbox(label="Random Seed", value=True)
        gallery = gr.Gallery(label="Generated Images", format="png", type="pil")
        seed_used = gr.Textbox(label="Seed Used")
        button = gr.Button("Generate")
        button.click(
            generate,
            inputs=[prompt, resolution, seed, steps, shift, random_seed, gallery],
            outputs=[gallery, seed_used, seed],
            api_name="generate",
        )

        source = gr.Image(label="Reference", type="pil")
        edited = gr.Image(label="Edited", format="png")
        edit_button = gr.Button("Edit")
        edit_button.click(edit, inputs=[source, prompt], outputs=[edited], api_name="edit")
    return demo


def main() -> None:
    """Serve on 127.0.0.1:PORT until killed."""
    parser = argparse.ArgumentParser(description="A stand-in for the Z-Image-Turbo Space.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--resolution", action="append", help="a resolution choice (repeatable)")
    args = parser.parse_args()
    build(args.resolution).queue().launch(
        server_name="127.0.0.1", server_port=args.port, share=False, show_error=True, quiet=True
    )


if __name__ == "__main__":
    main()
