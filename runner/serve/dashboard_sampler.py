"""What the dashboard shows live, sampled once a second while someone is looking (runner/serve/dashboard.py).

Nothing is added to the message path: throughput is read from JetStream itself (each consumer's ack floor
moves by the messages it settled), so it counts every process of a service, not only this one; latency is
each saga instance's time from start to a terminal state, seen in the newest entries of its bucket. One
sampler per HTTP app serves every viewer; it stops IDLE_AFTER seconds after the last request, so a process
nobody watches pays nothing. The series is a ring buffer of SERIES_SECONDS per-second points.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client

from runner import codec
from runner.config.model import REJECTED_STATE, Config, SagaSpec
from runner.engine.saga import COMPENSATING, iso
from runner.jetstream.inspection import consumer_info
from runner.jetstream.kv_scan import NewestFirst
from runner.logs import event

log = logging.getLogger("flowrun.dashboard")

SERIES_SECONDS = 600  # ten minutes of per-second points
IDLE_AFTER = 60.0  # seconds without a dashboard request before sampling stops
RECENT = 15  # newest instances shown per saga
COUNT_BUDGET = 4096  # entries read when counting instances by state (the newest ones)
COUNT_EVERY = 5  # seconds between counts: a count reads far more than a sample
SCAN_TIMEOUT = 1.0


@dataclass
class Point:
    t: float
    settled: int  # messages acked or terminated by all consumers in this second
    finished: int  # saga instances that reached a terminal state
    latency_avg: float | None  # seconds from start to terminal state, over `finished`
    latency_max: float | None

    def as_json(self) -> dict[str, Any]:
        return {
            "t": round(self.t, 3),
            "settled": self.settled,
            "finished": self.finished,
            "latency_avg": self.latency_avg,
            "latency_max": self.latency_max,
        }


@dataclass
class SagaSnapshot:
    recent: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    counted: int = 0  # instances the counts cover
    counted_all: bool = True  # False: only the newest COUNT_BUDGET entries were counted


class Sampler:
    """Consumer state, per-saga instances and the throughput/latency series, refreshed every second."""

    def __init__(self, nc: Client, config: Config):
        self.nc = nc
        self.config = config
        self.js = nc.jetstream()
        self.series: deque[Point] = deque(maxlen=SERIES_SECONDS)
        self.consumers: list[dict[str, Any]] = []
        self.sagas: dict[str, SagaSnapshot] = {name: SagaSnapshot() for name in config.sagas}
        self._acked: dict[tuple[str, str], int] = {}  # (stream, consumer) → its ack floor at the last sample
        self._sampled_at: float | None = None  # when the previous sample began
        self._terminal = {
            name: {s.name for s in spec.states.values() if s.terminal}
            | {spec.compensation_failed_state, REJECTED_STATE}
            for name, spec in config.sagas.items()
        }
        self._last_request = 0.0
        self._ticks = 0
        self._task: asyncio.Task[None] | None = None

    def touch(self) -> None:
        """A viewer asked: keep sampling (start if idle)."""
        self._last_request = time.monotonic()
        if self._task is None or self._task.done():
            self._sampled_at, self._acked = None, {}  # after a pause, the first sample is a new baseline
            self._task = asyncio.create_task(self._run(), name="dashboard-sampler")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def live(self) -> dict[str, Any]:
        return {
            "consumers": self.consumers,
            "sagas": {
                name: {
                    "recent": snap.recent,
                    "counts": snap.counts,
                    "counted": snap.counted,
                    "counted_all": snap.counted_all,
                }
                for name, snap in self.sagas.items()
            },
            "series": [p.as_json() for p in self.series],
        }

    async def _run(self) -> None:
        while time.monotonic() - self._last_request < IDLE_AFTER:
            started = time.monotonic()
            try:
                await self.sample()
            except Exception as exc:  # NATS away for a moment: the page shows the last sample meanwhile
                event(log, logging.INFO, "dashboard sample failed", error=repr(exc))
            await asyncio.sleep(max(0.1, 1.0 - (time.monotonic() - started)))

    async def sample(self) -> None:
        """One second's point, plus fresh consumer and instance state."""
        now = time.time()
        since = now if self._sampled_at is None else self._sampled_at  # the first sample only sets the baseline
        self._sampled_at = now
        settled = await self._sample_consumers()
        finished: list[float] = []
        count = self._ticks % COUNT_EVERY == 0
        self._ticks += 1
        for name, spec in self.config.sagas.items():
            finished += await self._sample_saga(name, spec, since, count)
        self.series.append(
            Point(
                now,
                settled,
                len(finished),
                round(sum(finished) / len(finished), 4) if finished else None,
                round(max(finished), 4) if finished else None,
            )
        )

    async def _sample_consumers(self) -> int:
        rows: list[dict[str, Any]] = []
        settled = 0
        for spec in self.config.consumers():
            try:
                info = await consumer_info(self.js, spec.stream, spec.durable)
            except Exception as exc:
                rows.append({"service": spec.service, "name": spec.durable, "stream": spec.stream, "error": str(exc)})
                continue
            state = info["state"]
            acked = state["ack_floor"]["consumer_seq"]
            previous = self._acked.get((spec.stream, spec.durable))
            self._acked[(spec.stream, spec.durable)] = acked
            if previous is not None and acked >= previous:
                settled += acked - previous
            rows.append(
                {
                    "service": spec.service,
                    "name": spec.durable,
                    "stream": spec.stream,
                    "pending": state["pending"],
                    "ack_pending": state["ack_pending"],
                    "redelivered": state["redelivered"],
                    "waiting_pulls": state["waiting_pulls"],
                    "delivered": state["delivered"]["consumer_seq"],
                }
            )
        self.consumers = rows
        return settled

    async def _sample_saga(self, name: str, spec: SagaSpec, since: float, count: bool) -> list[float]:
        """The newest instances (and every COUNT_EVERY samples the counts by state); returns the latencies of
        instances that reached a terminal state since `since`. Newest first, so the walk stops at the first
        entry older than that, once it has RECENT rows (unless counting)."""
        history = self.config.buckets[spec.bucket].history
        terminal = self._terminal[name]
        recent: list[dict[str, Any]] = []
        counts: dict[str, int] = {}
        latencies: list[float] = []
        complete, done = True, False
        async with NewestFirst(self.nc, spec.bucket, history, timeout=SCAN_TIMEOUT) as walk:
            while not done and (window := await walk.next_window()) is not None:
                for entry in window.entries:
                    record = codec.loads(entry.value)
                    state = record.get("state", "?")
                    fresh = record["updated"] >= since
                    if not count and not fresh and len(recent) >= RECENT:
                        done = True
                        break
                    if len(recent) < RECENT:
                        recent.append(_instance_row(record, state in terminal))
                    if fresh and state in terminal:
                        latencies.append(max(0.0, record["updated"] - record["created"]))
                    counts[state] = counts.get(state, 0) + 1
                if walk.read >= COUNT_BUDGET:
                    complete = False
                    break
        snap = self.sagas[name]
        snap.recent = recent
        if count:
            snap.counts = {s: counts[s] for s in sorted(counts, key=lambda s: _state_order(spec, s))}
            snap.counted = sum(counts.values())
            snap.counted_all = complete
        return latencies


def _instance_row(record: dict[str, Any], terminal: bool) -> dict[str, Any]:
    return {
        "key": record["key"],
        "state": record.get("state"),
        "terminal": terminal,
        "created": iso(record["created"]),
        "updated": iso(record["updated"]),
        "seconds": round(record["updated"] - record["created"], 3),
        "reason": record.get("reason"),
    }


def _state_order(spec: SagaSpec, state: str) -> tuple[int, str]:
    """States as declared (compensating after them), unknown ones last."""
    names = [*spec.states, COMPENSATING]
    return (names.index(state), state) if state in names else (len(names), state)
