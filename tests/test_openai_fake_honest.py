"""The fake OpenAI server is honest: the official ``openai`` client parses its answers."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import openai
import pytest

from .fakes.openai_server import FakeOpenAI, make_png


@pytest.fixture
async def client(fake: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-test", max_retries=0) as sdk:
        yield sdk


async def test_images_json(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    """images.generate parses the JSON answer."""
    answer = await client.images.generate(model="gpt-image-1", prompt="cat", size="1024x1024")
    assert answer.data is not None
    assert base64.b64decode(answer.data[0].b64_json or "") == fake.image


async def test_images_url(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    """The url answer parses too."""
    fake.images_style = "url"
    answer = await client.images.generate(model="dall-e-3", prompt="cat", response_format="url")
    assert answer.data is not None
    assert answer.data[0].url == fake.url("/files/image.png")


async def test_images_stream(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    """images.generate(stream=True) yields typed partial and completed events."""
    fake.partial_images = 1
    stream = await client.images.generate(model="gpt-image-1", prompt="cat", stream=True)
    events = [event async for event in stream]
    assert [event.type for event in events] == [
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    assert base64.b64decode(events[-1].b64_json) == fake.image


async def test_images_edit_stream(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    """images.edit(stream=True) is understood by the fake and its events parse."""
    stream = await client.images.edit(
        model="gpt-image-1",
        prompt="make it blue",
        image=("ref.png", make_png(), "image/png"),
        stream=True,
    )
    events = [event async for event in stream]
    assert events[-1].type == "image_edit.completed"
    assert [p.name for p in fake.requests[0].parts if p.filename] == ["image"]


async def test_chat_json(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    """chat.completions.create parses the JSON answer with a markdown data URL."""
    completion = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "draw"}]
    )
    content = completion.choices[0].message.content or ""
    assert f"data:image/png;base64,{fake.b64}" in content
    assert completion.choices[0].finish_reason == "stop"


async def test_chat_stream(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    """chat.completions.create(stream=True) parses every chunk and sees the whole content."""
    fake.content_pieces = 3
    fake.chunk_size = 64
    stream = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "draw"}], stream=True
    )
    chunks = [chunk async for chunk in stream]
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert f"data:image/png;base64,{fake.b64}" in content
    assert chunks[-2].choices[0].finish_reason == "stop"


async def test_chat_openrouter_images(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    """OpenRouter's message.images survives as an extra field of the SDK's model."""
    fake.chat_style = "images"
    completion = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "draw"}]
    )
    images = completion.choices[0].message.model_extra or {}
    assert images["images"][0]["image_url"]["url"].endswith(fake.b64)


async def test_in_stream_error(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    """An error chunk makes the SDK raise APIError, as with the real service."""
    fake.events = [{"error": {"message": "The server had an error", "type": "server_error"}}]
    stream = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "draw"}], stream=True
    )
    with pytest.raises(openai.APIError, match="The server had an error"):
        async for _ in stream:
            pass


async def test_auth_error(fake: FakeOpenAI) -> None:
    """A wrong key gets the 401 the SDK maps to AuthenticationError."""
    async with openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-bad", max_retries=0) as sdk:
        with pytest.raises(openai.AuthenticationError):
            await sdk.models.list()


async def test_models(client: openai.AsyncOpenAI) -> None:
    """models.list parses the /models answer."""
    page = await client.models.list()
    assert [model.id for model in page.data] == ["gpt-image-1"]


async def test_empty_chat_is_a_bad_request(client: openai.AsyncOpenAI) -> None:
    """The probe's empty chat request gets the 400 that the official client raises on."""
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="m", messages=[])
    assert caught.value.code == "empty_array"


async def test_images_without_prompt_is_a_bad_request(client: openai.AsyncOpenAI) -> None:
    """An images request without a prompt (the probe's) is refused with a typed 400."""
    with pytest.raises(openai.BadRequestError) as caught:
        await client.post("/images/generations", body={"model": "gpt-image-1"}, cast_to=object)
    assert caught.value.param == "prompt"


async def test_relay_without_models_route(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    """A relay without GET /models answers a 404 the official client raises NotFoundError for."""
    fake.has_models = False
    with pytest.raises(openai.NotFoundError):
        await client.models.list()


async def test_fake_llm_speaks_openai() -> None:
    """The writer's fake LLM: JSON answers, its 401 and its empty-messages 400 parse as OpenAI's."""
    from .fakes.llm_server import FakeLlm

    async with FakeLlm() as llm:
        llm.api_key = "sk-llm"
        async with openai.AsyncOpenAI(
            base_url=llm.base_url, api_key="sk-llm", max_retries=0
        ) as sdk:
            answer = await sdk.chat.completions.create(
                model="test-model", messages=[{"role": "user", "content": "hi"}]
            )
            assert answer.choices[0].message.content == llm.answer
            with pytest.raises(openai.BadRequestError):
                await sdk.chat.completions.create(model="test-model", messages=[])
            llm.has_models = False
            with pytest.raises(openai.NotFoundError):
                await sdk.models.list()
        llm.has_models = True
        async with openai.AsyncOpenAI(base_url=llm.base_url, api_key="sk-no", max_retries=0) as sdk:
            with pytest.raises(openai.AuthenticationError):
                await sdk.models.list()
