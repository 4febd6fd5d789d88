"""Evaluating the saga's declared field picks (runner/config/dataflow.py) on an instance and its events.

A pick whose source is absent (a field the event did not carry, a step output never gathered, say the
payment id of a charge whose answer was lost) leaves its field out: the receiving message's schema
decides whether that is acceptable.
"""

from __future__ import annotations

from typing import Any

from runner.config.model import Emit

_ABSENT = object()


def read(source: Any, path: tuple[str, ...]) -> Any:
    """The value at `path` inside nested objects, or _ABSENT."""
    value = source
    for name in path:
        if not isinstance(value, dict) or name not in value:
            return _ABSENT
        value = value[name]
    return value


def gathered(keep: dict[str, tuple[str, ...]], event: dict[str, Any]) -> dict[str, Any]:
    """What a transition's `keep:` takes from its event."""
    out = {}
    for name, path in keep.items():
        value = read(event, path)
        if value is not _ABSENT:
            out[name] = value
    return out


def payload(emit: Emit, record: dict[str, Any], key_field: str) -> dict[str, Any]:
    """The body of an emitted message: shaped by its picks, or the start payload whole."""
    reason = record.get("reason")
    if emit.fields is None:
        data = {**record["data"], key_field: record["key"]}
        if reason:
            data["reason"] = reason
        return data
    sources = {"key": record["key"], "data": record["data"], "gathered": record.get("gathered") or {}}
    if reason:
        sources["reason"] = reason
    out = {key_field: record["key"]}
    for name, path in emit.fields.items():
        value = read(sources, path)
        if value is not _ABSENT:
            out[name] = value
    return out
