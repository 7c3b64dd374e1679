"""The bot's recently sent pictures, by message id, per group and per requester.

A reply to one of these messages is addressed to the bot and may use the picture as a reference
even when the OneBot implementation cannot return the bot's own message; "再来一张" reuses the
prompt that made one. Bounded in pictures per group and in total bytes, oldest evicted first.
Pure: no NoneBot imports.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from .backends import ReferenceImage

MAX_PER_GROUP = 20
"""Pictures kept per group (private chats count as one group each)."""
MAX_BYTES = 64 * 1024 * 1024
"""Image bytes kept in all; the oldest pictures go first."""


@dataclass(frozen=True)
class RecentPicture:
    """One delivered picture and what made it."""

    message_id: str
    group_id: str | None
    user_id: str
    """The requester."""
    prompt: str
    """The final prompt sent to the backend."""
    style: str | None
    backend: str
    seed: int | None
    image: bytes
    """The picture as sent."""
    mime: str
    references: tuple[ReferenceImage, ...]
    request_text: str
    created: float
    """``time.time()`` when it was sent."""


class RecentPictures:
    """Recent pictures in memory; ``add`` in send order, the lookups never raise."""

    def __init__(self, max_per_group: int = MAX_PER_GROUP, max_bytes: int = MAX_BYTES) -> None:
        self.max_per_group = max_per_group
        self.max_bytes = max_bytes
        self._pictures: OrderedDict[int, RecentPicture] = OrderedDict()
        """Every kept picture, oldest first, under a running key."""
        self._next_key = 0
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._pictures)

    def add(self, picture: RecentPicture) -> None:
        """Keep ``picture``; evict the group's oldest beyond ``max_per_group``, then by bytes."""
        self._pictures[self._next_key] = picture
        self._next_key += 1
        self._bytes += len(picture.image)
        in_group = [k for k, p in self._pictures.items() if p.group_id == picture.group_id]
        for key in in_group[: max(0, len(in_group) - self.max_per_group)]:
            self._drop(key)
        while self._bytes > self.max_bytes and self._pictures:
            self._drop(next(iter(self._pictures)))

    def by_message(self, group_id: str | None, message_id: str) -> RecentPicture | None:
        """The (first) picture sent in message ``message_id`` in that group, if still kept."""
        return next(
            (
                p
                for p in self._pictures.values()
                if p.group_id == group_id and p.message_id == message_id
            ),
            None,
        )

    def last_by_user(
        self, group_id: str | None, user_id: str, within_seconds: float, now: float | None = None
    ) -> RecentPicture | None:
        """The newest picture ``user_id`` asked for in that group within the last seconds."""
        now = time.time() if now is None else now
        for picture in reversed(self._pictures.values()):
            if picture.created < now - within_seconds:
                break  # added in send order: everything older follows
            if picture.group_id == group_id and picture.user_id == user_id:
                return picture
        return None

    def last_in_group(self, group_id: str | None) -> RecentPicture | None:
        """The newest picture sent in that group."""
        return next((p for p in reversed(self._pictures.values()) if p.group_id == group_id), None)

    def _drop(self, key: int) -> None:
        self._bytes -= len(self._pictures.pop(key).image)
