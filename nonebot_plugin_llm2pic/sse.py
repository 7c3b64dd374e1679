"""Incremental Server-Sent Events decoder: bytes in, ``ServerSentEvent``s out.

Pure (no I/O, no NoneBot). Follows the WHATWG "parsing an event stream" rules
(https://html.spec.whatwg.org/multipage/server-sent-events.html): CR, LF and CRLF line ends (also
when a CR ends one chunk and the LF starts the next), a leading BOM, ``:`` comments, one optional
space after the colon, multi-line ``data`` joined with ``\\n``, and no line-length limit.

Base64 images arrive as one multi-megabyte ``data:`` line split over thousands of network chunks,
so the decoder is linear and cheap per chunk: it searches for line ends in the raw bytes of the
new chunk only (CR and LF never occur inside a UTF-8 sequence), holds the unfinished line as
byte pieces, decodes them in ~64 KB batches while they are still in cache, and builds each value
with a single join.
"""

from __future__ import annotations

import codecs
import json
from dataclasses import dataclass
from typing import Any

_BOM = "\ufeff"
_LF = 10
_DECODE_BATCH = 64 * 1024
"""Held bytes of an unfinished line are decoded once this many have piled up: one decode call per
batch instead of per chunk, on data still in cache (decoding a 20 MB line at its end is 3x slower
than in batches)."""


@dataclass(frozen=True)
class ServerSentEvent:
    """One dispatched event; ``id`` is the last event id seen so far (it persists per spec)."""

    event: str = "message"
    data: str = ""
    id: str = ""
    retry: int | None = None

    def json(self) -> Any:
        """``data`` parsed as JSON (raises ``ValueError`` when it is not JSON)."""
        try:
            return json.loads(self.data)
        except RecursionError as err:  # valid JSON nested deeper than Python can parse
            raise ValueError("JSON nested too deeply") from err


class SSEDecoder:
    """Feed raw bytes as they arrive; get back the events each chunk completes."""

    def __init__(self) -> None:
        self._at_start = True  # the BOM check (on the first line) is still to do
        self._held: list[bytes] = []  # raw pieces of the unfinished line, not decoded yet
        self._held_size = 0
        self._decoded: list[str] = []  # decoded batches of the unfinished line
        self._skip_lf = False  # the previous chunk ended with CR: an LF now is part of CRLF
        self._event = ""
        self._data: list[str] = []
        self._last_id = ""
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Decode one chunk (any size, any split point); return the events it completed."""
        lf = chunk.find(b"\n")
        cr = chunk.find(b"\r")
        if lf < 0 and cr < 0 and not self._skip_lf:
            # The middle of a long line, i.e. almost every chunk of an image: hold it as is.
            if chunk:
                self._held.append(chunk)
                self._held_size += len(chunk)
                if self._held_size >= _DECODE_BATCH:
                    self._decode_held()
            return []
        events: list[ServerSentEvent] = []
        start = 0
        end = len(chunk)
        if self._skip_lf and end:
            self._skip_lf = False
            if chunk[0] == _LF:
                start = 1
                lf = chunk.find(b"\n", start)
        # Each terminator is searched for again only once its previous hit is consumed, so every
        # byte of the chunk is scanned at most once per terminator (memchr speed, linear).
        while lf >= 0 or cr >= 0:
            if cr < 0 or 0 <= lf < cr:
                pos, next_start = lf, lf + 1
            elif cr + 1 < end:
                pos = cr
                next_start = cr + 2 if chunk[cr + 1] == _LF else cr + 1
            else:
                pos, next_start = cr, cr + 1
                self._skip_lf = True
            event = self._line(self._line_parts(chunk[start:pos]))
            if event is not None:
                events.append(event)
            start = next_start
            if 0 <= lf < start:
                lf = chunk.find(b"\n", start)
            if 0 <= cr < start:
                cr = chunk.find(b"\r", start)
        if start < end:
            # Inlined: this runs for every chunk of a multi-megabyte line.
            self._held.append(chunk[start:] if start else chunk)
            self._held_size += end - start
            if self._held_size >= _DECODE_BATCH:
                self._decode_held()
        return events

    def close(self) -> list[ServerSentEvent]:
        """End of stream: an event without its final blank line is discarded (WHATWG)."""
        self._held = []
        self._held_size = 0
        self._decoded = []
        self._skip_lf = False
        self._event = ""
        self._data = []
        return []

    def _decode_held(self) -> None:
        """Decode the held pieces of the unfinished line as one batch."""
        batch = b"".join(self._held)
        text, used = codecs.utf_8_decode(batch, "replace", False)
        self._decoded.append(text)
        tail = batch[used:]  # a multibyte character cut by the batch end waits for the rest
        self._held = [tail] if tail else []
        self._held_size = len(tail)

    def _line_parts(self, last: bytes) -> list[str]:
        """The finished line (held pieces + ``last``) as decoded parts, in order."""
        if not self._held and not self._decoded:
            return [last.decode("utf-8", "replace")]
        self._held.append(last)
        parts = self._decoded
        parts.append(b"".join(self._held).decode("utf-8", "replace"))
        self._held = []
        self._held_size = 0
        self._decoded = []
        return parts

    def _line(self, pieces: list[str]) -> ServerSentEvent | None:
        if self._at_start:
            # A BOM can only open the stream, i.e. the first line (its bytes may span chunks).
            self._at_start = False
            if pieces[0].startswith(_BOM):
                pieces[0] = pieces[0][1:]
        first = pieces[0]
        colon = first.find(":")
        if len(pieces) > 1 and 0 < colon < len(first) - 1:
            # A long line (a base64 image): cut the field name off the first piece so the value
            # is built by one join, instead of joining the line and then slicing the value.
            pieces[0] = first[colon + 2 if first[colon + 1] == " " else colon + 1 :]
            self._field(first[:colon], "".join(pieces))
            return None
        line = "".join(pieces) if len(pieces) > 1 else first
        if not line:
            return self._dispatch()
        colon = line.find(":")
        if colon < 0:
            self._field(line, "")
        elif colon > 0:  # colon == 0 is a comment (keep-alive): ignored
            value_start = colon + 2 if line.startswith(" ", colon + 1) else colon + 1
            self._field(line[:colon], line[value_start:])
        return None

    def _field(self, name: str, value: str) -> None:
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._last_id = value
        elif name == "retry":
            if value.isascii() and value.isdigit():
                self._retry = int(value)

    def _dispatch(self) -> ServerSentEvent | None:
        if not self._data:
            self._event = ""
            return None
        event = ServerSentEvent(
            event=self._event or "message",
            data="\n".join(self._data),
            id=self._last_id,
            retry=self._retry,
        )
        self._event = ""
        self._data = []
        return event
