"""The typed, immutable configuration model. Nothing downstream of `config` reads raw dicts."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nats.js import api

from runner.config.units import human_seconds
from runner.config.yamlsrc import Location
from runner.jetstream.connection import ConnectionSpec


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    preset: str = "default"
    description: str | None = None
    retention: str = "limits"
    storage: str = "file"
    replicas: int = 1
    max_msgs: int = -1
    max_bytes: int = -1
    max_age: float = 0.0
    max_msg_size: int = -1
    max_msgs_per_subject: int = -1
    max_consumers: int = -1
    discard: str = "old"
    duplicate_window: float = 120.0
    deny_delete: bool = False
    deny_purge: bool = False
    allow_rollup: bool = False
    allow_direct: bool = False
    allow_msg_schedules: bool = False
    compression: str = "none"
    no_ack: bool = False

    def to_nats(self) -> api.StreamConfig:
        return api.StreamConfig(
            name=self.name,
            description=self.description,
            subjects=list(self.subjects),
            retention=api.RetentionPolicy(self.retention),
            storage=api.StorageType(self.storage),
            num_replicas=self.replicas,
            max_msgs=self.max_msgs,
            max_bytes=self.max_bytes,
            max_age=self.max_age,
            max_msg_size=self.max_msg_size,
            max_msgs_per_subject=self.max_msgs_per_subject,
            max_consumers=self.max_consumers,
            discard=api.DiscardPolicy(self.discard),
            duplicate_window=self.duplicate_window,
            deny_delete=self.deny_delete,
            deny_purge=self.deny_purge,
            # nats-server turns rollups on for a stream that holds message schedules.
            allow_rollup_hdrs=self.allow_rollup or self.allow_msg_schedules,
            allow_direct=self.allow_direct,
            allow_msg_schedules=self.allow_msg_schedules or None,
            compression=api.StoreCompression(self.compression),
            no_ack=self.no_ack,
        )


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


@dataclass(frozen=True)
class Binding:
    """A subject handled by a dotted-path function, and what each of its outcomes publishes."""

    subject: str
    handler: str
    emits: dict[str, str] = field(default_factory=dict)
    retry: RetryPolicy = RetryPolicy()
    timeout: float | None = None


@dataclass(frozen=True)
class ViewSpec:
    bucket: str
    view: str


@dataclass(frozen=True)
class HttpSpec:
    port: int = 5100
    host: str = "127.0.0.1"
    saga: str | None = None
    accept: str | None = None
    body_schema: dict[str, Any] | None = None
    views: dict[str, ViewSpec] = field(default_factory=dict)
    deadline: float = 10.0  # a request is answered within this (plus a short grace for a late ack)


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
class Transition:
    goto: str | None = None
    emit: tuple[str, ...] = ()
    completes: str | None = None
    compensate: bool = False
    reason: str | None = None


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
    compensate: str
    confirmed_by: str | None = None


@dataclass(frozen=True)
class SagaSpec:
    name: str
    service: str
    consumer: str
    bucket: str
    start_on: str
    start_state: str
    states: dict[str, StateSpec]
    key: str = "orderId"
    timer_stream: str | None = None
    timer_subject: str | None = None
    steps: dict[str, StepSpec] = field(default_factory=dict)
    compensation_timeout: float = 60.0
    compensation_failed_state: str = "compensation_failed"

    def subjects(self) -> set[str]:
        """Every event subject this saga consumes."""
        subjects = {self.start_on}
        for state in self.states.values():
            subjects.update(state.on)
        subjects.update(s.confirmed_by for s in self.steps.values() if s.confirmed_by)
        return subjects

    def emitted(self) -> set[str]:
        out = {s.compensate for s in self.steps.values()}
        for state in self.states.values():
            for transition in state.on.values():
                out.update(transition.emit)
        return out


@dataclass(frozen=True)
class BucketSpec:
    name: str
    history: int = 1
    storage: str = "file"
    replicas: int = 1
    ttl: float | None = None
    description: str | None = None
    cache: int = 1024

    def to_nats(self) -> api.KeyValueConfig:
        return api.KeyValueConfig(
            bucket=self.name,
            description=self.description,
            history=self.history,
            storage=api.StorageType(self.storage),
            replicas=self.replicas,
            ttl=self.ttl,
            direct=True,  # direct gets: reads on the shared inbox, no stream-API round trip
        )


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
