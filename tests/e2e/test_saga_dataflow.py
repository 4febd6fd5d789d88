"""Saga data flow and start safety on the real system: gathered step outputs, instances that cannot get stuck."""

from __future__ import annotations

import asyncio
import os
import uuid

import nats
import pytest

from handlers.orders import accept
from runner import codec
from runner.config.loader import load_or_raise
from runner.engine.intake import Intake, StartRejected, start_validator
from runner.jetstream.embedded import EmbeddedServer
from runner.serve.service import Runtime
from tests.conftest import ROOT, SEED_ORDER, System, start_system

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_the_payment_id_is_gathered_into_the_order(system: System) -> None:
    _, body = await system.post_order(SEED_ORDER)
    order_id = body["orderId"]
    order = await system.wait_terminal(order_id)
    assert order["status"] == "completed"
    assert order["paymentId"].startswith("PAY-")  # the payment step's output, on the order itself

    record, _ = await system.runtime.buckets["ORDER_SAGA"].get(order_id)
    assert record is not None and record["gathered"] == {"paymentId": order["paymentId"]}
    payment, _ = await system.runtime.buckets["PAYMENTS"].get(order_id)
    assert payment is not None and payment["paymentId"] == order["paymentId"]
    [requested] = [e["data"] for e in record["history"] if e["subject"] == "orders.payment.requested"]
    assert requested == {"orderId": order_id, "customerId": "CUST123", "total": "1059.97"}  # picked, no items


async def test_a_start_event_the_saga_dead_letters_ends_the_instance_failed(system: System) -> None:
    # An API (this one's schema check off, as in an older version) stores an instance whose start payload
    # breaks messages: (a total with three decimals). Both consumers of orders.created dead-letter it.
    runtime = system.runtime
    assert runtime.publisher is not None
    intake = Intake(runtime.machines["order"], runtime.buckets["ORDER_SAGA"], runtime.publisher)
    key = uuid.uuid4().hex
    started = await intake.start(key, {**accept(SEED_ORDER, key), "total": "1059.970"})
    assert started.record["state"] == "pending"

    order = await system.wait_terminal(key)
    assert order["status"] == "failed"
    assert order["reason"].startswith("start rejected: schema violation at total:")
    assert await system.stock("LAPTOP-001") == {"productId": "LAPTOP-001", "available": 50, "reserved": 0}
    record, _ = await runtime.buckets["ORDER_SAGA"].get(key)
    assert record is not None
    assert [e["subject"] for e in record["history"]] == [
        "orders.created",
        "rejected",
        "orders.inventory.release",  # undone like a timeout: another consumer might have reserved
        "orders.inventory.released",
    ]


async def test_a_start_payload_that_breaks_messages_is_refused_before_anything_is_stored(system: System) -> None:
    runtime = system.runtime
    assert runtime.publisher is not None
    saga = runtime.config.sagas["order"]
    intake = Intake(
        runtime.machines["order"],
        runtime.buckets["ORDER_SAGA"],
        runtime.publisher,
        validator=start_validator(runtime.config, saga),
    )
    key = uuid.uuid4().hex
    with pytest.raises(StartRejected, match=r"orders\.created payload fails its schema at total"):
        await intake.start(key, {**accept(SEED_ORDER, key), "total": "1059.970"})
    assert await runtime.buckets["ORDER_SAGA"].get(key) == (None, 0)
    started = await intake.start(key, accept(SEED_ORDER, key))  # a valid one goes through the same intake
    assert started.record["state"] == "pending"
    assert (await system.wait_terminal(key))["status"] == "completed"


async def test_an_instance_whose_start_event_is_lost_still_times_out(nats_server: EmbeddedServer) -> None:
    # The API arms the instance's timer with the instance, before its start event: even a start event
    # nobody ever consumes (deleted here) cannot leave the order pending forever.
    env = {"INVENTORY_TIMEOUT": "1s", "COMPENSATION_TIMEOUT": "10s"}
    config = load_or_raise(ROOT, {**os.environ, **env})
    api_only = Runtime(config, [], nats_server.url)  # provisions, runs no consumer
    await api_only.start()
    try:
        assert api_only.publisher is not None
        intake = Intake(api_only.machines["order"], api_only.buckets["ORDER_SAGA"], api_only.publisher)
        key = uuid.uuid4().hex
        await intake.start(key, accept(SEED_ORDER, key))
    finally:
        await api_only.stop()
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        start_event = await js.get_last_msg("ORDERS", "orders.created")
        assert codec.loads(start_event.data)["orderId"] == key
        assert await js.delete_msg("ORDERS", start_event.seq)
    finally:
        await nc.close()
    await asyncio.sleep(1.2)  # past the pending state's timeout while nothing runs

    system = await start_system(nats_server, env=env)
    try:
        order = await system.wait_terminal(key)
        assert order["status"] == "cancelled" and order["reason"] == "inventory did not answer"
    finally:
        await system.http.close()
        await system.runtime.stop()
