"""Request bodies as JSON, with duplicate keys refused.

JSON parsers disagree on `{"customerId":"a","customerId":"b"}`: orjson keeps the last, others the
first or fail. A body whose meaning depends on who reads it (a proxy, a log, us) is refused instead.

The check costs almost nothing on the normal path: in valid JSON every ':' outside a string separates
exactly one object member, so the members written equal the keys parsed unless a key repeats. Counting
every ':' is enough when no string holds one (ids cannot); otherwise strings are stripped first. Only a
body with a repeated key pays for the standard parser, which names the key.
"""

from __future__ import annotations

import json
import re
from typing import Any

from runner import codec

DecodeError = codec.DecodeError
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


class DuplicateKeyError(ValueError):
    def __init__(self, key: str | None):
        self.key = key
        super().__init__("duplicate key in an object" if key is None else f"duplicate key {key!r}")


def loads(raw: bytes) -> Any:
    """Parse like codec.loads; raise DuplicateKeyError when an object repeats a key."""
    value = codec.loads(raw)
    if isinstance(value, (dict, list)):
        parsed = _members_parsed(value)
        if raw.count(b":") != parsed and _STRING.sub(b"", raw).count(b":") != parsed:
            raise DuplicateKeyError(_repeated_key(raw))
    return value


def _members_parsed(value: dict | list) -> int:
    """Keys in every object of the document; iterative, since orjson nests deeper than Python recurses."""
    count, stack = 0, [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            count += len(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return count


def _repeated_key(raw: bytes) -> str | None:
    def refuse_repeats(pairs: list[tuple[str, Any]]) -> None:
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKeyError(key)
            seen.add(key)

    try:
        json.loads(raw, object_pairs_hook=refuse_repeats)
    except DuplicateKeyError as exc:
        return exc.key
    except RecursionError:  # nested deeper than the standard parser goes: the key stays unnamed
        pass
    return None
