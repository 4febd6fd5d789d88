"""The flow-test file format: scenarios in YAML, checked (file:line:col) before anything runs.

```yaml
scenarios:                                  # (the travel example's trip saga: examples/travel/)
  - name: a declined charge gives the room and the seats back
    kv: {HOTELS: {H-OSLO: {available: 5, price: "120.00", held: {}, released: []}}}   # set before it runs
    stubs:                                  # a handler (its dotted path in flows/) answers this instead
      travel.billing.charge: {outcome: declined, payload: {reason: card declined}}
      # {silent: true}: never answers · {fail: "why"}: raises FatalError (dead-lettered at once)
    timeout: 10s                            # how long each step may take to become idle (the default)
    steps:                                  # in order; after each, the run waits until every consumer is idle
      - request: {method: POST, path: /api/bookings, body: {...}, headers: {...}}
        expect: {status: 202, body: {json_contains: {status: reserving_hotel}}}
      - publish: {subject: bookings.cancel.requested, payload: {bookingId: X}, headers: {...}}
      - advance: 31s                        # the test clock (runner/testing/clock.py)
      - check: {sagas: {trip: {state: cancelled}}}    # expectations on the way, as under expect:
    expect:
      sagas: {trip: {state: cancelled, reason_contains: declined}}   # or reason: (exact; null: none);
      #                                                     key: picks one of several instances
      emitted: [bookings.requested, bookings.hotel.reserve, ...]     # every event stream's subjects, in order
      kv: {HOTELS: {H-OSLO: {json_contains: {available: 5}}}}
      dead_letters: [{subject: bookings.hotel.reserve, error_contains: schema}]   # exactly these, in order
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from runner.config.model import Config
from runner.config.units import seconds
from runner.config.yamlsrc import Document, Problem, load_yaml
from runner.testing.matchers import MATCHERS

_MATCHER = {
    "type": "object",
    "minProperties": 1,
    "maxProperties": 1,
    "properties": {"json_equals": {}, "json_contains": {}, "contains": {"type": "string"}},
    "additionalProperties": False,
}
_KV_EXPECT = {"type": "object", "additionalProperties": _MATCHER}  # key → matcher
_HEADERS = {"type": "object", "additionalProperties": {"type": "string"}}
_DURATION = {"oneOf": [{"type": "number", "minimum": 0}, {"type": "string", "pattern": r"^\d+(\.\d+)?(ms|s|m|h|d)?$"}]}
_STUB = {
    "type": "object",
    "oneOf": [{"required": ["outcome"]}, {"required": ["silent"]}, {"required": ["fail"]}],
    "properties": {
        "outcome": {"type": "string"},
        "payload": {"type": "object"},
        "silent": {"const": True},
        "fail": {"type": "string"},
    },
    "additionalProperties": False,
}
_SAGA_EXPECT = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "key": {"type": "string"},
        "state": {"type": "string"},
        "reason": {"type": ["string", "null"]},
        "reason_contains": {"type": "string"},
    },
}
_DEAD_LETTER = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"subject": {"type": "string"}, "service": {"type": "string"}, "error_contains": {"type": "string"}},
}
_EXPECT = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "sagas": {"type": "object", "additionalProperties": _SAGA_EXPECT},
        "emitted": {"type": "array", "items": {"type": "string"}},
        "kv": {"type": "object", "additionalProperties": _KV_EXPECT},
        "dead_letters": {"type": "array", "items": _DEAD_LETTER},
    },
}
_STEP = {
    "type": "object",
    "oneOf": [{"required": ["request"]}, {"required": ["publish"]}, {"required": ["advance"]}, {"required": ["check"]}],
    "properties": {
        "request": {
            "type": "object",
            "required": ["path"],
            "additionalProperties": False,
            "properties": {
                "method": {"enum": ["GET", "POST", "PUT", "PATCH", "DELETE"]},
                "path": {"type": "string", "pattern": "^/"},
                "body": {},
                "headers": _HEADERS,
                "service": {"type": "string"},
            },
        },
        "expect": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"status": {"type": "integer"}, "body": _MATCHER},
        },
        "publish": {
            "type": "object",
            "required": ["subject", "payload"],
            "additionalProperties": False,
            "properties": {"subject": {"type": "string", "minLength": 1}, "payload": {}, "headers": _HEADERS},
        },
        "advance": _DURATION,
        "check": _EXPECT,
    },
    "additionalProperties": False,
}
SCHEMA = {
    "type": "object",
    "required": ["scenarios"],
    "additionalProperties": False,
    "properties": {
        "scenarios": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "steps"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "kv": {"type": "object", "additionalProperties": {"type": "object"}},
                    "stubs": {"type": "object", "additionalProperties": _STUB},
                    "steps": {"type": "array", "minItems": 1, "items": _STEP},
                    "timeout": _DURATION,
                    "expect": _EXPECT,
                },
            },
        }
    },
}
DEFAULT_TIMEOUT = 10.0  # seconds each step may take to settle


class ScenarioFileError(Exception):
    """The file cannot be run: every problem, as file:line:col lines."""

    def __init__(self, problems: list[Problem]):
        super().__init__("\n".join(map(str, problems)))
        self.problems = problems


@dataclass(frozen=True)
class Stub:
    outcome: str | None = None  # emit this outcome with `payload`
    payload: dict[str, Any] = field(default_factory=dict)
    silent: bool = False  # never answer
    fail: str | None = None  # raise FatalError(fail)


@dataclass(frozen=True)
class Request:
    path: str
    method: str = "GET"
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    service: str | None = None
    expect_status: int | None = None
    expect_body: dict[str, Any] | None = None


@dataclass(frozen=True)
class Publish:
    subject: str
    payload: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Advance:
    seconds: float


@dataclass(frozen=True)
class SagaExpectation:
    saga: str
    key: str | None = None
    state: str | None = None
    reason: str | None = None
    reason_given: bool = False  # `reason: null` expects no reason
    reason_contains: str | None = None


@dataclass(frozen=True)
class DeadLetterExpectation:
    subject: str | None = None
    service: str | None = None
    error_contains: str | None = None


@dataclass(frozen=True)
class Expectations:
    """What `expect:` (at the end) or a `check:` step (on the way) asserts."""

    sagas: list[SagaExpectation] = field(default_factory=list)
    emitted: list[str] | None = None
    kv: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # bucket → key → matcher
    dead_letters: list[DeadLetterExpectation] | None = None


@dataclass(frozen=True)
class Check:
    expect: Expectations


Step = Request | Publish | Advance | Check


@dataclass(frozen=True)
class Scenario:
    file: Path
    name: str
    steps: list[Step]
    kv: dict[str, dict[str, Any]] = field(default_factory=dict)
    stubs: dict[str, Stub] = field(default_factory=dict)
    timeout: float = DEFAULT_TIMEOUT
    expect: Expectations = Expectations()


def load_file(path: Path, config: Config) -> list[Scenario]:
    """The file's scenarios; raises ScenarioFileError with every problem (schema, then against the config)."""
    doc, problems = load_yaml(path)
    if doc is None or problems:
        raise ScenarioFileError(problems)
    problems = _schema_problems(doc)
    if problems:
        raise ScenarioFileError(problems)
    problems = []
    scenarios = []
    for i, raw in enumerate(doc.data["scenarios"]):
        problems += _config_problems(doc, ("scenarios", i), raw, config)
        scenarios.append(_scenario(path, raw))
    if problems:
        raise ScenarioFileError(problems)
    return scenarios


def _schema_problems(doc: Document) -> list[Problem]:
    validator = Draft202012Validator(SCHEMA)
    problems = []
    for error in sorted(validator.iter_errors(doc.data), key=lambda e: list(map(str, e.absolute_path))):
        path = tuple(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
            problems += [doc.problem((*path, key), f"unknown key {key!r}") for key in extra]
        elif error.validator == "oneOf" and error.schema is _STEP:
            problems.append(doc.problem(path, "a step is exactly one of request:, publish:, advance: or check:"))
        elif error.validator == "oneOf" and error.schema is _STUB:
            problems.append(doc.problem(path, "a stub is exactly one of outcome: (+ payload:), silent: true, fail:"))
        elif error.validator in ("minProperties", "maxProperties"):
            problems.append(doc.problem(path, f"a matcher is exactly one of {', '.join(MATCHERS)}"))
        elif error.validator == "oneOf":
            problems.append(doc.problem(path, f"{error.instance!r} is not a duration (use e.g. 250ms, 30s, 5m)"))
        else:
            problems.append(doc.problem(path, error.message))
    return problems


def _config_problems(doc: Document, at: tuple[Any, ...], raw: dict[str, Any], config: Config) -> list[Problem]:
    """What the scenario names must exist in the config: buckets, handlers and their outcomes, sagas."""
    problems = []
    bindings = {b.handler: b for s in config.services.values() for b in s.bindings}
    for bucket in raw.get("kv", {}):
        if bucket not in config.buckets:
            problems.append(doc.problem((*at, "kv", bucket), f"no KV bucket {bucket!r} in the config"))
    for handler, stub in raw.get("stubs", {}).items():
        binding = bindings.get(handler)
        if binding is None:
            problems.append(doc.problem((*at, "stubs", handler), f"no handler {handler!r} is bound in flows/"))
        elif "outcome" in stub and stub["outcome"] not in binding.emits:
            problems.append(
                doc.problem(
                    (*at, "stubs", handler, "outcome"),
                    f"{handler} has no outcome {stub['outcome']!r} (its emits: {', '.join(binding.emits) or 'none'})",
                )
            )
    checks = [((*at, "expect"), raw.get("expect", {}))]
    checks += [((*at, "steps", j, "check"), step["check"]) for j, step in enumerate(raw["steps"]) if "check" in step]
    for where, expect in checks:
        for saga in expect.get("sagas", {}):
            if saga not in config.sagas:
                problems.append(doc.problem((*where, "sagas", saga), f"no saga {saga!r} in the config"))
        for bucket in expect.get("kv", {}):
            if bucket not in config.buckets:
                problems.append(doc.problem((*where, "kv", bucket), f"no KV bucket {bucket!r} in the config"))
    served = {name for name, s in config.services.items() if s.http is not None}
    for j, step in enumerate(raw["steps"]):
        if "request" not in step:
            continue
        service = step["request"].get("service")
        if not served or (service is not None and service not in served):
            what = f"service {service!r} serves no HTTP" if service else "no service of the config serves HTTP"
            problems.append(doc.problem((*at, "steps", j, "request"), what))
        elif service is None and len(served) > 1:
            problems.append(
                doc.problem((*at, "steps", j, "request"), f"say which service: (one of {', '.join(sorted(served))})")
            )
    return problems


def _scenario(path: Path, raw: dict[str, Any]) -> Scenario:
    return Scenario(
        file=path,
        name=raw["name"],
        steps=[_step(s) for s in raw["steps"]],
        kv=raw.get("kv", {}),
        stubs={handler: Stub(**stub) for handler, stub in raw.get("stubs", {}).items()},
        timeout=seconds(raw.get("timeout", DEFAULT_TIMEOUT)),
        expect=_expectations(raw.get("expect", {})),
    )


def _expectations(raw: dict[str, Any]) -> Expectations:
    return Expectations(
        sagas=[SagaExpectation(saga, reason_given="reason" in e, **e) for saga, e in raw.get("sagas", {}).items()],
        emitted=raw.get("emitted"),
        kv=raw.get("kv", {}),
        dead_letters=[DeadLetterExpectation(**d) for d in raw["dead_letters"]] if "dead_letters" in raw else None,
    )


def _step(raw: dict[str, Any]) -> Step:
    if "advance" in raw:
        return Advance(seconds(raw["advance"]))
    if "check" in raw:
        return Check(_expectations(raw["check"]))
    if "publish" in raw:
        return Publish(**raw["publish"])
    expect = raw.get("expect", {})
    request = raw["request"]
    return Request(
        **{**request, "method": request.get("method", "POST" if "body" in request else "GET")},
        expect_status=expect.get("status"),
        expect_body=expect.get("body"),
    )
