"""Small helpers shared by the bench scripts: medians with ranges, and a uniform table."""

from __future__ import annotations

import os
import platform
import statistics
import sys


def summary(values: list[float]) -> tuple[float, float, float]:
    """``(median, min, max)`` of the samples."""
    return statistics.median(values), min(values), max(values)


def fmt(values: list[float], unit: str = "ms", scale: float = 1000.0, digits: int = 1) -> str:
    """``median (min–max) unit`` for samples given in base units (seconds by default)."""
    med, low, high = summary(values)
    return f"{med * scale:.{digits}f} {unit} ({low * scale:.{digits}f}–{high * scale:.{digits}f})"


def machine() -> str:
    """One line naming the machine the figures come from."""
    return (
        f"{os.cpu_count()} cores, {platform.machine()}, Python "
        f"{sys.version.split()[0]}, {platform.system()} {platform.release()}"
    )


def verdict(ok: bool) -> str:
    """PASS or FAIL."""
    return "PASS" if ok else "FAIL"
