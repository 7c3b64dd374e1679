"""The per-group recent-message buffer: windows by count and time, bounded memory."""

from __future__ import annotations

from nonebot_plugin_llm2pic.history import IDLE_SECONDS, PRUNE_INTERVAL, History, HistoryEntry

NOW = 1_700_000_000.0


def _fill(history: History, group: str, count: int, *, start: float, step: float = 1.0) -> None:
    for i in range(count):
        history.add(group, HistoryEntry(sender=f"u{i}", text=f"m{i}", time=start + i * step))


def test_recent_is_oldest_first_and_limited() -> None:
    """recent() returns the newest `limit` entries in chronological order."""
    history = History()
    _fill(history, "g", 10, start=NOW - 100)
    assert [e.text for e in history.recent("g", limit=3, minutes=30, now=NOW)] == ["m7", "m8", "m9"]


def test_recent_drops_entries_older_than_window() -> None:
    """Entries older than `minutes` are left out even when under the limit."""
    history = History()
    history.add("g", HistoryEntry("a", "old", NOW - 31 * 60))
    history.add("g", HistoryEntry("b", "new", NOW - 29 * 60))
    assert [e.text for e in history.recent("g", limit=20, minutes=30, now=NOW)] == ["new"]


def test_groups_are_separate() -> None:
    """Each group sees only its own messages."""
    history = History()
    history.add("g1", HistoryEntry("a", "one", NOW))
    history.add("g2", HistoryEntry("b", "two", NOW))
    assert [e.text for e in history.recent("g1", limit=5, minutes=5, now=NOW)] == ["one"]
    assert history.recent("unknown", limit=5, minutes=5, now=NOW) == []


def test_zero_limit_or_minutes_disables_context() -> None:
    """context_message_limit = 0 or context_time_minutes = 0 gives no history."""
    history = History()
    history.add("g", HistoryEntry("a", "hi", NOW))
    assert history.recent("g", limit=0, minutes=30, now=NOW) == []
    assert history.recent("g", limit=20, minutes=0, now=NOW) == []


def test_bot_entries_are_kept() -> None:
    """The bot's own lines stay in the buffer, marked as such."""
    history = History()
    history.add("g", HistoryEntry("小画", "[图片]", NOW, is_bot=True))
    assert history.recent("g", limit=5, minutes=5, now=NOW)[0].is_bot


def test_per_group_cap_bounds_memory() -> None:
    """A group never holds more than `cap` entries; the oldest fall out."""
    history = History(cap=50)
    _fill(history, "g", 500, start=NOW - 400, step=0.5)
    kept = history.recent("g", limit=1000, minutes=60, now=NOW)
    assert len(kept) == 50
    assert kept[-1].text == "m499"


def test_idle_groups_are_forgotten() -> None:
    """A group silent for longer than idle_seconds is dropped on a later sweep."""
    history = History()
    history.add("quiet", HistoryEntry("a", "hi", NOW))
    history.add("busy", HistoryEntry("b", "hi", NOW + IDLE_SECONDS + PRUNE_INTERVAL))
    assert len(history) == 1
    assert history.recent("quiet", limit=5, minutes=10**6, now=NOW) == []


def test_recent_uses_wall_clock_by_default() -> None:
    """Without `now`, the time window is measured from the current time."""
    import time

    history = History()
    history.add("g", HistoryEntry("a", "fresh", time.time()))
    history.add("h", HistoryEntry("a", "stale", time.time() - 3600))
    assert [e.text for e in history.recent("g", limit=5, minutes=1)] == ["fresh"]
    assert history.recent("h", limit=5, minutes=1) == []
