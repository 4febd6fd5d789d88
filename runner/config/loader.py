"""Load streams.yaml and flows/*.yaml into one validated `Config`, or report every problem at once.

Pipeline: YAML with positions and `${VAR}` interpolation (yamlsrc.py) → JSON Schema (schema_check.py) →
the typed model (built here, with streams.py, http.py, dataflow.py, correlation.py, settings.py) →
cross-file checks (checks.py). Problems are collected, never raised one by one, so `flowrun validate`
shows them all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.config import correlation, dataflow, options
from runner.config import settings as typed_settings
from runner.config.checks import CrossChecks, Origin
from runner.config.connection import ConnectionSpec
from runner.config.http import http_spec
from runner.config.model import (
    Binding,
    BucketSpec,
    Config,
    ConsumerSpec,
    DeadLetterSpec,
    RetryPolicy,
    SagaSpec,
    ServiceSpec,
    StateSpec,
    StepSpec,
    StreamSpec,
    TimeoutSpec,
    Transition,
)
from runner.config.schema_check import schema_problems
from runner.config.streams import PRESETS
from runner.config.units import seconds as _seconds
from runner.config.yamlsrc import Document, Location, Problem, load_yaml


class ConfigError(Exception):
    """Raised by `load_or_raise` with every problem found."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass
class _Loader:
    root: Path
    env: Mapping[str, str] | None
    problems: list[Problem] = field(default_factory=list)
    origins: dict[tuple[str, str], Origin] = field(default_factory=dict)
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
                    self.origins[(section, name)] = Origin(doc, (section, name))
                    merged[section][name] = value
        buckets = {name: self.bucket(name, spec) for name, spec in merged["kv"].items()}
        services = {name: self.service(name, spec) for name, spec in merged["services"].items()}
        sagas = {name: self.saga(name, spec) for name, spec in merged["sagas"].items()}
        services, unkeyed = correlation.resolve(services, sagas)
        for service, where, message in unkeyed:
            self.problems.append(self.origins[("services", service)].problem(message, *where))
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
        checks = CrossChecks(self.origins, self.allow_modules, self.problems)
        checks.run(config)
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
        self.origins[("streams", name)] = Origin(doc, ("streams", name))
        values = {**PRESETS.get(raw.get("preset", "default"), {}), **options.parse(StreamSpec, raw)}
        values["replicas"] = self.replicas(("streams", name), doc, raw)
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
        origin = self.origins[("kv", name)]
        values = {**options.parse(BucketSpec, raw), "replicas": self.replicas(("kv", name), origin.doc, raw)}
        return BucketSpec(name=name, **values)

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
                key=c.get("key"),
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
        http = http_spec(raw["http"]) if "http" in raw else None
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
                    emit=dataflow.emits(t.get("emit")),
                    completes=t.get("completes"),
                    compensate=t.get("compensate", False),
                    reason=t.get("reason"),
                    keep=dataflow.keep(t.get("keep")),
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
            key=raw.get("key", ""),  # required: the schema reported its absence
            start_emit=dataflow.emits(raw["start"].get("emit")),
            timer_stream=timers.get("stream"),
            timer_subject=timers.get("subject"),
            steps={
                k: StepSpec(k, dataflow.emit(v["compensate"]), v.get("confirmed_by"))
                for k, v in (raw.get("steps") or {}).items()
            },
            compensation_timeout=seconds(comp.get("timeout", 60)),
            compensation_failed_state=comp.get("failed_state", "compensation_failed"),
            compensation_order=comp.get("order", "sequential"),
        )

    # --- cross-file checks ---


def seconds(value: Any) -> float:
    """Durations in the model; a malformed one was already reported by the schema, so it reads 0."""
    try:
        return _seconds(value)
    except (ValueError, TypeError):
        return 0.0


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
