"""The API's write path: client retries are idempotent, and early events wait for their saga."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import nats
import pytest

from runner import codec
from runner.engine import headers
from runner.jetstream.embedded import EmbeddedServer
from tests.conftest import SEED_ORDER, System, start_system

pytestmark = pytest.mark.asyncio(loop_scope="session")


def mouse_order(order_id: str, quantity: int) -> dict:
    """An orders.created payload as the API would publish it."""
    return {
        "orderId": order_id,
        "customerId": "C1",
        "items": [{"productId": "MOUSE-001", "quantity": quantity, "price": "29.99"}],
        "total": str(Decimal("29.99") * quantity),
    }


async def _post(system: System, body: object, key: str) -> tuple[int, dict, dict]:
    async with system.http.post(f"{system.base}/api/orders", json=body, headers={"Idempotency-Key": key}) as resp:
        return resp.status, await resp.json(), dict(resp.headers)


async def test_a_retried_post_with_the_same_idempotency_key_returns_the_first_order(system: System) -> None:
    status, first, headers = await _post(system, SEED_ORDER, "client-retry-1")
    assert status == 202 and "Idempotent-Replayed" not in headers
    status, again, headers = await _post(system, SEED_ORDER, "client-retry-1")
    assert status == 202 and headers["Idempotent-Replayed"] == "true"
    assert again["orderId"] == first["orderId"]
    assert (await system.wait_terminal(first["orderId"]))["status"] == "completed"

    status, late, _ = await _post(system, SEED_ORDER, "client-retry-1")  # long after: still the same order
    assert status == 202 and late == {"orderId": first["orderId"], "status": "completed"}

    # one order, one charge, one unit of stock
    assert (await system.stock("LAPTOP-001"))["reserved"] == 1
    payments = await system.runtime.buckets["PAYMENTS"].get(first["orderId"])
    assert payments[0] is not None


async def test_an_idempotency_key_reused_for_another_request_is_refused(system: System) -> None:
    status, _, _ = await _post(system, SEED_ORDER, "client-retry-2")
    assert status == 202
    other = {**SEED_ORDER, "customerId": "SOMEONE-ELSE"}
    status, body, _ = await _post(system, other, "client-retry-2")
    assert status == 422 and body["field"] == "Idempotency-Key", body


async def test_a_malformed_idempotency_key_is_a_400(system: System) -> None:
    status, body, _ = await _post(system, SEED_ORDER, "x" * 300)
    assert status == 400 and body["field"] == "Idempotency-Key"


async def test_an_event_before_its_saga_started_waits_instead_of_dead_lettering(
    system: System, nats_server: EmbeddedServer
) -> None:
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    try:
        order_id = "early-bird-1"
        created = mouse_order(order_id, 1)
        # The inventory answer overtakes its own orders.created (retrying through an election, say).
        await js.publish(
            "orders.inventory.reserved",
            codec.dumps({"orderId": order_id, "items": created["items"]}),
            headers={"Nats-Msg-Id": f"{order_id}.orders.inventory.reserved"},
        )
        await asyncio.sleep(1.0)
        assert (await js.stream_info("DLQ")).state.messages == 0
        await js.publish("orders.created", codec.dumps(created), headers={"Nats-Msg-Id": f"{order_id}.orders.created"})
        assert (await system.wait_terminal(order_id))["status"] == "completed"
        assert (await js.stream_info("DLQ")).state.messages == 0
    finally:
        await nc.close()


async def test_a_start_event_stored_after_its_deadline_takes_no_effect(
    system: System, nats_server: EmbeddedServer
) -> None:
    # What a stalled server does with a write the API had given up on: it stores it late.
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    try:
        order_id = "given-up-1"
        created = mouse_order(order_id, 3)
        before = await system.stock("MOUSE-001")
        late = {"Nats-Msg-Id": f"{order_id}.orders.created.x", **headers.accept_by(time.time() - 1)}
        await js.publish("orders.created", codec.dumps(created), headers=late)
        for durable in ("inventory-service", "order-service"):  # both consumed and acked it
            for _ in range(50):
                info = await js.consumer_info("ORDERS", durable)
                if info.num_pending == 0 and info.num_ack_pending == 0:
                    break
                await asyncio.sleep(0.1)
            assert info.num_pending == 0 and info.num_ack_pending == 0
        assert await system.stock("MOUSE-001") == before
        status, _ = await system.get(f"/api/orders/{order_id}")
        assert status == 404
        assert (await js.stream_info("DLQ")).state.messages == 0
    finally:
        await nc.close()


async def test_an_oversized_event_is_refused_before_any_effect(system: System, nats_server: EmbeddedServer) -> None:
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    try:
        before = await system.stock("MOUSE-001")
        huge = {**mouse_order("huge-1", 1), "padding": "x" * 600_000}  # extra fields pass the schema; size not
        with pytest.raises(nats.js.errors.APIError, match=r"(?i)maximum"):
            await js.publish("orders.created", codec.dumps(huge), headers={"Nats-Msg-Id": "huge-1.orders.created"})
        await asyncio.sleep(1.0)
        assert await system.stock("MOUSE-001") == before
        status, _ = await system.get("/api/orders/huge-1")
        assert status == 404
        assert (await js.stream_info("DLQ")).state.messages == 0
    finally:
        await nc.close()


async def test_a_start_payload_its_consumers_would_reject_is_a_422_not_a_stuck_202(
    nats_server: EmbeddedServer, config_copy
) -> None:
    # The body passes the API's schema, but what `accept` makes of it fails the start event's own schema:
    # every consumer would dead-letter it. Refused before anything is stored.
    messages = config_copy / "flows" / "messages.yaml"
    messages.write_text(
        messages.read_text().replace('customerId: {$ref: "#/$defs/id"}', 'customerId: {pattern: "^VIP-"}', 1)
    )
    system = await start_system(nats_server, config_copy)
    try:
        status, body = await system.post_order(SEED_ORDER)
        assert status == 422 and "customerId" in body["error"], body
        js = system.runtime.js
        assert js is not None
        assert (await js.stream_info("KV_ORDER_SAGA")).state.messages == 0  # no instance
        assert (await js.stream_info("ORDERS")).state.messages == 0  # no start event
    finally:
        await system.http.close()
        await system.runtime.stop()
