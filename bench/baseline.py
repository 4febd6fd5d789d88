"""The hand-written baseline: the order saga's five hops in plain nats-py, as a strong engineer would.

Same subjects, payloads, consumer settings and ack discipline as flowrun (effects stored and outputs
published — each with a `Nats-Msg-Id` — before the ack), three processes. What makes it fast:

* a continuous pull (requests kept outstanding, like nats.go's `Consume()`), not a `fetch()` loop;
* several batches in flight per process, each batch's effects pipelined;
* KV writes as `publish_async` with `Nats-Expected-Last-Subject-Sequence` (CAS without a round trip
  per write), outputs as `publish_async`, all futures awaited together before acking;
* the hot stock key group-committed: one CAS write per product per batch, under a lock, with the
  revision cached;
* the order data cached between hops (bounded: dropped when the order is terminal).

What it leaves out, and flowrun pays for: saga timeouts (timer messages), event history in the
order record, crash-safe multi-product reservations (the baseline claims the reservation record and
then writes stock; a crash in between loses that decrement), schema checks of consumed messages,
dead-lettering and compensation. It is therefore an upper bound for the same hops, not a feature-equivalent service.

The order process can also serve flowrun's order API (bench/baseline_http.py, `--http-port`): it
stores the instance with a create (compare-and-set on an absent key) and publishes `orders.created`,
both pipelined, and answers 202 once both are acknowledged; its saga consumer then finds the order in
its cache. Every process runs on uvloop and with the garbage collector set as flowrun's are
(runner/serve/heap.py).

Run: `python -m bench.baseline {order|inventory|payment} --nats URL [--http-port N]` (prints "running on"
when ready).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import signal
import sys
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import nats
import orjson
import uvloop
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import APIError, KeyNotFoundError
from nats.js.kv import KeyValue

from bench.baseline_http import serve_http

STREAM = "ORDERS"
BUCKETS = ("ORDER_SAGA", "INVENTORY", "RESERVATIONS", "PAYMENTS")
CONSUMERS: dict[str, tuple[str, list[str], int]] = {  # service → durable, filters, max_deliver
    "order": (
        "order-service",
        [
            "orders.created",
            "orders.inventory.reserved",
            "orders.inventory.failed",
            "orders.payment.completed",
            "orders.payment.failed",
        ],
        13,
    ),
    "inventory": ("inventory-service", ["orders.created"], 23),
    "payment": ("payment-service", ["orders.payment.requested"], 23),
}
BATCH, MAX_INFLIGHT = 128, 512  # as flows/*.yaml
DECLINE_OVER = Decimal("5000.00")
WRONG_LAST_SEQ = (10071, 10164)
CORRELATION = "Flowrun-Correlation-Id"  # the same header (and bytes) flowrun sends

Out = tuple[str, dict[str, Any]]  # (subject, payload) to publish for a message


async def provision(
    js: JetStreamContext, stock: dict[str, dict[str, int]], replicas: int = 1, consumers: bool = True
) -> None:
    """The baseline's own stream, buckets and consumers (the same settings as streams.yaml/flows/), each with
    `replicas` copies. consumers=False: the FastStream peer declares its own."""
    await js.add_stream(
        api.StreamConfig(
            name=STREAM,
            subjects=["orders.>", "payment.>", "inventory.>"],
            storage=api.StorageType.FILE,
            max_msgs=1_000_000,
            max_bytes=1 << 30,
            max_age=30 * 86400,
            discard=api.DiscardPolicy.OLD,
            duplicate_window=120,
            num_replicas=replicas,
        )
    )
    for bucket in BUCKETS:
        await js.create_key_value(
            api.KeyValueConfig(bucket=bucket, history=1, storage=api.StorageType.FILE, direct=True, replicas=replicas)
        )
    for durable, filters, max_deliver in CONSUMERS.values() if consumers else ():
        await js.add_consumer(
            STREAM,
            api.ConsumerConfig(
                durable_name=durable,
                deliver_policy=api.DeliverPolicy.ALL,
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=30,
                max_deliver=max_deliver,
                filter_subjects=filters,
                max_ack_pending=2048,
                max_waiting=512,
            ),
        )
    kv = await js.key_value("INVENTORY")
    for product, value in stock.items():
        await kv.put(product, orjson.dumps(value))


class Puller:
    """Continuous pull: keep up to `max_inflight` messages requested (nats.go's `Consume()`).

    Data messages arrive with their stream subject, so they cannot be matched to the request that
    asked for them: count them globally, and on a request's end (408/409 status) subtract what it
    still owed, from its `Nats-Pending-Messages` header.
    """

    def __init__(self, nc: Client, durable: str, batch: int = BATCH, max_inflight: int = MAX_INFLIGHT):
        self.nc, self.batch, self.max_inflight = nc, batch, max_inflight
        self.api = f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{durable}"
        self.owed = self.busy = 0
        self.queue: deque[Msg] = deque()
        self.ready = asyncio.Event()
        self.inbox = ""
        self.stopping = False

    async def start(self) -> None:
        self.inbox = self.nc.new_inbox()
        await self.nc.subscribe(self.inbox, cb=self._on_msg)
        await self._top_up()

    async def _on_msg(self, msg: Msg) -> None:
        headers = msg.headers
        if not msg.data and headers and "Status" in headers:
            if headers["Status"] != "100":  # 408/409: a request is over; drop what it still owed
                owed = int(headers.get("Nats-Pending-Messages", self.batch))
                self.owed = max(0, self.owed - owed)
                await self._top_up()
            return
        self.owed = max(0, self.owed - 1)
        self.queue.append(msg)
        self.ready.set()

    async def _top_up(self) -> None:
        room = self.max_inflight - self.owed - len(self.queue) - self.busy
        while not self.stopping and room >= self.batch:
            self.owed += self.batch
            room -= self.batch
            request = json.dumps({"batch": self.batch, "expires": 30_000_000_000}).encode()
            await self.nc.publish(self.api, request, reply=self.inbox)

    async def take(self, wait: float) -> list[Msg]:
        if not self.queue:
            self.ready.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ready.wait(), wait)
        out = [self.queue.popleft() for _ in range(min(self.batch, len(self.queue)))]
        self.busy += len(out)
        return out

    async def done(self, n: int) -> None:
        self.busy -= n
        await self._top_up()


def _is_conflict(exc: BaseException) -> bool:
    return isinstance(exc, APIError) and exc.err_code in WRONG_LAST_SEQ


@dataclass
class Order:
    data: dict[str, Any]
    revision: asyncio.Future[int]


class Service:
    """One service process: pull, process batches concurrently, publish outputs, then ack."""

    def __init__(self, name: str, nc: Client, js: JetStreamContext):
        self.name, self.nc, self.js = name, nc, js
        self.puller = Puller(nc, CONSUMERS[name][0])
        self.handle: Callable[[list[tuple[Msg, dict[str, Any]]]], Awaitable[list[list[Out]]]] = getattr(
            self, f"_{name}"
        )
        self.orders: dict[str, Order] = {}
        self.locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.stock: dict[str, tuple[dict[str, Any], int]] = {}
        self.kvs: dict[str, KeyValue] = {}

    # --- effects ---

    async def kv_write(self, bucket: str, key: str, value: dict[str, Any], last: int) -> asyncio.Future[Any]:
        """A compare-and-set write, pipelined: the future fails with a conflict if `last` is stale."""
        headers = {"Nats-Expected-Last-Subject-Sequence": str(last)}
        return await self.js.publish_async(f"$KV.{bucket}.{key}", orjson.dumps(value), headers=headers)

    async def kv_get(self, bucket: str, key: str) -> tuple[dict[str, Any] | None, int]:
        kv = self.kvs.get(bucket) or self.kvs.setdefault(bucket, await self.js.key_value(bucket))
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            return None, 0
        return orjson.loads(entry.value) if entry.value else None, entry.revision or 0

    async def start_order(self, order: dict[str, Any]) -> None:
        """The API's write: create the instance record and publish `orders.created`, pipelined; return once
        both are stored. The record's revision is cached first, so the consumer of that event has nothing to do."""
        order_id = order["orderId"]
        revision = asyncio.get_running_loop().create_future()
        self.orders[order_id] = Order(order, revision)
        try:
            record = {**order, "state": "pending", "updated": time.time()}
            created = await self.kv_write("ORDER_SAGA", order_id, record, 0)
            headers = {"Nats-Msg-Id": f"{order_id}.orders.created", CORRELATION: order_id}
            published = await self.js.publish_async("orders.created", orjson.dumps(order), headers=headers)
            ack, _ = await asyncio.gather(created, published)
        except BaseException:
            self.orders.pop(order_id, None)
            revision.cancel()
            raise
        revision.set_result(ack.seq)

    # --- the three services: a batch of (msg, payload) in, per message what to publish out ---

    async def _order(self, batch: list[tuple[Msg, dict[str, Any]]]) -> list[list[Out]]:
        """Saga owner. Messages of one order are applied in stream order; orders concurrently."""
        by_key: dict[str, list[int]] = defaultdict(list)
        for i, (_, data) in enumerate(batch):
            by_key[data["orderId"]].append(i)
        outs: list[list[Out]] = [[] for _ in batch]

        async def one_order(indices: list[int]) -> None:
            for i in indices:
                outs[i] = await self._order_event(batch[i][0].subject, batch[i][1])

        await asyncio.gather(*(one_order(ix) for ix in by_key.values()))
        return outs

    async def _order_event(self, subject: str, data: dict[str, Any]) -> list[Out]:
        order_id = data["orderId"]
        if subject == "orders.created":
            if order_id not in self.orders:
                revision = asyncio.get_running_loop().create_future()
                self.orders[order_id] = Order(data, revision)
                record = {**data, "state": "pending", "updated": time.time()}
                try:
                    revision.set_result((await (await self.kv_write("ORDER_SAGA", order_id, record, 0))).seq)
                except Exception as exc:
                    del self.orders[order_id]
                    revision.cancel()
                    if not _is_conflict(exc):  # a conflict: created before (redelivery)
                        raise
            return []
        order = self.orders.get(order_id)
        if subject == "orders.inventory.reserved":
            # The same durable transition flowrun makes: pending → awaiting_payment, compare-and-set.
            if order is None or order.revision.cancelled():
                record, revision = await self.kv_get("ORDER_SAGA", order_id)
                if record is None:
                    raise RuntimeError(f"reserved before created: {order_id}")
                base = {k: record[k] for k in ("orderId", "customerId", "items", "total")}
            else:
                base, revision = order.data, await order.revision
            written = asyncio.get_running_loop().create_future()
            self.orders[order_id] = Order(base, written)
            try:
                ack = await (
                    await self.kv_write(
                        "ORDER_SAGA", order_id, {**base, "state": "awaiting_payment", "updated": time.time()}, revision
                    )
                )
                written.set_result(ack.seq)
            except Exception as exc:
                written.cancel()
                if not _is_conflict(exc):  # a conflict: a redelivery already moved it on
                    raise
            return [("orders.payment.requested", base)]
        state = "completed" if subject == "orders.payment.completed" else "cancelled"
        for _ in range(10):
            if order is not None and not order.revision.cancelled():
                record, revision = {**order.data, "state": state}, await order.revision
            else:
                current, revision = await self.kv_get("ORDER_SAGA", order_id)
                if current is None or current["state"] in ("completed", "cancelled"):
                    break
                record = {**current, "state": state}
            record["updated"] = time.time()
            try:
                await (await self.kv_write("ORDER_SAGA", order_id, record, revision))
                break
            except Exception as exc:
                if not _is_conflict(exc):
                    raise
                order = None  # re-read
        self.orders.pop(order_id, None)
        return []

    async def _inventory(self, batch: list[tuple[Msg, dict[str, Any]]]) -> list[list[Out]]:
        """Claim each order's reservation record, then one CAS write per product for the batch."""
        wants = []
        for _, data in batch:
            qty: dict[str, int] = defaultdict(int)
            for item in data["items"]:
                qty[item["productId"]] += int(item["quantity"])
            wants.append(dict(qty))
        claims = [
            await self.kv_write("RESERVATIONS", d["orderId"], {"state": "reserved", "items": q}, 0)
            for (_, d), q in zip(batch, wants, strict=True)
        ]
        claimed = await asyncio.gather(*claims, return_exceptions=True)
        outs: list[list[Out] | None] = [None] * len(batch)
        fresh: list[int] = []
        for i, result in enumerate(claimed):
            if not isinstance(result, BaseException):
                fresh.append(i)
            elif _is_conflict(result):  # a redelivery: answer as before, touch no stock
                record, _ = await self.kv_get("RESERVATIONS", batch[i][1]["orderId"])
                outs[i] = self._reservation_out(batch[i][1], record or {})
            else:
                raise result
        failed: dict[int, str] = {}
        for product in sorted({p for i in fresh for p in wants[i]}):
            takers = [i for i in fresh if product in wants[i] and i not in failed]
            async with self.locks[product]:
                failed.update(await self._take_stock(product, [(i, wants[i][product]) for i in takers]))
        for i, reason in failed.items():  # rare: record the failure (a full order needs nothing undone here)
            record = {"state": "failed", "items": wants[i], "reason": reason}
            await (await self.kv_write("RESERVATIONS", batch[i][1]["orderId"], record, claimed[i].seq))
        for i in fresh:
            state = {"state": "failed", "reason": failed[i]} if i in failed else {"state": "reserved"}
            outs[i] = self._reservation_out(batch[i][1], state)
        return [o or [] for o in outs]

    @staticmethod
    def _reservation_out(data: dict[str, Any], record: dict[str, Any]) -> list[Out]:
        if record.get("state") == "reserved":
            return [("orders.inventory.reserved", {"orderId": data["orderId"], "items": data["items"]})]
        reason = record.get("reason") or "insufficient stock"
        return [("orders.inventory.failed", {"orderId": data["orderId"], "reason": reason})]

    async def _take_stock(self, product: str, takers: list[tuple[int, int]]) -> dict[int, str]:
        """Group commit on a hot key: apply every taker to the cached value, one CAS write."""
        for _ in range(50):
            cached = self.stock.get(product)
            value, revision = cached if cached else await self.kv_get("INVENTORY", product)
            failed: dict[int, str] = {}
            if value is None:
                return {i: f"unknown product {product}" for i, _ in takers}
            available, reserved = value["available"], value["reserved"]
            for i, qty in takers:
                if qty > available:
                    failed[i] = f"insufficient stock for {product}"
                else:
                    available, reserved = available - qty, reserved + qty
            new = {**value, "available": available, "reserved": reserved}
            try:
                ack = await (await self.kv_write("INVENTORY", product, new, revision))
            except Exception as exc:
                self.stock.pop(product, None)
                if not _is_conflict(exc):
                    raise
                continue
            self.stock[product] = (new, ack.seq)
            return failed
        raise RuntimeError(f"INVENTORY/{product}: too many conflicts")

    async def _payment(self, batch: list[tuple[Msg, dict[str, Any]]]) -> list[list[Out]]:
        """Charge once: the PAYMENTS record is created only if absent; a redelivery reads it back."""
        records = []
        for _, data in batch:
            total = data["total"]  # a two-place decimal string, stored as it came
            if Decimal(total) > DECLINE_OVER:
                records.append({"status": "declined", "amount": total, "reason": "payment declined"})
            else:
                records.append({"status": "charged", "amount": total})
        writes = [await self.kv_write("PAYMENTS", d["orderId"], r, 0) for (_, d), r in zip(batch, records, strict=True)]
        results = await asyncio.gather(*writes, return_exceptions=True)
        outs: list[list[Out]] = []
        for (_, data), record, result in zip(batch, records, results, strict=True):
            if isinstance(result, BaseException):
                if not _is_conflict(result):
                    raise result
                record = (await self.kv_get("PAYMENTS", data["orderId"]))[0] or record
            if record["status"] == "charged":
                outs.append([("orders.payment.completed", {"orderId": data["orderId"], "amount": record["amount"]})])
            else:
                outs.append([("orders.payment.failed", {"orderId": data["orderId"], "reason": record["reason"]})])
        return outs

    # --- the loop ---

    async def work(self) -> None:
        while not self.puller.stopping:
            msgs = await self.puller.take(0.5)
            if not msgs:
                continue
            try:
                await self._batch(msgs)
            finally:
                await self.puller.done(len(msgs))

    async def _batch(self, msgs: list[Msg]) -> None:
        try:
            outs = await self.handle([(m, orjson.loads(m.data)) for m in msgs])
        except Exception as exc:  # effects are idempotent: the whole batch comes back
            print(f"baseline {self.name}: batch failed, retrying: {exc!r}", file=sys.stderr)
            for m in msgs:
                await m.nak(delay=0.1)
            return
        futures = []
        for out in outs:
            for subject, payload in out:
                headers = {"Nats-Msg-Id": f"{payload['orderId']}.{subject}", CORRELATION: payload["orderId"]}
                futures.append(await self.js.publish_async(subject, orjson.dumps(payload), headers=headers))
        results = await asyncio.gather(*futures, return_exceptions=True)
        if any(isinstance(r, BaseException) for r in results):
            for m in msgs:
                await m.nak(delay=0.1)
            return
        for m in msgs:
            await m.ack()


async def serve(name: str, url: str, http_port: int | None = None) -> None:
    nc = await nats.connect(url.split(","), name=f"baseline:{name}")  # a cluster: every node
    js = nc.jetstream(publish_async_max_pending=8192)
    service = Service(name, nc, js)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await service.puller.start()
    workers = [asyncio.create_task(service.work()) for _ in range(MAX_INFLIGHT // BATCH)]
    http = await serve_http(service.start_order, http_port) if http_port is not None else None
    # The collector settings flowrun uses (runner/serve/heap.py): whoever profiles this finds the collector too.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    print(f"baseline {name} running on {url}", file=sys.stderr, flush=True)
    await stop.wait()
    if http is not None:
        await http.cleanup()
    service.puller.stopping = True
    await asyncio.wait(workers, timeout=10)
    await nc.drain()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("service", choices=sorted(CONSUMERS))
    parser.add_argument("--nats", required=True)
    parser.add_argument("--http-port", type=int, default=None, help="order only: serve POST /api/orders here")
    args = parser.parse_args()
    if args.http_port is not None and args.service != "order":
        parser.error("--http-port is for the order service")
    uvloop.run(serve(args.service, args.nats, args.http_port))


if __name__ == "__main__":
    main()
