"""Image backends: build one from its settings with an exhaustive match."""

from __future__ import annotations

from typing import TYPE_CHECKING

from typing_extensions import assert_never

from ..settings import GradioBackendSettings, OpenAIBackendSettings
from .base import (
    Aspect,
    BatchImageBackend,
    GeneratedImage,
    GenerationRequest,
    ImageBackend,
    ReferenceImage,
)

if TYPE_CHECKING:
    import aiohttp

    from ..settings import BackendSettings

__all__ = [
    "Aspect",
    "BatchImageBackend",
    "GeneratedImage",
    "GenerationRequest",
    "ImageBackend",
    "ReferenceImage",
    "create_backend",
]


def create_backend(
    name: str, settings: BackendSettings, session: aiohttp.ClientSession
) -> ImageBackend:
    """The backend object for one ``[backends.NAME]`` table."""
    match settings:
        case GradioBackendSettings():
            from .gradio import GradioBackend

            return GradioBackend(name, settings, session)
        case OpenAIBackendSettings():
            from .openai import OpenAIBackend

            return OpenAIBackend(name, settings, session)
        case _:
            assert_never(settings)
