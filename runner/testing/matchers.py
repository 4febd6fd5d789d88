"""How expected JSON is compared with what the run produced: `json_equals`, `json_contains`, `contains`.

`json_contains` is a subset match, as in Benthos config tests: every key the expectation names must be there
with a matching value (recursively); lists must have the same length and match element by element.
`contains` looks for a text in a string value, or in the JSON text of any other value.
"""

from __future__ import annotations

import json
from typing import Any

EQUALS, CONTAINS, TEXT = "json_equals", "json_contains", "contains"
MATCHERS = (EQUALS, CONTAINS, TEXT)


def equals(got: Any, expected: Any) -> bool:
    return _compare(got, expected, subset=False)


def contains(got: Any, expected: Any) -> bool:
    return _compare(got, expected, subset=True)


def _compare(got: Any, expected: Any, subset: bool) -> bool:
    if isinstance(expected, dict):
        if not isinstance(got, dict) or (not subset and got.keys() != expected.keys()):
            return False
        return all(k in got and _compare(got[k], v, subset) for k, v in expected.items())
    if isinstance(expected, list):
        return (
            isinstance(got, list)
            and len(got) == len(expected)
            and all(_compare(g, e, subset) for g, e in zip(got, expected, strict=True))
        )
    if isinstance(expected, bool) or isinstance(got, bool):
        return got is expected  # JSON true is not 1
    return bool(got == expected)


def matches(got: Any, matcher: dict[str, Any]) -> bool:
    """`matcher` is one of {json_equals: v}, {json_contains: v}, {contains: "text"}."""
    kind, expected = next(iter(matcher.items()))
    if kind == EQUALS:
        return equals(got, expected)
    if kind == CONTAINS:
        return contains(got, expected)
    return str(expected) in (got if isinstance(got, str) else json.dumps(got, ensure_ascii=False))
