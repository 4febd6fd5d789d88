"""Jepsen-style accounting for fault tests: what was injected, what the system did, what it broke.

The ledger reads the system's own records (saga instances, reservations, payments, stock) and the
streams, and counts: lost orders (injected, never terminal), duplicate business effects (stock or
charges that don't add up, a transition applied twice), redeliveries and dead letters.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TypeVar

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError

from runner import codec

T = TypeVar("T")
TERMINAL = {"completed", "cancelled", "compensation_failed"}
FORWARD = ["orders.created", "orders.inventory.reserved", "orders.payment.requested", "orders.payment.completed"]


def order(product: str = "LAPTOP-001", quantity: int = 1, price: str = "10.00", customer: str = "C1") -> dict:
    """An orders.created payload as the API makes it: money as two-place decimal strings."""
    return {
        "orderId": uuid.uuid4().hex,
        "customerId": customer,
        "items": [{"productId": product, "quantity": quantity, "price": price}],
        "total": f"{Decimal(price) * quantity:.2f}",
    }


async def inject(js: JetStreamContext, orders: list[dict]) -> None:
    """Publish orders.created pipelined, each with its deterministic Nats-Msg-Id."""
    futures = [
        await js.publish_async(
            "orders.created", codec.dumps(o), headers={"Nats-Msg-Id": f"{o['orderId']}.orders.created"}
        )
        for o in orders
    ]
    await asyncio.gather(*futures)


async def patiently(call: Callable[[], Awaitable[T]], within: float = 30.0) -> T:
    """A JetStream read that may meet an election (timeouts, no leader): ask again for a while."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await call()
        except (nats.errors.TimeoutError, TimeoutError, nats.js.errors.ServiceUnavailableError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def get_record(js: JetStreamContext, bucket: str, key: str) -> dict | None:
    async def read() -> dict | None:
        kv = await js.key_value(bucket)
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            return None
        return codec.loads(entry.value)

    return await patiently(read)


async def wait_terminal(js: JetStreamContext, ids: list[str], within: float) -> dict[str, dict | None]:
    deadline = time.monotonic() + within
    records: dict[str, dict | None] = {}
    while True:
        for order_id in ids:
            rec = records.get(order_id)
            if rec is None or rec["state"] not in TERMINAL:
                records[order_id] = await get_record(js, "ORDER_SAGA", order_id)
        if all(r is not None and r["state"] in TERMINAL for r in records.values()) or time.monotonic() > deadline:
            return records
        await asyncio.sleep(0.2)


@dataclass
class Audit:
    orders: int = 0
    completed: int = 0
    cancelled: int = 0
    compensation_failed: int = 0
    lost: list[str] = field(default_factory=list)
    duplicate_effects: list[str] = field(default_factory=list)
    redeliveries: int = 0
    dead_letters: int = 0

    def line(self) -> str:
        return (
            f"orders={self.orders} completed={self.completed} cancelled={self.cancelled} "
            f"compensation_failed={self.compensation_failed} lost={len(self.lost)} "
            f"duplicate_effects={len(self.duplicate_effects)} redeliveries={self.redeliveries} "
            f"dead_letters={self.dead_letters}"
        )


async def audit(js: JetStreamContext, orders: list[dict], initial_stock: dict[str, int], within: float) -> Audit:
    """Wait for every order to end, then check every invariant of the saga."""
    records = await wait_terminal(js, [o["orderId"] for o in orders], within)
    await quiesce(js, within=15)  # redeliveries still in flight could apply effects after we look
    records = await wait_terminal(js, [o["orderId"] for o in orders], 0)
    result = Audit(orders=len(orders))
    reserved_by_completed: dict[str, int] = defaultdict(int)
    for o in orders:
        oid = o["orderId"]
        rec = records.get(oid)
        if rec is None or rec["state"] not in TERMINAL:
            result.lost.append(f"{oid}: {rec['state'] if rec else 'no saga instance'}")
            continue
        state = rec["state"]
        setattr(result, state, getattr(result, state) + 1)
        consumed = [e["subject"] for e in rec["history"] if "id" in e]
        for subject in set(consumed):
            if consumed.count(subject) > 1:
                result.duplicate_effects.append(f"{oid}: {subject} applied {consumed.count(subject)} times")
        payment = await get_record(js, "PAYMENTS", oid)
        reservation = await get_record(js, "RESERVATIONS", oid)
        if state == "completed":
            if [e["subject"] for e in rec["history"]] != FORWARD:
                result.duplicate_effects.append(f"{oid}: history {[e['subject'] for e in rec['history']]}")
            if not payment or payment["status"] != "charged":
                result.duplicate_effects.append(f"{oid}: completed but payment is {payment}")
            if not reservation or reservation["state"] != "reserved":
                result.duplicate_effects.append(f"{oid}: completed but reservation is {reservation}")
            for item in o["items"]:
                reserved_by_completed[item["productId"]] += item["quantity"]
        elif state == "cancelled":
            if payment and payment["status"] == "charged":
                result.duplicate_effects.append(f"{oid}: cancelled but still charged")
            if reservation and reservation["state"] in ("reserved", "reserving", "releasing", "failing"):
                result.duplicate_effects.append(f"{oid}: cancelled but reservation is {reservation['state']}")
    for product, initial in initial_stock.items():
        stock = await get_record(js, "INVENTORY", product)
        assert stock is not None
        if stock["available"] + stock["reserved"] != initial:
            result.duplicate_effects.append(
                f"{product}: available+reserved={stock['available'] + stock['reserved']} but stock was {initial}"
            )
        if stock["reserved"] != reserved_by_completed[product]:
            result.duplicate_effects.append(
                f"{product}: reserved={stock['reserved']} but completed orders hold {reserved_by_completed[product]}"
            )
    result.redeliveries = await redeliveries(js)
    result.dead_letters = (await patiently(lambda: js.stream_info("DLQ"))).state.messages
    return result


async def quiesce(js: JetStreamContext, within: float) -> None:
    """Wait until no saga consumer has anything pending or unacknowledged."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        infos = [
            await patiently(lambda n=n: js.consumer_info("ORDERS", n))
            for n in ("order-service", "inventory-service", "payment-service")
        ]
        if all(i.num_pending == 0 and i.num_ack_pending == 0 for i in infos):
            return
        await asyncio.sleep(0.2)


async def redeliveries(js: JetStreamContext) -> int:
    """Deliveries beyond the first, over the saga's consumers: consumer sequence minus distinct messages."""
    counts = (await patiently(lambda: js.stream_info("ORDERS", subjects_filter=">"))).state.subjects or {}
    total = 0
    for name in ("order-service", "inventory-service", "payment-service"):
        info = await patiently(lambda name=name: js.consumer_info("ORDERS", name))
        distinct = sum(n for subject, n in counts.items() if subject in info.config.filter_subjects)
        total += max(0, info.delivered.consumer_seq - distinct)
    return total


async def dead_letters(js: JetStreamContext, at_least: int, within: float) -> int:
    """The DLQ stream's message count, once it reaches `at_least` (or `within` seconds pass)."""
    count = 0
    for _ in range(int(within / 0.1)):
        count = (await js.stream_info("DLQ")).state.messages
        if count >= at_least:
            break
        await asyncio.sleep(0.1)
    return count
