"""Two inventory processes share one durable consumer: the work is split, nothing reserved twice."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.faults.ledger import audit, inject, order

pytestmark = pytest.mark.asyncio(loop_scope="session")

STOCK = {"LAPTOP-001": 50, "MOUSE-001": 200}


def processed(log: Path) -> int:
    match = re.search(r"consumer stopped consumer=inventory/inventory-service processed=(\d+)", log.read_text())
    assert match, log.read_text()
    return int(match.group(1))


async def test_two_inventory_processes_share_the_work(nats_server, js, spawn) -> None:
    url = nats_server.url
    spawn("order", url, ROOT)
    spawn("payment", url, ROOT)
    first, second = spawn("inventory", url, ROOT), spawn("inventory", url, ROOT)
    # More demand than stock, so the two processes race for the same products.
    orders = [order("MOUSE-001" if i % 3 else "LAPTOP-001", quantity=1 + i % 2) for i in range(400)]
    await inject(js, orders)

    result = await audit(js, orders, STOCK, within=60)
    print(result.line())
    assert result.lost == []
    assert result.duplicate_effects == []  # stock conserved, each order reserved at most once
    assert result.completed > 0 and result.cancelled > 0

    assert first.terminate() == 0 and second.terminate() == 0
    a, b = processed(first.log_path), processed(second.log_path)
    assert a > 0 and b > 0, f"one process did all the work: {a} vs {b}"
    assert a + b >= len(orders)  # every orders.created was handled by one of them (plus releases)
