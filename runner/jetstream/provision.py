"""Make the server match the YAML, idempotently, without ever destroying data.

We diff the desired model against what the server has. Changes JetStream accepts in place are
applied; changes it refuses (storage, retention, ...) are reported as drift and left alone: the
operator decides, because recreating a stream deletes its messages. Fewer replicas than the server has
is drift too unless explicitly allowed: a missing FLOWRUN_REPLICAS must not quietly drop copies of the data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from nats.js import JetStreamContext, api
from nats.js.errors import BucketNotFoundError, NotFoundError

from runner import codec
from runner.config.model import BucketSpec, Config, ConsumerSpec, SagaSpec, ServiceSpec, StreamSpec

log = logging.getLogger("flowrun.provision")

MODES = ("create", "verify", "off")

# Stream fields JetStream will not change in place.
_IMMUTABLE_STREAM = {"storage", "retention"}
_STREAM_FIELDS = {
    "subjects": "subjects",
    "retention": "retention",
    "storage": "storage",
    "num_replicas": "replicas",
    "max_msgs": "max_msgs",
    "max_bytes": "max_bytes",
    "max_age": "max_age",
    "max_msg_size": "max_msg_size",
    "max_msgs_per_subject": "max_msgs_per_subject",
    "discard": "discard",
    "duplicate_window": "duplicate_window",
    "deny_delete": "deny_delete",
    "deny_purge": "deny_purge",
    "allow_rollup_hdrs": "allow_rollup",
    "description": "description",
    "max_consumers": "max_consumers",
    "compression": "compression",
    "allow_direct": "allow_direct",
    "allow_msg_schedules": "allow_msg_schedules",
}
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


def _norm(value: Any) -> Any:
    if hasattr(value, "value"):  # enums
        return value.value
    if isinstance(value, list):
        return sorted(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _diff(current: Any, desired: Any, fields: dict[str, str] | tuple[str, ...]) -> dict[str, tuple[Any, Any]]:
    names = fields.items() if isinstance(fields, dict) else ((f, f) for f in fields)
    out = {}
    for attr, label in names:
        want, have = _norm(getattr(desired, attr, None)), _norm(getattr(current, attr, None))
        if want is None or (want in ("", "none") and have in (None, "", "none")):
            continue
        if attr == "max_deliver" and want == -1 and have in (None, -1):
            continue
        if want != have:
            out[label] = (have, want)
    return out


def _describe(diff: dict[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{k} {old!r} → {new!r}" for k, (old, new) in diff.items())


REPLICA_DECREASE = "fewer than the server has: not applied; --allow-replica-decrease lowers them"


def _replica_decrease(diff: dict[str, tuple[Any, Any]], allowed: bool) -> dict[str, tuple[Any, Any]]:
    """The replicas change of `diff` if it lowers them and that is not allowed; it is drift, not an update."""
    old, new = diff.get("replicas", (None, None))
    if allowed or not isinstance(old, int) or not isinstance(new, int) or new >= old:
        return {}
    return {"replicas": (old, new)}


async def plan_and_apply(
    js: JetStreamContext,
    config: Config,
    mode: str = "create",
    dry_run: bool = False,
    allow_replica_decrease: bool = False,
) -> Plan:
    """Compare and (unless dry_run or verify) apply. Mode `off` does nothing."""
    plan = Plan()
    if mode == "off":
        return plan
    apply = mode == "create" and not dry_run
    for stream in config.streams.values():
        await _stream(js, stream, plan, apply, allow_replica_decrease)
    for bucket in config.buckets.values():
        await _bucket(js, bucket, plan, apply, allow_replica_decrease)
    for spec in desired_consumers(config):
        await _consumer(js, spec, plan, apply)
    for bucket_name, entries in config.data.items():
        await _seed(js, bucket_name, entries, plan, apply)
    return plan


async def _stream(
    js: JetStreamContext, spec: StreamSpec, plan: Plan, apply: bool, allow_replica_decrease: bool
) -> None:
    desired = spec.to_nats()
    what = f"stream {spec.name}"
    try:
        info = await js.stream_info(spec.name)
    except NotFoundError:
        plan.changes.append(Change("create", what, ", ".join(spec.subjects)))
        if apply:
            await js.add_stream(desired)
        return
    diff = _diff(info.config, desired, _STREAM_FIELDS)
    frozen = {k: v for k, v in diff.items() if k in _IMMUTABLE_STREAM}
    held = _replica_decrease(diff, allow_replica_decrease)
    mutable = {k: v for k, v in diff.items() if k not in _IMMUTABLE_STREAM and k not in held}
    if frozen:
        plan.changes.append(
            Change("drift", what, _describe(frozen) + " (cannot change in place; not applied, data kept)")
        )
    if held:
        plan.changes.append(Change("drift", what, f"{_describe(held)} ({REPLICA_DECREASE})"))
    if mutable:
        plan.changes.append(Change("update", what, _describe(mutable)))
        if apply:
            for key in (*frozen, *held):  # keep what may not change, apply the rest
                attr = next(a for a, label in _STREAM_FIELDS.items() if label == key)
                setattr(desired, attr, getattr(info.config, attr))
            await js.update_stream(desired)
    if not diff:
        plan.changes.append(Change("ok", what))


async def _bucket(
    js: JetStreamContext, spec: BucketSpec, plan: Plan, apply: bool, allow_replica_decrease: bool
) -> None:
    what = f"kv {spec.name}"
    try:
        info = await js.stream_info(f"KV_{spec.name}")
    except NotFoundError:
        plan.changes.append(Change("create", what, f"history {spec.history}, {spec.storage}"))
        if apply:
            await js.create_key_value(spec.to_nats())
        return
    have = info.config
    diff = {
        label: (old, new)
        for label, old, new in (
            ("history", have.max_msgs_per_subject, spec.history),
            ("replicas", have.num_replicas, spec.replicas),
            ("ttl", _norm(have.max_age) or None, _norm(spec.ttl) or None),
        )
        if old != new
    }
    held = _replica_decrease(diff, allow_replica_decrease)
    diff = {k: v for k, v in diff.items() if k not in held}
    storage = _norm(have.storage)
    if storage != spec.storage:
        plan.changes.append(
            Change("drift", what, f"storage {storage!r} → {spec.storage!r} (cannot change in place; not applied)")
        )
    if held:
        plan.changes.append(Change("drift", what, f"{_describe(held)} ({REPLICA_DECREASE})"))
    if diff:
        plan.changes.append(Change("update", what, _describe(diff)))
        if apply:
            have.max_msgs_per_subject = spec.history
            if not held:
                have.num_replicas = spec.replicas
            have.max_age = spec.ttl or 0
            await js.update_stream(have)
    elif storage == spec.storage and not held:
        plan.changes.append(Change("ok", what))


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
