"""What a consumer does with each subject: a handler's route, a saga's route, a rejected start.

A route turns a decoded payload into the messages to publish; the worker (runner/engine/dispatch.py)
does everything around it: decoding, validation, timeouts, publishing, acks and retries.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nats.aio.msg import Msg

from runner.config.model import Binding, RetryPolicy
from runner.config.subjects import is_identifier
from runner.engine.metrics import SagaMetrics
from runner.engine.saga import Publish
from runner.engine.validation import PayloadValidator
from runner.engine.versions import SagaVersions
from runner.handler import Context, FatalError, Outcome
from runner.jetstream.kv import Bucket

Run = Callable[[dict[str, Any], str, str], Awaitable[list[Publish]]]
"""(payload, subject, event id) → what to publish."""

Rejected = Callable[[dict[str, Any], str, str], Awaitable[list[Publish]]]
"""(payload, event id, why) of a dead-lettered message → what to publish."""


@dataclass(frozen=True)
class Route:
    """How one subject is handled on a consumer."""

    run: Run
    retry: RetryPolicy
    timeout: float
    schema: PayloadValidator | None
    rejected: Rejected | None = None  # applied once a message of this subject is dead-lettered


def handler_route(binding: Binding, fn: Callable[..., Awaitable[Any]], ctx: Context, key: str) -> Run:
    async def run(data: dict[str, Any], subject: str, event_id: str) -> list[Publish]:
        outcome = await fn(data, ctx)
        if outcome is None:
            return []
        if not isinstance(outcome, Outcome):
            raise FatalError(f"handler {binding.handler} returned {type(outcome).__name__}, not an Outcome")
        target = binding.emits.get(outcome.name)
        if target is None:
            raise FatalError(f"handler {binding.handler} returned outcome {outcome.name!r}, not in its emits")
        payload = {key: data[key], **outcome.data}
        return [Publish(target, payload, f"{data[key]}.{target}")]

    return run


def saga_route(versions: SagaVersions, bucket: Bucket) -> Run:
    """Each event is applied by the machine of its instance's version (runner/engine/versions.py)."""
    key_field = versions.current.spec.key
    start = versions.current.spec.start_on
    metrics = SagaMetrics.of(versions.current.spec.name, versions.current.spec.compensation_failed_state)

    async def run(data: dict[str, Any], subject: str, event_id: str) -> list[Publish]:
        def step(record: Any) -> tuple[Any, tuple[list[Publish], bool, str | None, str | None]]:
            machine = versions.machine_for(record)
            before = record["state"] if record else None
            decision = machine.apply(record, subject, data, event_id)
            after = decision.record["state"] if decision.changed else before
            done = decision.record["state"] in machine.terminal
            return (decision.record if decision.changed else record), (decision.publishes, done, before, after)

        key = data[key_field]
        # A start event almost always creates its instance: skip the read.
        publishes, done, before, after = await versions.run(
            lambda: bucket.mutate(key, step, assume_absent=subject == start)
        )
        if after is not None:
            metrics.moved(before, after)
        if done:  # a finished instance is rarely touched again: keep the cache for live ones
            bucket.forget(key)
        return publishes

    return run


def start_rejected(versions: SagaVersions, bucket: Bucket) -> Rejected:
    """A saga's start event was dead-lettered: the instance the API created for it ends `failed`."""
    key_field = versions.current.spec.key
    metrics = SagaMetrics.of(versions.current.spec.name, versions.current.spec.compensation_failed_state)

    async def reject(data: dict[str, Any], event_id: str, why: str) -> list[Publish]:
        key = data.get(key_field)
        if not is_identifier(key):
            return []  # no instance can be named by it

        def step(record: Any) -> tuple[Any, tuple[list[Publish], str | None, str | None]]:
            before = record["state"] if record else None
            decision = versions.machine_for(record).on_start_rejected(record, event_id, why)
            if decision is None:
                return record, ([], before, before)
            return decision.record, (decision.publishes, before, decision.record["state"])

        publishes, before, after = await versions.run(lambda: bucket.mutate(key, step))
        if after is not None:
            metrics.moved(before, after)
        return publishes

    return reject


def event_id_of(msg: Msg) -> str:
    """The id a consumed event is known by in saga histories: its Nats-Msg-Id, else its stream position."""
    return (msg.headers or {}).get("Nats-Msg-Id") or f"{msg.metadata.stream}.{msg.metadata.sequence.stream}"
