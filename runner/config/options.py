"""One declaration per stream and bucket option, and everything derived from it.

A spec's dataclass field declared with `option(...)` carries its YAML key (the field's name), JSON Schema fragment,
default, parser, the nats-py attribute it maps to and whether JetStream changes it in place. The schema properties,
the model defaults, `to_nats()` and provisioning's update-or-drift comparison all read that one declaration, so an
option cannot be half wired. (The shape of nats.py's dataclass configs, and of Benthos' fields declared with their
default beside their parser.)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from typing import Any

from runner.config.units import seconds, size_bytes

# How JetStream takes a change of the option on an existing stream.
UPDATABLE = "updatable"  # applied in place
ENABLE_ONLY = "enable only"  # switched on in place, never off again (deny_delete, message schedules)
FIXED = "fixed"  # set when the stream is created: a change is drift, left to the operator

_OPTION = "flowrun.option"


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Kind:
    """How a family of options is written in YAML (schema, parser) and handed to nats-py."""

    schema: Mapping[str, Any]
    parse: Callable[[Any], Any] = _same
    to_nats: Callable[[Any], Any] = _same


TEXT = Kind({"type": "string"})
FLAG = Kind({"type": "boolean"})
# A flag newer servers know: sent only when on, so an older server never sees the key.
FEATURE = Kind({"type": "boolean"}, to_nats=lambda on: on or None)
LIMIT = Kind({"type": "integer", "minimum": -1})  # -1: unlimited
SIZE = Kind({"$ref": "#/$defs/size"}, parse=size_bytes)
DURATION = Kind({"$ref": "#/$defs/duration"}, parse=seconds)
REPLICAS = Kind({"$ref": "#/$defs/replicas"})


def choice(values: type[Enum] | tuple[str, ...]) -> Kind:
    """One of a nats-py enum's values (handed over as that enum), or of plain names flowrun reads itself."""
    if isinstance(values, tuple):
        return Kind({"enum": list(values)})
    return Kind({"enum": [member.value for member in values]}, to_nats=values)


@dataclass(frozen=True)
class Option:
    kind: Kind
    default: Any
    nats: str | None  # attribute of the spec's nats-py config; None: read by flowrun only (a bucket's cache)
    server: str | None  # attribute of the server's StreamConfig when it differs (a bucket's history)
    change: str
    implied_by: str | None  # an option whose being on turns this one on server-side
    required: bool
    doc: str | None
    key: str = ""  # the YAML key and model attribute: the field's name, filled in by `declared`

    @property
    def server_attr(self) -> str | None:
        return self.server or self.nats

    def schema(self) -> dict[str, Any]:
        return {**self.kind.schema, **({"description": self.doc} if self.doc else {})}

    def nats_value(self, spec: Any) -> Any:
        """The value for nats-py: None leaves the key out (the server keeps its default)."""
        value = getattr(spec, self.key)
        if self.implied_by is not None:
            value = value or getattr(spec, self.implied_by)
        return None if value is None else self.kind.to_nats(value)


def option(
    kind: Kind,
    default: Any,
    *,
    nats: str | None,
    server: str | None = None,
    change: str = UPDATABLE,
    implied_by: str | None = None,
    required: bool = False,
    doc: str | None = None,
) -> Any:
    """A spec field declared as an option (typed `Any` so that it fits any field annotation)."""
    declaration = Option(kind, default, nats, server, change, implied_by, required, doc)
    return field(default=default, metadata={_OPTION: declaration})


@functools.cache
def declared(spec_type: type) -> tuple[Option, ...]:
    """The options of a spec class, in declaration order."""
    return tuple(replace(f.metadata[_OPTION], key=f.name) for f in fields(spec_type) if _OPTION in f.metadata)


def json_schema(spec_type: type) -> dict[str, Any]:
    """`properties` (and `required`) of the spec's JSON Schema object."""
    options = declared(spec_type)
    out: dict[str, Any] = {"properties": {o.key: o.schema() for o in options}}
    if required := [o.key for o in options if o.required]:
        out["required"] = required
    return out


def parse(spec_type: type, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Model values of the options written in `raw`. A malformed value keeps the default: the schema has
    reported it already, and the cross-file checks should still run so that `validate` shows every problem."""
    values = {}
    for o in declared(spec_type):
        if o.key in raw:
            try:
                values[o.key] = o.kind.parse(raw[o.key])
            except (ValueError, TypeError):
                values[o.key] = o.default
    return values


def nats_fields(spec: Any) -> dict[str, Any]:
    """The keyword arguments of the spec's nats-py config."""
    return {o.nats: o.nats_value(spec) for o in declared(type(spec)) if o.nats is not None}
