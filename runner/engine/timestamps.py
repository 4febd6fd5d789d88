"""Timestamps as readers see them: RFC 3339 UTC with milliseconds. Records keep epoch seconds."""

from __future__ import annotations

import functools
import time


@functools.lru_cache(maxsize=256)
def _iso_second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def iso(ts: float) -> str:
    """RFC 3339 UTC with milliseconds; cheap enough for every alarm and every view (seconds are cached)."""
    second = int(ts)
    return f"{_iso_second(second)}.{int((ts - second) * 1000):03d}Z"
