"""'Did you mean …?' for a name that is not declared: the closest declared name, when one is close enough.

One helper for every kind of name (keys, states, steps, subjects, buckets, functions), so that each problem
ends the same way: "state 'canceled' is not declared; did you mean 'cancelled'?".
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

# difflib's ratio: 0.6 is its own default; typos (a letter dropped, swapped or doubled) score well above it.
CUTOFF = 0.6


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate most like `name` (never `name` itself), or None if none is close."""
    others = sorted({c for c in candidates if isinstance(c, str) and c != name})
    matches = difflib.get_close_matches(name, others, n=1, cutoff=CUTOFF)
    return matches[0] if matches else None


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """The hint to append to a problem's message ("; did you mean 'x'?"), or "" when nothing declared is close."""
    match = closest(name, candidates)
    return f"; did you mean {match!r}?" if match else ""
