"""Find and decode the image a long chat text holds, without blocking the event loop for long.

A chat answer may carry its image as a markdown image, a data URL, an http(s) URL or bare
base64, inside megabytes of text. Every step here is linear in the text and no single C call
(regex match, slice copy, base64 decode) walks more than ``BASE64_SLICE`` characters, so the
event loop (or, in the image worker, the GIL) is never held for more than a couple of
milliseconds; ``bench/chat_parse.py`` measures it.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Literal

BASE64_SLICE = 512 * 1024
"""Base64 characters decoded or scanned per C call (a multiple of 4: every slice decodes alone).

Such a call holds the GIL for ~2 ms; the event loop waits for it on top of the 5 ms switch
interval, so a slice twice as long would push the loop's longest stall past 10 ms."""

LONG_PAYLOAD = 4096
"""Data URL payloads longer than this are cut down to their ends before the URL patterns run."""
PAYLOAD_KEEP = 16
"""Characters kept at each end of a cut payload: a ``data``/``https`` touching it stays whole."""
MIN_BARE_BASE64 = 64
"""A chat text is taken for bare base64 only from this many base64 characters on."""

_MARKDOWN_IMAGE = re.compile(r"!\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?[^)]*\)")
_DATA_URL = re.compile(r"data:image/[\w.+-]+;base64,[A-Za-z0-9+/=_-]+")
_HTTP_URL = re.compile(r"https?://[^\s<>\"')\]]+")
_URL_PATTERNS = (
    (_MARKDOWN_IMAGE, "!", (0,), 1),
    (_DATA_URL, ":", (4,), 0),
    (_HTTP_URL, ":", (5, 4), 0),
)
"""In order of preference: pattern, a character every match holds (a memchr finds it in ~0.3 ms
per 8 MB; a longer literal takes ~20x that), how far before it a match starts, the group to take.
"""
_BASE64_MARK = ";base64,"
_PAYLOAD_RUN = re.compile(r"[A-Za-z0-9+/=_-]*")
"""A data URL payload as ``_DATA_URL`` reads it; every URL pattern accepts all its characters."""
_BARE_BASE64_RUN = re.compile(r"[A-Za-z0-9+/\r\n]*")


def decode_base64(text: str) -> bytes:
    """Strict base64 decoding (run in the image worker), one slice per C call.

    One call over a whole image holds the GIL throughout (~12 ms for a 1024² PNG, ~45 ms at
    2048²), and with it the event loop; between ~2 ms slices the loop can take the GIL back.
    """
    if len(text) <= BASE64_SLICE:
        return base64.b64decode(text, validate=True)
    pieces = []
    for start in range(0, len(text), BASE64_SLICE):
        piece = text[start : start + BASE64_SLICE]
        if piece.endswith("=") and start + BASE64_SLICE < len(text):
            raise binascii.Error("padding before the end of the data")
        pieces.append(base64.b64decode(piece, validate=True))
    return b"".join(pieces)


def compact_base64(text: str) -> str:
    """``text`` without whitespace, padded to a multiple of 4 (in the worker, a slice per call)."""
    pieces = [
        "".join(text[start : start + BASE64_SLICE].split())
        for start in range(0, len(text), BASE64_SLICE)
    ]
    compact = "".join(pieces)
    return compact + "=" * (-len(compact) % 4)


def image_in_text(text: str) -> tuple[Literal["url", "base64"], str] | None:
    """The image a chat text holds: a URL (``_url_in_text``), else the text itself if it is all
    base64, else ``None``. Linear in the text, and no single call walks more than a slice of it.
    """
    url = _url_in_text(text)
    if url is not None:
        return "url", url
    stripped = text.strip()
    end = _run_end(_BARE_BASE64_RUN, stripped, 0)
    if end >= MIN_BARE_BASE64 and stripped[end:] in ("", "=", "=="):
        return "base64", stripped
    return None


def _url_in_text(text: str) -> str | None:
    """The first image reference in chat text: markdown image, data URL, then bare http(s) URL.

    The patterns run on a copy with long data URL payloads cut down to their ends, and only where
    ``str.find`` sees their literal start: the regex engine never walks megabytes of base64.
    """
    skeleton, cuts = _without_long_payloads(text)
    for pattern, anchor, offsets, group in _URL_PATTERNS:
        at = skeleton.find(anchor)
        while at != -1:
            for offset in offsets:
                match = pattern.match(skeleton, at - offset) if at >= offset else None
                if match is not None:
                    start, end = match.span(group)
                    return _sliced_copy(text, _unskeleton(start, cuts), _unskeleton(end, cuts))
            at = skeleton.find(anchor, at + 1)
    return None


def _without_long_payloads(text: str) -> tuple[str, list[tuple[int, int]]]:
    """``text`` with each data URL payload over ``LONG_PAYLOAD`` cut to its two ends, and the cuts.

    Every URL pattern accepts all payload characters and no match starts or ends inside a
    payload's middle, so the patterns match the copy as they would the text. A cut
    ``(position, shift)``: copy positions from ``position`` on are ``shift`` less than in ``text``.
    """
    pieces: list[str] = []
    cuts: list[tuple[int, int]] = []
    copied = removed = 0
    comma = text.find(",")  # one character: a memchr (see _URL_PATTERNS)
    while comma != -1:
        start = comma + 1
        end = start
        if text.startswith(_BASE64_MARK, start - len(_BASE64_MARK)):
            end = _run_end(_PAYLOAD_RUN, text, start)
        if end - start > LONG_PAYLOAD:
            pieces.append(text[copied : start + PAYLOAD_KEEP])
            position = start + PAYLOAD_KEEP - removed
            copied = end - PAYLOAD_KEEP
            removed += copied - (start + PAYLOAD_KEEP)
            cuts.append((position, removed))
        comma = text.find(",", end)
    if not cuts:
        return text, cuts
    pieces.append(text[copied:])
    return "".join(pieces), cuts


def _unskeleton(position: int, cuts: list[tuple[int, int]]) -> int:
    """A position in ``_without_long_payloads``'s copy → the same position in the text."""
    shift = 0
    for cut, removed in cuts:
        if position < cut:
            break
        shift = removed
    return position + shift


def _sliced_copy(text: str, start: int, end: int) -> str:
    """``text[start:end]``, a slice per C call: a data URL copied out of text holding Chinese is
    narrowed from 2 bytes a character to 1 (~5 ms for 8 MB in one call)."""
    if end - start <= BASE64_SLICE:
        return text[start:end]
    return "".join(text[i : min(i + BASE64_SLICE, end)] for i in range(start, end, BASE64_SLICE))


def _run_end(run: re.Pattern[str], text: str, start: int) -> int:
    """Where the run of ``run``'s characters from ``start`` ends, one slice per regex call.

    The regex engine holds the GIL (~4 ms per MB here), and with it the event loop; between
    slices the loop can take the GIL back.
    """
    position = start
    while True:
        stop = min(position + BASE64_SLICE, len(text))
        match = run.match(text, position, stop)
        end = match.end() if match is not None else position
        if end < stop or stop == len(text):
            return end
        position = stop
