"""Recent group messages, kept in memory for the prompt writer.

Pure: the matcher turns OneBot messages (text with ``[图片]`` placeholders; the bot's pictures as
``[图片：<prompt>]``, never the plugin's own acks or admin replies) into ``HistoryEntry``s and
adds them here. Memory is bounded twice: each group keeps at
most ``cap`` entries, and a group that has been silent for ``idle_seconds`` is forgotten.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

HISTORY_CAP = 200
"""Entries kept per group; ``llm.context_message_limit`` above this sees only these."""

IDLE_SECONDS = 24 * 3600
"""A group with no message for this long is dropped (its context window is long gone)."""

PRUNE_INTERVAL = 600
"""Seconds between sweeps for idle groups, so ``add`` stays O(1) in busy deployments."""


@dataclass(frozen=True)
class PostedImage:
    """A picture a member posted: its URL (QQ's CDN, expiring) and OneBot ``sub_type``."""

    url: str
    sub_type: int = 0
    """0 = a normal picture; anything else is a sticker or market face."""


@dataclass(frozen=True)
class HistoryEntry:
    """One chat line: sender, plain text, epoch seconds, and whether the bot said it."""

    sender: str
    text: str
    time: float
    is_bot: bool = False
    images: tuple[PostedImage, ...] = ()
    """The pictures in the message, in order (stored for later use, not shown to the LLM)."""


class History:
    """Per-group bounded buffer of recent messages."""

    def __init__(self, *, cap: int = HISTORY_CAP, idle_seconds: float = IDLE_SECONDS) -> None:
        self._cap = cap
        self._idle_seconds = idle_seconds
        self._groups: dict[str, deque[HistoryEntry]] = {}
        self._last_prune = 0.0

    def __len__(self) -> int:
        """Number of groups currently held."""
        return len(self._groups)

    def add(self, group_id: str, entry: HistoryEntry) -> None:
        """Record a message; the oldest entry of a full group falls out."""
        entries = self._groups.get(group_id)
        if entries is None:
            entries = self._groups[group_id] = deque(maxlen=self._cap)
        entries.append(entry)
        if entry.time - self._last_prune >= PRUNE_INTERVAL:
            self._prune(entry.time)

    def recent(
        self, group_id: str, *, limit: int, minutes: float, now: float | None = None
    ) -> list[HistoryEntry]:
        """The last ``limit`` entries of the last ``minutes``, oldest first (0 disables context)."""
        entries = self._groups.get(group_id)
        if not entries or limit <= 0 or minutes <= 0:
            return []
        since = (time.time() if now is None else now) - minutes * 60
        picked: list[HistoryEntry] = []
        for entry in reversed(entries):
            if entry.time < since or len(picked) >= limit:
                break
            picked.append(entry)
        picked.reverse()
        return picked

    def _prune(self, now: float) -> None:
        self._last_prune = now
        cutoff = now - self._idle_seconds
        idle = [gid for gid, entries in self._groups.items() if entries[-1].time < cutoff]
        for gid in idle:
            del self._groups[gid]
