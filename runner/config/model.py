"""The typed, immutable configuration model. Nothing downstream of `config` reads raw dicts."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.config.connection import ConnectionSpec
from runner.config.streams import BucketSpec, StreamSpec
from runner.config.units import human_seconds
from runner.config.yamlsrc import Location


@dataclass(frozen=True)
class RetryPolicy:
    """When and how often a failed message is tried again (delays in seconds)."""

    max_attempts: int = 5
    initial_delay: float = 1.0
    backoff: str = "exponential"
    multiplier: float = 2.0
    max_delay: float = 60.0
    jitter: str = "full"
    retry_on: tuple[str, ...] = ()
    fatal_on: tuple[str, ...] = ()
    outage_budget: float = 60.0  # JetStream unavailable: quick retries this long, then at max_delay
    out_of_order_for: float = 120.0  # an event before the one it depends on is held back this long

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay before attempt `attempt + 1`, after `attempt` (1-based) failed."""
        n = max(attempt, 1) - 1
        if self.backoff == "fixed":
            base = self.initial_delay
        elif self.backoff == "linear":
            base = self.initial_delay * (1 + n * (self.multiplier - 1 if self.multiplier > 1 else 1))
        else:
            try:
                base = self.initial_delay * (self.multiplier**n)
            except OverflowError:
                base = self.max_delay
        base = min(base, self.max_delay)
        if self.jitter == "full":
            # "Full jitter" keeps the mean spread out; a floor of half the base avoids instant retries.
            base = (rng or random).uniform(base / 2, base)
        return base

    def schedule(self) -> list[float]:
        """The delays without jitter, as documented to users."""
        plain = RetryPolicy(**{**self.__dict__, "jitter": "none"})
        return [plain.delay(i) for i in range(1, self.max_attempts)]

    def describe(self) -> str:
        steps = ", ".join(human_seconds(d) for d in self.schedule())
        return f"{self.max_attempts} attempts, {self.backoff} backoff [{steps}], jitter {self.jitter}"


@dataclass(frozen=True)
class DeadLetterSpec:
    stream: str = "DLQ"
    subject_prefix: str = "dlq"


@dataclass(frozen=True)
class ConsumerSpec:
    service: str
    durable: str
    stream: str
    filter_subjects: tuple[str, ...]
    batch: int = 64
    concurrency: int = 256
    ack_wait: float = 30.0
    max_ack_pending: int = 2048
    handler_timeout: float = 10.0
    keepalive: bool = True
    description: str | None = None
    key: str | None = None  # the payload field correlating its messages: declared, or the key of the saga it serves


@dataclass(frozen=True)
class Binding:
    """A subject handled by a dotted-path function, and what each of its outcomes publishes."""

    subject: str
    handler: str
    emits: dict[str, str] = field(default_factory=dict)
    retry: RetryPolicy = RetryPolicy()
    timeout: float | None = None


@dataclass(frozen=True)
class ResourceSpec:
    """An HTTP resource (runner/config/http.py): a saga's instances, or a KV bucket's values (read-only)."""

    path: str  # e.g. /api/bookings
    name: str  # singular, as messages say it: "order 42 not found"
    saga: str | None = None
    id_source: str = "generated"  # generated (uuid4, or stable per Idempotency-Key) | client (the body's id field)
    accept: str | None = None  # def accept(body, id) -> dict: the start event's payload
    view: str | None = None  # def view(key, value) -> dict: what GET answers
    body_schema: dict[str, Any] | None = None
    commands: dict[str, str] = field(default_factory=dict)  # command name → event published into the instance
    bucket: str | None = None  # a KV view instead of a saga
    key: str = "id"  # a KV view's name for its key (a saga resource's id is the saga's key)


@dataclass(frozen=True)
class HttpSpec:
    port: int = 5100
    host: str = "127.0.0.1"
    resources: dict[str, ResourceSpec] = field(default_factory=dict)
    deadline: float = 10.0  # a request is answered within this (plus a short grace for a late ack)

    def saga_resources(self) -> list[ResourceSpec]:
        return [r for r in self.resources.values() if r.saga]

    def view_resources(self) -> list[ResourceSpec]:
        return [r for r in self.resources.values() if r.bucket]


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    consumers: dict[str, ConsumerSpec]
    bindings: tuple[Binding, ...] = ()
    retry: RetryPolicy = RetryPolicy()
    dead_letter: DeadLetterSpec = DeadLetterSpec()
    settings: dict[str, Any] = field(default_factory=dict)
    http: HttpSpec | None = None
    description: str | None = None
    kv: tuple[str, ...] = ()  # buckets its handlers use: what `flowrun permissions` lets it write


@dataclass(frozen=True)
class Emit:
    """A message a saga publishes. `fields` (YAML `with:`) shapes its payload: field → source path, the source
    being `key`, `reason`, `data.<field>…` (the start payload) or `gathered.<field>…`; None sends the start
    payload whole. The saga's key field always carries the instance key."""

    subject: str
    fields: dict[str, tuple[str, ...]] | None = None


@dataclass(frozen=True)
class Transition:
    goto: str | None = None
    emit: tuple[Emit, ...] = ()
    completes: str | None = None
    compensate: bool = False
    reason: str | None = None
    keep: dict[str, tuple[str, ...]] = field(default_factory=dict)  # gathered field → path in the event


@dataclass(frozen=True)
class TimeoutSpec:
    after: float
    goto: str
    compensate: bool = False
    reason: str | None = None


@dataclass(frozen=True)
class StateSpec:
    name: str
    terminal: bool = False
    timeout: TimeoutSpec | None = None
    on: dict[str, Transition] = field(default_factory=dict)
    awaits: str | None = None  # the step in flight in this state: compensated too when the state times out


@dataclass(frozen=True)
class StepSpec:
    name: str
    compensate: Emit
    confirmed_by: str | None = None


REJECTED_STATE = "failed"  # built in (declaring it is optional): where an instance whose start was rejected ends


@dataclass(frozen=True)
class SagaSpec:
    name: str
    service: str
    consumer: str
    bucket: str
    start_on: str
    start_state: str
    states: dict[str, StateSpec]
    key: str  # the payload field identifying an instance; every message of the saga carries it
    start_emit: tuple[Emit, ...] = ()
    timer_stream: str | None = None
    timer_subject: str | None = None
    steps: dict[str, StepSpec] = field(default_factory=dict)
    compensation_timeout: float = 60.0
    compensation_failed_state: str = "compensation_failed"
    compensation_order: str = "sequential"  # newest first, one at a time; "parallel": all at once

    def subjects(self) -> set[str]:
        """Every event subject this saga consumes."""
        subjects = {self.start_on}
        for state in self.states.values():
            subjects.update(state.on)
        subjects.update(s.confirmed_by for s in self.steps.values() if s.confirmed_by)
        return subjects

    def emitted(self) -> set[str]:
        out = {s.compensate.subject for s in self.steps.values()} | {e.subject for e in self.start_emit}
        for state in self.states.values():
            for transition in state.on.values():
                out.update(e.subject for e in transition.emit)
        return out


@dataclass(frozen=True)
class Config:
    root: Path
    streams: dict[str, StreamSpec]
    services: dict[str, ServiceSpec]
    sagas: dict[str, SagaSpec]
    buckets: dict[str, BucketSpec]
    messages: dict[str, dict[str, Any]]
    data: dict[str, dict[str, Any]]
    # where each stream's and bucket's replicas are written (("streams" | "kv", name) → position), for checks
    # against a live cluster
    replicas_at: dict[tuple[str, str], Location] = field(default_factory=dict)
    connection: ConnectionSpec | None = None  # streams.yaml's `connection:` block, below flags, env and context

    def consumers(self) -> list[ConsumerSpec]:
        return [c for s in self.services.values() for c in s.consumers.values()]

    def sagas_of(self, service: str) -> list[SagaSpec]:
        return [s for s in self.sagas.values() if s.service == service]
