"""Browse, replay and purge dead letters. Entries are never deleted by a replay, only marked.

An entry is a message in the dead-letter stream (its id is that stream's sequence number). A replay
republishes the original payload to the original subject under a fresh Nats-Msg-Id (the original id may
still be inside the stream's duplicate window, which would drop it), then records a marker message
`<prefix>._replayed.<id>` in the same stream, so `ls` can show what was replayed.

The original subject is shared (orders.created reaches the saga and inventory), and a fresh id defeats both
the stream's and the saga's deduplication, so a replay names the consumer that dead-lettered it
(`Flowrun-Replay-For`); every other consumer acks it without effect (runner/engine/dispatch.py).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from runner import codec
from runner.config.model import Config, DeadLetterSpec
from runner.engine import deadletter as h

MARKER = "_replayed"


@dataclass
class Entry:
    id: int
    time: dt.datetime
    subject: str
    service: str
    consumer: str
    attempts: int
    error_type: str
    error: str
    correlation_id: str | None
    original: str
    data: bytes
    headers: dict[str, str]
    replayed: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "time": self.time.isoformat(timespec="seconds"),
            "service": self.service,
            "subject": self.subject,
            "attempts": self.attempts,
            "error": f"{self.error_type}: {self.error}",
            "correlation_id": self.correlation_id,
            "replayed": self.replayed,
        }

    def detail(self) -> dict[str, Any]:
        try:
            payload: Any = codec.loads(self.data)
        except Exception:
            payload = self.data.decode("utf-8", "replace")
        return {
            **self.summary(),
            "consumer": self.consumer,
            "original": self.original,
            "headers": self.headers,
            "payload": payload,
        }


async def _messages(js: JetStreamContext, stream: str, prefix: str, newest: int | None = None) -> list[Any]:
    """The stream's messages under `prefix`, oldest first; only its last `newest` sequences when given."""
    info = await js.stream_info(stream)
    out = []
    seq = info.state.first_seq if newest is None else max(info.state.first_seq, info.state.last_seq - newest + 1)
    while seq and seq <= info.state.last_seq:
        try:
            msg = await js.get_msg(stream, seq=seq, subject=f"{prefix}.>", next=True)
        except NotFoundError:
            break
        out.append(msg)
        seq = msg.seq + 1
    return out


async def entries(
    js: JetStreamContext, stream: str, prefix: str, service: str | None = None, newest: int | None = None
) -> list[Entry]:
    """All dead letters, oldest first, with their replay marks; with `newest`, those among the stream's last
    `newest` messages (a bounded read, for the dashboard)."""
    raw = await _messages(js, stream, prefix, newest)
    marks: dict[int, dict[str, Any]] = {}
    found: list[Entry] = []
    for msg in raw:
        parts = msg.subject.split(".")
        if len(parts) >= 3 and parts[1] == MARKER:
            mark = codec.loads(msg.data)
            marks.setdefault(int(parts[2]), mark)
            continue
        headers = msg.headers or {}
        found.append(
            Entry(
                id=msg.seq,
                time=msg.time,
                subject=headers.get(h.H_SUBJECT, ""),
                service=headers.get(h.H_SERVICE, ""),
                consumer=headers.get(h.H_CONSUMER, ""),
                attempts=int(headers.get(h.H_ATTEMPTS, "0") or 0),
                error_type=headers.get(h.H_ERROR_TYPE, ""),
                error=headers.get(h.H_ERROR, ""),
                correlation_id=headers.get(h.H_CORRELATION),
                original=f"{headers.get(h.H_STREAM, '?')}#{headers.get(h.H_SEQ, '?')}",
                data=msg.data or b"",
                headers=headers,
            )
        )
    for entry in found:
        entry.replayed = marks.get(entry.id)
    return [e for e in found if service is None or e.service == service]


def target(config: Config, service: str | None) -> DeadLetterSpec:
    """Where `service` dead-letters, or every service when they all share one place (ValueError if not)."""
    if service is not None:
        return config.services[service].dead_letter
    specs = {s.dead_letter for s in config.services.values()}
    if len(specs) != 1:
        raise ValueError("services use different dead-letter streams")
    return specs.pop()


async def find(js: JetStreamContext, stream: str, prefix: str, entry_id: int, service: str | None = None) -> Entry:
    """One entry by id (of `service`, if given); LookupError when there is none."""
    entry = next((e for e in await entries(js, stream, prefix, service) if e.id == entry_id), None)
    if entry is None:
        raise LookupError(f"no dead letter with id {entry_id}")
    return entry


async def replay_selected(
    js: JetStreamContext,
    stream: str,
    prefix: str,
    entry_id: int | None,
    service: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[tuple[int, int]]:
    """Replay entry `entry_id` (again, if asked twice), or without an id every entry not yet replayed.
    Returns (entry id, new stream seq) for each; `progress(done, total)` is told after each."""
    if entry_id is not None:
        chosen = [await find(js, stream, prefix, entry_id, service)]
    else:
        chosen = [e for e in await entries(js, stream, prefix, service) if not e.replayed]
    done = []
    for e in chosen:
        done.append((e.id, await replay(js, stream, prefix, e)))
        if progress is not None:
            progress(len(done), len(chosen))
    return done


async def replay(js: JetStreamContext, stream: str, prefix: str, entry: Entry) -> int:
    """Republish an entry to its original subject (fresh id), for its consumer only, and mark it replayed.
    Returns the new seq."""
    original_id = entry.headers.get(h.H_MSG_ID) or f"{entry.original}"
    headers = {"Nats-Msg-Id": f"{original_id}.replay.{uuid.uuid4().hex[:12]}", h.H_REPLAYED: str(entry.id)}
    if entry.consumer:  # an entry that does not name its consumer goes to every consumer of the subject
        headers[h.H_REPLAY_FOR] = entry.consumer
    if entry.correlation_id:
        headers[h.H_CORRELATION] = entry.correlation_id
    ack = await js.publish(entry.subject, entry.data, headers=headers)
    mark = {"at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "stream": ack.stream, "seq": ack.seq}
    await js.publish(f"{prefix}.{MARKER}.{entry.id}", codec.dumps(mark), stream=stream)
    return ack.seq


async def purge_older_than(
    js: JetStreamContext,
    stream: str,
    prefix: str,
    seconds: float,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Remove entries (and their marks) older than `seconds`. Returns how many messages went;
    `progress(done, total)` is told after each."""
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)
    raw = await _messages(js, stream, prefix)
    old = [m for m in raw if m.time < cutoff]
    for done, msg in enumerate(old, 1):
        await js.delete_msg(stream, msg.seq)
        if progress is not None:
            progress(done, len(old))
    return len(old)
