"""Floods: bounded replies, memory and concurrency; quota
counters that match what was delivered, across a restart in the middle of a flood.

The end-to-end test drives a real `serve` through the OneBot v11 client. It uses `/pic`, whose
refusals are always answered, so every request must get exactly one outcome; the
natural-language rule ("a refused trigger is answered at most once per user per cooldown
window") is checked by its own test below.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections import defaultdict
from pathlib import Path

import pytest
from nonebug import App

from nonebot_plugin_llm2pic.limits import QueueFullError
from nonebot_plugin_llm2pic.pipeline import DrawJob

from .fakes.harness import openai_backend, pipeline_for, png, settings_for
from .fakes.openai_server import FakeOpenAI
from .onebot_client import OneBotClient, ServeProcess, message_segments, message_text
from .test_chat_e2e import write_config

ACK = "收到，正在画…"
FLOOD_LIMITS = {
    "user_cooldown_seconds": 30,
    "user_per_minute": 5,
    "user_daily_quota": 20,
    "group_daily_quota": 8,
    "max_concurrency": 2,
    "max_queue": 10,
    "job_timeout": 30,
}
OUTCOME_DEADLINE = 30.0
"""Seconds within which every request of a flood must have its outcome."""
RSS_GROWTH_LIMIT = 60 * 1024 * 1024


@pytest.fixture
def fake(fake: FakeOpenAI) -> FakeOpenAI:
    """The shared fake upstream, each picture taking 50 ms so that jobs overlap."""
    fake.image = png(48, 48)
    fake.delay = 0.05
    return fake


class Tally:
    """Replies to a flood, keyed by the request each one quotes."""

    def __init__(self, requests: dict[int, tuple[int, int]]) -> None:
        self.requests = requests  # message_id -> (user_id, group_id)
        self.acks: dict[int, int] = defaultdict(int)
        self.outcomes: dict[int, list[str]] = defaultdict(list)  # "image" or the refusal text

    @property
    def pending(self) -> set[int]:
        return set(self.requests) - set(self.outcomes)

    def record(self, message) -> None:
        [quoted] = [int(seg["id"]) for seg in message_segments(message, "reply")]
        assert quoted in self.requests, f"a reply quoting an unknown message {quoted}"
        text = message_text(message)
        if message_segments(message, "image"):
            self.outcomes[quoted].append("image")
        elif text.startswith(ACK):
            self.acks[quoted] += 1
        else:
            self.outcomes[quoted].append(text)

    async def collect(self, client: OneBotClient, *, deadline: float) -> None:
        """Read replies until every request has an outcome (or fail at the deadline)."""
        while self.pending:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{len(self.pending)} requests never got an outcome"
            self.record((await client.next_call("send_msg", timeout=remaining)).params["message"])

    def images(self, *, by: int) -> dict[int, int]:
        """Images delivered per user (``by=0``) or per group (``by=1``)."""
        counts: dict[int, int] = defaultdict(int)
        for message_id, outcomes in self.outcomes.items():
            counts[self.requests[message_id][by]] += outcomes.count("image")
        return dict(counts)


def quota_counters(workdir: Path) -> tuple[dict[int, int], dict[int, int]]:
    """Today's ``used`` per user and per group, read from the bot's SQLite file."""
    [path] = list(workdir.rglob("quota.sqlite3"))
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT scope, subject, used FROM quota_usage").fetchall()
    users = {int(s): used for scope, s, used in rows if scope == "user" and used}
    groups = {int(s): used for scope, s, used in rows if scope == "group" and used}
    return users, groups


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def flood(
    client: OneBotClient, users: range, groups: int, per_user: int, group_base: int
) -> Tally:
    """Post ``per_user`` `/pic` requests from each user, all at once, across ``groups`` groups."""
    requests: dict[int, tuple[int, int]] = {}
    for round_ in range(per_user):
        for user in users:
            group = group_base + user % groups
            message_id = await client.group_message(
                f"/pic 第{round_}张 {user}", user_id=user, group_id=group
            )
            requests[message_id] = (user, group)
    return Tally(requests)


async def test_flood_end_to_end_with_restart(tmp_path: Path, fake: FakeOpenAI):
    """100 `/pic` from 50 users in 5 groups within a second: at most one ack and exactly one
    outcome each (the `/pic` rule: refusals always answered), quota counters equal to the images
    delivered, bounded memory; then the OneBot connection drops and the bot restarts in the
    middle of a second flood, losing and double-counting nothing, and it answers normally."""
    server = ServeProcess(tmp_path)
    write_config(server, fake, limits=FLOOD_LIMITS)
    await server.start()
    try:
        async with OneBotClient(server.ws_url) as client:
            assert server.process is not None
            # Warm up (first job imports Pillow etc.) so RSS growth measures the flood only.
            await client.group_message("/pic 热身", user_id=1, group_id=1)
            await client.next_call("send_msg")
            await client.next_call("send_msg")
            rss_before = rss(server.process.pid)

            started = time.monotonic()
            tally = await flood(client, range(700, 750), groups=5, per_user=2, group_base=800)
            assert time.monotonic() - started < 1.0, "the flood took longer than a second to post"
            assert len(tally.requests) == 100
            await tally.collect(client, deadline=started + OUTCOME_DEADLINE)

            assert all(len(outcomes) == 1 for outcomes in tally.outcomes.values())
            assert all(count <= 1 for count in tally.acks.values())
            kinds = {
                text if text == "image" else text[:4]
                for outcomes in tally.outcomes.values()
                for text in outcomes
            }
            assert "image" in kinds, kinds
            assert kinds <= {"image", "画得太快", "排队的人", "本群今天"}, kinds
            group_images = tally.images(by=1)
            assert all(
                count <= FLOOD_LIMITS["group_daily_quota"] for count in group_images.values()
            )
            assert fake.peak_in_flight <= FLOOD_LIMITS["max_concurrency"]
            assert rss(server.process.pid) - rss_before < RSS_GROWTH_LIMIT
            await client.no_call(within=0.3)  # nothing more trickles in

            users, groups = quota_counters(tmp_path)
            assert groups == {g: n for g, n in group_images.items() if n} | {1: 1}
            assert users == {u: n for u, n in tally.images(by=0).items() if n} | {1: 1}
            delivered = len(fake.requests)

            # A second flood, slow upstream, and the bot stops while jobs are in flight.
            fake.delay = 1.0
            second = await flood(client, range(760, 780), groups=5, per_user=1, group_base=900)
            deadline = time.monotonic() + 5
            while sum(second.acks.values()) < 3 and time.monotonic() < deadline:
                second.record((await client.next_call("send_msg")).params["message"])
        await server.stop()
        _users_after, groups_after = quota_counters(tmp_path)
        delivered_second = {m for m, o in second.outcomes.items() if "image" in o}
        assert sum(groups_after.values()) == sum(groups.values()) + len(delivered_second), (
            "a job cancelled by the restart kept its quota unit"
        )
        assert len(fake.requests) >= delivered

        fake.delay = 0.05
        restarted = ServeProcess(tmp_path, port=server.port)
        await restarted.start()
        try:
            async with OneBotClient(restarted.ws_url) as client:
                # Counters survived: group 800 is still at its quota, a fresh group is not.
                full = max(groups, key=lambda g: groups[g])
                if groups[full] >= FLOOD_LIMITS["group_daily_quota"]:
                    await client.group_message("/pic 再来", user_id=790, group_id=full)
                    reply = (await client.next_call("send_msg")).params["message"]
                    assert message_text(reply).startswith("本群今天"), reply
                await client.group_message("/pic 恢复了吗", user_id=791, group_id=999)
                assert message_text((await client.next_call("send_msg")).params["message"]) == ACK
                done = await client.next_call("send_msg")
                assert message_segments(done.params["message"], "image")
            users_final, _ = quota_counters(tmp_path)
            assert users_final.get(791) == 1
            assert users_final.get(790) is None
        finally:
            await restarted.stop()
    finally:
        await server.stop()


async def test_natural_language_flood_refusals_once_per_window(tmp_path: Path, fake: FakeOpenAI):
    """The natural-language rule: 10 members each sending 4 drawing requests in a burst get one
    ack and one picture each, at most one cooldown refusal each, and silence for the rest."""
    server = ServeProcess(tmp_path)
    write_config(server, fake, limits={**FLOOD_LIMITS, "group_daily_quota": 100, "max_queue": 50})
    await server.start()
    try:
        async with OneBotClient(server.ws_url) as client:
            requests: dict[int, tuple[int, int]] = {}
            for round_ in range(4):
                for user in range(1100, 1110):
                    message_id = await client.group_message(
                        f"画一只猫{round_}", user_id=user, group_id=1200
                    )
                    requests[message_id] = (user, 1200)
            tally = Tally(requests)
            # A member's requests arrive together, so which one is admitted first is up to
            # scheduling (each handler awaits before admission); the contract is per member.
            deadline = time.monotonic() + OUTCOME_DEADLINE
            while sum(1 for count in tally.images(by=0).values() if count) < 10:
                remaining = deadline - time.monotonic()
                assert remaining > 0, dict(tally.outcomes)
                tally.record(
                    (await client.next_call("send_msg", timeout=remaining)).params["message"]
                )
            # Anything still arriving (cooldown refusals, or a wrong second outcome) is tallied.
            with contextlib.suppress(asyncio.TimeoutError):
                while True:
                    call = await asyncio.wait_for(client.calls.get(), 0.5)
                    tally.record(call.params["message"])
        per_user: dict[int, list[str]] = defaultdict(list)
        for message_id, outcomes in tally.outcomes.items():
            per_user[requests[message_id][0]] += outcomes
        for outcomes in per_user.values():
            refusals = [text for text in outcomes if text != "image"]
            assert outcomes.count("image") == 1, per_user
            assert len(refusals) <= 1, per_user
            assert all(text.startswith("画得太快啦") for text in refusals), per_user
        assert sum(tally.acks.values()) == 10
    finally:
        await server.stop()


async def test_pipeline_flood_keeps_concurrency_and_queue_bounded(fake: FakeOpenAI):
    """100 jobs at once on the pipeline: queue refusals beyond `max_queue`, never more than
    `max_concurrency` upstream calls, every job ends, counters back to zero, next job works."""
    max_queue, max_concurrency = 10, 3
    settings = settings_for(
        {"a": openai_backend(fake.base_url)},
        limits={"max_queue": max_queue, "max_concurrency": max_concurrency},
    )
    async with pipeline_for(settings) as pipeline:
        results = await asyncio.gather(
            *(pipeline.run(DrawJob(text=f"猫{i}")) for i in range(100)), return_exceptions=True
        )
        refused = [r for r in results if isinstance(r, QueueFullError)]
        drawn = [r for r in results if not isinstance(r, BaseException)]
        # How many jobs reach a slot before the rest arrive is up to the event loop's
        # scheduling; a job holding a slot no longer waits, so it frees a queue place.
        assert max_queue <= len(drawn) <= max_queue + max_concurrency, len(drawn)
        assert len(refused) == 100 - len(drawn), results
        assert fake.peak_in_flight <= 3
        assert (await pipeline.run(DrawJob(text="之后"))).image.data == fake.image


async def test_shutdown_runs_cleanup_of_a_job_spawned_just_before(app: App) -> None:
    """A job spawned right before shutdown still runs its cleanup (quota and queue given back)."""
    from nonebot_plugin_llm2pic import state

    cleaned: list[str] = []

    async def job() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            cleaned.append("released")

    await state.spawn(job())
    await state.cancel_jobs()
    assert cleaned == ["released"]
    assert not state.jobs
