"""The peer: the order saga's three services written with FastStream, as its docs show.

What a Python team would otherwise pick. Same stream, buckets, record shapes, subjects and payloads as the
hand-written baseline (`baseline.provision` without its consumers), and the same ack discipline: effects
stored and outputs published (each with a `Nats-Msg-Id`) before a message is acked. FastStream's own tools,
nothing beyond its docs:

* one handler per event subject, each on its own durable pull consumer that FastStream declares
  (`PullSub(batch_size=...)`: a fetched batch is handled concurrently);
* `AckPolicy.NACK_ON_ERROR`: acked once the handler returns; `NackMessage(delay=...)` to retry later
  (an event that overtook the one it follows, e.g. reserved before the order was stored);
* KV through `broker.key_value()`: `create` claims a record once (a redelivery finds it and answers as
  before: no double charge, no double reservation), `update(last=revision)` is a compare-and-set;
* outputs through `broker.publish(..., stream=...)`, which waits for the stream's ack;
* uvloop, as `faststream run` uses when it is installed.

`PullSub(batch=True)` (a list per call) is not used: with nats-py 2.16 its fetch loop lets a bare
`asyncio.TimeoutError` escape when a batch does not fill in time, the consume task restarts and the
messages it had fetched wait out the consumer's ack_wait (30 s).

Run: `python -m bench.peer_faststream {order|inventory|payment} --nats URL[,URL...]` ("running on" when ready).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import signal
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import orjson
import uvloop
from faststream.exceptions import NackMessage
from faststream.middlewares import AckPolicy as Acks
from faststream.nats import AckPolicy, ConsumerConfig, JStream, NatsBroker, PullSub
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from bench import baseline

ORDERS = JStream(baseline.STREAM, declare=False)  # provisioned with the buckets by baseline.provision
FETCH_TIMEOUT = 0.1  # seconds a pull waits to fill its batch: short, so a trickle is not held back
PUBLISH_TIMEOUT = 5.0
RETRY_DELAY = 0.1
CAS_ATTEMPTS = 50

Out = tuple[str, dict[str, Any]]  # (subject, payload) to publish for a message
Handler = Callable[[dict[str, Any]], Awaitable[list[Out]]]


class NotYet(Exception):
    """The message came before what it follows (e.g. reserved before created was stored): retry later."""


class Saga:
    """One service's handlers over the broker's KV buckets."""

    def __init__(self, broker: NatsBroker):
        self.broker = broker
        self.kv: dict[str, KeyValue] = {}
        self.stock: dict[str, tuple[dict[str, Any], int]] = {}  # product → (value, revision) last written here
        self.stock_lock = asyncio.Lock()

    async def bucket(self, name: str) -> KeyValue:
        if name not in self.kv:
            self.kv[name] = await self.broker.key_value(name, declare=False)
        return self.kv[name]

    async def read(self, bucket: str, key: str) -> tuple[dict[str, Any] | None, int]:
        try:
            entry = await (await self.bucket(bucket)).get(key)
        except KeyNotFoundError:
            return None, 0
        return (orjson.loads(entry.value) if entry.value else None), entry.revision or 0

    async def claim(self, bucket: str, key: str, value: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create the record once: (it, True); a redelivery gets the stored one back instead: (that, False)."""
        try:
            await (await self.bucket(bucket)).create(key, orjson.dumps(value))
            return value, True
        except KeyWrongLastSequenceError:
            stored, _ = await self.read(bucket, key)
            return stored or value, False

    def handlers(self, service: str) -> dict[str, Handler]:
        """The service's handler for each event subject it consumes."""
        if service == "order":
            return {
                "orders.created": self.created,
                "orders.inventory.reserved": self.reserved,
                "orders.inventory.failed": functools.partial(self.finished, state="cancelled"),
                "orders.payment.completed": functools.partial(self.finished, state="completed"),
                "orders.payment.failed": functools.partial(self.finished, state="cancelled"),
            }
        return {"inventory": {"orders.created": self.reserve}, "payment": {"orders.payment.requested": self.charge}}[
            service
        ]

    # --- order: the saga's owner ---

    async def created(self, data: dict[str, Any]) -> list[Out]:
        await self.claim("ORDER_SAGA", data["orderId"], {**data, "state": "pending", "updated": time.time()})
        return []

    async def reserved(self, data: dict[str, Any]) -> list[Out]:
        record = await self._transition(data["orderId"], "pending", "awaiting_payment")
        return [("orders.payment.requested", {k: record[k] for k in ("orderId", "customerId", "items", "total")})]

    async def finished(self, data: dict[str, Any], state: str) -> list[Out]:
        await self._transition(data["orderId"], None, state)
        return []

    async def _transition(self, order_id: str, source: str | None, target: str) -> dict[str, Any]:
        """Move the order to `target` with compare-and-set (from `source` only, when given).
        Already moved on (a redelivery): leave it as it is."""
        kv = await self.bucket("ORDER_SAGA")
        for _ in range(CAS_ATTEMPTS):
            record, revision = await self.read("ORDER_SAGA", order_id)
            if record is None:
                raise NotYet(f"{target} before the order {order_id} was stored")
            if record["state"] != (source or record["state"]) or record["state"] in ("completed", "cancelled"):
                return record
            try:
                await kv.update(order_id, orjson.dumps({**record, "state": target, "updated": time.time()}), revision)
                return record
            except KeyWrongLastSequenceError:
                continue
        raise RuntimeError(f"ORDER_SAGA/{order_id}: too many conflicts")

    # --- inventory ---

    async def reserve(self, data: dict[str, Any]) -> list[Out]:
        """Claim the order's reservation record, then take its stock (one writer at a time on the hot key)."""
        wants: dict[str, int] = defaultdict(int)
        for item in data["items"]:
            wants[item["productId"]] += int(item["quantity"])
        record, fresh = await self.claim("RESERVATIONS", data["orderId"], {"state": "reserved", "items": wants})
        if fresh:  # a redelivery answers as before and touches no stock
            async with self.stock_lock:
                record = await self._take_stock(data["orderId"], dict(wants)) or record
        return _reservation_out(data, record)

    async def _take_stock(self, order_id: str, wants: dict[str, int]) -> dict[str, Any] | None:
        """Compare-and-set on each product, from the last value this process wrote (re-read on a conflict).
        None when taken; the failed reservation record when a product is short."""
        stock = await self.bucket("INVENTORY")
        for product, qty in sorted(wants.items()):
            for _ in range(CAS_ATTEMPTS):
                value, revision = self.stock.get(product) or await self.read("INVENTORY", product)
                if value is None or value["available"] < qty:
                    reason = f"unknown product {product}" if value is None else f"insufficient stock for {product}"
                    record = {"state": "failed", "items": wants, "reason": reason}
                    await (await self.bucket("RESERVATIONS")).put(order_id, orjson.dumps(record))
                    return record
                new = {**value, "available": value["available"] - qty, "reserved": value["reserved"] + qty}
                try:
                    self.stock[product] = (new, await stock.update(product, orjson.dumps(new), revision))
                    break
                except KeyWrongLastSequenceError:
                    self.stock.pop(product, None)
            else:
                raise RuntimeError(f"INVENTORY/{product}: too many conflicts")
        return None

    # --- payment ---

    async def charge(self, data: dict[str, Any]) -> list[Out]:
        """Charge once: the PAYMENTS record is created only if absent."""
        total = data["total"]  # a two-place decimal string, stored as it came
        if Decimal(total) > baseline.DECLINE_OVER:
            record = {"status": "declined", "amount": total, "reason": "payment declined"}
        else:
            record = {"status": "charged", "amount": total}
        record, _ = await self.claim("PAYMENTS", data["orderId"], record)
        if record["status"] == "charged":
            return [("orders.payment.completed", {"orderId": data["orderId"], "amount": record["amount"]})]
        return [("orders.payment.failed", {"orderId": data["orderId"], "reason": record["reason"]})]


def _reservation_out(data: dict[str, Any], record: dict[str, Any]) -> list[Out]:
    if record.get("state") == "reserved":
        return [("orders.inventory.reserved", {"orderId": data["orderId"], "items": data["items"]})]
    return [("orders.inventory.failed", {"orderId": data["orderId"], "reason": record.get("reason", "no stock")})]


def build(service: str, servers: list[str]) -> NatsBroker:
    """A broker with one durable pull subscriber per event subject the service consumes."""
    broker = NatsBroker(servers, log_level=logging.DEBUG)  # per-message access logs below the default INFO
    for subject, handle in Saga(broker).handlers(service).items():
        _subscribe(broker, service, subject, handle)
    return broker


def _subscribe(broker: NatsBroker, service: str, subject: str, handle: Handler) -> None:
    consumer = ConsumerConfig(  # the baseline's and flowrun's consumer settings
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=30,
        max_deliver=baseline.CONSUMERS[service][2],
        max_ack_pending=2048,
        max_waiting=512,
    )

    async def on_event(body: dict[str, Any]) -> None:
        try:
            outs = await handle(body)
        except NotYet:
            raise NackMessage(delay=RETRY_DELAY) from None
        except Exception as exc:  # effects are idempotent: the message comes back
            print(f"faststream {service}: {subject} retried: {exc!r}", file=sys.stderr)
            raise NackMessage(delay=RETRY_DELAY) from exc
        for out_subject, payload in outs:
            headers = {"Nats-Msg-Id": f"{payload['orderId']}.{out_subject}", baseline.CORRELATION: payload["orderId"]}
            await broker.publish(payload, out_subject, headers=headers, stream=baseline.STREAM, timeout=PUBLISH_TIMEOUT)

    broker.subscriber(
        subject,
        stream=ORDERS,
        durable=f"faststream-{service}-{subject.replace('.', '-')}",
        config=consumer,
        pull_sub=PullSub(batch_size=baseline.BATCH, timeout=FETCH_TIMEOUT),
        ack_policy=Acks.NACK_ON_ERROR,
    )(on_event)


async def serve(service: str, servers: list[str]) -> None:
    broker = build(service, servers)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with broker:
        await broker.start()
        print(f"faststream {service} running on {','.join(servers)}", file=sys.stderr, flush=True)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("service", choices=sorted(baseline.CONSUMERS))
    parser.add_argument("--nats", required=True, help="server URL(s), comma-separated")
    args = parser.parse_args()
    uvloop.run(serve(args.service, args.nats.split(",")))  # as `faststream run` does when uvloop is installed


if __name__ == "__main__":
    main()
