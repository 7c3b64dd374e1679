"""Pipeline pieces that need no upstream: routing choice and per-backend statistics."""

from __future__ import annotations

import pytest

from nonebot_plugin_llm2pic.pipeline import BackendStats, DrawJob, Pipeline, primary_backend
from nonebot_plugin_llm2pic.settings import parse_settings

SPLIT = parse_settings(
    {
        "backends": {"nai": {"type": "gradio", "base_url": "http://h"}},
        "routing": {"default": "zimage", "anime": "nai", "real": "openai"},
    }
)
PLAIN = parse_settings({})


@pytest.mark.parametrize(
    ("settings", "selfie", "style", "expected"),
    [
        (SPLIT, False, None, "zimage"),
        (SPLIT, False, "anime", "nai"),
        (SPLIT, False, "real", "openai"),
        (SPLIT, True, None, "nai"),
        (SPLIT, True, "real", "nai"),
        (PLAIN, True, None, "zimage"),
        (PLAIN, False, "real", "zimage"),
    ],
)
def test_primary_backend(settings, selfie, style, expected):
    """Selfies and anime go to routing.anime, realistic to routing.real, else the default."""
    assert primary_backend(settings, selfie=selfie, style=style) == expected


def test_backend_stats_counts_and_median():
    """Successes and failures are counted per backend; the median is over successes."""
    stats = BackendStats()
    for seconds in (1.0, 3.0, 2.0):
        stats.record("zimage", ok=True, seconds=seconds)
    stats.record("zimage", ok=False, seconds=9.0)
    stats.record("openai", ok=False, seconds=1.0)
    assert stats.summary() == {"openai": (0, 1, None), "zimage": (3, 1, 2.0)}


FIXED_SEED = parse_settings({"backends": {"zimage": {"seed": 42}}})


@pytest.mark.parametrize(
    ("settings", "backend", "job", "seeds"),
    [
        (FIXED_SEED, "zimage", DrawJob("cat", count=3), [42, 43, 44]),
        (FIXED_SEED, "zimage", DrawJob("cat"), [None]),
        (PLAIN, "zimage", DrawJob("cat", count=3), [None, None, None]),
        (PLAIN, "openai", DrawJob("cat", count=2), [None, None]),
    ],
)
def test_seeds_differ_where_the_backend_takes_one(settings, backend, job, seeds):
    """A fixed Gradio seed counts up per picture; a random one (-1) and OpenAI send none."""
    assert Pipeline._seeds(backend, settings, job) == seeds


def test_again_gets_a_new_seed(monkeypatch: pytest.MonkeyPatch):
    """Drawing again sends a fixed seed other than the previous picture's, even if drawn again."""
    monkeypatch.setattr("nonebot_plugin_llm2pic.pipeline.random.randint", lambda low, high: 7)
    job = DrawJob("cat", prompt="a cat", previous_seed=7)
    assert Pipeline._seeds("zimage", PLAIN, job) == [8]
