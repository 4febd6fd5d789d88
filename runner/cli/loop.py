"""The event loop a command runs on: uvloop where available, a faster loop for a client-bound workload."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run the coroutine `make()` returns to completion on a fresh loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(make())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(make())
