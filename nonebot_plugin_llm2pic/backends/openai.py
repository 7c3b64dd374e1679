"""OpenAI-compatible image backend: Images API (generations / edits) or Chat Completions.

Images answers come as JSON (``b64_json`` or ``url``) or SSE (``image_generation.completed``
events, or a relay's ``data[0]`` in a chunk). Chat answers are read by ``chat_api`` into a whole
``ChatAnswer``; the image is then taken from its image parts (OpenRouter's ``message.images``
included) or found in its text by ``image_text`` (markdown or bare data URLs, http(s) URLs, bare
base64). Whether an answer is SSE or JSON is decided by its Content-Type, not by what we asked
for: relays answer either way.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..chat_api import (
    WORKER_MIN_CHARS,
    ChatAnswer,
    ChatMessage,
    ChatRequest,
    ContentPart,
    ImagePart,
    TextPart,
    api_url,
    event_json,
    is_event_stream,
    probe_api,
    read_chat_answer,
    read_json,
)
from ..exceptions import BackendUnavailableError, StreamError, UpstreamError
from ..imaging import sniff_mime
from ..settings import OpenAIBackendSettings, resolve_secret
from ..transport import (
    ProbeResult,
    RequestOptions,
    download,
    iter_events,
    open_response,
    safe_excerpt,
    with_retries,
)
from ..worker import in_worker
from .base import Aspect, GeneratedImage, GenerationRequest
from .image_text import compact_base64, decode_base64, image_in_text

if TYPE_CHECKING:
    import aiohttp  # imported lazily (transport.py says why)

ASPECT_SIZES: dict[Aspect, str] = {
    "landscape": "1536x1024",
    "portrait": "1024x1536",
    "square": "1024x1024",
}
"""The GPT-image sizes an aspect hint maps to (only when a size is configured at all)."""

DOWNLOAD_TIMEOUT = 60.0
DOWNLOAD_IDLE_TIMEOUT = 30.0
PROBE_TIMEOUT = 15.0


class OpenAIBackend:
    """``[backends.NAME]`` with ``type = "openai"``."""

    def __init__(
        self, name: str, settings: OpenAIBackendSettings, session: aiohttp.ClientSession
    ) -> None:
        self.name = name
        self._settings = settings
        self._session = session
        self._base_url = settings.base_url.rstrip("/")

    @property
    def supports_references(self) -> bool:
        """Images edits and chat image parts both take reference images."""
        return self._settings.supports_references

    async def generate(self, request: GenerationRequest) -> GeneratedImage:
        """Draw one image (retries included), or raise a ``BackendError``."""
        request = replace(request, n=1)
        opts = self._options(self._settings.timeout)
        if self._settings.mode == "chat":
            url, read = api_url(self._base_url, "chat/completions"), self._chat_result
        else:
            url, read = self._images_url(request), self._images_result

        async def attempt() -> GeneratedImage:
            # Built per attempt: an aiohttp FormData can be sent only once.
            payload, form = self._body(request)
            async with open_response(
                self._session, "POST", url, opts, json=payload, data=form
            ) as resp:
                return await read(resp, opts)

        return await with_retries(attempt, retries=self._settings.retries, backend=self.name)

    async def generate_batch(self, request: GenerationRequest) -> list[GeneratedImage]:
        """Up to ``request.n`` images from one images call (``n``); chat and SSE draw one.

        Some endpoints return one picture whatever ``n`` says; the caller draws the rest.
        """
        if request.n <= 1 or self._settings.mode == "chat" or self._settings.use_sse:
            return [await self.generate(request)]
        opts = self._options(self._settings.timeout)
        url = self._images_url(request)

        async def attempt() -> list[GeneratedImage]:
            payload, form = self._body(request)
            async with open_response(
                self._session, "POST", url, opts, json=payload, data=form
            ) as resp:
                if is_event_stream(resp, opts):
                    return [await self._images_result(resp, opts)]
                answer = await read_json(resp, opts)
                data = answer.get("data") if isinstance(answer, dict) else None
                items = (
                    [item for item in data if isinstance(item, dict)]
                    if isinstance(data, list)
                    else []
                )
                items = items[: request.n]
                if not items:
                    raise self._upstream("the images answer has no data[0]")
                return [await self._image_from_item(item, opts) for item in items]

        return await with_retries(attempt, retries=self._settings.retries, backend=self.name)

    def _images_url(self, request: GenerationRequest) -> str:
        path = "images/edits" if request.references else "images/generations"
        return api_url(self._base_url, path)

    async def probe(self) -> ProbeResult:
        """Reach and auth without generating (``GET /models``, else an empty request)."""
        chat = self._settings.mode == "chat"
        return await probe_api(
            self._session,
            self._base_url,
            self._settings.model,
            self._options(PROBE_TIMEOUT),
            generation_path="chat/completions" if chat else "images/generations",
            # No prompt, no messages: the API refuses it before anything is drawn or billed.
            empty_body={"model": self._settings.model, **({"messages": []} if chat else {})},
        )

    # -- requests ---------------------------------------------------------------------------

    def _options(self, timeout: float) -> RequestOptions:
        api_key = resolve_secret(self._settings.api_key)
        if not api_key:
            raise BackendUnavailableError(
                f"{self.name}: api_key is empty", backend=self.name, reason="no_key"
            )
        accept = "text/event-stream" if self._settings.use_sse else "application/json"
        return RequestOptions(
            backend=self.name,
            timeout=timeout,
            # Without SSE nothing arrives until the image is done, so "idle" is the whole call.
            read_timeout=timeout,
            proxy=self._settings.proxy or None,
            headers={"Authorization": f"Bearer {api_key}", "Accept": accept},
            api_base=True,
        )

    def _body(
        self, request: GenerationRequest
    ) -> tuple[dict[str, Any] | None, aiohttp.FormData | None]:
        """``(json, form)`` for the request: chat JSON, edits multipart or generations JSON."""
        if self._settings.mode == "chat":
            return self._chat_payload(request), None
        if request.references:
            return None, self._edit_form(request)
        return self._images_payload(request), None

    def _size(self, request: GenerationRequest) -> str:
        if self._settings.size and request.aspect is not None:
            return ASPECT_SIZES[request.aspect]
        return self._settings.size

    def _images_payload(self, request: GenerationRequest) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self._settings.model,
            "prompt": request.prompt,
            "n": request.n,
        }
        payload.update(self._optional_fields(request))
        payload.update(self._extra_fields())
        if self._settings.use_sse:
            payload["stream"] = True  # never partial_images: every partial image is billed
        return payload

    def _extra_fields(self) -> dict[str, Any]:
        """``extra_body`` without ``stream``: streaming follows ``use_sse`` only."""
        return {key: value for key, value in self._settings.extra_body.items() if key != "stream"}

    def _optional_fields(self, request: GenerationRequest) -> dict[str, str]:
        fields = {
            "size": self._size(request),
            "response_format": self._settings.response_format,
            "quality": self._settings.quality,
        }
        return {key: value for key, value in fields.items() if value}

    def _edit_form(self, request: GenerationRequest) -> aiohttp.FormData:
        import aiohttp

        form = aiohttp.FormData()
        form.add_field("model", self._settings.model)
        form.add_field("prompt", request.prompt)
        if request.n > 1:
            form.add_field("n", str(request.n))
        for key, value in self._optional_fields(request).items():
            form.add_field(key, value)
        if self._settings.use_sse:
            form.add_field("stream", "true")
        for index, reference in enumerate(request.references):
            # The API rejects application/octet-stream parts: send the type the bytes really have.
            mime = sniff_mime(reference.data) or reference.mime
            extension = mime.rpartition("/")[2].replace("jpeg", "jpg")
            form.add_field(
                "image[]", reference.data, filename=f"image{index}.{extension}", content_type=mime
            )
        return form

    def _chat_payload(self, request: GenerationRequest) -> dict[str, Any]:
        content: str | tuple[ContentPart, ...] = request.prompt
        if request.references:
            content = (TextPart(request.prompt),)
            for reference in request.references:
                mime = sniff_mime(reference.data) or reference.mime
                encoded = base64.b64encode(reference.data).decode("ascii")
                content += (ImagePart(f"data:{mime};base64,{encoded}"),)
        size = self._size(request)
        chat = ChatRequest(
            model=self._settings.model,
            messages=(ChatMessage("user", content),),
            stream=True if self._settings.use_sse else None,
            # Relays for image models read the size; plain chat models ignore it.
            extra={**({"size": size} if size else {}), **self._extra_fields()},
        )
        return chat.body()

    # -- images answers ---------------------------------------------------------------------

    async def _images_result(
        self, resp: aiohttp.ClientResponse, opts: RequestOptions
    ) -> GeneratedImage:
        if not is_event_stream(resp, opts):
            answer = await read_json(resp, opts)
            item = _first_item(answer)
            if item is None:
                raise self._upstream("the images answer has no data[0]")
            return await self._image_from_item(item, opts)
        async for event in iter_events(resp, opts):
            payload = await event_json(event, opts)
            if payload is None:
                break
            # Dispatch on the JSON "type", not on "event:" (openai-python does the same).
            kind = str(payload.get("type", ""))
            if kind.endswith(".partial_image"):
                continue
            if kind.endswith(".completed") and payload.get("b64_json"):
                return await self._image_from_item(payload, opts)
            item = _first_item(payload)
            if item is not None:
                return await self._image_from_item(item, opts)  # relays: data[0] in a chunk
        raise self._cut("the image stream ended before the image arrived")

    async def _image_from_item(self, item: dict[str, Any], opts: RequestOptions) -> GeneratedImage:
        encoded = item.get("b64_json")
        if isinstance(encoded, str) and encoded:
            return self._image(await self._b64decode(encoded))
        url = item.get("url")
        if isinstance(url, str) and url:
            return await self._image_from_url(url, opts)
        raise self._upstream("the answer holds neither b64_json nor url")

    # -- chat answers -----------------------------------------------------------------------

    async def _chat_result(
        self, resp: aiohttp.ClientResponse, opts: RequestOptions
    ) -> GeneratedImage:
        return await self._image_from_chat(await read_chat_answer(resp, opts), opts)

    async def _image_from_chat(self, answer: ChatAnswer, opts: RequestOptions) -> GeneratedImage:
        if answer.image_urls:
            return await self._image_from_url(answer.image_urls[0], opts)
        text = answer.text
        # Searching megabytes of text takes tens of ms even done cheaply: not on the loop.
        big = len(text) > WORKER_MIN_CHARS
        found = await in_worker(image_in_text, text) if big else image_in_text(text)
        if found is not None:
            kind, value = found
            if kind == "url":
                return await self._image_from_url(value, opts)
            return self._image(await self._b64decode(value))
        raise UpstreamError(
            f"{self.name}: the model answered without an image: {safe_excerpt(text.encode())}",
            backend=self.name,
            problem="no_image",
        )

    # -- shared -----------------------------------------------------------------------------

    async def _image_from_url(self, url: str, opts: RequestOptions) -> GeneratedImage:
        if url.startswith("data:"):
            header, _, encoded = url.partition(",")
            if not header.endswith(";base64"):
                raise self._upstream("a data URL that is not base64")
            return self._image(await self._b64decode(encoded))
        # No Authorization header: the URL may point at any host.
        download_opts = RequestOptions(
            backend=self.name,
            timeout=DOWNLOAD_TIMEOUT,
            read_timeout=DOWNLOAD_IDLE_TIMEOUT,
            proxy=opts.proxy,
            max_bytes=opts.max_bytes,
        )
        data, _ = await download(self._session, url, download_opts)
        return self._image(data)

    async def _b64decode(self, text: str) -> bytes:
        if text.startswith("data:"):
            text = text.partition(",")[2]  # xAI prefixes b64_json with a data URL header
        try:
            return await in_worker(decode_base64, text)
        except (binascii.Error, ValueError):
            pass
        # Tolerate line breaks and missing padding, but nothing else.
        try:
            return await in_worker(decode_base64, await in_worker(compact_base64, text))
        except (binascii.Error, ValueError) as err:
            raise self._upstream("the image is not valid base64") from err

    def _image(self, data: bytes) -> GeneratedImage:
        mime = sniff_mime(data)
        if mime is None:
            raise self._upstream(f"the bytes returned are not an image ({len(data)} bytes)")
        return GeneratedImage(data=data, mime=mime, backend=self.name)

    def _upstream(self, reason: str) -> UpstreamError:
        return UpstreamError(f"{self.name}: {reason}", backend=self.name, problem="bad_image")

    def _cut(self, reason: str) -> StreamError:
        return StreamError(f"{self.name}: {reason}", backend=self.name)


def _first_item(answer: Any) -> dict[str, Any] | None:
    """``answer["data"][0]`` of an images answer, if there is one."""
    data = answer.get("data") if isinstance(answer, dict) else None
    if isinstance(data, list) and data and isinstance(data[0], dict):
        return data[0]
    return None
