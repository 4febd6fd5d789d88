"""Load generators and measurement: inject orders, watch them finish, check the books.

Both systems are driven and judged by the same code. An order is finished when the ORDER_SAGA
record reaches a terminal state; we see that through an ordered consumer on the bucket's stream,
so times come from one monotonic clock (publish → terminal). Over HTTP the send times come from the
load generator's process (bench/http_load.py): CLOCK_MONOTONIC is the same clock in every process.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from nats.js import JetStreamContext, api

from bench.harness import die_with_parent

TERMINAL = frozenset({"completed", "cancelled", "compensation_failed"})
PRODUCT = "BENCH-001"
INITIAL_STOCK = 10**9
STOCK = {PRODUCT: {"available": INITIAL_STOCK, "reserved": 0}}
QTY, PRICE = 1, Decimal("19.99")  # money travels as two-place decimal strings
CORRELATION = "Flowrun-Correlation-Id"


def new_order() -> tuple[str, dict[str, Any]]:
    order_id = str(uuid.uuid4())  # the id the HTTP API would assign
    items = [{"productId": PRODUCT, "quantity": QTY, "price": f"{PRICE:.2f}"}]
    return order_id, {"orderId": order_id, "customerId": "CUST123", "items": items, "total": f"{QTY * PRICE:.2f}"}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


class Watcher:
    """Terminal time and state of every order, from the ORDER_SAGA bucket's stream."""

    def __init__(self) -> None:
        self.done: dict[str, tuple[float, str]] = {}
        self.updates = 0
        self._sub: Any = None

    async def start(self, js: JetStreamContext) -> None:
        self._sub = await js.subscribe(
            "$KV.ORDER_SAGA.>", stream="KV_ORDER_SAGA", ordered_consumer=True, cb=self._on_msg
        )

    async def _on_msg(self, msg: Any) -> None:
        now = time.monotonic()
        self.updates += 1
        if not msg.data:
            return
        key = msg.subject[len("$KV.ORDER_SAGA.") :]
        if key in self.done:
            return
        state = orjson.loads(msg.data).get("state")
        if state in TERMINAL:
            self.done[key] = (now, state)

    async def wait(self, ids: Iterable[str], within: float) -> bool:
        """True once every id is terminal; False after `within` seconds."""
        pending = set(ids)
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            pending = {i for i in pending if i not in self.done}
            if not pending:
                return True
            await asyncio.sleep(0.01)
        return False

    async def stop(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:  # the connection may be gone already
                pass


async def _publish(js: JetStreamContext, order_id: str, order: dict[str, Any]) -> asyncio.Future[Any]:
    headers = {"Nats-Msg-Id": f"{order_id}.orders.created", CORRELATION: order_id}
    return await js.publish_async("orders.created", orjson.dumps(order), headers=headers)


async def _settle(js: JetStreamContext, futures: list[asyncio.Future[Any]], within: float = 30.0) -> int:
    """Wait for the publish acks; the number that failed."""
    done = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), within)
    return sum(isinstance(r, BaseException) for r in done)


@dataclass
class Injection:
    ids: list[str]
    sent: dict[str, float]
    started: float
    publish_errors: int = 0
    lag_max: float = 0.0  # open loop: how far behind schedule the injector fell


async def closed_loop(js: JetStreamContext, n: int) -> Injection:
    """All n orders at once, pipelined: the system is saturated until the last one finishes."""
    orders = [new_order() for _ in range(n)]
    started = time.monotonic()
    sent: dict[str, float] = {}
    futures = []
    for order_id, order in orders:
        sent[order_id] = time.monotonic()
        futures.append(await _publish(js, order_id, order))
    errors = await _settle(js, futures)
    return Injection([o for o, _ in orders], sent, started, errors)


async def open_loop(js: JetStreamContext, rate: float, n: int) -> Injection:
    """n orders at a fixed rate, on schedule whatever the system does (no coordinated omission:
    latency counts from the scheduled time when the injector falls behind)."""
    orders = [new_order() for _ in range(n)]
    sent: dict[str, float] = {}
    futures = []
    started = time.monotonic()
    lag = 0.0
    i = 0
    deadline = started + n / rate + 30
    while i < n and time.monotonic() < deadline:
        now = time.monotonic()
        due = min(n, int((now - started) * rate) + 1)
        while i < due:
            order_id, order = orders[i]
            scheduled = started + i / rate
            lag = max(lag, time.monotonic() - scheduled)
            sent[order_id] = scheduled
            futures.append(await _publish(js, order_id, order))
            i += 1
        await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
    errors = await _settle(js, futures)
    return Injection([o for o, _ in orders[:i]], sent, started, errors, lag)


async def http_load(base_url: str, seconds: float, connections: int, out: Path) -> dict[str, Any]:
    """Run bench/http_load.py in its own process; its JSON result (per 202: orderId, sent, answered).

    Bounded: killed if it outlives its own hard limit; its stderr tail is the error if it fails.
    """
    per_request = 15.0
    args = [sys.executable, "-m", "bench.http_load", base_url, "--out", str(out)]
    args += ["--seconds", str(seconds), "--connections", str(connections), "--timeout", str(per_request)]
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=die_with_parent,  # a SIGKILLed bench takes it along
    )
    try:
        _, stderr = await asyncio.wait_for(proc.communicate(), seconds + 2 * per_request + 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"http load generator exited with {proc.returncode}: {stderr.decode()[-2000:]}")
    return orjson.loads(await asyncio.to_thread(out.read_bytes))


async def read_bucket(js: JetStreamContext, bucket: str, within: float = 60.0) -> dict[str, Any]:
    """The latest value of every key, decoded (deleted keys left out)."""
    expected = (await js.stream_info(f"KV_{bucket}")).state.messages
    out: dict[str, Any] = {}
    seen = 0
    complete = asyncio.Event()

    async def on_msg(msg: Any) -> None:
        nonlocal seen
        seen += 1
        if msg.data:
            out[msg.subject[len(f"$KV.{bucket}.") :]] = orjson.loads(msg.data)
        if seen >= expected:
            complete.set()

    if expected == 0:
        return out
    sub = await js.subscribe(
        f"$KV.{bucket}.>",
        stream=f"KV_{bucket}",
        ordered_consumer=True,
        cb=on_msg,
        deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
    )
    try:
        await asyncio.wait_for(complete.wait(), within)
    finally:
        await sub.unsubscribe()
    return out


async def verify(js: JetStreamContext, ids: list[str], dlq: bool) -> dict[str, Any]:
    """The books after a run: every order terminal, stock conserved, no effect applied twice."""
    sagas = await read_bucket(js, "ORDER_SAGA")
    reservations = await read_bucket(js, "RESERVATIONS")
    payments = await read_bucket(js, "PAYMENTS")
    stock = (await read_bucket(js, "INVENTORY")).get(PRODUCT, {})
    states: dict[str, int] = {}
    for order_id in ids:
        state = (sagas.get(order_id) or {}).get("state", "missing")
        states[state] = states.get(state, 0) + 1
    terminal = sum(n for s, n in states.items() if s in TERMINAL)
    completed = states.get("completed", 0)
    payment_writes = (await js.stream_info("KV_PAYMENTS")).state.last_seq
    ours = [payments[i] for i in ids if i in payments]
    charged = sum(p.get("status") == "charged" for p in ours)
    extra_payment_writes = max(0, payment_writes - len(payments))
    subjects = (await js.stream_info("ORDERS", subjects_filter="orders.>")).state.subjects or {}
    dup_events = sum(
        max(0, subjects.get(s, 0) - len(ids))
        for s in ("orders.created", "orders.inventory.reserved", "orders.payment.requested", "orders.payment.completed")
    )
    reserved_records = sum((reservations.get(i) or {}).get("state") == "reserved" for i in ids)
    available, reserved = stock.get("available", -1), stock.get("reserved", -1)
    conserved = available + reserved == INITIAL_STOCK and reserved == reserved_records * QTY
    over_reserved = max(0, reserved - reserved_records * QTY)
    dead = (await js.stream_info("DLQ")).state.messages if dlq else 0
    duplicates = extra_payment_writes + dup_events + over_reserved
    return {
        "orders": len(ids),
        "terminal": terminal,
        "states": states,
        "reservation_records": reserved_records,
        "payments_charged": charged,
        "payment_writes": payment_writes,
        "event_counts": {k: v for k, v in subjects.items() if not k.startswith("flowrun.")},
        "stock": {"available": available, "reserved": reserved},
        "stock_conserved": conserved,
        "dead_letters": dead,
        "duplicate_effects": duplicates,
        "ok": terminal == len(ids)
        and conserved
        and duplicates == 0
        and dead == 0
        and reserved_records == completed
        and charged == completed,
    }
