"""Progress bars for long work (replaying or purging dead letters, provisioning): on stderr, only on a terminal,
so stdout stays what scripts parse and logs stay free of bar redraws."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

Progress = Callable[[int, int], None]  # (done, total), told after each item


@contextmanager
def progress_bar(label: str) -> Iterator[Progress | None]:
    """A `(done, total)` callback drawing a click progress bar on stderr; None when stderr is no terminal."""
    if not sys.stderr.isatty():
        yield None
        return
    bar: Any = None
    shown = 0

    def advance(done: int, total: int) -> None:
        nonlocal bar, shown
        if bar is None:
            bar = click.progressbar(length=total, label=label, file=sys.stderr)
            bar.__enter__()
        bar.update(done - shown)
        shown = done

    try:
        yield advance
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
