"""Load streams.yaml and flows/*.yaml into one validated `Config`, or report every problem at once.

Pipeline: YAML with positions → `${VAR}` interpolation → JSON Schema (draft 2020-12) → typed model →
cross-file checks. Problems are collected, never raised one by one, so `flowrun validate` shows them all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from runner.config import dotted
from runner.config import settings as typed_settings
from runner.config import subjects as subj
from runner.config.model import (
    Binding,
    BucketSpec,
    Config,
    ConsumerSpec,
    DeadLetterSpec,
    HttpSpec,
    RetryPolicy,
    SagaSpec,
    ServiceSpec,
    StateSpec,
    StepSpec,
    StreamSpec,
    TimeoutSpec,
    Transition,
    ViewSpec,
)
from runner.config.units import seconds as _seconds
from runner.config.units import size_bytes as _size_bytes
from runner.config.yamlsrc import Document, Location, Problem, load_yaml
from runner.jetstream.connection import ConnectionSpec

PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "work_queue": {"retention": "workqueue"},
    "log": {"retention": "limits", "max_age": 90 * 86400.0, "deny_delete": True, "discard": "old"},
    "replicated": {"replicas": 3},
}


class ConfigError(Exception):
    """Raised by `load_or_raise` with every problem found."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@cache
def schema(name: str) -> dict[str, Any]:
    """The JSON Schema for `streams` or `flows`, as shipped in runner/config/schemas."""
    text = resources.files("runner.config.schemas").joinpath(f"{name}.schema.json").read_text("utf-8")
    return json.loads(text)


def schema_problems(doc: Document, name: str) -> list[Problem]:
    validator = Draft202012Validator(schema(name))
    problems = []
    for error in sorted(validator.iter_errors(doc.data), key=lambda e: list(map(str, e.absolute_path))):
        path = tuple(error.absolute_path)
        message = error.message
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
            for key in extra:
                problems.append(doc.problem((*path, key), f"unknown key {key!r}"))
            continue
        if error.validator == "oneOf" and error.context:
            patterns = " ".join(str(sub.get("pattern", "")) for sub in error.validator_value)
            if "(ms|s|m|h|d)" in patterns:
                message = f"{error.instance!r} is not a duration (use e.g. 250ms, 30s, 5m, 2h, 90d)"
            elif "i?B" in patterns:
                message = f"{error.instance!r} is not a size (use e.g. 512KiB, 1GiB, or a number of bytes)"
            else:
                message = f"{error.instance!r} is not valid here: " + "; ".join(
                    sorted({c.message for c in error.context})
                )
        problems.append(doc.problem(path, message))
    return problems


@dataclass
class _Origin:
    """Where a named element was declared, for cross-check messages."""

    doc: Document
    path: tuple[str | int, ...]

    def problem(self, message: str, *sub: str | int) -> Problem:
        return self.doc.problem((*self.path, *sub), message)


@dataclass
class _Loader:
    root: Path
    env: Mapping[str, str] | None
    problems: list[Problem] = field(default_factory=list)
    origins: dict[tuple[str, str], _Origin] = field(default_factory=dict)
    allow_modules: set[str] = field(default_factory=set)
    # `defaults: {replicas: …}` of streams.yaml and where it is written; streams and buckets without their own use it
    default_replicas: tuple[int, Location] | None = None
    replicas_at: dict[tuple[str, str], Location] = field(default_factory=dict)

    def load(self) -> Config | None:
        streams_doc = self.read(self.root / "streams.yaml", "streams")
        flow_docs = [self.read(path, "flows") for path in sorted((self.root / "flows").glob("*.y*ml"))]
        if not (self.root / "flows").is_dir():
            self.problems.append(Problem(str(self.root / "flows"), 1, 1, "flows/ directory is missing"))
        if streams_doc is None or any(doc is None for doc in flow_docs):
            return None  # a syntax error: nothing further can be checked
        try:
            return self.build(streams_doc, [d for d in flow_docs if d is not None])
        except (KeyError, ValueError, TypeError, AttributeError):
            # Schema problems (already reported) can make the model unbuildable; report what we have.
            if self.problems:
                return None
            raise

    def build(self, streams_doc: Document, flow_docs: list[Document]) -> Config | None:
        """The typed model and the cross-file checks; still run when there are schema problems, so
        `validate` shows every problem at once."""
        if "replicas" in (streams_doc.data.get("defaults") or {}):
            location = streams_doc.locate(("defaults", "replicas"))
            self.default_replicas = (streams_doc.data["defaults"]["replicas"], location)
        streams = {
            name: self.stream(name, spec, streams_doc) for name, spec in (streams_doc.data.get("streams") or {}).items()
        }
        merged: dict[str, dict[str, Any]] = {s: {} for s in ("services", "sagas", "kv", "messages", "data")}
        for doc in flow_docs:
            for section, entries in (doc.data or {}).items():
                if section == "allow_modules":  # a list, merged across files
                    self.allow_modules.update(m for m in entries or () if isinstance(m, str))
                    continue
                for name, value in (entries or {}).items():
                    if (section, name) in self.origins:
                        first = self.origins[(section, name)]
                        line, _ = first.doc.where(first.path)
                        self.problems.append(
                            doc.problem(
                                (section, name), f"{section} {name!r} already declared at {first.doc.file}:{line}"
                            )
                        )
                        continue
                    self.origins[(section, name)] = _Origin(doc, (section, name))
                    merged[section][name] = value
        buckets = {name: self.bucket(name, spec) for name, spec in merged["kv"].items()}
        services = {name: self.service(name, spec) for name, spec in merged["services"].items()}
        sagas = {name: self.saga(name, spec) for name, spec in merged["sagas"].items()}
        config = Config(
            self.root,
            streams,
            services,
            sagas,
            buckets,
            merged["messages"],
            merged["data"],
            self.replicas_at,
            connection=self.connection(streams_doc),
        )
        self.cross_check(config)
        return None if self.problems else config

    def connection(self, doc: Document) -> ConnectionSpec | None:
        raw = doc.data.get("connection")
        if not isinstance(raw, dict):
            return None
        try:
            spec = ConnectionSpec.from_mapping(raw, base_dir=self.root)
            spec.check(files=False)  # the files may live only where it runs
            return spec
        except ValueError as exc:  # two auth modes, a bad duration: the message names options, never values
            self.problems.append(doc.problem(("connection",), str(exc)))
            return None

    def read(self, path: Path, schema_name: str) -> Document | None:
        doc, problems = load_yaml(_display(path), self.env)
        self.problems.extend(problems)
        if doc is None:
            return None
        if doc.data is None:
            doc.data = {}
        self.problems.extend(schema_problems(doc, schema_name))
        return doc

    # --- model construction (input already passed the schema) ---

    def stream(self, name: str, raw: dict[str, Any], doc: Document) -> StreamSpec:
        self.origins[("streams", name)] = _Origin(doc, ("streams", name))
        values: dict[str, Any] = dict(PRESETS[raw.get("preset", "default")])
        values["replicas"] = self.replicas(("streams", name), doc, raw)
        for key, value in raw.items():
            if key in ("max_bytes", "max_msg_size"):
                value = size_bytes(value)
            elif key in ("max_age", "duplicate_window"):
                value = seconds(value)
            elif key == "subjects":
                value = tuple(value)
            values[key] = value
        return StreamSpec(name=name, **values)

    def replicas(self, path: tuple[str, str], doc: Document, raw: dict[str, Any]) -> int:
        """Replicas of a stream or bucket — its own, else its preset's, else `defaults:`, else 1 — noting
        where that value is written, so a check against a live cluster points at the line to change."""
        if "replicas" in raw:
            self.replicas_at[path] = doc.locate((*path, "replicas"))
            return raw["replicas"]
        preset = PRESETS.get(raw.get("preset", "default"), {})
        if "replicas" in preset:
            self.replicas_at[path] = doc.locate((*path, "preset"))
            return preset["replicas"]
        if self.default_replicas is not None:
            self.replicas_at[path] = self.default_replicas[1]
            return self.default_replicas[0]
        self.replicas_at[path] = doc.locate(path)
        return 1

    def bucket(self, name: str, raw: dict[str, Any]) -> BucketSpec:
        ttl = raw.get("ttl")
        origin = self.origins[("kv", name)]
        return BucketSpec(
            name=name,
            history=raw.get("history", 1),
            storage=raw.get("storage", "file"),
            replicas=self.replicas(("kv", name), origin.doc, raw),
            ttl=seconds(ttl) if ttl is not None else None,
            description=raw.get("description"),
            cache=raw.get("cache", 1024),
        )

    @staticmethod
    def retry(raw: dict[str, Any] | None, base: RetryPolicy) -> RetryPolicy:
        if not raw:
            return base
        values = dict(base.__dict__)
        for key, value in raw.items():
            if key in ("initial_delay", "max_delay", "outage_budget", "out_of_order_for"):
                value = seconds(value)
            elif key in ("retry_on", "fatal_on"):
                value = tuple(value)
            values[key] = value
        return RetryPolicy(**values)

    def service(self, name: str, raw: dict[str, Any]) -> ServiceSpec:
        retry = self.retry(raw.get("retry"), RetryPolicy())
        consumers = {}
        for durable, c in (raw.get("consumers") or {}).items():
            consumers[durable] = ConsumerSpec(
                service=name,
                durable=durable,
                stream=c["stream"],
                filter_subjects=tuple(c["filter_subjects"]),
                batch=c.get("batch", 64),
                concurrency=c.get("concurrency", 256),
                ack_wait=seconds(c.get("ack_wait", 30)),
                max_ack_pending=c.get("max_ack_pending", 2048),
                handler_timeout=seconds(c.get("handler_timeout", 10)),
                keepalive=c.get("keepalive", True),
                description=c.get("description"),
            )
        bindings = tuple(
            Binding(
                subject=b["subject"],
                handler=b["handler"],
                emits=dict(b.get("emits") or {}),
                retry=self.retry(b.get("retry"), retry),
                timeout=seconds(b["timeout"]) if "timeout" in b else None,
            )
            for b in raw.get("handlers") or []
        )
        http = None
        if "http" in raw:
            h = raw["http"]
            http = HttpSpec(
                port=h.get("port", 5100),
                host=h.get("host", "127.0.0.1"),
                saga=h.get("saga"),
                accept=h.get("accept"),
                body_schema=h.get("body_schema"),
                views={k: ViewSpec(v["bucket"], v["view"]) for k, v in (h.get("views") or {}).items()},
                deadline=seconds(h.get("deadline", 10)),
            )
        dl = raw.get("dead_letter") or {}
        return ServiceSpec(
            name=name,
            consumers=consumers,
            bindings=bindings,
            retry=retry,
            dead_letter=DeadLetterSpec(dl.get("stream", "DLQ"), dl.get("subject_prefix", "dlq")),
            settings=self.settings(name, raw.get("settings") or {}),
            http=http,
            description=raw.get("description"),
            kv=tuple(raw.get("kv") or ()),
        )

    def settings(self, service: str, raw: dict[str, Any]) -> dict[str, Any]:
        """Typed setting values (runner/config/settings.py); a value of the wrong type is a problem at its line."""
        origin = self.origins[("services", service)]
        values = {}
        for key, spec in raw.items():
            if not isinstance(spec, dict):
                continue  # the schema reported it
            values[key], problems = typed_settings.parse(spec)
            self.problems.extend(origin.problem(message, "settings", key, at) for at, message in problems)
        return values

    def saga(self, name: str, raw: dict[str, Any]) -> SagaSpec:
        states = {}
        for state_name, s in raw["states"].items():
            timeout = None
            if "timeout" in s:
                t = s["timeout"]
                timeout = TimeoutSpec(seconds(t["after"]), t["goto"], t.get("compensate", False), t.get("reason"))
            on = {
                subject: Transition(
                    goto=t.get("goto"),
                    emit=tuple(t.get("emit") or ()),
                    completes=t.get("completes"),
                    compensate=t.get("compensate", False),
                    reason=t.get("reason"),
                )
                for subject, t in (s.get("on") or {}).items()
            }
            states[state_name] = StateSpec(state_name, s.get("terminal", False), timeout, on, s.get("awaits"))
        comp = raw.get("compensation") or {}
        timers = raw.get("timers") or {}
        return SagaSpec(
            name=name,
            service=raw["service"],
            consumer=raw["consumer"],
            bucket=raw["bucket"],
            start_on=raw["start"]["on"],
            start_state=raw["start"]["state"],
            states=states,
            key=raw.get("key", "orderId"),
            timer_stream=timers.get("stream"),
            timer_subject=timers.get("subject"),
            steps={k: StepSpec(k, v["compensate"], v.get("confirmed_by")) for k, v in (raw.get("steps") or {}).items()},
            compensation_timeout=seconds(comp.get("timeout", 60)),
            compensation_failed_state=comp.get("failed_state", "compensation_failed"),
        )

    # --- cross-file checks ---

    def cross_check(self, config: Config) -> None:
        streams = config.streams
        names = sorted(streams)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                for sa in streams[a].subjects:
                    for sb in streams[b].subjects:
                        if subj.overlap(sa, sb):
                            self.problems.append(
                                self.origins[("streams", b)].problem(
                                    f"subjects {sb!r} overlap stream {a}'s {sa!r}: a subject must belong to one stream",
                                    "subjects",
                                )
                            )

        def check_covered(subject: str, origin: _Origin, *path: str | int) -> None:
            if not any(subj.matches(p, subject) for s in streams.values() for p in s.subjects):
                self.problems.append(
                    origin.problem(f"subject {subject!r} is not covered by any stream in streams.yaml", *path)
                )

        for service in config.services.values():
            origin = self.origins[("services", service.name)]
            if service.dead_letter.stream not in streams:
                self.problems.append(
                    origin.problem(f"dead-letter stream {service.dead_letter.stream!r} is not declared", "dead_letter")
                )
            else:
                dl = streams[service.dead_letter.stream]
                probe = f"{service.dead_letter.subject_prefix}.{service.name}.x"
                if not any(subj.matches(p, probe) for p in dl.subjects):
                    self.problems.append(
                        origin.problem(
                            f"dead-letter subjects {service.dead_letter.subject_prefix}.> are not in stream {dl.name}",
                            "dead_letter",
                        )
                    )
            for durable, consumer in service.consumers.items():
                if consumer.stream not in streams:
                    self.problems.append(
                        origin.problem(f"stream {consumer.stream!r} is not declared", "consumers", durable, "stream")
                    )
                    continue
                for i, f in enumerate(consumer.filter_subjects):
                    if not any(subj.within(f, p) for p in streams[consumer.stream].subjects):
                        self.problems.append(
                            origin.problem(
                                f"filter {f!r} is outside stream {consumer.stream}'s subjects",
                                "consumers",
                                durable,
                                "filter_subjects",
                                i,
                            )
                        )
            for i, binding in enumerate(service.bindings):
                check_covered(binding.subject, origin, "handlers", i, "subject")
                if not any(
                    subj.matches(f, binding.subject) for c in service.consumers.values() for f in c.filter_subjects
                ):
                    self.problems.append(
                        origin.problem(
                            f"no consumer of service {service.name!r} receives {binding.subject!r}",
                            "handlers",
                            i,
                            "subject",
                        )
                    )
                for outcome, subject in binding.emits.items():
                    check_covered(subject, origin, "handlers", i, "emits", outcome)
                error = dotted.problem(config.root, binding.handler, dotted.HANDLER, self.allow_modules)
                if error:
                    self.problems.append(origin.problem(error, "handlers", i, "handler"))
            if service.http:
                h = service.http
                if h.saga and h.saga not in config.sagas:
                    self.problems.append(origin.problem(f"saga {h.saga!r} is not declared", "http", "saga"))
                if h.accept and (error := dotted.problem(config.root, h.accept, dotted.ACCEPT, self.allow_modules)):
                    self.problems.append(origin.problem(error, "http", "accept"))
                for view_name, view in h.views.items():
                    if view.bucket not in config.buckets:
                        self.problems.append(
                            origin.problem(
                                f"KV bucket {view.bucket!r} is not declared", "http", "views", view_name, "bucket"
                            )
                        )
                    if error := dotted.problem(config.root, view.view, dotted.VIEW, self.allow_modules):
                        self.problems.append(origin.problem(error, "http", "views", view_name, "view"))
            for i, bucket in enumerate(service.kv):
                if bucket not in config.buckets:
                    self.problems.append(origin.problem(f"KV bucket {bucket!r} is not declared in kv", "kv", i))

        for subject in config.messages:
            check_covered(subject, self.origins[("messages", subject)])
        for bucket in config.data:
            if bucket not in config.buckets:
                self.problems.append(
                    self.origins[("data", bucket)].problem(f"KV bucket {bucket!r} is not declared in kv")
                )
        for saga in config.sagas.values():
            self.check_saga(config, saga, check_covered)

    def check_saga(self, config: Config, saga: SagaSpec, check_covered: Any) -> None:
        origin = self.origins[("sagas", saga.name)]
        service = config.services.get(saga.service)
        if service is None:
            self.problems.append(origin.problem(f"service {saga.service!r} is not declared", "service"))
        elif saga.consumer not in service.consumers:
            self.problems.append(
                origin.problem(f"service {saga.service!r} has no consumer {saga.consumer!r}", "consumer")
            )
        else:
            consumer = service.consumers[saga.consumer]
            for subject in sorted(saga.subjects()):
                if not any(subj.matches(f, subject) for f in consumer.filter_subjects):
                    self.problems.append(
                        origin.problem(f"consumer {saga.consumer!r} does not receive {subject!r}", "consumer")
                    )
        if saga.bucket not in config.buckets:
            self.problems.append(origin.problem(f"KV bucket {saga.bucket!r} is not declared in kv", "bucket"))
        if saga.timer_subject:
            check_covered(f"{saga.timer_subject}.fire", origin, "timers", "subject")
            timer_stream = config.streams.get(saga.timer_stream or "")
            if timer_stream is None:
                self.problems.append(origin.problem(f"timer stream {saga.timer_stream!r} is not declared", "timers"))
            elif not timer_stream.allow_msg_schedules:
                self.problems.append(
                    origin.problem(f"timer stream {timer_stream.name} must set 'allow_msg_schedules: true'", "timers")
                )
        elif any(s.timeout for s in saga.states.values()) or saga.steps:
            self.problems.append(
                origin.problem("states with timeouts or compensations need a 'timers' stream and subject")
            )
        for subject in sorted(saga.subjects() | saga.emitted()):
            check_covered(subject, origin)
        states = saga.states
        if saga.start_state not in states:
            self.problems.append(origin.problem(f"start state {saga.start_state!r} is not declared", "start", "state"))
        edges: dict[str, set[str]] = {}
        for state in states.values():
            targets = edges.setdefault(state.name, set())
            if state.awaits and state.awaits not in saga.steps:
                self.problems.append(
                    origin.problem(f"step {state.awaits!r} is not declared in steps", "states", state.name, "awaits")
                )
            if state.timeout:
                targets.add(state.timeout.goto)
                if state.timeout.goto not in states:
                    self.problems.append(
                        origin.problem(
                            f"state {state.timeout.goto!r} is not declared", "states", state.name, "timeout", "goto"
                        )
                    )
            for subject, t in state.on.items():
                if t.goto:
                    targets.add(t.goto)
                    if t.goto not in states:
                        self.problems.append(
                            origin.problem(
                                f"state {t.goto!r} is not declared", "states", state.name, "on", subject, "goto"
                            )
                        )
                if t.completes and t.completes not in saga.steps:
                    self.problems.append(
                        origin.problem(
                            f"step {t.completes!r} is not declared in steps",
                            "states",
                            state.name,
                            "on",
                            subject,
                            "completes",
                        )
                    )
        if saga.steps:
            failed = states.get(saga.compensation_failed_state)
            if failed is None or not failed.terminal:
                self.problems.append(
                    origin.problem(
                        f"compensation failed_state {saga.compensation_failed_state!r} must be declared as a "
                        "terminal state",
                        "compensation",
                    )
                )
        terminal = {s.name for s in states.values() if s.terminal}
        if not terminal:
            self.problems.append(
                origin.problem("no terminal state: mark at least one state 'terminal: true'", "states")
            )
        reaches = set(terminal)
        changed = True
        while changed:
            changed = False
            for name, targets in edges.items():
                if name not in reaches and targets & reaches:
                    reaches.add(name)
                    changed = True
        for name in states:
            if name not in reaches:
                self.problems.append(origin.problem(f"state {name!r} can never reach a terminal state", "states", name))


def seconds(value: Any) -> float:
    """Durations in the model; a malformed one was already reported by the schema, so it reads 0."""
    try:
        return _seconds(value)
    except (ValueError, TypeError):
        return 0.0


def size_bytes(value: Any) -> int:
    try:
        return _size_bytes(value)
    except (ValueError, TypeError):
        return -1


def _display(path: Path) -> Path:
    """A path relative to the working directory when it lies below it: shorter problem lines."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def load(root: Path | str, env: Mapping[str, str] | None = None) -> tuple[Config | None, list[Problem]]:
    """Load and validate the configuration in `root`. Returns (config or None, every problem)."""
    loader = _Loader(Path(root).resolve(), env)
    config = loader.load()
    return config, loader.problems


def load_or_raise(root: Path | str, env: Mapping[str, str] | None = None) -> Config:
    config, problems = load(root, env)
    if problems or config is None:
        raise ConfigError(problems)
    return config
