"""Saga alarms as JetStream message schedules, grouped: one schedule for many instances.

An instance's alarm is a schedule message (`Nats-Schedule: @at …`) that JetStream delivers to the saga's
timer subject when due. Alarms set at about the same moment (the instances of one consumer batch, the
requests one API process accepts together) are merged into one schedule listing every key, due at the
latest of them: one stored message instead of one per instance, and one delivery when it fires. Firing a
few milliseconds after an instance's own alarm changes nothing, since alarms only wake the instance
up: what happens is decided by its deadline (runner/engine/saga.py).

A schedule's body is `{"alarm": epoch seconds, "keys": [...]}`. A group's subject and message id are a
digest of its content, so publishing the same group again is deduplicated by JetStream.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

from runner import codec
from runner.config.subjects import is_identifier
from runner.engine.outputs import Publish
from runner.engine.timestamps import iso

SCHEDULE = "Nats-Schedule"
SCHEDULE_TARGET = "Nats-Schedule-Target"
MAX_KEYS = 256  # keeps a group's message a few KiB, well inside any stream's max_msg_size


def schedule(timer_subject: str, keys: list[str], alarm: float) -> Publish:
    """The schedule message that wakes `keys` at `alarm`."""
    headers = {SCHEDULE: f"@at {iso(alarm)}", SCHEDULE_TARGET: f"{timer_subject}.fire"}
    body = {"alarm": alarm, "keys": keys}
    if len(keys) == 1:  # one instance: its own subject, so re-arming it replaces its pending schedule
        return Publish(f"{timer_subject}.at.{keys[0]}", body, f"{keys[0]}.alarm.{alarm:.3f}", headers)
    digest = hashlib.blake2b(codec.dumps(body), digest_size=12).hexdigest()
    return Publish(f"{timer_subject}.at.g{digest}", body, f"alarms.{digest}", headers)


def is_alarm(p: Publish) -> bool:
    return p.headers is not None and SCHEDULE in p.headers


def split(publishes: list[Publish]) -> tuple[list[Publish], list[Publish]]:
    """(the other messages, the alarms): alarms are merged before they are published."""
    others: list[Publish] = []
    found: list[Publish] = []
    for p in publishes:
        (found if is_alarm(p) else others).append(p)
    return others, found


def keys_of(body: Any, key_field: str) -> tuple[list[str], float]:
    """(keys, alarm) of a fired schedule: grouped, or one instance's as stored before alarms were grouped.
    Raises ValueError for anything else: a malformed or forged timer is dead-lettered, never applied."""
    alarm = float(body["alarm"])
    keys = body["keys"] if "keys" in body else [body[key_field]]
    if not isinstance(keys, list) or not 0 < len(keys) <= MAX_KEYS:
        raise ValueError(f"keys must be a list of 1 to {MAX_KEYS} instance keys")
    if not all(is_identifier(k) for k in keys):
        raise ValueError("every key must be an identifier (no '.', '*', '>' or whitespace)")
    return keys, alarm


def merge(alarms: list[Publish]) -> list[Publish]:
    """The fewest schedules that wake every instance in `alarms` no earlier than its own alarm."""
    by_target: dict[str, dict[str, float]] = {}
    for p in alarms:
        target = p.headers[SCHEDULE_TARGET] if p.headers else ""
        due = by_target.setdefault(target.removesuffix(".fire"), {})
        for key in p.data["keys"]:
            due[key] = max(due.get(key, 0.0), float(p.data["alarm"]))
    out = []
    for subject, due in by_target.items():
        keys = sorted(due)
        for i in range(0, len(keys), MAX_KEYS):
            chunk = keys[i : i + MAX_KEYS]
            out.append(schedule(subject, chunk, max(due[k] for k in chunk)))
    return out


class AlarmGroups:
    """Alarms set one at a time (the API's requests), stored as one schedule per round of the event loop:
    the requests a round handles set theirs, and a task that runs in the next round sends them together.
    No group waits for another's acknowledgement, so grouping adds no round trip, and an alarm alone on
    an idle process goes out at once."""

    def __init__(self, send: Callable[[Publish], Awaitable[asyncio.Future[Any]]]):
        self._send = send
        self._queued: list[tuple[Publish, asyncio.Future[None]]] = []
        self._collecting: asyncio.Task[None] | None = None
        self._storing: set[asyncio.Task[None]] = set()

    async def arm(self, alarms: list[Publish]) -> None:
        """Return once every alarm is stored (raises what storing it raised)."""
        if not alarms:
            return
        loop = asyncio.get_running_loop()
        stored: asyncio.Future[None] = loop.create_future()
        self._queued += [(p, stored) for p in alarms]
        if self._collecting is None:
            self._collecting = task = loop.create_task(self._store_group())
            self._storing.add(task)
            task.add_done_callback(self._storing.discard)
        await stored

    async def _store_group(self) -> None:
        group, self._queued, self._collecting = self._queued, [], None
        waiting = {id(f): f for _, f in group}.values()
        try:
            acks = [await self._send(p) for p in merge([p for p, _ in group])]
            await asyncio.gather(*acks)
        except BaseException as exc:
            for stored in waiting:
                if not stored.done():
                    stored.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for stored in waiting:
            if not stored.done():
                stored.set_result(None)
