"""What a scenario looks at: when the system is idle, what the event streams hold, dead letters, KV values.

"Idle" is read from JetStream itself, not guessed with sleeps: every consumer of every declared stream has
nothing pending and nothing awaiting an ack (a handler publishes its outputs before it acks, and a message
waiting for a retry is still awaiting its ack), and no stream grew between two looks.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, NotFoundError

from runner import codec
from runner.config.model import Config
from runner.engine import deadletter
from runner.jetstream.kv import stored_keys
from runner.testing.results import MISSING

POLL = 0.02  # seconds between looks at the consumers


@dataclass(frozen=True)
class DeadLetter:
    subject: str  # the original subject
    service: str
    error: str


def dead_letter_streams(config: Config) -> set[str]:
    """The declared streams the services dead-letter into."""
    return {s.dead_letter.stream for s in config.services.values()} & set(config.streams)


def event_streams(config: Config) -> list[str]:
    """The streams a flow's events travel on: every declared stream but dead letters and saga timers."""
    skip = dead_letter_streams(config) | {s.timer_stream for s in config.sagas.values() if s.timer_stream}
    return [name for name in config.streams if name not in skip]


async def settle(js: JetStreamContext, config: Config, within: float) -> bool:
    """Wait until every consumer is idle and no stream grows; False if that did not happen `within` seconds."""
    deadline = time.monotonic() + within
    last: list[int] | None = None
    while time.monotonic() < deadline:
        sizes, busy = [], False
        for stream in config.streams:
            sizes.append((await js.stream_info(stream)).state.last_seq)
            for consumer in await js.consumers_info(stream):
                busy = busy or bool(consumer.num_pending or consumer.num_ack_pending)
        if not busy and sizes == last:
            return True
        last = None if busy else sizes
        await asyncio.sleep(POLL)
    return False


async def messages(js: JetStreamContext, stream: str) -> list[Any]:
    """Every message still in the stream, oldest first."""
    last = (await js.stream_info(stream)).state.last_seq
    out = []
    for seq in range(1, last + 1):
        try:
            out.append(await js.get_msg(stream, seq))
        except NotFoundError:
            continue  # deleted or expired
    return out


async def emitted(js: JetStreamContext, config: Config) -> list[str]:
    """The subjects published on the event streams, in the order JetStream stored them."""
    stored = [m for stream in event_streams(config) for m in await messages(js, stream)]
    stored.sort(key=lambda m: (m.time, m.stream, m.seq))
    return [m.subject for m in stored]


async def dead_letters(js: JetStreamContext, config: Config) -> list[DeadLetter]:
    out = []
    for stream in sorted(dead_letter_streams(config)):
        for m in await messages(js, stream):
            headers = m.headers or {}
            out.append(
                DeadLetter(
                    headers.get(deadletter.H_SUBJECT, m.subject),
                    headers.get(deadletter.H_SERVICE, ""),
                    headers.get(deadletter.H_ERROR, ""),
                )
            )
    return out


async def kv_value(js: JetStreamContext, bucket: str, key: str) -> Any:
    """The key's JSON value, or MISSING when it was never written or is deleted."""
    try:
        entry = await (await js.key_value(bucket)).get(key)
    except KeyNotFoundError:
        return MISSING
    return codec.loads(entry.value) if entry.value else MISSING


async def kv_keys(js: JetStreamContext, bucket: str) -> list[str]:
    """The keys that hold a value now (deleted ones left out)."""
    try:
        keys = await stored_keys(js, bucket)
    except NotFoundError:
        return []
    return [key for key in keys if await kv_value(js, bucket, key) is not MISSING]
