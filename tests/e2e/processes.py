"""Small helpers for tests that watch real processes come and go."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path


def gone(pid: int) -> bool:
    """No such process, or only its zombie (a container's init may not reap orphans at once)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except FileNotFoundError:
        return True


def eventually(condition: Callable[[], bool], within: float = 15.0) -> bool:
    """Poll `condition` until it holds or `within` seconds pass; the last answer counts."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def children(pid: int) -> dict[int, list[str]]:
    """The live child processes of `pid` and their command lines (argv), read from /proc."""
    found: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, ppid = (entry / "stat").read_text().rsplit(") ", 1)[1].split()[:2]
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue  # gone meanwhile
        if int(ppid) == pid and state != "Z":
            found[int(entry.name)] = [arg.decode() for arg in argv if arg]
    return found
