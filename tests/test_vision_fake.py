"""The fake vision LLM is honest and strict: the official ``openai`` client talks to it, it sees
what the pictures show, and it records every way a request breaks the image contract."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from PIL import Image

from nonebot_plugin_llm2pic.vision import prepare_image

from .fakes.vision_llm import FakeVisionLlm

RED = (220, 30, 30)
BLUE = (30, 60, 220)


def picture(colour: tuple[int, int, int], size: tuple[int, int] = (640, 480)) -> str:
    """A data URL made the plugin's way (low detail)."""
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return prepare_image(buffer.getvalue(), detail="low", max_side=1024).data_url


def image_part(url: str, detail: str = "low") -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url, "detail": detail}}


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def messages(*parts: dict[str, Any]) -> Any:
    return [
        {"role": "system", "content": "You write image prompts."},
        {"role": "user", "content": [*parts, text("请求：画成动漫风")]},
    ]


@pytest.fixture
async def fake() -> AsyncIterator[FakeVisionLlm]:
    async with FakeVisionLlm() as server:
        yield server


@pytest.fixture
async def client(fake: FakeVisionLlm) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-test", max_retries=0) as sdk:
        yield sdk


async def ask(client: openai.AsyncOpenAI, *parts: dict[str, Any]) -> str:
    completion = await client.chat.completions.create(
        model="vision-model", messages=messages(*parts)
    )
    return completion.choices[0].message.content or ""


async def test_answer_names_the_colour_it_saw(
    fake: FakeVisionLlm, client: openai.AsyncOpenAI
) -> None:
    """A red reference image comes back as a prompt about a red picture."""
    answer = await ask(client, text("参考图 1"), image_part(picture(RED)))
    assert '"prompt": "a red picture"' in answer
    assert [(image.label, image.colour) for image in fake.seen] == [("参考图 1", "red")]
    assert fake.violations == []


async def test_stream_answer_parses(fake: FakeVisionLlm, client: openai.AsyncOpenAI) -> None:
    """With stream=True the chunks parse and add up to the same answer."""
    stream = await client.chat.completions.create(
        model="vision-model",
        messages=messages(text("参考图 1"), image_part(picture(BLUE))),
        stream=True,
    )
    pieces = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    assert '"prompt": "a blue picture"' in "".join(pieces)
    assert fake.calls[0].stream


async def test_references_then_chat_pictures_in_order(
    fake: FakeVisionLlm, client: openai.AsyncOpenAI
) -> None:
    """Two labelled images are seen in order, labels and colours kept."""
    answer = await ask(
        client,
        text("参考图 1"),
        image_part(picture(RED)),
        text("群聊图片，来自 小明"),
        image_part(picture(BLUE)),
    )
    assert "a red picture, a blue picture" in answer
    assert [image.label for image in fake.seen] == ["参考图 1", "群聊图片，来自 小明"]


async def test_text_only_request_gets_the_text_prompt(
    fake: FakeVisionLlm, client: openai.AsyncOpenAI
) -> None:
    """Without images the fake answers its plain prompt."""
    assert '"prompt": "a cat"' in await ask(client)
    assert fake.calls[0].images == ()


async def test_refusing_model_answers_openai_400(
    fake: FakeVisionLlm, client: openai.AsyncOpenAI
) -> None:
    """mode refuse: image parts get the 400 a text-only OpenAI model gives."""
    fake.mode = "refuse"
    with pytest.raises(openai.BadRequestError) as caught:
        await ask(client, text("参考图 1"), image_part(picture(RED)))
    assert "image_url is not supported for this model" in str(caught.value)
    assert '"prompt": "a cat"' in await ask(client)  # the retry without images works


async def test_openrouter_no_endpoints_answers_404(
    fake: FakeVisionLlm, client: openai.AsyncOpenAI
) -> None:
    """mode no_endpoints: image parts get OpenRouter's 404."""
    fake.mode = "no_endpoints"
    with pytest.raises(openai.NotFoundError) as caught:
        await ask(client, text("参考图 1"), image_part(picture(RED)))
    assert "No endpoints found that support image input" in str(caught.value)
    assert isinstance(caught.value.body, dict)
    assert caught.value.body.get("code") == 404


def png_data_url() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), RED).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def big_jpeg_url(size: tuple[int, int]) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, RED).save(buffer, format="JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


VIOLATIONS: list[tuple[str, list[dict[str, Any]], str]] = [
    ("png", [text("参考图 1"), image_part(png_data_url())], "not a JPEG data URL"),
    ("http url", [text("参考图 1"), image_part("https://example.com/a.jpg")], "not a JPEG"),
    ("bad base64", [text("参考图 1"), image_part("data:image/jpeg;base64,@@@@")], "undecodable"),
    ("too big for low", [text("参考图 1"), image_part(big_jpeg_url((800, 600)))], "800x600"),
    (
        "no detail",
        [text("参考图 1"), {"type": "image_url", "image_url": {"url": picture(RED)}}],
        "detail None",
    ),
    ("no label", [image_part(picture(RED))], "no label"),
    ("misnumbered", [text("参考图 2"), image_part(picture(RED))], "expected 参考图 1"),
    (
        "reference after chat",
        [
            text("群聊图片，来自 小明"),
            image_part(picture(BLUE)),
            text("参考图 1"),
            image_part(picture(RED)),
        ],
        "a reference after a chat picture",
    ),
    (
        "too many",
        [part for n in range(1, 5) for part in (text(f"参考图 {n}"), image_part(picture(RED)))],
        "4 images, more than 3",
    ),
    ("unknown part", [{"type": "input_audio", "input_audio": {}}], "unknown content part"),
]


@pytest.mark.parametrize(
    ("parts", "problem"), [case[1:] for case in VIOLATIONS], ids=[case[0] for case in VIOLATIONS]
)
async def test_contract_violations_are_recorded(
    fake: FakeVisionLlm, client: openai.AsyncOpenAI, parts: list[dict[str, Any]], problem: str
) -> None:
    """Each broken rule is recorded and answered 400 with a message naming no image word."""
    with pytest.raises(openai.BadRequestError) as caught:
        await ask(client, *parts)
    assert any(problem in violation for violation in fake.violations), fake.violations
    assert "image" not in str(caught.value).lower()
    assert fake.calls == []


async def test_expected_detail_is_enforced(fake: FakeVisionLlm, client: openai.AsyncOpenAI) -> None:
    """With expect_detail set, another detail is a violation."""
    fake.expect_detail = "high"
    with pytest.raises(openai.BadRequestError):
        await ask(client, text("参考图 1"), image_part(picture(RED), detail="low"))
    assert fake.violations == ["image 1: detail 'low'"]


async def test_image_in_a_system_message_is_a_violation(
    fake: FakeVisionLlm, client: openai.AsyncOpenAI
) -> None:
    """Images belong in user messages only."""
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(
            model="vision-model",
            messages=[{"role": "system", "content": [text("参考图 1"), image_part(picture(RED))]}],  # type: ignore[list-item]
        )
    assert fake.violations == ["an image in a 'system' message"]
