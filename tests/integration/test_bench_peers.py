"""The bench's other systems: the FastStream peer, and flowrun and the baseline on a 3-node cluster (R3).

A ratio against a peer that double-charges, or an "R3" run that is really R1, would compare different work:
the peer must keep the books through redeliveries, and the cluster mode must really replicate.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import orjson
import pytest
from nats.js import JetStreamContext

from bench.__main__ import _prepare
from bench.harness import system
from bench.load import CORRELATION, INITIAL_STOCK, PRODUCT, Watcher, closed_loop, read_bucket, verify

ORDERS = 150


async def _run_orders(js: JetStreamContext, n: int) -> list[str]:
    """n orders through the system; every one terminal, or the test fails."""
    watcher = Watcher()
    await watcher.start(js)
    try:
        ids = (await closed_loop(js, n)).ids
        assert await watcher.wait(ids, within=60), f"{len(ids) - len(watcher.done)} orders never finished"
        return ids
    finally:
        await watcher.stop()


async def _republish(js: JetStreamContext, subject: str, payload: dict) -> None:
    """The same event again under a new message id: the stream keeps it, so the service sees it twice."""
    headers = {"Nats-Msg-Id": f"again.{payload['orderId']}.{subject}", CORRELATION: payload["orderId"]}
    await js.publish(subject, orjson.dumps(payload), headers=headers)


async def _settled(js: JetStreamContext, stream: str, consumers: int, within: float = 20.0) -> None:
    """Wait until every consumer on `stream` has nothing pending and nothing unacked."""
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        infos = await js.consumers_info(stream)
        if len(infos) >= consumers and all(i.num_pending == 0 and i.num_ack_pending == 0 for i in infos):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{stream}: consumers still busy after {within}s")


async def test_faststream_peer_keeps_the_books_through_redeliveries(tmp_path: Path) -> None:
    async with system("faststream", tmp_path, lambda url: _prepare("faststream", url, 1)) as dep:
        nc = await nats.connect(dep.url)
        try:
            js = nc.jetstream()
            ids = await _run_orders(js, ORDERS)
            books = await verify(js, ids, dlq=False)
            assert books["ok"], books
            assert books["states"] == {"completed": ORDERS}

            sagas = await read_bucket(js, "ORDER_SAGA")
            again = ids[:20]
            for order_id in again:  # inventory and payment see their input twice
                order = {k: sagas[order_id][k] for k in ("orderId", "customerId", "items", "total")}
                await _republish(js, "orders.created", order)
                await _republish(js, "orders.payment.requested", order)
            await _settled(js, "ORDERS", consumers=7)

            payments = (await js.stream_info("KV_PAYMENTS")).state
            assert payments.last_seq == ORDERS, "a redelivered request charged again"
            stock = (await read_bucket(js, "INVENTORY"))[PRODUCT]
            assert stock == {"available": INITIAL_STOCK - ORDERS, "reserved": ORDERS}, "stock taken twice"
            events = (await js.stream_info("ORDERS", subjects_filter="orders.>")).state.subjects or {}
            assert events["orders.payment.completed"] == ORDERS  # answered again, deduplicated by Nats-Msg-Id
            assert events["orders.inventory.reserved"] == ORDERS
            assert all(s["state"] == "completed" for s in (await read_bucket(js, "ORDER_SAGA")).values())
        finally:
            await nc.close()


@pytest.mark.parametrize("kind", ["flowrun", "baseline"])
async def test_r3_runs_on_a_cluster_with_three_replicas(kind: str, tmp_path: Path) -> None:
    async with system(kind, tmp_path, lambda url: _prepare(kind, url, 3), replicas=3) as dep:
        servers = dep.url.split(",")
        assert len(servers) == 3 and len(dep.server_pids) == 3
        nc = await nats.connect(servers)
        try:
            js = nc.jetstream()
            for stream in ("ORDERS", "KV_ORDER_SAGA", "KV_INVENTORY", "KV_PAYMENTS"):
                info = await js.stream_info(stream)
                assert info.config.num_replicas == 3, stream
                assert info.cluster is not None and len(info.cluster.replicas or []) == 2, stream
            ids = await _run_orders(js, ORDERS)
            books = await verify(js, ids, dlq=kind == "flowrun")
            assert books["ok"], books
        finally:
            await nc.close()
