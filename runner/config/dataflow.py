"""Saga data flow in YAML: `emit:` entries shaped by `with:` picks, and `keep:` picks gathered from events.

A pick is a dotted path, never code. In `with:` it names a source: `key` (the instance key), `reason`
(the instance's reason), `data.<field>…` (the start payload) or `gathered.<field>…` (what transitions
kept). In `keep:` it names a field of the consumed event. This module turns the raw YAML into the model
and checks each pick against what is knowable: the `messages:` schemas and the saga's own `keep:`s.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from runner.config.model import Emit, SagaSpec
from runner.config.suggest import did_you_mean

Where = tuple[str | int, ...]


def emit(raw: str | dict[str, Any]) -> Emit:
    """`subject` (the start payload travels whole) or `{subject, with: {field: source}}`."""
    if isinstance(raw, str):
        return Emit(raw)
    picks = raw.get("with")
    fields = None if picks is None else {name: tuple(str(source).split(".")) for name, source in picks.items()}
    return Emit(raw["subject"], fields)


def emits(raw: list[Any] | None) -> tuple[Emit, ...]:
    return tuple(emit(e) for e in raw or ())


def keep(raw: dict[str, str] | None) -> dict[str, tuple[str, ...]]:
    return {name: tuple(str(path).split(".")) for name, path in (raw or {}).items()}


def problems(saga: SagaSpec, messages: Mapping[str, dict[str, Any]]) -> list[tuple[Where, str]]:
    """(where in the saga, message) for every pick that cannot be right."""
    out: list[tuple[Where, str]] = []
    kept = {name for state in saga.states.values() for t in state.on.values() for name in t.keep}
    start_schema = messages.get(saga.start_on)
    for where, e in emits_at(saga):
        out += _emit_problems(saga, e, where, kept, start_schema, messages.get(e.subject))
    for state in saga.states.values():
        for subject, t in state.on.items():
            for name, path in t.keep.items():
                where = ("states", state.name, "on", subject, "keep", name)
                if name == saga.key:
                    out.append((where, f"{name!r} is the saga's key: gathered fields need other names"))
                if (hint := _missing(messages.get(subject), path)) is not None:
                    out.append((where, f"{subject} has no field {'.'.join(path)!r} (per its messages: schema){hint}"))
    return out


def consumed_at(saga: SagaSpec) -> Iterator[tuple[Where, str]]:
    """Where in the saga each consumed subject is written, in file order (a subject may recur)."""
    yield ("start", "on"), saga.start_on
    for state in saga.states.values():
        for subject in state.on:
            yield ("states", state.name, "on", subject), subject
    for step in saga.steps.values():
        if step.confirmed_by:
            yield ("steps", step.name, "confirmed_by"), step.confirmed_by


def emits_at(saga: SagaSpec) -> Iterator[tuple[Where, Emit]]:
    """Where in the saga each emitted message is written: start and transition emits, then compensations."""
    for i, e in enumerate(saga.start_emit):
        yield ("start", "emit", i), e
    for state in saga.states.values():
        for subject, t in state.on.items():
            for i, e in enumerate(t.emit):
                yield ("states", state.name, "on", subject, "emit", i), e
    for step in saga.steps.values():
        yield ("steps", step.name, "compensate"), step.compensate


def _emit_problems(
    saga: SagaSpec,
    e: Emit,
    where: Where,
    kept: set[str],
    start_schema: dict[str, Any] | None,
    target_schema: dict[str, Any] | None,
) -> list[tuple[Where, str]]:
    if e.fields is None:
        return []
    out: list[tuple[Where, str]] = []
    for name, source in e.fields.items():
        at = (*where, "with", name)
        if name == saga.key and source != ("key",):
            out.append((at, f"{name!r} is the saga's key: it always carries the instance key (pick 'key')"))
        root, path = source[0], source[1:]
        if root == "data" and (hint := _missing(start_schema, path)) is not None:
            field = ".".join(path)
            out.append((at, f"the start event {saga.start_on} has no field {field!r} (per its messages: schema){hint}"))
        elif root == "gathered" and path[0] not in kept:
            hint = did_you_mean(path[0], kept)
            out.append(
                (at, f"no transition keeps {path[0]!r} (add keep: {{{path[0]}: <event field>}} where it arrives){hint}")
            )
    required = (target_schema or {}).get("required")
    if isinstance(required, list):
        missing = [f for f in required if f != saga.key and f not in e.fields]
        if missing:
            out.append(
                (
                    (*where, "with"),
                    f"{e.subject} requires {', '.join(map(repr, missing))} (per its messages: schema): pick them here",
                )
            )
    return out


def _missing(schema: dict[str, Any] | None, path: tuple[str, ...]) -> str | None:
    """When the schema declares the properties along `path` and one of them is not among them: a did-you-mean
    hint for it ("" if no declared property is close); else None. Unknowable (no schema, no `properties`, an
    array on the way) counts as present."""
    node = schema
    for name in path:
        node = _resolve(schema, node)
        if not isinstance(node, dict) or not isinstance(node.get("properties"), dict):
            return None
        if name not in node["properties"]:
            return did_you_mean(name, node["properties"])
        node = node["properties"][name]
    return None


def _resolve(root: dict[str, Any] | None, node: Any) -> Any:
    """Follow a local `$ref` (`#/$defs/x`) within the message's own schema; anything else stays as it is."""
    for _ in range(10):  # bounded: a $ref cycle is not worth looping on
        ref = node.get("$ref") if isinstance(node, dict) else None
        if not isinstance(ref, str) or not ref.startswith("#/") or root is None:
            return node
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        node = target
    return node
