"""A saga's definition as JSON, and its version: a digest of that JSON.

A running instance must be interpreted by the definition it started on (a renamed state would strand
it otherwise), so definitions are stored by version (runner/jetstream/saga_store.py) and read back
exactly: `from_json(to_json(spec)) == spec`. The conversion follows the dataclasses' type hints, so
a field added to the model is carried, and changes the version, without touching this module.
"""

from __future__ import annotations

import dataclasses
import hashlib
import types
import typing
from typing import Any

from runner import codec
from runner.config.model import SagaSpec

VERSION_LENGTH = 12  # hex digits of the sha256: ample for the handful of versions a saga ever has


def to_json(spec: SagaSpec) -> dict[str, Any]:
    """Every field, defaults included, as plain JSON values (tuples become lists)."""
    return _plain(spec)


def from_json(value: dict[str, Any]) -> SagaSpec:
    """The SagaSpec `to_json` described. Raises ValueError on a value that does not fit the model."""
    try:
        return _typed(SagaSpec, value)
    except (TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"not a saga definition: {exc}") from exc


def version(spec: SagaSpec) -> str:
    """The definition's content hash: equal definitions have equal versions, whatever their YAML's layout."""
    return hashlib.sha256(codec.canonical(to_json(spec))).hexdigest()[:VERSION_LENGTH]


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _typed(hint: Any, value: Any) -> Any:
    """`value` (plain JSON) as the type `hint` names: dataclasses, dict[str, X], tuple[X, ...], X | None."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return _typed(inner, value)
    if origin is dict:
        _, inner = typing.get_args(hint)
        return {k: _typed(inner, v) for k, v in value.items()}
    if origin is tuple:
        inner = typing.get_args(hint)[0]
        return tuple(_typed(inner, v) for v in value)
    if dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        fields = {f.name for f in dataclasses.fields(hint)}
        unknown = set(value) - fields
        if unknown:
            raise ValueError(f"unknown field(s) of {hint.__name__}: {', '.join(sorted(unknown))}")
        return hint(**{name: _typed(hints[name], v) for name, v in value.items()})
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value
