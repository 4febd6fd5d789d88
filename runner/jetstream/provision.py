"""Make the server match the YAML, idempotently, without ever destroying data.

We diff the desired model against what the server has. Changes JetStream accepts in place are
applied; changes it refuses (storage, retention, ...) are reported as drift and left alone: the
operator decides, because recreating a stream deletes its messages. Fewer replicas than the server has
is drift too unless explicitly allowed: a missing FLOWRUN_REPLICAS must not quietly drop copies of the data.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError, BucketNotFoundError, NotFoundError

from runner import codec
from runner.config import saga_json
from runner.config.model import BucketSpec, Config, ConsumerSpec, SagaSpec, ServiceSpec, StreamSpec
from runner.jetstream import drift, saga_store
from runner.jetstream.drift import Difference, norm
from runner.logs import event

log = logging.getLogger("flowrun.provision")
NO_PLACEMENT = "no suitable peers for placement"
PLACEMENT_WAIT = 20.0  # seconds a new cluster may take to know every peer

MODES = ("create", "verify", "off")

_IMMUTABLE_CONSUMER = {"deliver_policy", "ack_policy", "replay_policy"}
_CONSUMER_FIELDS = (
    "ack_wait",
    "max_deliver",
    "filter_subjects",
    "max_ack_pending",
    "description",
    "deliver_policy",
    "ack_policy",
    "max_waiting",
)


@dataclass
class Change:
    kind: str  # create | update | drift | ok
    what: str  # "stream ORDERS", "consumer ORDERS/order-service", "kv INVENTORY", "seed INVENTORY/LAPTOP-001"
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind:<7} {self.what}" + (f": {self.detail}" if self.detail else "")


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)

    @property
    def drift(self) -> list[Change]:
        return [c for c in self.changes if c.kind == "drift"]

    @property
    def pending(self) -> list[Change]:
        return [c for c in self.changes if c.kind in ("create", "update")]


def timer_consumer(saga: SagaSpec, service: ServiceSpec) -> ConsumerSpec:
    """The built-in consumer that fires a saga's timeouts (one per saga, shared by instances)."""
    assert saga.timer_stream and saga.timer_subject
    base = service.consumers[saga.consumer]
    return ConsumerSpec(
        service=service.name,
        durable=f"{saga.consumer}-timers",
        stream=saga.timer_stream,
        filter_subjects=(f"{saga.timer_subject}.fire",),
        batch=base.batch,
        concurrency=base.concurrency,
        ack_wait=base.ack_wait,
        max_ack_pending=base.max_ack_pending,
        handler_timeout=base.handler_timeout,
        keepalive=base.keepalive,
        description=f"timeouts of saga {saga.name}",
    )


def consumer_config(spec: ConsumerSpec) -> api.ConsumerConfig:
    """No server-side delivery limit: the runner dead-letters a message itself after `max_attempts`
    deliveries that failed through its own fault. Deliveries during an outage do not count, so a
    server limit would silently abandon messages that were only waiting out an election."""
    return api.ConsumerConfig(
        durable_name=spec.durable,
        description=spec.description,
        deliver_policy=api.DeliverPolicy.ALL,
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=spec.ack_wait,
        max_deliver=-1,
        filter_subjects=list(spec.filter_subjects),
        max_ack_pending=spec.max_ack_pending,
        max_waiting=512,
    )


def desired_consumers(config: Config) -> list[ConsumerSpec]:
    out = list(config.consumers())
    for saga in config.sagas.values():
        if saga.timer_stream and saga.timer_subject:
            out.append(timer_consumer(saga, config.services[saga.service]))
    return out


def declared(config: Config) -> tuple[set[str], set[tuple[str, str]]]:
    """The streams (KV buckets' included) and (stream, durable) consumers the YAML declares: what provisioning
    owns, so an inspection can flag what else the server has."""
    streams = set(config.streams) | {f"KV_{b}" for b in config.buckets}
    if config.sagas:
        streams.add(f"KV_{saga_store.BUCKET}")
    return streams, {(c.stream, c.durable) for c in desired_consumers(config)}


def _diff(current: Any, desired: Any, fields: tuple[str, ...]) -> dict[str, tuple[Any, Any]]:
    """A consumer's fields that differ (streams and buckets compare their declared options: drift.py)."""
    out = {}
    for attr in fields:
        want, have = norm(getattr(desired, attr, None)), norm(getattr(current, attr, None))
        if want is None or (want in ("", "none") and have in (None, "", "none")):
            continue
        if attr == "max_deliver" and want == -1 and have in (None, -1):
            continue
        if want != have:
            out[attr] = (have, want)
    return out


def _describe(diff: dict[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{k} {old!r} → {new!r}" for k, (old, new) in diff.items())


REPLICA_DECREASE = "fewer than the server has: not applied; --allow-replica-decrease lowers them"


def _lowers_replicas(change: Difference) -> bool:
    return change.option.key == "replicas" and isinstance(change.have, int) and change.want < change.have


def _compare(
    what: str, spec: StreamSpec | BucketSpec, server: api.StreamConfig, plan: Plan, allow_replica_decrease: bool
) -> list[Difference]:
    """Plan one stream's or bucket's differences: drift (grouped by why), then what to update in place (returned)."""
    differences = drift.differences(spec, server)
    held = [d for d in differences if _lowers_replicas(d) and not allow_replica_decrease]
    refused = [d for d in differences if not d.in_place]
    for reason in dict.fromkeys(d.reason for d in refused):
        group = [d for d in refused if d.reason == reason]
        plan.changes.append(Change("drift", what, f"{drift.describe(group)} ({reason})"))
    if held:
        plan.changes.append(Change("drift", what, f"{drift.describe(held)} ({REPLICA_DECREASE})"))
    updates = [d for d in differences if d.in_place and d not in held]
    if updates:
        plan.changes.append(Change("update", what, drift.describe(updates)))
    if not differences:
        plan.changes.append(Change("ok", what))
    return updates


async def plan_and_apply(
    js: JetStreamContext,
    config: Config,
    mode: str = "create",
    dry_run: bool = False,
    allow_replica_decrease: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Plan:
    """Compare and (unless dry_run or verify) apply. Mode `off` does nothing. `progress(done, total)` is told
    after each object (stream, bucket, consumer, seeded bucket, the saga definitions)."""
    plan = Plan()
    if mode == "off":
        return plan
    apply = mode == "create" and not dry_run
    work: list[Callable[[], Awaitable[None]]] = [
        *(partial(_stream, js, s, plan, apply, allow_replica_decrease) for s in config.streams.values()),
        *(partial(_bucket, js, b, plan, apply, allow_replica_decrease) for b in config.buckets.values()),
        *(partial(_consumer, js, c, plan, apply) for c in desired_consumers(config)),
        *(partial(_seed, js, name, entries, plan, apply) for name, entries in config.data.items()),
        partial(_saga_definitions, js, config, plan, apply, allow_replica_decrease, listed=mode != "verify"),
    ]
    for done, step in enumerate(work, 1):
        await step()
        if progress is not None:
            progress(done, len(work))
    return plan


async def _stream(
    js: JetStreamContext, spec: StreamSpec, plan: Plan, apply: bool, allow_replica_decrease: bool
) -> None:
    async def create() -> None:
        await js.add_stream(spec.to_nats())

    summary = ", ".join(spec.subjects)
    await _ensure(js, f"stream {spec.name}", spec.name, summary, create, spec, plan, apply, allow_replica_decrease)


async def _bucket(
    js: JetStreamContext, spec: BucketSpec, plan: Plan, apply: bool, allow_replica_decrease: bool
) -> None:
    async def create() -> None:
        await js.create_key_value(spec.to_nats())

    summary = f"history {spec.history}, {spec.storage}"
    await _ensure(js, f"kv {spec.name}", f"KV_{spec.name}", summary, create, spec, plan, apply, allow_replica_decrease)


async def _ensure(
    js: JetStreamContext,
    what: str,
    stream: str,
    summary: str,
    create: Callable[[], Awaitable[None]],
    spec: StreamSpec | BucketSpec,
    plan: Plan,
    apply: bool,
    allow_replica_decrease: bool,
) -> None:
    """Create the stream behind a stream or bucket when missing, else update what may change in place."""
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        plan.changes.append(Change("create", what, summary))
        if apply:
            await _placed(create, what)
        return
    updates = _compare(what, spec, info.config, plan, allow_replica_decrease)
    if updates and apply:
        await js.update_stream(drift.applied(info.config, updates))


async def _placed(create: Callable[[], Awaitable[None]], what: str, within: float = PLACEMENT_WAIT) -> None:
    """Create, waiting out "no suitable peers for placement" for a while: a cluster that has just formed
    places replicas only once its meta leader has heard from every peer. Still refused after `within`
    seconds, it is a lasting shortage (fewer servers up than replicas asked for) and the error says so."""
    deadline = time.monotonic() + within
    while True:
        try:
            await create()
            return
        except BadRequestError as exc:
            if NO_PLACEMENT not in (exc.description or "") or time.monotonic() > deadline:
                raise
            event(log, logging.INFO, "replicas cannot be placed yet; retrying", what=what, reason=exc.description)
            await asyncio.sleep(0.5)


async def _saga_definitions(
    js: JetStreamContext, config: Config, plan: Plan, apply: bool, allow_replica_decrease: bool, listed: bool
) -> None:
    """The bucket of saga definitions, and the current version of each. Definitions are data rather than
    setup (a service stores its own at start, runner/serve/service.py), so `verify` checks only the bucket."""
    spec = saga_store.bucket_spec(config)
    if spec is None:
        return
    await _bucket(js, spec, plan, apply, allow_replica_decrease)
    for saga in config.sagas.values() if listed else ():
        what = f"saga {saga.name} version {saga_json.version(saga)}"
        if await saga_store.is_stored(js, saga):
            plan.changes.append(Change("ok", what))
            continue
        plan.changes.append(Change("create", what))
        if apply:
            await saga_store.store(js, saga)


async def _consumer(js: JetStreamContext, spec: ConsumerSpec, plan: Plan, apply: bool) -> None:
    desired = consumer_config(spec)
    what = f"consumer {spec.stream}/{spec.durable}"
    try:
        info = await js.consumer_info(spec.stream, spec.durable)
    except NotFoundError:
        plan.changes.append(Change("create", what, ", ".join(spec.filter_subjects)))
        if apply:
            await js.add_consumer(spec.stream, desired)
        return
    diff = _diff(info.config, desired, _CONSUMER_FIELDS)
    frozen = {k: v for k, v in diff.items() if k in _IMMUTABLE_CONSUMER}
    mutable = {k: v for k, v in diff.items() if k not in _IMMUTABLE_CONSUMER}
    if frozen:
        plan.changes.append(Change("drift", what, _describe(frozen) + " (cannot change in place; not applied)"))
    if mutable:
        plan.changes.append(Change("update", what, _describe(mutable)))
        if apply:
            for key in frozen:
                setattr(desired, key, getattr(info.config, key))
            await js.add_consumer(spec.stream, desired)  # CONSUMER.CREATE with an existing name updates
    if not diff:
        plan.changes.append(Change("ok", what))


async def _seed(js: JetStreamContext, bucket_name: str, entries: dict[str, Any], plan: Plan, apply: bool) -> None:
    try:
        kv = await js.key_value(bucket_name)
    except BucketNotFoundError:
        for key in entries:
            plan.changes.append(Change("create", f"seed {bucket_name}/{key}"))
        return
    for key, value in entries.items():
        try:
            await kv.get(key)
            continue
        except NotFoundError:
            pass
        plan.changes.append(Change("create", f"seed {bucket_name}/{key}", codec.dumps(value).decode()))
        if apply:
            try:
                await kv.create(key, codec.dumps(value))
            except Exception as exc:  # another instance seeded it first
                log.debug("seed %s/%s skipped: %r", bucket_name, key, exc)
