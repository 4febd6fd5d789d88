"""The test clock: `advance: 61s` moves a scenario's saga timers forward without sleeping.

Nothing patches the time. A saga instance keeps its timeout as an absolute deadline (`deadline.due`) and when
its one alarm rings (`alarm`), both epoch seconds (runner/engine/saga.py). Advancing by N seconds brings both
N seconds closer in every instance — exactly what N seconds of waiting would have done to them — and then
rings each instance's alarm through the saga interpreter, as the TimerWorker does when JetStream delivers the
instance's schedule: a deadline now passed fires its timeout (compensations, the `goto`), one still ahead
re-arms. Deadlines set later (by the transitions a timeout causes) start from the real now, so a second
`advance` counts from there, as it would have in real time.
"""

from __future__ import annotations

import asyncio
from typing import Any

from nats.js import JetStreamContext

from runner import codec
from runner.config.model import Config
from runner.engine.deadletter import H_CORRELATION
from runner.engine.saga import Publish, SagaMachine
from runner.jetstream.kv import Bucket
from runner.jetstream.publish import Publisher
from runner.testing.observe import kv_keys


def brought_forward(record: Any, seconds: float) -> Any:
    """The instance as it would be `seconds` later: its pending deadline and alarm that much closer."""
    if not isinstance(record, dict) or not record.get("deadline"):
        return record  # finished, or waiting without a timeout: time changes nothing
    moved = {**record, "deadline": {**record["deadline"], "due": record["deadline"]["due"] - seconds}}
    if record.get("alarm") is not None:
        moved["alarm"] = record["alarm"] - seconds
    return moved


async def advance(
    seconds: float, config: Config, js: JetStreamContext, buckets: dict[str, Bucket], publisher: Publisher
) -> None:
    """Move every saga instance `seconds` forward and ring its alarm; publish what the timeouts emit."""
    for saga in config.sagas.values():
        machine, bucket = SagaMachine(saga), buckets[saga.bucket]

        def ring(record: Any, machine: SagaMachine = machine) -> tuple[Any, list[Publish]]:
            moved = brought_forward(record, seconds)
            decision = machine.on_alarm(moved)
            if decision is None:
                return moved, []
            return decision.record, decision.publishes

        for key in await kv_keys(js, saga.bucket):
            publishes = await bucket.mutate(key, ring)
            acks = [await publisher.publish(p.subject, codec.dumps(p.data), _headers(p, saga.key)) for p in publishes]
            await asyncio.gather(*acks)


def _headers(p: Publish, key_field: str) -> dict[str, str]:
    """As the TimerWorker publishes a timeout's messages: deduplicated by their message id."""
    return {"Nats-Msg-Id": p.msg_id, H_CORRELATION: str(p.data.get(key_field, "")), **(p.headers or {})}
