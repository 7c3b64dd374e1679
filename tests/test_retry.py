"""Retry policy: retryable statuses, Retry-After parsing, backoff delays."""

from __future__ import annotations

import pytest

from nonebot_plugin_llm2pic.retry import (
    MAX_RETRY_AFTER,
    MAX_RETRY_DELAY,
    RETRYABLE_STATUSES,
    backoff_delay,
    parse_retry_after,
)

NOW = 1_445_412_480.0  # Wed, 21 Oct 2015 07:28:00 GMT

RETRY_AFTER_CASES = [
    ({}, None),
    ({"Retry-After": "3"}, 3.0),
    ({"retry-after": "1.5"}, 1.5),
    ({"Retry-After": " 2 "}, 2.0),
    ({"Retry-After": "0"}, 0.0),
    ({"Retry-After": "-10"}, None),
    ({"Retry-After": "121"}, MAX_RETRY_AFTER),
    ({"Retry-After": "inf"}, None),
    ({"Retry-After": "nan"}, None),
    ({"Retry-After": ""}, None),
    ({"Retry-After": "soon"}, None),
    ({"retry-after-ms": "250"}, 0.25),
    ({"Retry-After-Ms": "1500", "Retry-After": "30"}, 1.5),
    ({"retry-after-ms": "x", "Retry-After": "4"}, 4.0),
    ({"Retry-After": "Wed, 21 Oct 2015 07:28:10 GMT"}, 10.0),
    ({"Retry-After": "Wed, 21 Oct 2015 07:27:00 GMT"}, None),
    ({"Retry-After": "Wed, 21 Oct 2015 09:00:00 GMT"}, MAX_RETRY_AFTER),
    ({"Retry-After": "Wed, 21 Oct 2015 07:28:10"}, None),
    ({"Retry-After": "Wed, 99 Foo 2015 07:28:10 GMT"}, None),
]


@pytest.mark.parametrize(("headers", "expected"), RETRY_AFTER_CASES, ids=repr)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    """Retry-After in milliseconds, seconds or HTTP date; junk ignored; capped at 60 s."""
    assert parse_retry_after(headers, now=NOW) == expected


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (408, True),
        (409, True),
        (429, True),
        (500, True),
        (503, True),
        (599, True),
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (422, False),
    ],
)
def test_retryable_statuses(status: int, retryable: bool) -> None:
    """408/409/429/5xx retry; other 4xx do not."""
    assert (status in RETRYABLE_STATUSES) is retryable


@pytest.mark.parametrize(
    ("attempt", "base"), [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]
)
def test_backoff_doubles_with_jitter(attempt: int, base: float) -> None:
    """Backoff is 0.5 s doubling to 8 s, minus at most 25 % jitter."""
    delays = [backoff_delay(attempt) for _ in range(200)]
    assert all(0.75 * base <= d <= base for d in delays)
    assert len(set(delays)) > 1


@pytest.mark.parametrize(
    ("retry_after", "expected"), [(3.0, 3.0), (0.0, 0.0), (500.0, MAX_RETRY_AFTER)]
)
def test_backoff_honours_retry_after(retry_after: float, expected: float) -> None:
    """A server's Retry-After replaces the backoff, still capped."""
    assert backoff_delay(0, retry_after) == expected


def test_backoff_never_exceeds_max() -> None:
    """Huge attempt numbers stay at the maximum delay."""
    assert backoff_delay(60) <= MAX_RETRY_DELAY
