"""HTTP resources declared in YAML: lists, commands into running sagas, client-chosen ids, names from the YAML.

Everything runs against a real nats-server; the booking saga is declared only in a private config copy.
"""

from __future__ import annotations

import asyncio
import copy
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from runner.config.loader import load_or_raise
from runner.jetstream.embedded import EmbeddedServer
from runner.serve import listing
from runner.serve.service import Runtime, RuntimeOptions
from tests.conftest import ROOT, SEED_ORDER, System

pytestmark = pytest.mark.asyncio(loop_scope="session")

ONE_LAPTOP = {"customerId": "C1", "items": [{"productId": "LAPTOP-001", "quantity": 1, "price": 999.99}]}
TOO_MANY = {"customerId": "C2", "items": [{"productId": "LAPTOP-001", "quantity": 500, "price": 1}]}

BOOKINGS_STREAM = '  BOOKINGS: {subjects: ["bookings.>"]}\n'
BOOKING_FLOWS = """
services:
  booking:
    consumers:
      booking-service:
        stream: BOOKINGS
        filter_subjects: [bookings.requested, bookings.confirm.requested]
    http:
      resources:
        bookings:                      # no path:, no name: both derived (/api/bookings, "booking")
          saga: booking
          id: client
          view: bookingviews.view
          body_schema:
            type: object
            additionalProperties: false
            required: [bookingId, room]
            properties:
              bookingId: {type: string}
              room: {type: string, pattern: "^[0-9]{1,4}$"}
          commands:
            confirm: {event: bookings.confirm.requested}
sagas:
  booking:
    service: booking
    consumer: booking-service
    key: bookingId
    bucket: BOOKING_SAGA
    start: {on: bookings.requested, state: held}
    states:
      held:
        on:
          bookings.confirm.requested: {goto: confirmed}
      confirmed: {terminal: true}
kv:
  BOOKING_SAGA: {history: 3}           # superseded revisions stay in the stream: the list must skip them
"""
BOOKING_VIEW = """
def view(key, value):
    return {"booking": key, "room": value["room"], "status": value["status"]}
"""


@asynccontextmanager
async def running(server: EmbeddedServer, services: list[str], config_dir: Path = ROOT) -> AsyncIterator[System]:
    """Some of the config's services in this process, with an HTTP client on the first API."""
    config = load_or_raise(config_dir, dict(os.environ))
    runtime = Runtime(config, services, server.url, RuntimeOptions(http_port=0))
    await runtime.start()
    session = aiohttp.ClientSession()
    try:
        yield System(runtime, runtime.http_urls[0], session)
    finally:
        await session.close()
        await runtime.stop()


async def call(
    system: System, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any, Any]:
    async with system.http.request(method, system.base + path, json=body, headers=headers) as resp:
        return resp.status, await resp.json(), resp.headers


async def wait_status(system: System, path: str, status: str, within: float = 20.0) -> dict:
    deadline = time.monotonic() + within
    while True:
        code, body, _ = await call(system, "GET", path)
        if code == 200 and body["status"] == status:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} not {status} after {within}s: {code} {body}")
        await asyncio.sleep(0.05)


async def every_page(system: System, query: str, max_pages: int = 500) -> tuple[list[dict], int]:
    """All items of a listing, following cursors; and how many pages it took."""
    items: list[dict] = []
    cursor = None
    for pages in range(1, max_pages + 1):
        url = f"/api/orders?{query}" + (f"&cursor={cursor}" if cursor else "")
        code, body, _ = await call(system, "GET", url)
        assert code == 200, body
        items += body["items"]
        cursor = body["cursor"]
        if cursor is None:
            return items, pages
    raise AssertionError(f"listing {query} did not end within {max_pages} pages")


async def orders_one_after_another(system: System, bodies: list[dict]) -> list[dict]:
    """Each order ends before the next starts, so their last changes are in this order."""
    finished = []
    for body in bodies:
        _, created = await system.post_order(copy.deepcopy(body))
        finished.append(await system.wait_terminal(created["orderId"]))
    return finished


# --- GET <path>: the list ---


async def test_list_filters_by_state_newest_first_and_pages(system: System) -> None:
    orders = await orders_one_after_another(system, [ONE_LAPTOP, TOO_MANY, ONE_LAPTOP, ONE_LAPTOP, TOO_MANY])
    newest_first = [o["orderId"] for o in reversed(orders)]
    completed = [o["orderId"] for o in reversed(orders) if o["status"] == "completed"]
    assert len(completed) == 3

    code, body, _ = await call(system, "GET", "/api/orders")
    assert code == 200 and body["cursor"] is None
    assert [o["orderId"] for o in body["items"]] == newest_first
    assert body["items"][0] == orders[-1]  # each item is what GET of the one instance shows

    code, body, _ = await call(system, "GET", "/api/orders?state=completed")
    assert [o["orderId"] for o in body["items"]] == completed
    assert {o["status"] for o in body["items"]} == {"completed"}

    code, body, _ = await call(system, "GET", "/api/orders?state=cancelled&limit=1")
    assert len(body["items"]) == 1 and body["items"][0]["status"] == "cancelled" and body["cursor"]

    items, pages = await every_page(system, "limit=2")
    assert [o["orderId"] for o in items] == newest_first and pages == 3


async def test_a_page_that_hits_its_read_budget_is_short_but_continues(
    system: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    orders = await orders_one_after_another(system, [TOO_MANY, ONE_LAPTOP, ONE_LAPTOP, TOO_MANY, ONE_LAPTOP])
    monkeypatch.setattr(listing, "SCAN_BUDGET", 1)  # every request stops after one window of the walk
    items, pages = await every_page(system, "state=cancelled&limit=50")
    assert [o["orderId"] for o in items] == [o["orderId"] for o in reversed(orders) if o["status"] == "cancelled"]
    assert pages > 1  # the read budget, not the limit, ended the pages


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("limit=-1", "limit"),
        ("state=shipped", "state"),
        ("status=completed", "status"),
        ("cursor=not-a-cursor", "cursor"),
        ("cursor=YmVmb3JlOjA", "cursor"),  # well-formed base64 of "before:0": not a position this API hands out
        ("cursor=" + "A" * 200, "cursor"),
    ],
)
async def test_bad_list_queries_are_400_naming_the_parameter(system: System, query: str, parameter: str) -> None:
    code, body, _ = await call(system, "GET", f"/api/orders?{query}")
    assert code == 400 and body["field"] == parameter, body


async def test_limit_bounds_are_accepted(system: System) -> None:
    for limit in (1, listing.MAX_LIMIT):
        code, body, _ = await call(system, "GET", f"/api/orders?limit={limit}")
        assert code == 200 and body == {"items": [], "cursor": None}


# --- POST <path>/{id}/<command> ---


async def test_cancel_while_awaiting_payment_releases_stock(nats_server: EmbeddedServer) -> None:
    async with running(nats_server, ["order", "inventory"]) as system:  # no payment service: payment never answers
        _, created, _ = await call(system, "POST", "/api/orders", SEED_ORDER)
        order_id = created["orderId"]
        await wait_status(system, f"/api/orders/{order_id}", "awaiting_payment")
        assert (await system.stock("LAPTOP-001"))["reserved"] == 1

        code, body, headers = await call(
            system, "POST", f"/api/orders/{order_id}/cancel", headers={"Idempotency-Key": "cancel-1"}
        )
        assert code == 202 and body == {"orderId": order_id, "command": "cancel"}
        assert headers["Location"] == f"/api/orders/{order_id}"

        order = await wait_status(system, f"/api/orders/{order_id}", "cancelled")
        assert order["reason"] == "cancelled on request"
        assert await system.stock("LAPTOP-001") == {"productId": "LAPTOP-001", "available": 50, "reserved": 0}
        assert await system.stock("MOUSE-001") == {"productId": "MOUSE-001", "available": 200, "reserved": 0}
        _, events, _ = await call(system, "GET", f"/api/orders/{order_id}/events")
        assert "orders.cancel.requested" in [e["subject"] for e in events]

        # The same request again (a client retrying after a lost reply) is answered as it was the first time.
        code, _, headers = await call(
            system, "POST", f"/api/orders/{order_id}/cancel", headers={"Idempotency-Key": "cancel-1"}
        )
        assert code == 202 and headers["Idempotent-Replayed"] == "true"


async def test_cancel_in_a_terminal_state_is_409_naming_the_state(system: System) -> None:
    _, created = await system.post_order(ONE_LAPTOP)
    await system.wait_terminal(created["orderId"])
    before = (await system.runtime.js.stream_info("ORDERS")).state.messages

    code, body, _ = await call(system, "POST", f"/api/orders/{created['orderId']}/cancel")
    assert code == 409, body
    assert body["state"] == "completed" and body["allowed"] == []
    assert "is completed" in body["error"] and "cancel" in body["error"]
    assert (await system.runtime.js.stream_info("ORDERS")).state.messages == before  # nothing published
    assert (await system.stock("LAPTOP-001"))["reserved"] == 1  # the sale stands


async def test_unknown_command_and_unknown_order(system: System) -> None:
    _, created = await system.post_order(ONE_LAPTOP)
    code, body, _ = await call(system, "POST", f"/api/orders/{created['orderId']}/refund")
    assert code == 404 and "order has no command 'refund' (commands: cancel)" in body["error"]
    code, body, _ = await call(system, "POST", "/api/orders/no-such-order/cancel")
    assert code == 404 and body["error"] == "order no-such-order not found"


# --- names from the YAML ---


async def test_errors_use_the_declared_names(system: System) -> None:
    code, body, _ = await call(system, "GET", "/api/orders/missing-1")
    assert code == 404 and body["error"] == "order missing-1 not found"
    code, body, _ = await call(system, "GET", "/api/orders/bad.id")
    assert code == 400 and body["field"] == "orderId"
    code, body, _ = await call(system, "GET", "/api/inventory/NOPE-1")
    assert code == 404 and body["error"] == "inventory NOPE-1 not found"
    code, body, _ = await call(system, "GET", "/api/inventory/bad.id")
    assert code == 400 and body["field"] == "productId"
    code, body, _ = await call(system, "POST", "/api/orders", {**SEED_ORDER, "customerId": "a.b"})
    assert code == 422 and body["field"] == "customerId"
    assert body["error"] == "customerId is invalid: 1-64 letters, digits, '-' or '_' (no '.', '*', '>' or spaces)"


def booking_config(config_copy: Path) -> Path:
    streams = config_copy / "streams.yaml"
    text = streams.read_text()
    assert text.count("\nstreams:\n") == 1
    streams.write_text(text.replace("\nstreams:\n", "\nstreams:\n" + BOOKINGS_STREAM))
    (config_copy / "flows" / "booking.yaml").write_text(BOOKING_FLOWS)
    (config_copy / "bookingviews").mkdir()  # a package of its own: `handlers` is imported from the repo already
    (config_copy / "bookingviews" / "__init__.py").write_text(BOOKING_VIEW)
    return config_copy


async def test_client_chosen_ids_start_one_instance_and_names_come_from_the_yaml(
    nats_server: EmbeddedServer, config_copy: Path
) -> None:
    async with running(nats_server, ["booking"], booking_config(config_copy)) as system:
        js = system.runtime.js
        code, body, headers = await call(system, "POST", "/api/bookings", {"bookingId": "B-1", "room": "12"})
        assert code == 202 and body == {"bookingId": "B-1", "status": "held"}
        assert headers["Location"] == "/api/bookings/B-1"

        code, body, headers = await call(system, "POST", "/api/bookings", {"bookingId": "B-1", "room": "12"})
        assert code == 202 and body == {"bookingId": "B-1", "status": "held"}
        assert headers["Idempotent-Replayed"] == "true"
        assert (await js.stream_info("BOOKINGS")).state.messages == 1  # one start event: one saga

        code, body, _ = await call(system, "POST", "/api/bookings", {"bookingId": "B-1", "room": "13"})
        assert code == 409 and body["field"] == "bookingId" and "booking B-1 exists" in body["error"]

        errors = []
        for method, path, payload, status, field in [
            ("POST", "/api/bookings", {"room": "12"}, 422, "bookingId"),
            ("POST", "/api/bookings", {"bookingId": "a.b", "room": "12"}, 422, "bookingId"),
            ("POST", "/api/bookings", {"bookingId": "B-2", "room": "twelve"}, 422, "room"),
            ("GET", "/api/bookings/bad.id", None, 400, "bookingId"),
            ("GET", "/api/bookings/B-404", None, 404, None),
            ("POST", "/api/bookings/B-1/cancel", None, 404, None),
        ]:
            code, body, _ = await call(system, method, path, payload)
            assert code == status and body.get("field") == field, (path, body)
            errors.append(body["error"])
        assert errors[2] == "room must match the pattern ^[0-9]{1,4}$"  # no description: the pattern itself
        assert errors[4] == "booking B-404 not found"
        assert not any("order" in e.lower() for e in errors), errors

        code, body, _ = await call(system, "POST", "/api/bookings/B-1/confirm")
        assert code == 202
        assert await wait_status(system, "/api/bookings/B-1", "confirmed") == {
            "booking": "B-1",
            "room": "12",
            "status": "confirmed",
        }  # as the resource's view shapes it
        code, body, _ = await call(system, "POST", "/api/bookings/B-1/confirm", headers={"Idempotency-Key": "again"})
        assert code == 409 and body["state"] == "confirmed"

        await call(system, "POST", "/api/bookings", {"bookingId": "B-2", "room": "7"})
        code, body, _ = await call(system, "GET", "/api/bookings")
        assert code == 200 and body["cursor"] is None
        # B-1's older revisions are still in its stream (history 3); it is listed once, as it is now.
        assert [(b["booking"], b["status"]) for b in body["items"]] == [("B-2", "held"), ("B-1", "confirmed")]
