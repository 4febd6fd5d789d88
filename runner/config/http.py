"""A service's `http:` block: its resources, typed, and the checks that need the rest of the config.

Every name the API uses comes from here, never from code: a resource's path defaults to
`/api/<its key>`, its singular name (as messages say it: "booking 42 not found") to the path's last
segment made singular, and the id's name to the saga's `key` (a KV view's own `key`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from runner.config import dotted
from runner.config.model import Config, HttpSpec, ResourceSpec
from runner.config.suggest import did_you_mean
from runner.config.units import seconds

RESERVED_PATHS = ("/healthz", "/readyz", "/openapi.json", "/docs")
SAGA_ONLY = ("accept", "body_schema", "commands")

Problem = tuple[str, tuple[str, ...]]  # a message and where, below the service's `http:`


def singular(word: str) -> str:
    """bookings → booking, categories → category, addresses → address, inventory → inventory, status →
    status. A guess for regular English plurals; `name:` says it where the guess is wrong."""
    if word.endswith("ies") and len(word) > 3:
        return word[:-3] + "y"
    if word.endswith(("sses", "xes", "ches", "shes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def http_spec(raw: dict[str, Any]) -> HttpSpec:
    resources = {name: resource_spec(name, r) for name, r in (raw.get("resources") or {}).items()}
    return HttpSpec(
        port=raw.get("port", 5100),
        host=raw.get("host", "127.0.0.1"),
        resources=resources,
        deadline=_seconds(raw.get("deadline", 10)),
    )


def resource_spec(name: str, raw: dict[str, Any]) -> ResourceSpec:
    path = raw.get("path") or f"/api/{name}"
    return ResourceSpec(
        path=path,
        name=raw.get("name") or singular(path.rsplit("/", 1)[-1]),
        saga=raw.get("saga"),
        id_source=raw.get("id", "generated"),
        accept=raw.get("accept"),
        view=raw.get("view"),
        body_schema=raw.get("body_schema"),
        commands={command: spec["event"] for command, spec in (raw.get("commands") or {}).items()},
        bucket=raw.get("bucket"),
        key=raw.get("key", "id"),
    )


def http_problems(config: Config, http: HttpSpec, allow_modules: Iterable[str]) -> list[Problem]:
    """What is wrong with a service's resources, each with its place below `http:`."""
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    for name, resource in http.resources.items():
        at = ("resources", name)
        problems += [(message, (*at, *where)) for message, where in _resource_problems(config, resource, allow_modules)]
        path = resource.path
        if path in RESERVED_PATHS:
            problems.append((f"path {path} is the service's own (health, readiness, API docs)", (*at, "path")))
        for other, other_path in seen.items():
            if path == other_path or path.startswith(other_path + "/") or other_path.startswith(path + "/"):
                problems.append((f"path {path} clashes with resource {other!r}'s {other_path}", (*at, "path")))
        seen[name] = path
    return problems


def _resource_problems(config: Config, resource: ResourceSpec, allow_modules: Iterable[str]) -> list[Problem]:
    problems: list[Problem] = []
    if bool(resource.saga) == bool(resource.bucket):
        return [("a resource serves either a saga's instances (saga:) or a KV bucket's values (bucket:)", ())]
    for role, path in ((dotted.ACCEPT, resource.accept), (dotted.VIEW, resource.view)):
        if path and (error := dotted.problem(config.root, path, role, allow_modules)):
            problems.append((error, (role.name,)))
    if resource.bucket:
        if resource.bucket not in config.buckets:
            hint = did_you_mean(resource.bucket, config.buckets)
            problems.append((f"KV bucket {resource.bucket!r} is not declared{hint}", ("bucket",)))
        if not resource.view:
            problems.append(("a KV view needs view: (def view(key, value) -> dict)", ()))
        for key in SAGA_ONLY:
            if getattr(resource, key):
                problems.append((f"{key}: applies to saga resources only", (key,)))
        if resource.id_source != "generated":
            problems.append(("id: applies to saga resources only; a KV view's id is its key", ("id",)))
        return problems
    saga = config.sagas.get(resource.saga or "")
    if saga is None:
        hint = did_you_mean(resource.saga or "", config.sagas)
        return [*problems, (f"saga {resource.saga!r} is not declared{hint}", ("saga",))]
    if resource.key != "id":
        problems.append((f"a saga resource's id is its saga's key ({saga.key}): remove key:", ("key",)))
    consumed = {subject for state in saga.states.values() for subject in state.on}
    for command, event in resource.commands.items():
        if event not in consumed:
            problems.append(
                (
                    f"no state of saga {saga.name!r} has a transition on {event!r}: the command could never run"
                    + did_you_mean(event, consumed),
                    ("commands", command, "event"),
                )
            )
    if resource.id_source == "client" and saga.key not in (resource.body_schema or {}).get("required", ()):
        problems.append((f"id: client takes the id from the body's {saga.key}: body_schema must require it", ("id",)))
    return problems


def _seconds(value: Any) -> float:
    """A malformed duration was already reported by the schema: it reads 0 here."""
    try:
        return seconds(value)
    except (ValueError, TypeError):
        return 0.0
