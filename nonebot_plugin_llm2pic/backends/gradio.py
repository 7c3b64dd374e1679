"""Gradio backend: any Gradio app or Hugging Face Space through the simple ``/call`` API.

Wire format: Gradio's ``/call`` API as Gradio 4.x, 5.x and 6.x serve it; the default input
template is the ``/generate`` layout of the Z-Image-Turbo Space. One attempt is

1. ``GET /config`` once per backend object: Gradio 5+ reports ``api_prefix`` ("/gradio_api"),
   Gradio 4 serves everything at the root and reports none;
2. ``POST {prefix}/upload`` for a reference image, when the template has an ``{image}`` slot;
3. ``POST {prefix}/call/{api_name}`` → ``{"event_id"}``;
4. one SSE ``GET {prefix}/call/{api_name}/{event_id}`` until ``complete`` or ``error``;
5. the first image of the chosen output downloaded (capped, checked by its magic bytes).

An ``error`` event fails at once and is not retried: a known text (ZeroGPU quota…) becomes its
typed error with a Chinese message, any other is shown as the app sent it (masked, cut).
"""

from __future__ import annotations

import asyncio
import math
import re
from typing import TYPE_CHECKING, Any

from yarl import URL

from ..exceptions import (
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    ReferencesUnsupportedError,
    StreamError,
    UpstreamError,
    classify_upstream,
)
from ..imaging import sniff_mime
from ..settings import GRADIO_PLACEHOLDERS, GradioBackendSettings, resolve_secret
from ..sse import ServerSentEvent
from ..transport import (
    HTTP_SCHEMES,
    MAX_RESPONSE_BYTES,
    ProbeResult,
    RequestOptions,
    download,
    iter_events,
    open_response,
    request_json,
    safe_excerpt,
    with_retries,
)
from .base import Aspect, GeneratedImage, GenerationRequest, ReferenceImage

if TYPE_CHECKING:
    import aiohttp  # imported lazily (transport.py says why)

STREAM_IDLE_TIMEOUT = 60.0
"""Real Spaces send a heartbeat every 15 s (``GRADIO_HEARTBEAT_INTERVAL``), also while queued."""

PROBE_TIMEOUT = 15.0
MAX_IMAGE_BYTES = 32 * 1024 * 1024
"""Cap for the downloaded result image (a 2048² PNG is well below it)."""

MAX_ERROR_CHARS = 200
"""Upstream error text shown to the user is cut here (ZeroGPU messages fit)."""

FILE_DATA_META = {"_type": "gradio.FileData"}
"""Required on file inputs from Gradio 5.5 on."""

ASPECT_TARGETS: dict[Aspect, float] = {"square": 1.0, "landscape": 16 / 9, "portrait": 9 / 16}
"""The width/height ratio an aspect hint aims for among the app's resolution choices."""

DEFAULT_INPUTS: tuple[Any, ...] = (
    "{prompt}",
    "{resolution}",
    "{seed}",
    "{steps}",
    "{shift}",
    "{random_seed}",
    [],
)
"""Z-Image-Turbo ``/generate``: prompt, resolution, seed, steps, shift, random_seed, gallery."""


_SIZE = re.compile(r"(\d+)\s*x\s*(\d+)")
_HTML_TAG = re.compile(r"<[^>]+>")
_SPACE_PAGE = re.compile(
    r"https?://(?:www\.)?huggingface\.co/spaces/([^/?#]+)/([^/?#]+)", re.IGNORECASE
)


class GradioBackend:
    """``[backends.NAME]`` with ``type = "gradio"``."""

    def __init__(
        self, name: str, settings: GradioBackendSettings, session: aiohttp.ClientSession
    ) -> None:
        self.name = name
        self._settings = settings
        self._session = session
        self._base_url = app_url(settings.base_url)
        self._api_prefix: str | None = None  # from /config, on first use
        self._resolution_choices: tuple[str, ...] | None = None
        """The app's choices for the resolution input (from /config); None = a free input."""

    @property
    def supports_references(self) -> bool:
        """Only an input template with an ``{image}`` slot can take a reference image."""
        return self._settings.supports_references

    async def generate(self, request: GenerationRequest) -> GeneratedImage:
        """Draw one image (retries included), or raise a ``BackendError``."""
        if request.references and not self.supports_references:
            raise ReferencesUnsupportedError(
                f"{self.name}: the input template has no {{image}} slot", backend=self.name
            )
        timeout = self._settings.timeout

        async def attempt() -> GeneratedImage:
            # One total budget for config + upload + call + stream + download, per attempt.
            try:
                return await asyncio.wait_for(self._attempt(request), timeout)
            except asyncio.TimeoutError as err:
                raise BackendTimeoutError(
                    f"{self.name}: no result within {timeout:g} s", backend=self.name
                ) from err

        return await with_retries(attempt, retries=self._settings.retries, backend=self.name)

    async def probe(self) -> ProbeResult:
        """GET ``/config`` with the token: reachable, token accepted, endpoint present."""
        config = await self._config(self._options(PROBE_TIMEOUT))
        api_name = self._settings.api_name.strip("/")
        dependencies = config.get("dependencies")
        names = {
            str(dep.get("api_name") or "").strip("/")
            for dep in (dependencies if isinstance(dependencies, list) else [])
            if isinstance(dep, dict)
        }
        if api_name not in names:
            raise BackendUnavailableError(
                f"{self.name}: the app has no /{api_name} endpoint",
                backend=self.name,
                reason="no_endpoint",
                detail=f"/{api_name}",
            )
        version = config.get("version") or "?"
        call_url = f"{self._base_url}{self._api_prefix}/call/{api_name}"
        return ProbeResult(ok=True, detail=f"gradio {version}, /{api_name} ({call_url})")

    async def _attempt(self, request: GenerationRequest) -> GeneratedImage:
        opts = self._options(self._settings.timeout)
        prefix = await self._prefix(opts)
        values = self._values(request)
        if request.references:  # one {image} value: the first reference
            values["image"] = await self._upload(request.references[0], prefix, opts)
        data = [fill_template(item, values) for item in self._template()]
        call_url = f"{self._base_url}{prefix}/call/{self._settings.api_name.strip('/')}"
        answer = await request_json(self._session, "POST", call_url, opts, json={"data": data})
        event_id = answer.get("event_id") if isinstance(answer, dict) else None
        if not isinstance(event_id, str) or not event_id:
            excerpt = safe_excerpt(repr(answer).encode())
            raise UpstreamError(
                f"{self.name}: no event_id in the /call answer: {excerpt}",
                backend=self.name,
                problem="malformed",
            )
        outputs = await self._stream_outputs(f"{call_url}/{event_id}", opts)
        if self._settings.output_index >= len(outputs):
            raise self._no_image(f"only {len(outputs)} outputs")
        image_ref = find_image_ref(outputs[self._settings.output_index])
        if image_ref is None:
            raise self._no_image(f"output {self._settings.output_index} holds no image")
        data_bytes, mime = await self._download(self._file_url(image_ref, prefix))
        reported = find_seed(outputs, self._settings.output_index)
        sent = values["seed"]
        return GeneratedImage(
            data=data_bytes,
            mime=mime,
            backend=self.name,
            seed=reported if reported is not None else (sent if sent >= 0 else None),
        )

    async def _stream_outputs(self, url: str, opts: RequestOptions) -> list[Any]:
        """Read the result stream until ``complete`` (its output list) or ``error`` (raised)."""
        async with open_response(self._session, "GET", url, opts) as resp:
            async for event in iter_events(resp, opts):
                if event.event == "complete":
                    try:
                        outputs = event.json()
                    except ValueError:
                        outputs = None
                    if not isinstance(outputs, list):
                        excerpt = safe_excerpt(event.data[:100].encode())
                        raise self._no_image(f"complete data is not a list: {excerpt}")
                    return outputs
                if event.event == "error":
                    raise self._error_event(event)
                # generating (intermediate outputs), heartbeat and anything new: keep waiting.
        raise StreamError(
            f"{self.name}: result stream ended without a complete event", backend=self.name
        )

    def _error_event(self, event: ServerSentEvent) -> BackendError:
        """Gradio < 6.13 sends ``data: null``; 6.13+ a payload dict; stream failures a string.

        Known texts (ZeroGPU quota…) become their typed, translated error; others are shown.
        """
        try:
            payload = event.json()
        except ValueError:
            payload = event.data  # not JSON: show it as it came
        if isinstance(payload, dict):
            payload = payload.get("error")
        text = ""
        if isinstance(payload, str):
            # Upstream text goes to chat and logs: mask key-like tokens (an echoed hf_ token).
            text = safe_excerpt(_HTML_TAG.sub("", payload).encode())[:MAX_ERROR_CHARS]
        message = f"{self.name}: error event: {text or 'no message'}"
        kind = classify_upstream("", text)
        if kind is not None:
            # Not retried: an error event is the app's answer, not a transient fault.
            return kind(message, backend=self.name, status=200, body=text, retryable=False)
        return UpstreamError(message, backend=self.name, upstream=text)

    async def _prefix(self, opts: RequestOptions) -> str:
        if self._api_prefix is None:
            await self._config(opts)
        assert self._api_prefix is not None
        return self._api_prefix

    async def _config(self, opts: RequestOptions) -> dict[str, Any]:
        """``GET /config`` (at the root in every version); remembers the API prefix."""
        config = await request_json(self._session, "GET", f"{self._base_url}/config", opts)
        if not isinstance(config, dict):
            raise BackendUnavailableError(
                f"{self.name}: /config is not a JSON object", backend=self.name, reason="not_gradio"
            )
        prefix = config.get("api_prefix")
        self._api_prefix = prefix.rstrip("/") if isinstance(prefix, str) else ""
        self._resolution_choices = input_choices(config, self._settings.api_name, self._template())
        return config

    def _template(self) -> tuple[Any, ...]:
        inputs = self._settings.inputs
        return DEFAULT_INPUTS if inputs is None else tuple(inputs)

    async def _upload(
        self, reference: ReferenceImage, prefix: str, opts: RequestOptions
    ) -> dict[str, Any]:
        """Upload one reference image; return the FileData that points at it."""
        import aiohttp

        form = aiohttp.FormData()
        extension = reference.mime.rpartition("/")[2] or "png"
        form.add_field(
            "files", reference.data, filename=f"reference.{extension}", content_type=reference.mime
        )
        url = f"{self._base_url}{prefix}/upload"
        paths = await request_json(self._session, "POST", url, opts, data=form)
        if not isinstance(paths, list) or not paths or not isinstance(paths[0], str):
            raise UpstreamError(
                f"{self.name}: unexpected /upload answer: {safe_excerpt(repr(paths).encode())}",
                backend=self.name,
                problem="upload",
            )
        return {"path": paths[0], "orig_name": f"reference.{extension}", "meta": FILE_DATA_META}

    def _file_url(self, ref: str | dict[str, Any], prefix: str) -> str:
        """Where to GET an output file.

        A server ``path`` is preferred over ``url``: Gradio 4.44's ``/call`` builds the ``url``
        from the wrong root (``…/ca/file=…``, a 404), and ``base_url`` is what we can reach.
        """
        if isinstance(ref, dict):
            path, url = ref.get("path"), ref.get("url")
            if isinstance(path, str) and path and not _is_absolute_http(path):
                return f"{self._base_url}{prefix}/file={path}"
            ref = url if isinstance(url, str) and url else str(path or "")
        if _is_absolute_http(ref):
            return ref
        if ref.startswith("/") and "/file=" in ref:
            return str(URL(self._base_url + "/").join(URL(ref)))
        return f"{self._base_url}{prefix}/file={ref}"

    async def _download(self, url: str) -> tuple[bytes, str]:
        """Fetch the image; the token goes only to the app itself, never to a foreign host."""
        try:
            same_origin = URL(url).origin() == URL(self._base_url).origin()
        except ValueError:
            same_origin = False  # not a usable URL: download() refuses it with an UpstreamError
        opts = self._options(
            self._settings.timeout, max_bytes=MAX_IMAGE_BYTES, with_token=same_origin
        )
        body, _content_type = await download(self._session, url, opts)
        mime = sniff_mime(body)
        if mime is None:
            raise UpstreamError(
                f"{self.name}: downloaded file is not an image: {safe_excerpt(body[:60])}",
                backend=self.name,
                problem="bad_image",
            )
        return body, mime

    def _values(self, request: GenerationRequest) -> dict[str, Any]:
        """The typed value of every placeholder except ``{image}`` (known only after upload)."""
        settings = self._settings
        resolution = resolution_for(settings.resolution, request.aspect, self._resolution_choices)
        size = _SIZE.search(resolution)
        width, height = (int(size[1]), int(size[2])) if size else (0, 0)
        seed = settings.seed if request.seed is None else request.seed
        return {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "seed": seed,
            "resolution": resolution,
            "width": width,
            "height": height,
            "steps": settings.steps,
            "shift": settings.shift,
            "random_seed": seed == -1,
            "image": None,
        }

    def _options(
        self, timeout: float, *, max_bytes: int = MAX_RESPONSE_BYTES, with_token: bool = True
    ) -> RequestOptions:
        token = resolve_secret(self._settings.token) if with_token else ""
        return RequestOptions(
            backend=self.name,
            timeout=timeout,
            read_timeout=min(STREAM_IDLE_TIMEOUT, timeout),
            proxy=self._settings.proxy or None,
            max_bytes=max_bytes,
            headers={"Authorization": f"Bearer {token}"} if token else {},
        )

    def _no_image(self, detail: str) -> UpstreamError:
        return UpstreamError(
            f"{self.name}: no image in the result ({detail})",
            backend=self.name,
            problem="no_image",
        )


def app_url(base_url: str) -> str:
    """The app's own address; a Space's page (``huggingface.co/spaces/OWNER/NAME``, copied from
    the browser) becomes the app it shows, ``https://owner-name.hf.space``."""
    page = _SPACE_PAGE.match(base_url)
    if page is None:
        return base_url.rstrip("/")
    host = re.sub(r"[^a-z0-9]+", "-", f"{page[1]}-{page[2]}".lower())
    return f"https://{host}.hf.space"


def fill_template(item: Any, values: dict[str, Any]) -> Any:
    """One input item: ``"{seed}"`` alone takes the typed value, other strings are substituted."""
    if not isinstance(item, str):
        return item
    for name in GRADIO_PLACEHOLDERS:
        if item == f"{{{name}}}":
            return values[name]
    for name in GRADIO_PLACEHOLDERS:
        token = f"{{{name}}}"
        if token in item:
            value = values[name]
            if isinstance(value, dict):  # an uploaded image inside a longer string: its path
                value = value["path"]
            item = item.replace(token, "" if value is None else str(value))
    return item


def resolution_for(
    resolution: str, aspect: Aspect | None, choices: tuple[str, ...] | None = None
) -> str:
    """The resolution to send for an aspect hint; a hint never yields a value the app refuses.

    With the app's ``choices`` for its resolution input: the configured value when it already
    has the hinted orientation and is offered, else the choice nearest in aspect ratio to the
    hint, then in area to the configured size; no choice with a ``WxH`` size keeps the
    configured value. A free input (``choices`` None) given a bare ``WxH`` gets it turned round,
    or a size of about the same area in the hinted shape; anything else is kept.
    """
    size = _SIZE.search(resolution)
    if aspect is None:
        return resolution
    if choices is None:
        bare = _SIZE.fullmatch(resolution.strip())
        if bare is None or _orientation(int(bare[1]), int(bare[2])) == aspect:
            return resolution
        width, height = int(bare[1]), int(bare[2])
        if width != height and aspect != "square":
            return f"{height}x{width}"  # the configured shape, turned round
        area, ratio = width * height, ASPECT_TARGETS[aspect]
        width, height = (max(64, round(math.sqrt(area * r) / 64) * 64) for r in (ratio, 1 / ratio))
        return f"{width}x{height}"
    sizes = [(c, int(m[1]), int(m[2])) for c in choices if (m := _SIZE.search(c)) and int(m[2])]
    if not sizes:
        return resolution
    area = int(size[1]) * int(size[2]) if size else 0
    if size and resolution in choices and _orientation(int(size[1]), int(size[2])) == aspect:
        return resolution
    target = math.log(ASPECT_TARGETS[aspect])

    def distance(item: tuple[str, int, int]) -> tuple[float, float]:
        _, width, height = item
        ratio_gap = round(abs(math.log(width / height) - target), 6)
        area_gap = abs(math.log(width * height / area)) if area and width else 0.0
        return ratio_gap, area_gap

    return min(sizes, key=distance)[0]


def input_choices(
    config: dict[str, Any], api_name: str, template: tuple[Any, ...]
) -> tuple[str, ...] | None:
    """The dropdown choices of the input the template's lone ``{resolution}`` goes to, if any.

    Gradio 4 to 6 list them in ``/config`` as ``components[].props.choices``, each a
    ``[label, value]`` pair (older apps: a bare value); the endpoint's ``inputs`` holds the ids.
    """
    try:
        slot = template.index("{resolution}")
        dependency = next(
            d
            for d in config.get("dependencies") or []
            if isinstance(d, dict)
            and str(d.get("api_name") or "").strip("/") == api_name.strip("/")
        )
        component_id = dependency["inputs"][slot]
        component = next(
            c
            for c in config.get("components") or []
            if isinstance(c, dict) and c.get("id") == component_id
        )
        raw = component["props"]["choices"]
    except (ValueError, StopIteration, KeyError, IndexError, TypeError):
        return None
    if not isinstance(raw, list):
        return None
    values = [c[-1] if isinstance(c, list | tuple) and c else c for c in raw]
    return tuple(str(value) for value in values if isinstance(value, str | int | float))


def find_image_ref(value: Any) -> str | dict[str, Any] | None:
    """The first image in an output: FileData, gallery item, list of either, or a URL string."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, dict):
        if "image" in value:  # a gallery item {"image": FileData, "caption": …}
            return find_image_ref(value["image"])
        if value.get("path") or value.get("url"):
            return value
        return None
    if isinstance(value, list):
        for item in value:
            found = find_image_ref(item)
            if found is not None:
                return found
    return None


def find_seed(outputs: list[Any], image_index: int) -> int | None:
    """The seed an app reports beside the image (Z-Image: ``"123"``, ``123``), if any."""
    for index, value in enumerate(outputs):
        if index == image_index or isinstance(value, bool):
            continue
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.isdigit():
            return int(value)
    return None


def _is_absolute_http(ref: str) -> bool:
    """Whether a Gradio file reference is already an ``http(s)://`` URL rather than a path."""
    return ref.partition("://")[0] in HTTP_SCHEMES


def _orientation(width: int, height: int) -> Aspect:
    if width == height:
        return "square"
    return "landscape" if width > height else "portrait"
