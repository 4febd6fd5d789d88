"""The seed's order flow through the HTTP API, against a real nats-server."""

from __future__ import annotations

import asyncio
import copy

import pytest

from tests.conftest import SEED_ORDER, System

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_seed_order_completes_and_reserves_stock(system: System) -> None:
    status, body = await system.post_order(SEED_ORDER)
    assert status == 202
    order_id = body["orderId"]
    assert body["status"] == "pending"

    order = await system.wait_terminal(order_id)
    assert order["status"] == "completed"
    assert order["total"] == "1059.97"  # money: a decimal string, exact to the cent
    assert order["customerId"] == "CUST123"
    assert [i["productId"] for i in order["items"]] == ["LAPTOP-001", "MOUSE-001"]
    assert await system.stock("LAPTOP-001") == {"productId": "LAPTOP-001", "available": 49, "reserved": 1}
    assert await system.stock("MOUSE-001") == {"productId": "MOUSE-001", "available": 198, "reserved": 2}


async def test_location_header_points_at_the_order(system: System) -> None:
    async with system.http.post(f"{system.base}/api/orders", json=SEED_ORDER) as resp:
        assert resp.status == 202
        location = resp.headers["Location"]
        order_id = (await resp.json())["orderId"]
    assert location == f"/api/orders/{order_id}"
    status, body = await system.get(location)  # readable at once, before the saga finishes
    assert status == 200 and body["orderId"] == order_id


async def test_events_are_the_order_history_oldest_first(system: System) -> None:
    _, body = await system.post_order(SEED_ORDER)
    await system.wait_terminal(body["orderId"])
    status, events = await system.get(f"/api/orders/{body['orderId']}/events")
    assert status == 200
    assert [e["subject"] for e in events] == [
        "orders.created",
        "orders.inventory.reserved",
        "orders.payment.requested",
        "orders.payment.completed",
    ]
    assert all(e["data"]["orderId"] == body["orderId"] for e in events)
    times = [e["time"] for e in events]
    assert times == sorted(times)


async def test_unknown_product_cancels_the_order(system: System) -> None:
    order = {"customerId": "C1", "items": [{"productId": "GHOST-404", "quantity": 1, "price": 10}]}
    _, body = await system.post_order(order)
    result = await system.wait_terminal(body["orderId"])
    assert result["status"] == "cancelled"
    assert "unknown product GHOST-404" in result["reason"]
    assert (await system.stock("LAPTOP-001"))["available"] == 50


async def test_partial_stock_failure_reserves_nothing(system: System) -> None:
    order = {
        "customerId": "C1",
        "items": [
            {"productId": "LAPTOP-001", "quantity": 2, "price": 1},
            {"productId": "MOUSE-001", "quantity": 500, "price": 1},
        ],
    }
    _, body = await system.post_order(order)
    result = await system.wait_terminal(body["orderId"])
    assert result["status"] == "cancelled"
    assert "insufficient stock for MOUSE-001" in result["reason"]
    assert await system.stock("LAPTOP-001") == {"productId": "LAPTOP-001", "available": 50, "reserved": 0}
    assert await system.stock("MOUSE-001") == {"productId": "MOUSE-001", "available": 200, "reserved": 0}


async def test_declined_payment_cancels_and_returns_stock_exactly(system: System) -> None:
    order = {"customerId": "BIG", "items": [{"productId": "LAPTOP-001", "quantity": 6, "price": 999.99}]}
    _, body = await system.post_order(order)
    result = await system.wait_terminal(body["orderId"])
    assert result["status"] == "cancelled"
    assert "declined" in result["reason"]
    assert result["total"] == "5999.94"
    assert await system.stock("LAPTOP-001") == {"productId": "LAPTOP-001", "available": 50, "reserved": 0}
    _, events = await system.get(f"/api/orders/{body['orderId']}/events")
    subjects = [e["subject"] for e in events]
    assert subjects.count("orders.inventory.release") == 1
    assert subjects[-1] == "orders.inventory.released"


async def test_200_concurrent_orders_end_terminal_with_stock_conserved(system: System) -> None:
    one_laptop = {"customerId": "RUSH", "items": [{"productId": "LAPTOP-001", "quantity": 1, "price": 999.99}]}
    posted = await asyncio.gather(*(system.post_order(copy.deepcopy(one_laptop)) for _ in range(200)))
    assert all(status == 202 for status, _ in posted)
    results = await asyncio.gather(*(system.wait_terminal(b["orderId"], within=60) for _, b in posted))
    completed = sum(r["status"] == "completed" for r in results)
    cancelled = sum(r["status"] == "cancelled" for r in results)
    assert completed + cancelled == 200
    assert completed == 50  # exactly the stock there was: never oversold, never undersold
    stock = await system.stock("LAPTOP-001")
    assert stock == {"productId": "LAPTOP-001", "available": 0, "reserved": 50}


async def test_health_reports_ready_consumers(system: System) -> None:
    status, body = await system.get("/healthz")
    assert status == 200
    assert body["connected"] is True
    assert {"order/order-service", "inventory/inventory-service", "payment/payment-service"} <= set(body["consumers"])
    assert all(c["ready"] for c in body["consumers"].values())
    status, body = await system.get("/readyz")
    assert status == 200 and body["status"] == "ready", body


async def test_unknown_order_is_404_and_bad_id_is_400(system: System) -> None:
    status, body = await system.get("/api/orders/does-not-exist")
    assert status == 404 and "not found" in body["error"]
    status, body = await system.get("/api/orders/bad.id")
    assert status == 400
    status, _ = await system.get("/api/inventory/NOPE-1")
    assert status == 404
