"""Crash points for fault-injection tests and chaos drills.

`FLOWRUN_CRASH_AT=<point>:<n>` makes the process die like `kill -9` (no cleanup, no acks) the n-th
time it passes <point>. Points: `before-publish` (a handler's or saga transition's effects are
stored, its outputs not yet published) and `before-ack` (outputs published, message not yet acked).
Unset, it costs one boolean test per message.
"""

from __future__ import annotations

import os
import sys

POINTS = ("before-publish", "before-ack")


def _parse(spec: str) -> tuple[str, int] | None:
    if not spec:
        return None
    point, _, n = spec.partition(":")
    if point not in POINTS or not n.isdigit() or int(n) < 1:
        raise ValueError(f"FLOWRUN_CRASH_AT={spec!r}: expected one of {', '.join(POINTS)} followed by :N")
    return point, int(n)


_target = _parse(os.environ.get("FLOWRUN_CRASH_AT", ""))
ARMED = _target is not None
_passes = 0


def reached(point: str) -> None:
    global _passes
    if _target is None or point != _target[0]:
        return
    _passes += 1
    if _passes == _target[1]:
        sys.stderr.write(f"flowrun: crash point {point} reached ({_passes}); exiting like kill -9\n")
        sys.stderr.flush()
        os._exit(137)
