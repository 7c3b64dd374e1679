"""Cooldowns and per-minute limits, SQLite daily quotas, and the per-backend job queue."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable
from datetime import datetime, timezone
from pathlib import Path

import pytest

from nonebot_plugin_llm2pic.limits import (
    PRUNE_EVERY_USERS,
    Admission,
    AdmissionLimits,
    JobQueue,
    QueueFullError,
    QuotaExceededError,
    QuotaStore,
    RateLimiter,
    Refusal,
    Ticket,
    admit,
    quota_day,
)

# --- RateLimiter -------------------------------------------------------------------------------


def test_first_request_is_allowed() -> None:
    """A user never seen before may draw."""
    assert RateLimiter().check("u", cooldown=30, per_minute=5, now=0) is None


@pytest.mark.parametrize(
    ("now", "expected"),
    [(100.0, 30.0), (110.0, 20.0), (129.5, 0.5), (130.0, None), (500.0, None)],
)
def test_cooldown_counts_from_last_hit(now: float, expected: float | None) -> None:
    """After a hit at t=100 with a 30 s cooldown the wait shrinks to zero at t=130."""
    limiter = RateLimiter()
    limiter.hit("u", now=100)
    assert limiter.check("u", cooldown=30, per_minute=0, now=now) == expected


def test_cooldown_is_per_user() -> None:
    """One user's hit does not slow down another user."""
    limiter = RateLimiter()
    limiter.hit("a", now=0)
    assert limiter.check("b", cooldown=30, per_minute=5, now=1) is None


def test_cooldown_change_applies_to_next_check() -> None:
    """The cooldown is read at each check, so a config edit takes effect at once."""
    limiter = RateLimiter()
    limiter.hit("u", now=0)
    assert limiter.check("u", cooldown=30, per_minute=0, now=10) == 20
    assert limiter.check("u", cooldown=5, per_minute=0, now=10) is None


@pytest.mark.parametrize(
    ("now", "expected"),
    [(3.0, 57.0), (59.0, 1.0), (60.5, None)],
)
def test_per_minute_window(now: float, expected: float | None) -> None:
    """With 3 per minute and hits at t=0,1,2, the 4th waits until the t=0 hit leaves the window."""
    limiter = RateLimiter()
    for t in (0, 1, 2):
        limiter.hit("u", now=t)
    assert limiter.check("u", cooldown=0, per_minute=3, now=now) == expected


def test_per_minute_zero_is_unlimited() -> None:
    """per_minute = 0 never refuses."""
    limiter = RateLimiter()
    for t in range(100):
        limiter.hit("u", now=t * 0.1)
    assert limiter.check("u", cooldown=0, per_minute=0, now=10) is None


def test_longer_of_cooldown_and_window_wins() -> None:
    """When both limits apply, the wait is the longer one."""
    limiter = RateLimiter()
    limiter.hit("u", now=0)
    limiter.hit("u", now=50)
    assert limiter.check("u", cooldown=5, per_minute=2, now=51) == 9
    assert limiter.check("u", cooldown=20, per_minute=2, now=51) == 19


def test_should_notify_once_per_window() -> None:
    """A refused user is told once per window, then again once the window has passed."""
    limiter = RateLimiter()
    answers = [limiter.should_notify("u", window=30, now=t) for t in (0, 1, 29.9, 30, 45, 61)]
    assert answers == [True, False, False, True, False, True]


def test_should_notify_is_per_user() -> None:
    """Another user's notification does not silence this one."""
    limiter = RateLimiter()
    assert limiter.should_notify("a", window=30, now=0)
    assert limiter.should_notify("b", window=30, now=1)


def test_idle_users_are_pruned() -> None:
    """A flood of distinct users does not grow memory without bound."""
    limiter = RateLimiter()
    for n in range(PRUNE_EVERY_USERS * 3):
        limiter.hit(f"user{n}", now=n * 0.001)
    limiter.hit("late", now=10_000)
    assert len(limiter) <= PRUNE_EVERY_USERS + 1


def test_pruning_keeps_users_still_in_cooldown() -> None:
    """Users within the longest cooldown seen are kept, so their wait still holds."""
    limiter = RateLimiter()
    assert limiter.check("slow", cooldown=3600, per_minute=0, now=0) is None
    limiter.hit("slow", now=0)
    for n in range(PRUNE_EVERY_USERS + 1):
        limiter.hit(f"user{n}", now=100)
    assert limiter.check("slow", cooldown=3600, per_minute=0, now=100) == 3500


# --- QuotaStore --------------------------------------------------------------------------------

NOON = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
async def quota(tmp_path: Path) -> AsyncIterator[QuotaStore]:
    store = QuotaStore(tmp_path / "quota.sqlite3")
    await store.open()
    yield store
    await store.close()


async def reserve(
    store: QuotaStore,
    user: str = "u",
    group: str | None = "g",
    *,
    user_limit: int = 0,
    group_limit: int = 0,
    tz: str = "UTC",
    now: datetime = NOON,
):
    return await store.reserve(
        user_id=user,
        group_id=group,
        user_limit=user_limit,
        group_limit=group_limit,
        tz=tz,
        now=now,
    )


async def usage(store: QuotaStore, user: str = "u", group: str | None = "g", *, now=NOON):
    return await store.usage(user_id=user, group_id=group, tz="UTC", now=now)


async def test_reserve_counts_user_and_group(quota: QuotaStore) -> None:
    """A reservation counts one unit for the user and one for the group."""
    reservation = await reserve(quota)
    assert (reservation.day, reservation.user_id, reservation.group_id) == ("2024-05-01", "u", "g")
    assert await usage(quota) == (1, 1)


async def test_private_chat_counts_only_user(quota: QuotaStore) -> None:
    """Without a group only the user's quota is counted and checked."""
    await reserve(quota, group=None, group_limit=1)
    await reserve(quota, group=None, group_limit=1)
    assert await usage(quota, group=None) == (2, 0)


async def test_user_quota_refuses_and_counts_nothing(quota: QuotaStore) -> None:
    """At the user limit a reservation raises (scope user) and the group is not charged."""
    for _ in range(2):
        await reserve(quota, user_limit=2)
    with pytest.raises(QuotaExceededError) as info:
        await reserve(quota, user_limit=2)
    assert (info.value.scope, info.value.limit) == ("user", 2)
    assert "2/2" in info.value.user_message
    assert await usage(quota) == (2, 2)


async def test_group_quota_spans_users(quota: QuotaStore) -> None:
    """The group limit counts every member; the next member is refused with scope group."""
    await reserve(quota, "a", group_limit=2)
    await reserve(quota, "b", group_limit=2)
    with pytest.raises(QuotaExceededError) as info:
        await reserve(quota, "c", group_limit=2)
    assert (info.value.scope, info.value.limit) == ("group", 2)
    assert "本群" in info.value.user_message
    assert await usage(quota, "c") == (0, 2)


async def test_zero_limits_are_unlimited(quota: QuotaStore) -> None:
    """Limits of 0 never refuse, and usage is still counted."""
    for _ in range(30):
        await reserve(quota, user_limit=0, group_limit=0)
    assert await usage(quota) == (30, 30)


async def test_release_gives_the_unit_back(quota: QuotaStore) -> None:
    """Releasing a failed job's reservation makes room for another request."""
    first = await reserve(quota, user_limit=1, group_limit=1)
    await quota.release(first)
    assert await usage(quota) == (0, 0)
    await reserve(quota, user_limit=1, group_limit=1)


async def test_release_never_goes_below_zero(quota: QuotaStore) -> None:
    """A stray second release cannot create negative usage (extra allowance)."""
    reservation = await reserve(quota)
    await quota.release(reservation)
    await quota.release(reservation)
    assert await usage(quota) == (0, 0)


async def test_release_after_midnight_does_not_touch_today(quota: QuotaStore) -> None:
    """A unit reserved yesterday goes back to yesterday, not into today's count."""
    yesterday = await reserve(quota, now=datetime(2024, 4, 30, 23, 59, tzinfo=timezone.utc))
    await reserve(quota)
    await quota.release(yesterday)
    assert await usage(quota) == (1, 1)


@pytest.mark.parametrize(
    ("tz", "before", "after", "reset"),
    [
        # 16:00 UTC is midnight in Shanghai (UTC+8)
        ("Asia/Shanghai", "2024-05-01T15:59:59+00:00", "2024-05-01T16:00:00+00:00", True),
        ("UTC", "2024-05-01T15:59:59+00:00", "2024-05-01T16:00:00+00:00", False),
        ("UTC", "2024-05-01T23:59:59+00:00", "2024-05-02T00:00:00+00:00", True),
        # 05:00 UTC is midnight in New York during daylight saving time (UTC-4)
        ("America/New_York", "2024-05-01T03:59:00+00:00", "2024-05-01T04:00:00+00:00", True),
    ],
)
async def test_quota_resets_at_midnight_in_zone(
    quota: QuotaStore, tz: str, before: str, after: str, reset: bool
) -> None:
    """The quota day turns over at midnight in ``quota_timezone``."""
    await reserve(quota, user_limit=1, tz=tz, now=datetime.fromisoformat(before))
    later = datetime.fromisoformat(after)
    if reset:
        await reserve(quota, user_limit=1, tz=tz, now=later)
    else:
        with pytest.raises(QuotaExceededError):
            await reserve(quota, user_limit=1, tz=tz, now=later)


def test_empty_timezone_is_local_time() -> None:
    """tz "" uses the system's local time zone for the day."""
    now = datetime(2024, 5, 1, 12, tzinfo=timezone.utc)
    assert quota_day("", now) == now.astimezone().date().isoformat()


async def test_quota_survives_restart(tmp_path: Path) -> None:
    """Counts are in the file: a new store on the same path sees them."""
    path = tmp_path / "data" / "quota.sqlite3"
    first = QuotaStore(path)
    await first.open()
    await reserve(first, user_limit=1)
    await first.close()
    second = QuotaStore(path)
    await second.open()
    try:
        assert await usage(second) == (1, 1)
        with pytest.raises(QuotaExceededError):
            await reserve(second, user_limit=1)
    finally:
        await second.close()


async def test_database_uses_wal(quota: QuotaStore) -> None:
    """The store switches the file to WAL (readers do not block the writer)."""
    with sqlite3.connect(quota.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_old_days_are_pruned(quota: QuotaStore) -> None:
    """Rows from days long past are deleted when a new day is first used."""
    old = datetime(2024, 4, 20, 12, tzinfo=timezone.utc)
    await reserve(quota, now=old)
    await reserve(quota)
    assert await usage(quota, now=old) == (0, 0)


async def test_concurrent_reserves_never_exceed_limit(quota: QuotaStore) -> None:
    """Many simultaneous reservations admit exactly the limit and count each once."""
    results = await asyncio.gather(
        *(reserve(quota, f"user{n % 7}", group_limit=20) for n in range(60)),
        return_exceptions=True,
    )
    admitted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, QuotaExceededError)]
    assert (len(admitted), len(refused)) == (20, 40)
    assert (await usage(quota, "user0"))[1] == 20


async def test_two_connections_share_the_limit(tmp_path: Path) -> None:
    """Two stores on one file (bot and CLI) together never pass the limit."""
    path = tmp_path / "quota.sqlite3"
    stores = [QuotaStore(path), QuotaStore(path)]
    for store in stores:
        await store.open()
    try:
        results = await asyncio.gather(
            *(reserve(stores[n % 2], f"u{n}", group_limit=20) for n in range(60)),
            return_exceptions=True,
        )
        admitted = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, QuotaExceededError)]
        assert (len(admitted), len(refused)) == (20, 40)
        assert (await usage(stores[0]))[1] == 20
    finally:
        for store in stores:
            await store.close()


# --- JobQueue ----------------------------------------------------------------------------------

SETTLE_TIMEOUT = 5.0
"""A queue bug tends to hang rather than fail: bound every wait for other tasks."""


async def settle(*aws: Awaitable[object]) -> list[object]:
    """Wait for ``aws`` (exceptions returned, not raised), failing instead of hanging."""
    return await asyncio.wait_for(
        asyncio.gather(*aws, return_exceptions=True), timeout=SETTLE_TIMEOUT
    )


def test_accept_counts_waiting_until_close() -> None:
    """An accepted job waits (prompt writing) until it holds a slot or closes."""
    queue = JobQueue()
    ticket = queue.accept(max_queue=5)
    assert (queue.waiting, queue.running) == (1, 0)
    ticket.close()
    ticket.close()
    assert (queue.waiting, queue.running) == (0, 0)


def test_ticket_is_a_context_manager() -> None:
    """Leaving ``with`` closes the ticket."""
    queue = JobQueue()
    with queue.accept(max_queue=5):
        assert queue.waiting == 1
    assert queue.waiting == 0


def test_max_queue_refuses_new_jobs() -> None:
    """With max_queue jobs waiting the next is refused; a closed one makes room."""
    queue = JobQueue()
    tickets = [queue.accept(max_queue=2) for _ in range(2)]
    with pytest.raises(QueueFullError) as info:
        queue.accept(max_queue=2)
    assert info.value.user_message == "排队的人太多了，请稍后再试"
    tickets[0].close()
    queue.accept(max_queue=2)


async def test_running_jobs_do_not_count_against_max_queue() -> None:
    """A job holding a slot no longer waits, so it leaves room in the queue."""
    queue = JobQueue()
    ticket = queue.accept(max_queue=1)
    async with ticket.slot("a", max_concurrency=1):
        assert (queue.waiting, queue.running) == (0, 1)
        queue.accept(max_queue=1)
    assert queue.running == 0


async def run_jobs(
    queue: JobQueue, backend: str, count: int, *, max_concurrency: int, hold: float = 0.005
) -> int:
    """Run ``count`` jobs on one backend; return the most that held a slot at once."""
    active = peak = 0

    async def job() -> None:
        nonlocal active, peak
        with queue.accept(max_queue=1000) as ticket:
            async with ticket.slot(backend, max_concurrency=max_concurrency):
                active += 1
                peak = max(peak, active)
                await asyncio.sleep(hold)
                active -= 1

    for result in await settle(*(job() for _ in range(count))):
        assert result is None
    return peak


@pytest.mark.parametrize("max_concurrency", [1, 2, 3])
async def test_concurrency_limit_holds(max_concurrency: int) -> None:
    """Never more than max_concurrency jobs hold one backend's slots, and all of them run."""
    queue = JobQueue()
    assert await run_jobs(queue, "a", 12, max_concurrency=max_concurrency) == max_concurrency
    assert (queue.waiting, queue.running) == (0, 0)


async def test_backends_have_separate_slots() -> None:
    """A busy backend does not block another one."""
    queue = JobQueue()
    peaks = await asyncio.gather(
        run_jobs(queue, "a", 4, max_concurrency=1, hold=0.02),
        run_jobs(queue, "b", 4, max_concurrency=1, hold=0.02),
    )
    assert peaks == [1, 1]
    with queue.accept(max_queue=5) as a, queue.accept(max_queue=5) as b:
        async with a.slot("a", max_concurrency=1), b.slot("b", max_concurrency=1):
            assert queue.running == 2


class Holder:
    """A ticket holding a slot on a backend until ``release()``."""

    def __init__(self, queue: JobQueue, backend: str, max_concurrency: int = 1) -> None:
        self.ticket = queue.accept(max_queue=100)
        self._slot = self.ticket.slot(backend, max_concurrency=max_concurrency)

    async def __aenter__(self) -> Holder:
        await self._slot.__aenter__()
        return self

    async def release(self) -> None:
        await self._slot.__aexit__(None, None, None)
        self.ticket.close()


async def queued(queue: JobQueue, backend: str, order: list[str], name: str) -> asyncio.Task[None]:
    """Start a job that records ``name`` when it gets a slot; return once it is queued."""

    async def job() -> None:
        with queue.accept(max_queue=100) as ticket:
            async with ticket.slot(backend, max_concurrency=1):
                order.append(name)
                await asyncio.sleep(0)

    task = asyncio.create_task(job())
    await asyncio.sleep(0)
    return task


async def test_slots_are_granted_in_arrival_order() -> None:
    """Jobs queued for a busy backend get its slot first come, first served."""
    queue = JobQueue()
    order: list[str] = []
    holder = await Holder(queue, "a").__aenter__()
    tasks = [await queued(queue, "a", order, name) for name in "bcdef"]
    await holder.release()
    await settle(*tasks)
    assert order == list("bcdef")


async def test_ahead_counts_holders_and_earlier_waiters() -> None:
    """ahead() = slot holders + jobs queued before this one, on that backend only."""
    queue = JobQueue()
    holders = [await Holder(queue, "a", 2).__aenter__() for _ in range(2)]
    first, second = queue.accept(max_queue=10), queue.accept(max_queue=10)
    waits = [
        asyncio.create_task(run_in_slot(first, "a")),
        asyncio.create_task(run_in_slot(second, "a")),
    ]
    await asyncio.sleep(0)
    newcomer = queue.accept(max_queue=10)
    assert (first.ahead("a"), second.ahead("a"), newcomer.ahead("a")) == (2, 3, 4)
    assert newcomer.ahead("b") == 0
    for holder in holders:
        await holder.release()
    await settle(*waits)
    newcomer.close()
    assert newcomer.ahead("a") == 0


async def run_in_slot(ticket: Ticket, backend: str, max_concurrency: int = 2) -> None:
    async with ticket.slot(backend, max_concurrency=max_concurrency):
        await asyncio.sleep(0)
    ticket.close()


async def test_cancelled_waiter_leaks_nothing() -> None:
    """Cancelling a queued job frees its place; the next job still gets the slot."""
    queue = JobQueue()
    order: list[str] = []
    holder = await Holder(queue, "a").__aenter__()
    doomed = await queued(queue, "a", order, "doomed")
    survivor = await queued(queue, "a", order, "survivor")
    doomed.cancel()
    await settle(doomed)
    assert doomed.cancelled()
    assert queue.waiting == 1
    await holder.release()
    await settle(survivor)
    assert order == ["survivor"]
    assert (queue.waiting, queue.running) == (0, 0)
    assert await run_jobs(queue, "a", 3, max_concurrency=1) == 1


async def test_waiter_cancelled_right_after_grant_returns_the_slot() -> None:
    """A slot handed to a job that is cancelled before it resumes goes on to the next job."""
    queue = JobQueue()
    order: list[str] = []
    holder = await Holder(queue, "a").__aenter__()
    unlucky = await queued(queue, "a", order, "unlucky")
    next_in_line = await queued(queue, "a", order, "next")
    await holder.release()  # grants the slot to "unlucky" without letting it run yet
    unlucky.cancel()
    await settle(unlucky, next_in_line)
    assert unlucky.cancelled()
    assert order == ["next"]
    assert (queue.waiting, queue.running) == (0, 0)


async def test_raising_max_concurrency_wakes_waiters() -> None:
    """A higher max_concurrency in a later slot() call lets queued jobs start at once."""
    queue = JobQueue()
    order: list[str] = []
    holder = await Holder(queue, "a").__aenter__()
    waiting = await queued(queue, "a", order, "waiting")
    async with queue.accept(max_queue=10).slot("a", max_concurrency=3):
        await settle(waiting)
        assert order == ["waiting"]
    await holder.release()


async def test_fallback_slot_waits_again() -> None:
    """After its first slot a job is between slots; queuing for a fallback counts as waiting."""
    queue = JobQueue()
    ticket = queue.accept(max_queue=10)
    async with ticket.slot("a", max_concurrency=1):
        pass
    assert (queue.waiting, queue.running) == (0, 0)
    holder = await Holder(queue, "b").__aenter__()
    fallback = asyncio.create_task(run_in_slot(ticket, "b", 1))
    await asyncio.sleep(0)
    assert (queue.waiting, queue.running) == (1, 1)
    assert ticket.ahead("b") == 1
    await holder.release()
    await settle(fallback)
    assert (queue.waiting, queue.running) == (0, 0)


async def test_slot_on_closed_ticket_is_refused() -> None:
    """A closed ticket cannot take a slot (it would not be counted)."""
    ticket = JobQueue().accept(max_queue=1)
    ticket.close()
    with pytest.raises(RuntimeError):
        async with ticket.slot("a", max_concurrency=1):
            pass


async def test_booked_tickets_get_slots_in_acceptance_order() -> None:
    """A job still writing its prompt keeps its place: later jobs ready first wait behind it."""
    queue = JobQueue()
    order: list[int] = []
    tickets = [queue.accept(max_queue=10, backend="a") for _ in range(4)]
    assert [t.ahead("a") for t in tickets] == [0, 1, 2, 3]

    async def job(index: int, prompt_seconds: float) -> None:
        await asyncio.sleep(prompt_seconds)  # the later the job, the faster its prompt
        async with tickets[index].slot("a", max_concurrency=1):
            order.append(index)
            await asyncio.sleep(0)
        tickets[index].close()

    await settle(*(job(i, 0.01 * (4 - i)) for i in range(4)))
    assert order == [0, 1, 2, 3]
    assert (queue.waiting, queue.running) == (0, 0)


async def test_prompt_writing_holds_no_slot() -> None:
    """Booked tickets within max_concurrency draw while the one ahead still writes its prompt."""
    queue = JobQueue()
    writing, ready = (
        queue.accept(max_queue=10, backend="a"),
        queue.accept(max_queue=10, backend="a"),
    )
    async with ready.slot("a", max_concurrency=2):
        assert (queue.waiting, queue.running) == (1, 1)
        assert writing.ahead("a") == 0
    writing.close()
    ready.close()


async def test_closed_booking_lets_the_next_in_line_through() -> None:
    """A job that ends before its slot (failed prompt, bad reference) frees its place."""
    queue = JobQueue()
    doomed = queue.accept(max_queue=10, backend="a")
    waiter = queue.accept(max_queue=10, backend="a")
    task = asyncio.create_task(run_in_slot(waiter, "a", 1))
    await asyncio.sleep(0)
    assert not task.done()
    doomed.close()
    await settle(task)
    assert (queue.waiting, queue.running) == (0, 0)


async def test_moving_to_another_backend_queues_at_its_back() -> None:
    """A job whose style or fallback picks another backend joins that line behind those booked."""
    queue = JobQueue()
    holder = await Holder(queue, "b").__aenter__()
    mover = queue.accept(max_queue=10, backend="a")
    booked_b = queue.accept(max_queue=10, backend="b")
    order: list[str] = []

    async def run(ticket: Ticket, name: str) -> None:
        async with ticket.slot("b", max_concurrency=1):
            order.append(name)
        ticket.close()

    moving = asyncio.create_task(run(mover, "mover"))
    await asyncio.sleep(0)
    assert queue.ahead(mover, "a") == 0  # left line "a" (an empty line counts nobody)
    assert mover.ahead("b") == 2
    assert booked_b.ahead("b") == 1
    await holder.release()
    await settle(run(booked_b, "booked"), moving)
    assert order == ["booked", "mover"]
    assert (queue.waiting, queue.running) == (0, 0)


# --- admit -------------------------------------------------------------------------------------

LIMITS = AdmissionLimits(
    cooldown=30, per_minute=5, user_daily_quota=2, group_daily_quota=10, max_queue=2
)


async def test_admit_takes_place_hit_and_units(quota: QuotaStore) -> None:
    """An admitted request holds a queue place on its backend, starts the cooldown and
    reserves its units of both quotas."""
    limiter, queue = RateLimiter(), JobQueue()
    outcome = await admit(
        limiter=limiter,
        queue=queue,
        quota=quota,
        limits=LIMITS,
        user_id="u",
        group_id="g",
        backend="a",
        units=2,
    )
    assert isinstance(outcome, Admission)
    assert outcome.reservation is not None
    assert outcome.reservation.units == 2
    assert queue.waiting == 1
    assert outcome.ticket.ahead("a") == 0
    assert await quota.usage(user_id="u", group_id="g") == (2, 2)
    assert limiter.check("u", cooldown=30, per_minute=5) is not None
    await quota.release(outcome.reservation)
    assert await quota.usage(user_id="u", group_id="g") == (0, 0)


async def test_admit_cooldown_refusal_takes_nothing(quota: QuotaStore) -> None:
    """A user within the cooldown is refused with the seconds left; no place, no quota."""
    limiter, queue = RateLimiter(), JobQueue()
    limiter.hit("u")
    outcome = await admit(
        limiter=limiter,
        queue=queue,
        quota=quota,
        limits=LIMITS,
        user_id="u",
        group_id="g",
        backend="a",
    )
    assert outcome == Refusal("cooldown", "画得太快啦，请 30 秒后再试")
    assert queue.waiting == 0
    assert await quota.usage(user_id="u", group_id="g") == (0, 0)


async def test_admit_quota_refusal_gives_the_place_back(quota: QuotaStore) -> None:
    """More units than the quota has left are refused, and the queue place is returned."""
    limiter, queue = RateLimiter(), JobQueue()
    outcome = await admit(
        limiter=limiter,
        queue=queue,
        quota=quota,
        limits=LIMITS,
        user_id="u",
        group_id="g",
        backend="a",
        units=3,
    )
    assert isinstance(outcome, Refusal)
    assert outcome.reason == "quota"
    assert queue.waiting == 0
    assert queue.accept(max_queue=9).ahead("a") == 0  # its booking is gone too
    assert await quota.usage(user_id="u", group_id="g") == (0, 0)


async def test_admit_queue_full_starts_no_cooldown(quota: QuotaStore) -> None:
    """A full queue refuses before the cooldown starts, so the user may retry at once."""
    limiter, queue = RateLimiter(), JobQueue()
    for _ in range(LIMITS.max_queue):
        queue.accept(max_queue=LIMITS.max_queue)
    outcome = await admit(
        limiter=limiter,
        queue=queue,
        quota=quota,
        limits=LIMITS,
        user_id="u",
        group_id="g",
        backend="a",
    )
    assert outcome == Refusal("queue", "排队的人太多了，请稍后再试")
    assert limiter.check("u", cooldown=30, per_minute=5) is None


async def test_admit_same_user_twice_at_once_passes_once(quota: QuotaStore) -> None:
    """Two requests from one user arriving together: the second meets the cooldown."""
    limiter, queue = RateLimiter(), JobQueue()
    outcomes = await asyncio.gather(
        *(
            admit(
                limiter=limiter,
                queue=queue,
                quota=quota,
                limits=LIMITS,
                user_id="u",
                group_id="g",
                backend="a",
            )
            for _ in range(2)
        )
    )
    assert [type(o) for o in outcomes] == [Admission, Refusal]
    assert await quota.usage(user_id="u", group_id="g") == (1, 1)


async def test_admit_exempt_skips_cooldown_and_quota(quota: QuotaStore) -> None:
    """A superuser (exempt) is admitted within the cooldown and reserves nothing."""
    limiter, queue = RateLimiter(), JobQueue()
    limiter.hit("u")
    outcome = await admit(
        limiter=limiter,
        queue=queue,
        quota=quota,
        limits=LIMITS,
        user_id="u",
        group_id="g",
        backend="a",
        exempt=True,
    )
    assert isinstance(outcome, Admission)
    assert outcome.reservation is None
    assert await quota.usage(user_id="u", group_id="g") == (0, 0)
