"""Pure retry policy: which statuses retry, Retry-After, backoff delays.

The numbers follow openai-python's client (0.5 s doubling to 8 s, up to 25 % jitter) with a lower
ceiling on a server's ``Retry-After``: a chat user will not wait minutes for one picture.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

RETRYABLE_STATUSES: frozenset[int] = frozenset({408, 409, 429, *range(500, 600)})
"""Request timeout, conflict, rate limit and every 5xx; other 4xx (auth, policy) never retry."""

MAX_RETRY_AFTER = 60.0
"""Seconds: a longer ``Retry-After`` is cut to this."""

INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
JITTER = 0.25
"""Up to this fraction is taken off each backoff delay so parallel jobs do not retry in step."""


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds the server asks us to wait, or ``None`` when it gave no usable value.

    Reads ``retry-after-ms`` (OpenAI), then ``retry-after`` as seconds or an HTTP date
    (RFC 9110 §10.2.3). Negative, non-finite and unparsable values are ignored; large ones are
    capped at ``MAX_RETRY_AFTER``.
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    seconds: float | None = None
    milliseconds = _number(lowered.get("retry-after-ms", ""))
    if milliseconds is not None:
        seconds = milliseconds / 1000
    else:
        value = lowered.get("retry-after", "").strip()
        seconds = _number(value)
        if seconds is None and value:
            seconds = _seconds_until(value, time.time() if now is None else now)
    if seconds is None or seconds < 0:
        return None
    return min(seconds, MAX_RETRY_AFTER)


def backoff_delay(attempt: int, retry_after: float | None = None) -> float:
    """Delay before retry number ``attempt`` (0-based): the server's word, else jittered backoff."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), MAX_RETRY_AFTER)
    base = min(INITIAL_RETRY_DELAY * 2 ** min(attempt, 16), MAX_RETRY_DELAY)
    return base * (1 - JITTER * random.random())


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _seconds_until(http_date: str, now: float) -> float | None:
    try:
        moment = parsedate_to_datetime(http_date)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:
        return None  # RFC 9110 dates are always GMT; a date without a zone is malformed
    return moment.timestamp() - now
