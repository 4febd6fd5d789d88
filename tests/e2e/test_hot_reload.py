"""`flowrun up --watch` on a copy of the config: edits are applied live, broken ones leave the running config alone.

A real process against a real nats-server; the tests edit its YAML and handler code and watch what orders do.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from runner.jetstream.embedded import EmbeddedServer
from tests.conftest import SEED_ORDER, TERMINAL

pytestmark = pytest.mark.asyncio(loop_scope="session")

BIG_ORDER = {"customerId": "C9", "items": [{"productId": "LAPTOP-001", "quantity": 6, "price": 999.99}]}  # 5999.94


class Watched:
    """`flowrun up --watch --nats URL` on a config copy, with its log and its HTTP API."""

    def __init__(self, config_dir: Path, nats_url: str, log_path: Path):
        self.config_dir = config_dir
        self.log_path = log_path
        self._log = open(log_path, "wb")
        args = [sys.executable, "-m", "runner.cli", "up", "--watch", "--nats", nats_url, "--http-port", "0"]
        self.proc = subprocess.Popen(
            args, cwd=config_dir, stdout=self._log, stderr=self._log, env=os.environ.copy(), start_new_session=True
        )
        self.base = ""
        self.http: aiohttp.ClientSession | None = None

    def log(self) -> str:
        return self.log_path.read_text()

    async def wait_log(self, pattern: str, start: int = 0, within: float = 20.0) -> re.Match[str]:
        """The first match of `pattern` in the log after character `start`."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"flowrun exited ({self.proc.returncode}):\n{self.log()}"
            found = re.search(pattern, self.log()[start:])
            if found:
                return found
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {pattern!r} in the log within {within}s:\n{self.log()}")

    def edit(self, relative: str, old: str, new: str) -> int:
        """Replace `old` by `new` in a file of the config; returns the log's length before, to search after it."""
        mark = len(self.log())
        path = self.config_dir / relative
        text = path.read_text()
        assert old in text, f"{old!r} not in {relative}"
        path.write_text(text.replace(old, new, 1))
        return mark

    async def post(self, body: object) -> str:
        assert self.http is not None
        async with self.http.post(f"{self.base}/api/orders", json=body) as resp:
            assert resp.status == 202, await resp.text()
            return (await resp.json())["orderId"]

    async def get(self, path: str) -> object:
        assert self.http is not None
        async with self.http.get(f"{self.base}{path}") as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def terminal(self, order_id: str, within: float = 30.0) -> dict:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            order = await self.get(f"/api/orders/{order_id}")
            assert isinstance(order, dict)
            if order["status"] in TERMINAL:
                return order
            await asyncio.sleep(0.05)
        raise AssertionError(f"order {order_id} not terminal within {within}s:\n{self.log()}")

    async def order(self, body: object) -> dict:
        return await self.terminal(await self.post(body))

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


@pytest_asyncio.fixture(loop_scope="session")
async def watched(config_copy: Path, nats_server: EmbeddedServer, tmp_path: Path) -> AsyncIterator[Watched]:
    running = Watched(config_copy, nats_server.url, tmp_path / "flowrun.log")
    try:
        banner = await running.wait_log(r"HTTP\s+(http://[0-9.]+:[0-9]+)/api/orders")
        running.base = banner.group(1)
        async with aiohttp.ClientSession() as session:
            running.http = session
            yield running
    finally:
        running.stop()


async def test_a_broken_edit_is_reported_at_its_lines_and_orders_keep_flowing(watched: Watched) -> None:
    assert (await watched.order(SEED_ORDER))["status"] == "completed"

    mark = watched.edit("flows/payment.yaml", "        batch: 128", "        batch: 128: oops")
    line = await watched.wait_log(r".*config reload rejected.*", mark)
    assert "flows/payment.yaml:8:19: YAML syntax error" in line.group(0)
    assert (await watched.order(SEED_ORDER))["status"] == "completed"

    watched.edit("flows/payment.yaml", "        batch: 128: oops", "        batch: 128")
    mark = watched.edit("flows/payment.yaml", "max_attempts: 6", "max_attempts: many")
    watched.edit("flows/payment.yaml", "initial_delay: 1s\n", "initial_delay: fast\n")
    line = await watched.wait_log(r".*config reload rejected.*", mark)
    problems = line.group(0)  # every problem, each at its line
    assert "flows/payment.yaml:12:7: 'many' is not of type 'integer'" in problems
    assert "flows/payment.yaml:13:7: 'fast' is not a duration" in problems
    assert (await watched.order(SEED_ORDER))["status"] == "completed"
    assert "config reloaded" not in watched.log()


async def test_a_valid_edit_applies_live_without_losing_or_repeating_work(watched: Watched) -> None:
    in_flight = [await watched.post(SEED_ORDER) for _ in range(10)]
    mark = watched.edit("flows/payment.yaml", 'value: "${PAYMENT_LIMIT:-5000.00}"', 'value: "500.00"')
    watched.edit("flows/payment.yaml", "        ack_wait: 30s", "        ack_wait: 20s")  # re-binds payment-service
    in_flight += [await watched.post(SEED_ORDER) for _ in range(20)]
    reloaded = (await watched.wait_log(r".*config reloaded.*", mark)).group(0)
    assert "consumer payment/payment-service re-bound" in reloaded
    assert "service payment: " in reloaded and "settings" in reloaded

    declined = await watched.order(SEED_ORDER)  # 1059.97 is over the new limit
    assert declined["status"] == "cancelled"
    assert "exceeds limit 500.00" in declined["reason"]

    orders = [await watched.terminal(order_id) for order_id in in_flight]
    assert {o["status"] for o in orders} <= {"completed", "cancelled"}
    for order in orders:  # each event handled once: no event twice in any saga history
        events = await watched.get(f"/api/orders/{order['orderId']}/events")
        assert isinstance(events, list)
        subjects = [e["subject"] for e in events]
        assert len(subjects) == len(set(subjects)), subjects
        assert ("orders.payment.completed" in subjects) == (order["status"] == "completed")
    completed = sum(o["status"] == "completed" for o in orders)
    laptop, mouse = await watched.get("/api/inventory/LAPTOP-001"), await watched.get("/api/inventory/MOUSE-001")
    assert laptop == {"productId": "LAPTOP-001", "available": 50 - completed, "reserved": completed}
    assert mouse == {"productId": "MOUSE-001", "available": 200 - 2 * completed, "reserved": 2 * completed}


async def test_a_handler_code_change_is_picked_up(watched: Watched) -> None:
    before = await watched.order(BIG_ORDER)
    assert before["status"] == "cancelled" and before["reason"].startswith("payment declined: total 5999.94")

    mark = watched.edit("handlers/payment.py", "async def refund(", "async def refund(:")  # does not import
    rejected = (await watched.wait_log(r".*config reload rejected.*", mark)).group(0)
    assert "SyntaxError: invalid syntax (payment.py, line " in rejected
    still = await watched.order(BIG_ORDER)  # the running code stays
    assert still["status"] == "cancelled" and still["reason"].startswith("payment declined: total 5999.94")

    watched.edit("handlers/payment.py", "async def refund(:", "async def refund(")
    mark = watched.edit("handlers/payment.py", '"reason": f"payment declined: total', '"reason": f"over budget: total')
    reloaded = (await watched.wait_log(r".*config reloaded.*", mark)).group(0)
    assert "handler code reloaded" in reloaded
    assert f"HTTP of order restarted on {watched.base}" in reloaded  # same port: clients need no new address

    after = await watched.order(BIG_ORDER)
    assert after["status"] == "cancelled" and after["reason"].startswith("over budget: total 5999.94")
