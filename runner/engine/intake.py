"""Starting a saga instance for an API request: exactly once per key, within a deadline, no phantoms.

The API must answer its client in bounded time, yet JetStream may be unavailable for seconds (a
leader election, a stalled server). What it answers must be the truth:

- 202 only once the start event is stored in time: its PubAck (or a duplicate's) proves it.
- 503 ("not accepted, retry") only for a start that will never take effect. Writes sent before
  giving up can still reach JetStream afterwards (a stalled server resumes), so the start event
  carries an accept-by fence (runner/engine/headers.py): every consumer ignores it when it was stored after
  the deadline, and the instance record this attempt created is removed in the background.
- A retry of the same request (same `Idempotency-Key`, hence the same instance key) finds the first
  instance instead of starting a second one: the instance record is created with compare-and-set.

Each attempt has its own start event id (`<key>.<start subject>.<nonce>`), kept in the record, so an
attempt that was given up on cannot shadow a later one through JetStream's duplicate window.

An instance can never be stuck waiting for a start nobody consumes: a payload that fails the start
event's `messages:` schema is refused before anything is stored (`StartRejected`), and the instance's
timer is armed with it, before its start event is published (the saga consumer would arm the same one).
A start event its saga's consumer still dead-letters ends the instance `failed` (runner/engine/dispatch.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from runner import codec
from runner.config.model import Config, SagaSpec
from runner.engine import headers
from runner.engine.alarms import AlarmGroups
from runner.engine.deadletter import H_CORRELATION
from runner.engine.metrics import SagaMetrics
from runner.engine.saga import Publish, SagaMachine
from runner.engine.validation import PayloadValidator
from runner.jetstream.kv import Bucket, Conflict
from runner.jetstream.publish import Publisher, Unavailable
from runner.logs import event

log = logging.getLogger("flowrun.intake")

IDEMPOTENCY_NAMESPACE = uuid.UUID("5c3f7c1e-4a51-4b7e-9d43-2f0c1f6a8e01")
SKEW_MARGIN = 2.0  # clocks of API hosts and NATS servers are assumed to agree this well


class NotAccepted(Exception):
    """The start could not be stored in time; it will not take effect. Safe to retry."""


class IdempotencyMismatch(Exception):
    """The Idempotency-Key was used before with a different request."""


class StartRejected(ValueError):
    """The start payload fails its `messages:` schema: every consumer would dead-letter it. Nothing was stored."""


@dataclass(frozen=True)
class Started:
    key: str
    record: dict[str, Any]
    replayed: bool  # an earlier request with the same Idempotency-Key started it


def key_for(idempotency_key: str, saga: str) -> str:
    """The instance key of a client-keyed request: stable, and a valid identifier whatever the key."""
    return str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{saga}:{idempotency_key}"))


def request_digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(codec.canonical(body)).hexdigest()


def start_validator(config: Config, saga: SagaSpec) -> PayloadValidator | None:
    """The check `Intake` applies to start payloads: the start event's `messages:` schema, if it has one."""
    schema = config.messages.get(saga.start_on)
    return PayloadValidator(schema) if schema else None


class Intake:
    """Starts instances of one saga for the HTTP API."""

    def __init__(
        self,
        machine: SagaMachine,
        bucket: Bucket,
        publisher: Publisher,
        deadline: float = 10.0,
        validator: PayloadValidator | None = None,
    ):
        self.machine = machine
        self.bucket = bucket
        self.publisher = publisher
        self.deadline = deadline
        self.validator = validator  # see start_validator
        self.grace = min(3.0, deadline / 2)  # after the fence: time to learn whether a late ack made it
        self._cleanups: set[asyncio.Task[None]] = set()
        self.alarm_groups = AlarmGroups(self._send_alarm)
        self.metrics = SagaMetrics.of(machine.spec.name, machine.spec.compensation_failed_state)

    async def start(self, key: str, data: dict[str, Any], digest: str | None = None) -> Started:
        """Store the instance and its start event, or raise NotAccepted / StartRejected (nothing will happen)."""
        if self.validator is not None and (error := self.validator.first_error(data)) is not None:
            where = "/".join(map(str, error.absolute_path)) or "payload"
            raise StartRejected(
                f"the {self.machine.spec.start_on} payload fails its schema at {where}: {error.message}"
            )
        fence = time.time() + self.deadline
        event_id = f"{key}.{self.machine.spec.start_on}.{secrets.token_hex(4)}"
        record = self.machine.start(key, data, event_id)
        record["acceptBy"] = fence
        record["startEvent"] = event_id
        if digest is not None:
            record["request"] = digest
        try:
            async with asyncio.timeout(self.deadline + self.grace):
                started = await self._attempt(key, record, data, digest)
                if started is not None:
                    return started
        except TimeoutError:
            event(log, logging.WARNING, "start not confirmed in time", key=key)
        self._clean_up_later(key, event_id)
        raise NotAccepted(f"could not be stored within {self.deadline:g}s")

    async def _attempt(
        self, key: str, record: dict[str, Any], data: dict[str, Any], digest: str | None
    ) -> Started | None:
        """Retry the writes while JetStream is unavailable; None if the start landed after its fence."""
        created = False
        delay = 0.05
        while True:
            try:
                if not created:
                    existing = await self._store(key, record)
                    if existing is not None:
                        return await self._existing(key, existing, data, digest)
                    created = True
                    self.metrics.moved(None, record["state"])
                if await self._publish_start(key, data, record["startEvent"], record["acceptBy"]):
                    return Started(key, record, replayed=False)
                return None  # stored after the fence: consumers will ignore it
            except Unavailable:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _store(self, key: str, record: dict[str, Any]) -> tuple[dict[str, Any], int] | None:
        """Create the record and store its alarm, both at once; the record already there if the key is taken
        (the alarm then wakes that instance once more, which finds nothing to do or re-arms it)."""
        created, armed = await asyncio.gather(self._create(key, record), self._arm(record), return_exceptions=True)
        if isinstance(created, BaseException):
            raise created
        if isinstance(armed, BaseException):
            raise armed
        return created

    async def _create(self, key: str, record: dict[str, Any]) -> tuple[dict[str, Any], int] | None:
        """Create the record; the one already there (and its revision) if the key is taken."""
        revision = 0
        for _ in range(5):
            try:
                await self.bucket.create(key, record, revision)
                return None
            except Conflict:
                current, revision = await self.bucket.get(key)
                if current is not None:
                    if current.get("startEvent") == record["startEvent"]:
                        return None  # our own create, whose reply was lost
                    return current, revision
                # deleted (a given-up attempt): create on top of its tombstone revision
        raise Unavailable(f"instance {key} kept changing while being created")

    async def _existing(
        self, key: str, found: tuple[dict[str, Any], int], data: dict[str, Any], digest: str | None
    ) -> Started:
        """A repeat of a request: the first attempt's instance, once its start is known to count."""
        record, revision = found
        if digest is not None and record.get("request") not in (None, digest):
            raise IdempotencyMismatch("this Idempotency-Key was used with a different request")
        moved_on = record["state"] != self.machine.spec.start_state or len(record.get("history", ())) > 1
        if moved_on or "startEvent" not in record:
            return Started(key, record, replayed=True)
        # Still at its start: confirm the first attempt's timer and start event (same ids, same fence; a
        # duplicate is harmless) or, if that attempt was given up on, replace it with this one.
        await self._arm(record)
        if await self._publish_start(key, record["data"], record["startEvent"], record["acceptBy"]):
            return Started(key, record, replayed=True)
        await self.bucket.delete(key, revision)
        return await self.start(key, data, digest)

    async def _arm(self, record: dict[str, Any]) -> None:
        """Store the instance's timer before its start event: if the start is never consumed (or given up
        on), the timer still fires; on an instance that is gone or moved on it finds nothing to do.
        Concurrent requests share one schedule (runner/engine/alarms.py)."""
        await self.alarm_groups.arm(self.machine.alarm(record))

    async def _send_alarm(self, p: Publish) -> asyncio.Future[Any]:
        msg_headers = {"Nats-Msg-Id": p.msg_id, **(p.headers or {})}
        return await self.publisher.publish(p.subject, codec.dumps(p.data), msg_headers)

    async def _publish_start(self, key: str, data: dict[str, Any], event_id: str, fence: float) -> bool:
        """Publish the start event; True if it was stored before the fence (so consumers act on it)."""
        spec = self.machine.spec
        msg_headers = {"Nats-Msg-Id": event_id, H_CORRELATION: key, **headers.accept_by(fence)}
        ack = await (await self.publisher.publish(spec.start_on, codec.dumps(data), msg_headers))
        if time.time() < fence - SKEW_MARGIN:
            return True  # acknowledged well before the fence: stored before it
        return await self._stored_at(ack["stream"], ack["seq"]) <= fence

    async def _stored_at(self, stream: str, seq: int) -> float:
        """JetStream's own timestamp of a stored message (the clock the consumers' fence uses)."""
        request = codec.dumps({"seq": seq})
        reply = await (await self.publisher.request(f"$JS.API.STREAM.MSG.GET.{stream}", request))
        body = codec.loads(reply.data) if reply.data else {}
        if "message" not in body:
            raise Unavailable(f"could not read back {stream} #{seq}: {body.get('error') or reply.headers}")
        return parse_time(body["message"]["time"])

    def _clean_up_later(self, key: str, event_id: str) -> None:
        task = asyncio.create_task(self._clean_up(key, event_id), name=f"intake-cleanup:{key}")
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def _clean_up(self, key: str, event_id: str, within: float = 120.0) -> None:
        """Retire the record of a start that was given up on, unless it has moved on.

        A delete with compare-and-set, also where the key looks absent: the create may still be on its
        way (JetStream can answer a read before it stores a queued write), and the delete marker makes
        that create fail, as it expects an absent key. A record the saga advanced is left alone.
        """
        until = time.monotonic() + within
        delay = 0.5
        while time.monotonic() < until:
            try:
                record, revision = await self.bucket.get(key)
                ours = record is not None and record.get("startEvent") == event_id and len(record["history"]) == 1
                if ours or (record is None and revision == 0):
                    await self.bucket.delete(key, revision)
                    if ours:
                        self.metrics.removed(record["state"])
                return
            except Conflict:
                continue  # it changed meanwhile: look again
            except Exception as exc:  # unavailable again: keep trying within the window
                event(log, logging.DEBUG, "clean-up of a given-up start deferred", key=key, error=repr(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def close(self) -> None:
        for task in list(self._cleanups):
            task.cancel()


def parse_time(text: str) -> float:
    """RFC 3339 with nanoseconds (JetStream's) as epoch seconds; Python parses up to microseconds."""
    head, _, rest = text.partition(".")
    if not rest:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    digits = "".join(c for c in rest if c.isdigit())
    zone = rest[len(digits) :].replace("Z", "+00:00")
    return datetime.fromisoformat(f"{head}.{digits[:6]:0<6}{zone}").timestamp()
