"""Who may draw, how often, and in what order (the ``[limits]`` table; see docs/architecture.md).

- ``RateLimiter``: per-user cooldown and per-minute window, in memory.
- ``QuotaStore``: daily user/group quotas in SQLite, so they survive restarts.
- ``JobQueue``: the global waiting limit and per-backend concurrency slots, first come first served.
- ``admit``: the one entry for a new request: cooldown, queue place and quota, or a ``Refusal``.

No NoneBot imports: the matchers and the CLI share these.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

import aiosqlite

from .exceptions import Llm2PicError

# --- rate limiting -----------------------------------------------------------------------------

MINUTE = 60.0
"""Length of the per-minute window, in seconds."""

MAX_HITS_KEPT = 256
"""Hits remembered per user; a ``per_minute`` above this is effectively unlimited."""

PRUNE_EVERY_USERS = 1024
"""The limiter scans for idle users once it tracks this many more than after its last scan."""


@dataclass
class _UserRate:
    last_seen: float
    hits: deque[float] = field(default_factory=lambda: deque(maxlen=MAX_HITS_KEPT))
    notified_at: float | None = None


class RateLimiter:
    """Per-user cooldown and per-minute window, in memory (they reset on restart by design).

    Times come from ``time.monotonic()`` unless ``now`` is given. Limits are passed on every
    call, so a config edit applies to the next check. Users idle for longer than every window
    seen so far are forgotten, keeping memory bounded in a flood of distinct users.
    """

    def __init__(self) -> None:
        self._users: dict[str, _UserRate] = {}
        self._horizon = MINUTE  # longest window seen: older state can no longer matter
        self._prune_at = PRUNE_EVERY_USERS

    def __len__(self) -> int:
        """Users currently remembered (bounded by pruning)."""
        return len(self._users)

    def check(
        self, user_id: str, *, cooldown: float, per_minute: int, now: float | None = None
    ) -> float | None:
        """Return None if ``user_id`` may start a job now, else the seconds left to wait.

        ``cooldown`` counts from the user's last hit; ``per_minute`` = 0 means no per-minute
        limit. Checking does not count: call ``hit`` once the job is accepted.
        """
        now = time.monotonic() if now is None else now
        self._horizon = max(self._horizon, cooldown)
        state = self._users.get(user_id)
        if state is None or not state.hits:
            return None
        wait = state.hits[-1] + cooldown - now
        if per_minute > 0:
            recent = [t for t in state.hits if t > now - MINUTE]
            if len(recent) >= per_minute:
                # The window frees up when the hit that put it at its limit leaves it.
                wait = max(wait, recent[-per_minute] + MINUTE - now)
        return wait if wait > 0 else None

    def hit(self, user_id: str, now: float | None = None) -> None:
        """Count a job started by ``user_id``."""
        now = time.monotonic() if now is None else now
        self._state(user_id, now).hits.append(now)

    def should_notify(self, user_id: str, *, window: float, now: float | None = None) -> bool:
        """Whether to answer a refused trigger: at most once per ``window`` seconds per user.

        Returns True (and remembers it) the first time in a window, False after that, so a
        chatty group is not spammed with "please wait" replies.
        """
        now = time.monotonic() if now is None else now
        self._horizon = max(self._horizon, window)
        state = self._state(user_id, now)
        if state.notified_at is not None and now - state.notified_at < window:
            return False
        state.notified_at = now
        return True

    def _state(self, user_id: str, now: float) -> _UserRate:
        if len(self._users) >= self._prune_at:
            self._prune(now)
        state = self._users.setdefault(user_id, _UserRate(last_seen=now))
        state.last_seen = now
        return state

    def _prune(self, now: float) -> None:
        cutoff = now - self._horizon
        self._users = {
            user: state for user, state in self._users.items() if state.last_seen > cutoff
        }
        self._prune_at = len(self._users) + PRUNE_EVERY_USERS


# --- daily quotas ------------------------------------------------------------------------------

QuotaScope = Literal["user", "group"]

QUOTA_KEEP_DAYS = 2
"""Days of quota rows kept; older ones are deleted (only today's count is ever read)."""

SQLITE_BUSY_TIMEOUT_MS = 5000
"""How long a writer waits for another process (the CLI next to the bot) holding the lock."""


class QuotaExceededError(Llm2PicError):
    """A daily quota is used up; ``scope`` says whose, ``limit`` is the configured maximum."""

    def __init__(self, *, scope: QuotaScope, limit: int) -> None:
        who = "你" if scope == "user" else "本群"
        super().__init__(
            f"daily {scope} quota of {limit} reached",
            user_message=f"{who}今天的画图次数用完了（{limit}/{limit}），明天再来吧",
        )
        self.scope: QuotaScope = scope
        self.limit = limit


@dataclass(frozen=True)
class Reservation:
    """Counted units of today's quota; give them back with ``QuotaStore.release`` on failure."""

    day: str
    user_id: str
    group_id: str | None
    units: int = 1


def quota_day(tz: str = "", now: datetime | None = None) -> str:
    """The quota day (ISO date) of ``now``: midnight in the IANA zone ``tz``, "" = local time.

    A naive ``now`` is taken as system local time.
    """
    if now is None:
        now = datetime.now().astimezone()
    local = now.astimezone(ZoneInfo(tz)) if tz else now.astimezone()
    return local.date().isoformat()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS quota_usage (
    day TEXT NOT NULL,
    scope TEXT NOT NULL,
    subject TEXT NOT NULL,
    used INTEGER NOT NULL,
    PRIMARY KEY (day, scope, subject)
)
"""


class QuotaStore:
    """Daily quota counters in one SQLite file (WAL), shared safely by the bot and the CLI.

    Units are reserved when a job is accepted and released if it fails, so a failed drawing
    costs nothing. Within the process an ``asyncio.Lock`` serialises transactions on the single
    connection; ``BEGIN IMMEDIATE`` does the same against other processes.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._pruned_day = ""

    async def open(self) -> None:
        """Open (creating the file and table if needed) and drop rows from old days."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, sqlite3 must not add BEGINs.
        db = await aiosqlite.connect(self.path, isolation_level=None)
        await db.executescript(
            f"PRAGMA journal_mode=WAL; PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}; {_SCHEMA};"
        )
        self._db = db

    async def close(self) -> None:
        """Close the connection; safe to call twice."""
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    async def reserve(
        self,
        *,
        user_id: str,
        group_id: str | None,
        user_limit: int,
        group_limit: int,
        tz: str = "",
        now: datetime | None = None,
        units: int = 1,
    ) -> Reservation:
        """Check both quotas and count ``units`` for each, atomically; a limit of 0 = unlimited.

        ``group_id`` None (a private chat) counts only the user. Raises ``QuotaExceededError``
        (the user's quota is checked first) without counting anything when fewer than
        ``units`` are left.
        """
        day = quota_day(tz, now)
        subjects = self._subjects(user_id, group_id)
        limits = {"user": user_limit, "group": group_limit}
        async with self._transaction() as db:
            if day != self._pruned_day:
                await db.execute("DELETE FROM quota_usage WHERE day < ?", (_days_before(day),))
            for scope, subject in subjects:
                used = await self._used(db, day, scope, subject)
                if limits[scope] and used + units > limits[scope]:
                    raise QuotaExceededError(scope=scope, limit=limits[scope])
            await db.executemany(
                "INSERT INTO quota_usage (day, scope, subject, used) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (day, scope, subject) DO UPDATE SET used = used + excluded.used",
                [(day, scope, subject, units) for scope, subject in subjects],
            )
        self._pruned_day = day
        return Reservation(day=day, user_id=user_id, group_id=group_id, units=units)

    async def release(self, reservation: Reservation) -> None:
        """Give back a reservation's units (call once per reservation, when its job failed).

        The units return to the day they were taken from, so a job that fails after midnight
        does not add to the new day's allowance.
        """
        async with self._transaction() as db:
            await db.executemany(
                "UPDATE quota_usage SET used = MAX(used - ?, 0) "
                "WHERE day = ? AND scope = ? AND subject = ?",
                [
                    (reservation.units, reservation.day, scope, subject)
                    for scope, subject in self._subjects(reservation.user_id, reservation.group_id)
                ],
            )

    async def usage(
        self,
        *,
        user_id: str,
        group_id: str | None,
        tz: str = "",
        now: datetime | None = None,
    ) -> tuple[int, int]:
        """Today's ``(user_used, group_used)``; the group count is 0 without a group."""
        day = quota_day(tz, now)
        db = self._connection()
        async with self._lock:
            user_used = await self._used(db, day, "user", user_id)
            group_used = await self._used(db, day, "group", group_id) if group_id else 0
        return user_used, group_used

    @staticmethod
    def _subjects(user_id: str, group_id: str | None) -> list[tuple[QuotaScope, str]]:
        subjects: list[tuple[QuotaScope, str]] = [("user", user_id)]
        if group_id is not None:
            subjects.append(("group", group_id))
        return subjects

    @staticmethod
    async def _used(db: aiosqlite.Connection, day: str, scope: QuotaScope, subject: str) -> int:
        async with db.execute(
            "SELECT used FROM quota_usage WHERE day = ? AND scope = ? AND subject = ?",
            (day, scope, subject),
        ) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    def _connection(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("QuotaStore is not open")
        return self._db

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        db = self._connection()
        async with self._lock:
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")


def _days_before(day: str) -> str:
    """The oldest day to keep, as an ISO date (ISO dates compare correctly as strings)."""
    return (datetime.fromisoformat(day) - timedelta(days=QUOTA_KEEP_DAYS)).date().isoformat()


# --- job queue ---------------------------------------------------------------------------------


class QueueFullError(Llm2PicError):
    """``max_queue`` jobs are already waiting; the new one is refused."""

    user_message = "排队的人太多了，请稍后再试"


TicketState = Literal["waiting", "running", "between"]
"""waiting: accepted (or re-queued for a fallback), no slot yet; running: holds a slot;
between: past a slot (post-processing, sending) and neither."""


class _Lane:
    """One backend's line: booked tickets in booking order, who holds a slot, who is ready."""

    def __init__(self) -> None:
        self.line: list[Ticket] = []
        self.holders: set[Ticket] = set()
        self.ready: dict[Ticket, asyncio.Future[None]] = {}
        self.limit = 1


class JobQueue:
    """Counts waiting and running jobs and hands out per-backend slots first come, first served.

    A job *waits* from ``accept`` (prompt writing included) until it holds a backend slot, and
    again while it queues for a fallback backend's slot; ``max_queue`` bounds those across all
    backends. It *runs* while it holds a slot. Between slots (post-processing, sending) it is
    neither.

    Order: a ticket *books* its place in a backend's line when it is accepted (the backend the
    job is expected to use) or, failing that, when it first asks for a slot there (a fallback, or
    a backend the prompt writer's style chose). Slots go strictly in booking order: the first
    ``max_concurrency`` booked tickets may hold one, and a ticket further back waits even while
    one ahead of it is still writing its prompt. Writing a prompt holds no slot (nothing is sent
    to the backend meanwhile), but it keeps the job's place, so pictures come back in the order
    the requests were accepted and the position told at acceptance ("前面还有 N 个") never grows.

    All state lives here; ``Ticket`` is a handle that calls the public methods below.
    """

    def __init__(self) -> None:
        self._lanes: dict[str, _Lane] = {}
        self._states: dict[Ticket, TicketState] = {}
        self._booked: dict[Ticket, str] = {}
        self._waiting = 0
        self._running = 0

    @property
    def waiting(self) -> int:
        """Accepted jobs not holding a slot and not yet past their first one (or re-queued)."""
        return self._waiting

    @property
    def running(self) -> int:
        """Jobs holding a backend slot."""
        return self._running

    def accept(self, *, max_queue: int, backend: str | None = None) -> Ticket:
        """Admit a new job as waiting, or raise ``QueueFullError`` when ``max_queue`` wait.

        ``backend``: the backend the job is expected to use; the ticket books its place in that
        backend's line now, so jobs accepted later queue behind it.
        """
        if self._waiting >= max_queue:
            raise QueueFullError(f"{self._waiting} jobs waiting (max_queue={max_queue})")
        ticket = Ticket(self)
        self._set_state(ticket, "waiting")
        if backend:
            self._book(ticket, backend)
        return ticket

    def ahead(self, ticket: Ticket, backend: str) -> int:
        """Jobs ahead of ``ticket`` in ``backend``'s line (holding a slot or booked earlier).

        For a ticket not in that line, every booked job counts. The job has to wait for a
        slot exactly when ``ahead >= max_concurrency`` (shown as "前面还有 N 个").
        """
        lane = self._lanes.get(backend)
        if lane is None:
            return 0
        return lane.line.index(ticket) if ticket in lane.line else len(lane.line)

    async def acquire(self, ticket: Ticket, backend: str, *, max_concurrency: int) -> None:
        """Wait until ``ticket`` holds one of ``backend``'s slots; see ``Ticket.slot``."""
        state = self._states.get(ticket)
        if state is None:
            raise RuntimeError("slot() on a closed ticket")
        if state == "running":
            raise RuntimeError("slot() on a ticket that already holds one")
        if self._booked.get(ticket) != backend:
            self._book(ticket, backend)
        self._set_state(ticket, "waiting")
        lane = self._lanes[backend]
        lane.limit = max_concurrency
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        lane.ready[ticket] = future
        self._grant(lane)  # at the front of the line (or a raised limit): granted at once
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(ticket, backend)  # granted just as we were cancelled: give back
            else:
                lane.ready.pop(ticket, None)
                self._unbook(ticket)
            raise

    def release(self, ticket: Ticket, backend: str) -> None:
        """Give back ``ticket``'s slot on ``backend``; the job is then between slots."""
        lane = self._lanes[backend]
        lane.holders.discard(ticket)
        self._unbook(ticket)
        if ticket in self._states:
            self._set_state(ticket, "between")
        else:  # closed while holding the slot
            self._running -= 1

    def close(self, ticket: Ticket) -> None:
        """``ticket``'s job ended (done, failed or cancelled); idempotent."""
        state = self._states.get(ticket)
        if state is None or state == "running":
            # A ticket closed inside its slot leaves the counts to release().
            self._states.pop(ticket, None)
            return
        self._set_state(ticket, None)
        self._unbook(ticket)

    def _set_state(self, ticket: Ticket, state: TicketState | None) -> None:
        old = self._states.get(ticket)
        self._waiting += (state == "waiting") - (old == "waiting")
        self._running += (state == "running") - (old == "running")
        if state is None:
            self._states.pop(ticket, None)
        else:
            self._states[ticket] = state

    def _book(self, ticket: Ticket, backend: str) -> None:
        """Put ``ticket`` at the back of ``backend``'s line (leaving any other line)."""
        self._unbook(ticket)
        self._lanes.setdefault(backend, _Lane()).line.append(ticket)
        self._booked[ticket] = backend

    def _unbook(self, ticket: Ticket) -> None:
        backend = self._booked.pop(ticket, None)
        if backend is None:
            return
        lane = self._lanes[backend]
        lane.line.remove(ticket)
        if not lane.line:
            del self._lanes[backend]  # keeps the dict bounded if backends are renamed
        else:
            self._grant(lane)  # a place ahead opened up

    def _grant(self, lane: _Lane) -> None:
        """Hand free slots to ready tickets among the first ``limit`` of the line."""
        for ticket in lane.line[: lane.limit]:
            if len(lane.holders) >= lane.limit:
                return
            future = lane.ready.pop(ticket, None)
            if future is None:
                continue  # holding already, or still writing its prompt: keeps its place
            if future.done():  # cancelled while queued; acquire() cleans up
                continue
            lane.holders.add(ticket)
            self._set_state(ticket, "running")
            future.set_result(None)


class Ticket:
    """One accepted job's handle on the ``JobQueue``; ``close()`` (or ``with``) when it ends."""

    def __init__(self, queue: JobQueue) -> None:
        self._queue = queue

    def ahead(self, backend: str) -> int:
        """Jobs ahead of this one on ``backend`` (``JobQueue.ahead``)."""
        return self._queue.ahead(self, backend)

    @contextlib.asynccontextmanager
    async def slot(self, backend: str, *, max_concurrency: int) -> AsyncIterator[None]:
        """Hold one of ``backend``'s ``max_concurrency`` slots for the body of the ``with``.

        Waits for its turn in ``backend``'s line. ``max_concurrency`` is read on every call, so
        a config edit applies at once (raising it wakes waiters; lowering it lets running jobs
        finish). Cancelled while waiting, it leaves no slot, place or count behind.
        """
        await self._queue.acquire(self, backend, max_concurrency=max_concurrency)
        try:
            yield
        finally:
            self._queue.release(self, backend)

    def close(self) -> None:
        """Leave the queue (job done, failed or cancelled); idempotent."""
        self._queue.close(self)

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# --- admission ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdmissionLimits:
    """The limit values one request is admitted under (global today; a group's effective ones
    later)."""

    cooldown: float
    per_minute: int
    user_daily_quota: int
    group_daily_quota: int
    max_queue: int
    quota_timezone: str = ""


RefusalReason = Literal["cooldown", "queue", "quota"]


@dataclass(frozen=True)
class Refusal:
    """A request turned away before it started; ``message`` is the Chinese reply."""

    reason: RefusalReason
    message: str


@dataclass(frozen=True)
class Admission:
    """An accepted request: its place in the queue and the quota it holds (None: exempt)."""

    ticket: Ticket
    reservation: Reservation | None


async def admit(
    *,
    limiter: RateLimiter,
    queue: JobQueue,
    quota: QuotaStore,
    limits: AdmissionLimits,
    user_id: str,
    group_id: str | None,
    backend: str,
    units: int = 1,
    exempt: bool = False,
) -> Admission | Refusal:
    """Admit one request for ``units`` pictures on ``backend``, or say why not.

    Cooldown check, queue place and rate-limiter hit happen with no await in between: two
    messages from one user arriving together must not both pass the cooldown while the first
    awaits its quota. Then ``units`` of the user's and group's daily quota are reserved; a
    refusal there gives the queue place back. ``exempt`` (superusers) skips cooldown and quota.
    """
    if not exempt:
        wait = limiter.check(user_id, cooldown=limits.cooldown, per_minute=limits.per_minute)
        if wait is not None:
            return Refusal("cooldown", f"画得太快啦，请 {math.ceil(wait)} 秒后再试")
    try:
        ticket = queue.accept(max_queue=limits.max_queue, backend=backend)
    except QueueFullError as err:
        return Refusal("queue", err.user_message)
    if exempt:
        return Admission(ticket, None)
    limiter.hit(user_id)
    try:
        reservation = await quota.reserve(
            user_id=user_id,
            group_id=group_id,
            user_limit=limits.user_daily_quota,
            group_limit=limits.group_daily_quota,
            tz=limits.quota_timezone,
            units=units,
        )
    except BaseException as err:
        ticket.close()
        if not isinstance(err, QuotaExceededError):
            raise
        return Refusal("quota", err.user_message)
    return Admission(ticket, reservation)
