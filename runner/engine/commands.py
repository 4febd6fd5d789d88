"""Commands into a running saga instance (e.g. cancel an order): an event the instance consumes.

A command is published only while the instance's current state has a transition on its event; the
saga interpreter has the last word (a state that moved on meanwhile records the event as ignored).
Its message id is deterministic, `<key>.<event>` plus a digest of the client's Idempotency-Key if any,
so a retried request is stored once (JetStream's duplicate window) and applied once (the instance's
history keeps every consumed event id). Commands that may repeat need a fresh Idempotency-Key each time.
"""

from __future__ import annotations

import hashlib
from typing import Any

from runner import codec
from runner.config.model import SagaSpec
from runner.engine.deadletter import H_CORRELATION
from runner.jetstream.publish import Publisher


class Commands:
    """The commands declared for one saga's instances (name → event subject)."""

    def __init__(self, saga: SagaSpec, events: dict[str, str], publisher: Publisher):
        self.saga = saga
        self.events = events
        self.publisher = publisher

    def allowed(self, state: str, started_on: SagaSpec | None = None) -> list[str]:
        """The commands an instance in `state` takes (none while compensating: it is in no declared state),
        by the definition the instance started on (`started_on`; default: the current one)."""
        spec = (started_on or self.saga).states.get(state)
        return [name for name, event in self.events.items() if spec is not None and event in spec.on]

    def event_id(self, key: str, command: str, idempotency_key: str | None) -> str:
        event_id = f"{key}.{self.events[command]}"
        if idempotency_key is None:
            return event_id
        return f"{event_id}.{hashlib.sha256(idempotency_key.encode()).hexdigest()[:16]}"

    @staticmethod
    def applied(record: dict[str, Any], event_id: str) -> bool:
        """The instance consumed this command already (a retried request)."""
        return any(entry.get("id") == event_id for entry in record.get("history", ()))

    async def send(self, key: str, command: str, event_id: str) -> None:
        """Publish the command's event; returns once JetStream stored it (raises Unavailable if it may not have)."""
        headers = {"Nats-Msg-Id": event_id, H_CORRELATION: key}
        await (await self.publisher.publish(self.events[command], codec.dumps({self.saga.key: key}), headers))
