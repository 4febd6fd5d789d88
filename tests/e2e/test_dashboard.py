"""The dashboard at /ui/, seen by a real headless Chromium: an order shows up and reaches `completed`, a poison
message shows up as a dead letter, and replay is refused unless the admin token is set and given."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
import pytest_asyncio

from runner.jetstream.embedded import EmbeddedServer
from tests.conftest import System, start_system
from tests.e2e import chromium

pytestmark = pytest.mark.asyncio(loop_scope="session")

ORDER = {"customerId": "C1", "items": [{"productId": "LAPTOP-001", "quantity": 1, "price": 10}]}
TOKEN = "s3cret-admin-token"
PAGE_WITHIN = 45.0  # seconds for the page to show what the test waits for


class Rows(HTMLParser):
    """The attributes of every <tr> with the given class, the buttons' classes, the text."""

    def __init__(self, css_class: str):
        super().__init__()
        self.css_class = css_class
        self.rows: list[dict[str, str | None]] = []
        self.buttons: list[str] = []  # each <button>'s class
        self.texts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "tr" and self.css_class in (found.get("class") or "").split():
            self.rows.append(found)
        if tag == "button":
            self.buttons.append(found.get("class") or "")

    def handle_data(self, data: str) -> None:
        self.texts.append(data)


def rows(dom: str, css_class: str) -> Rows:
    parser = Rows(css_class)
    parser.feed(dom)
    return parser


async def page_until(url: str, css_class: str, wanted: dict[str, str]) -> Rows:
    """Load the page until a row of `css_class` carries every attribute in `wanted` (bounded in time)."""
    deadline = time.monotonic() + PAGE_WITHIN
    while True:
        dom = await chromium.dump_dom(url)
        found = rows(dom, css_class)
        if any(all(r.get(f"data-{k}") == v for k, v in wanted.items()) for r in found.rows):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no {css_class} row with {wanted} on the page; rows: {found.rows[:10]}")


async def second_order_is_sampled(system: System) -> None:
    """With the page open (the sampler runs), an order's settled messages and its latency reach the series."""
    status, body = await system.post_order(ORDER)
    assert status == 202, body
    await system.wait_terminal(body["orderId"])
    deadline = time.monotonic() + PAGE_WITHIN
    while True:
        status, live = await system.get("/ui/api/live")
        assert status == 200, live
        series = live["series"]
        if sum(p["settled"] for p in series) >= 5 and any(p["finished"] and p["latency_max"] > 0 for p in series):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the order never reached the throughput/latency series: {series[-10:]}")
        await asyncio.sleep(0.5)


@pytest_asyncio.fixture(loop_scope="session")
async def admin_system(nats_server: EmbeddedServer, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[System]:
    monkeypatch.setenv("FLOWRUN_ADMIN_TOKEN", TOKEN)
    system = await start_system(nats_server)
    try:
        yield system
    finally:
        await system.http.close()
        await system.runtime.stop()


async def test_an_order_reaches_completed_on_the_page(system: System) -> None:
    chromium.binary()
    status, body = await system.post_order(ORDER)
    assert status == 202, body
    order_id = body["orderId"]
    found = await page_until(f"{system.base}/ui/", "instance", {"key": order_id, "state": "completed"})
    text = " ".join(found.texts)
    for section in ("Saga order", "awaiting_payment", "order-service", "inventory-service", "payment-service"):
        assert section in text, f"{section!r} not on the page"
    await second_order_is_sampled(system)
    if os.environ.get("FLOWRUN_DASHBOARD_SCREENSHOT"):  # refresh docs/dashboard.png for the README
        await chromium.screenshot(f"{system.base}/ui/", Path(os.environ["FLOWRUN_DASHBOARD_SCREENSHOT"]))


async def test_a_poison_message_appears_as_a_dead_letter(system: System) -> None:
    chromium.binary()
    assert system.runtime.js is not None
    await system.runtime.js.publish("orders.created", b"{not json", headers={"Nats-Msg-Id": "dashboard-poison"})
    found = await page_until(f"{system.base}/ui/", "deadletter", {"subject": "orders.created"})
    assert "replay" not in found.buttons, "replay offered without an admin token"
    status, entries = await system.get("/ui/api/deadletters")
    assert status == 200
    first = entries["items"][0]
    async with system.http.post(f"{system.base}/ui/api/deadletters/{first['stream']}/{first['id']}/replay") as resp:
        assert resp.status == 403, "a dashboard without FLOWRUN_ADMIN_TOKEN must be read-only"


async def test_replay_needs_the_admin_token(admin_system: System) -> None:
    chromium.binary()
    assert admin_system.runtime.js is not None
    await admin_system.runtime.js.publish("orders.created", b"{not json", headers={"Nats-Msg-Id": "dashboard-poison"})
    found = await page_until(f"{admin_system.base}/ui/", "deadletter", {"subject": "orders.created"})
    assert "replay" in found.buttons, "no replay button with the admin token set"
    dead_id = found.rows[0]["data-id"]
    replay = f"{admin_system.base}/ui/api/deadletters/DLQ/{dead_id}/replay"
    async with admin_system.http.post(replay, headers={"X-Flowrun-Admin-Token": "wrong"}) as resp:
        assert resp.status == 401
        assert TOKEN not in await resp.text()
    async with admin_system.http.post(replay, headers={"X-Flowrun-Admin-Token": TOKEN}) as resp:
        assert resp.status == 200, await resp.text()
    status, entries = await admin_system.get("/ui/api/deadletters")
    assert status == 200
    assert any(str(e["id"]) == dead_id and e["replayed"] for e in entries["items"]), entries
