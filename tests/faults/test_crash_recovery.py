"""kill -9 in the middle of the saga: every order still ends, and no effect happens twice."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.faults.ledger import audit, inject, order, wait_terminal

pytestmark = pytest.mark.asyncio(loop_scope="session")

STOCK = {"LAPTOP-001": 50, "MOUSE-001": 200}


def mixed_orders(n: int) -> list[dict]:
    """Mostly completable orders, some declined (over the payment limit), some for unknown products."""
    out = []
    for i in range(n):
        if i % 10 == 3:
            out.append(order("MOUSE-001", quantity=1, price="6000.00"))  # declined → compensation
        elif i % 10 == 7:
            out.append(order("GHOST-1"))
        else:
            out.append(order("MOUSE-001" if i % 2 else "LAPTOP-001", quantity=1))
    return out


async def test_kill_inventory_and_payment_mid_load(nats_server, js, spawn, fast_config: Path) -> None:
    url = nats_server.url
    spawn("order", url, fast_config)
    inventory = spawn("inventory", url, fast_config)
    payment = spawn("payment", url, fast_config)
    orders = mixed_orders(2500)
    await inject(js, orders[:2000])
    # Pull the plug while the inventory service holds delivered, unacknowledged messages.
    for _ in range(200):
        info = await js.consumer_info("ORDERS", "inventory-service")
        if info.num_ack_pending > 0 and info.num_pending > 0:
            break
        await asyncio.sleep(0.01)
    inventory.kill()
    payment.kill()
    await inject(js, orders[2000:])
    await asyncio.sleep(0.5)
    spawn("inventory", url, fast_config)
    spawn("payment", url, fast_config)

    result = await audit(js, orders, STOCK, within=90)
    print(result.line())
    assert result.lost == []
    assert result.duplicate_effects == []
    assert result.completed > 0 and result.cancelled > 0
    assert result.compensation_failed == 0
    assert result.completed + result.cancelled == len(orders)
    assert result.redeliveries > 0, "the kill should have interrupted in-flight messages"


@pytest.mark.parametrize("point", ["before-publish", "before-ack"])
async def test_order_service_crash_around_a_transition(nats_server, js, spawn, fast_config: Path, point: str) -> None:
    """Crash after saving a transition but before publishing its command (and after publishing, before
    the ack): the restarted service republishes from the saved instance and nothing gets stuck."""
    url = nats_server.url
    crashing = spawn("order", url, fast_config, env={"FLOWRUN_CRASH_AT": f"{point}:5"})
    spawn("inventory", url, fast_config)
    spawn("payment", url, fast_config)
    orders = [order("MOUSE-001") for _ in range(30)]
    await inject(js, orders)
    crashing.proc.wait(30)
    assert crashing.proc.returncode == 137, "the crash point was never reached"
    assert b"crash point" in crashing.log_path.read_bytes()
    spawn("order", url, fast_config)

    result = await audit(js, orders, STOCK, within=60)
    print(result.line())
    assert result.lost == []
    assert result.duplicate_effects == []
    assert result.completed == len(orders)
    assert result.redeliveries >= 1  # the crashed delivery did come back


async def test_graceful_shutdown_finishes_in_flight_and_exits_zero(nats_server, js, spawn, fast_config: Path) -> None:
    url = nats_server.url
    spawn("order", url, fast_config)
    spawn("payment", url, fast_config)
    inventory = spawn("inventory", url, fast_config)
    orders = [order("MOUSE-001") for _ in range(150)]
    await inject(js, orders)
    await asyncio.sleep(0.2)
    assert inventory.terminate(timeout=10) == 0
    assert b"Traceback" not in inventory.log_path.read_bytes()
    spawn("inventory", url, fast_config)
    records = await wait_terminal(js, [o["orderId"] for o in orders], within=60)
    assert all(r and r["state"] == "completed" for r in records.values())
