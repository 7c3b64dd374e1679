"""What every image backend takes and returns, and the protocol it implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ..transport import ProbeResult

Aspect = Literal["square", "landscape", "portrait"]


@dataclass(frozen=True)
class ReferenceImage:
    """An image the user supplied (in the request or the replied message), already downloaded."""

    data: bytes
    mime: str


@dataclass(frozen=True)
class GenerationRequest:
    """One image to draw. ``aspect`` is a hint (横图/竖图/方图) mapped to the nearest size."""

    prompt: str
    negative_prompt: str = ""
    references: tuple[ReferenceImage, ...] = ()
    aspect: Aspect | None = None
    seed: int | None = None
    """A seed for backends that take one (None: the backend's configured seed)."""
    n: int = 1
    """Pictures wanted from one call, where the backend can draw several (``generate_batch``)."""


@dataclass(frozen=True)
class GeneratedImage:
    """Raw image bytes as the upstream sent them, with what we know about them."""

    data: bytes
    mime: str
    backend: str
    seed: int | None = None


class ImageBackend(Protocol):
    """A configured backend. Errors are ``exceptions.BackendError`` subclasses."""

    name: str

    @property
    def supports_references(self) -> bool: ...

    async def generate(self, request: GenerationRequest) -> GeneratedImage:
        """Draw one image (retries included), or raise a ``BackendError``."""
        ...

    async def probe(self) -> ProbeResult:
        """Check reachability and auth without generating; a typed error when unusable."""
        ...


@runtime_checkable
class BatchImageBackend(ImageBackend, Protocol):
    """A backend that may draw several pictures in one call."""

    async def generate_batch(self, request: GenerationRequest) -> list[GeneratedImage]:
        """Up to ``request.n`` images from one call (at least one), or raise a ``BackendError``.

        An endpoint may return fewer than asked; the caller draws the rest one by one.
        """
        ...
