"""JSON on the wire. orjson: the hot path decodes and encodes every message."""

from __future__ import annotations

from typing import Any

import orjson

DecodeError = orjson.JSONDecodeError


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)
