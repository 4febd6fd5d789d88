"""Duplicates within and beyond the dedup window, handlers slower than the ack wait, saga timeouts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from runner import codec
from tests.faults.conftest import chaos_calls, edit
from tests.faults.ledger import audit, dead_letters, get_record, inject, order, quiesce, wait_terminal

pytestmark = pytest.mark.asyncio(loop_scope="session")

STOCK = {"LAPTOP-001": 50, "MOUSE-001": 200}


async def stock(js, product: str) -> tuple[int, int]:
    value = codec.loads((await (await js.key_value("INVENTORY")).get(product)).value)
    return value["available"], value["reserved"]


async def test_duplicate_publishes_within_and_beyond_the_window_have_one_effect(
    nats_server, js, spawn, fast_config: Path
) -> None:
    edit(fast_config / "streams.yaml", "duplicate_window: 2m          # Nats-Msg-Id", "duplicate_window: 1s  #")
    for service in ("order", "inventory", "payment"):
        spawn(service, nats_server.url, fast_config)
    o = order("MOUSE-001", quantity=3)
    headers = {"Nats-Msg-Id": f"{o['orderId']}.orders.created"}
    acks = [await js.publish("orders.created", codec.dumps(o), headers=headers) for _ in range(3)]
    assert [a.duplicate for a in acks] == [None, True, True]
    await wait_terminal(js, [o["orderId"]], within=20)
    await asyncio.sleep(1.2)  # past the duplicate window: JetStream stores it again
    late = await js.publish("orders.created", codec.dumps(o), headers=headers)
    assert not late.duplicate
    await quiesce(js, within=10)
    await asyncio.sleep(0.5)
    await quiesce(js, within=10)
    result = await audit(js, [o], STOCK, within=20)
    print(result.line())
    assert result.completed == 1 and result.duplicate_effects == [] and result.lost == []
    assert await stock(js, "MOUSE-001") == (197, 3)
    payments = await js.key_value("PAYMENTS")
    assert codec.loads((await payments.get(o["orderId"])).value)["status"] == "charged"


@pytest.mark.parametrize("keepalive", [True, False], ids=["in_progress", "no_in_progress"])
async def test_handler_slower_than_ack_wait_has_one_effect(
    nats_server, js, spawn, chaos_config: Path, keepalive: bool
) -> None:
    inventory_yaml = chaos_config / "flows" / "inventory.yaml"
    edit(inventory_yaml, "handler: handlers.inventory.reserve", "handler: chaos.handlers.slow_reserve")
    edit(inventory_yaml, "ack_wait: 2s", f"ack_wait: 1s\n        keepalive: {str(keepalive).lower()}")
    edit(
        inventory_yaml,
        "          failed: orders.inventory.failed\n",
        "          failed: orders.inventory.failed\n        timeout: 10s\n",
    )
    (chaos_config / "chaos" / "delay").write_text("2.5")
    for service in ("order", "inventory", "payment"):
        spawn(service, nats_server.url, chaos_config)
    orders = [order("MOUSE-001", quantity=2) for _ in range(3)]
    await inject(js, orders)
    result = await audit(js, orders, STOCK, within=40)
    print(result.line())
    assert result.completed == 3 and result.duplicate_effects == [] and result.lost == []
    assert await stock(js, "MOUSE-001") == (194, 6)
    runs = chaos_calls(chaos_config, "reserve")
    if keepalive:
        assert len(runs) == 3, "in_progress() keeps the message: each handler runs once"
    else:
        assert len(runs) > 3, "without in_progress() the ack wait expires and the message is redelivered"


async def test_payment_timeout_cancels_and_returns_stock(nats_server, js, spawn, fast_config: Path) -> None:
    env = {"PAYMENT_TIMEOUT": "2s"}
    spawn("order", nats_server.url, fast_config, env=env)
    spawn("inventory", nats_server.url, fast_config, env=env)  # no payment service: nobody answers
    orders = [order("MOUSE-001", quantity=5) for _ in range(4)]
    await inject(js, orders)
    await asyncio.sleep(4)  # past the timeout: the refund goes first (newest step first) and waits for payment
    assert await stock(js, "MOUSE-001") == (180, 20)  # the release is sent only once the refund is confirmed
    records = await wait_terminal(js, [o["orderId"] for o in orders], within=0)
    assert all(r is not None and r["state"] == "compensating" for r in records.values())
    assert all(r["pending"] == ["payment"] and r["queued"] == ["inventory"] for r in records.values())

    spawn("payment", nats_server.url, fast_config, env=env)  # it comes back: charge, refund, then the release
    records = await wait_terminal(js, [o["orderId"] for o in orders], within=20)
    for oid, rec in records.items():
        assert rec is not None and rec["state"] == "cancelled" and rec["reason"] == "payment timed out"
        subjects = [e["subject"] for e in rec["history"]]
        assert subjects.count("timeout") == 1 and subjects.count("orders.inventory.release") == 1
        assert (await get_record(js, "PAYMENTS", oid))["status"] in ("refunded", "voided")
    assert await stock(js, "MOUSE-001") == (200, 0)


async def test_a_charge_whose_answer_is_lost_is_refunded(nats_server, js, spawn, chaos_config: Path) -> None:
    edit(
        chaos_config / "flows" / "payment.yaml",
        "handler: handlers.payment.charge",
        "handler: chaos.handlers.charge_answer_lost",
    )
    env = {"PAYMENT_TIMEOUT": "2s"}
    for service in ("order", "inventory", "payment"):
        spawn(service, nats_server.url, chaos_config, env=env)
    orders = [order("MOUSE-001", quantity=2) for _ in range(3)]
    await inject(js, orders)
    records = await wait_terminal(js, [o["orderId"] for o in orders], within=20)
    for oid, rec in records.items():
        assert rec is not None and rec["state"] == "cancelled", rec
        assert (await get_record(js, "PAYMENTS", oid))["status"] == "refunded"  # never charged and kept
    assert await stock(js, "MOUSE-001") == (200, 0)


async def test_timeout_survives_a_restart_of_every_process_and_fires_once(
    nats_server, js, spawn, fast_config: Path
) -> None:
    env = {"PAYMENT_TIMEOUT": "3s"}
    order_svc = spawn("order", nats_server.url, fast_config, env=env)
    inventory = spawn("inventory", nats_server.url, fast_config, env=env)
    orders = [order("MOUSE-001", quantity=1) for _ in range(5)]
    await inject(js, orders)
    ids = [o["orderId"] for o in orders]
    for _ in range(100):
        records = await wait_terminal(js, ids, within=0)
        if all(r and r["state"] == "awaiting_payment" for r in records.values()):
            break
        await asyncio.sleep(0.05)
    assert all(r["state"] == "awaiting_payment" for r in records.values())
    order_svc.kill()
    inventory.kill()
    await asyncio.sleep(3.5)  # the deadline passes while nothing runs
    spawn("order", nats_server.url, fast_config, env=env)
    spawn("inventory", nats_server.url, fast_config, env=env)
    spawn("payment", nats_server.url, fast_config, env=env)  # confirms the refunds of the timed-out charges
    records = await wait_terminal(js, ids, within=30)
    await quiesce(js, within=10)
    for rec in records.values():
        assert rec["state"] == "cancelled"
        subjects = [e["subject"] for e in rec["history"]]
        assert subjects.count("timeout") == 1
        assert subjects.count("orders.inventory.release") == 1
    assert await stock(js, "MOUSE-001") == (200, 0)


async def test_instances_started_together_share_one_schedule_and_each_times_out(
    nats_server, js, spawn, fast_config: Path
) -> None:
    spawn("order", nats_server.url, fast_config, env={"INVENTORY_TIMEOUT": "3s"})  # nobody reserves stock
    orders = [order("MOUSE-001") for _ in range(40)]
    await inject(js, orders)
    ids = [o["orderId"] for o in orders]
    for _ in range(100):  # bounded: the order service takes the batch within a second or two
        pending = (await js.stream_info("TIMERS", subjects_filter="flowrun.timers.order.at.>")).state.subjects or {}
        keys = set()
        for subject in pending:
            schedule = await js.get_last_msg("TIMERS", subject)
            keys.update(codec.loads(schedule.data)["keys"])
        if keys >= set(ids):
            break
        await asyncio.sleep(0.05)
    assert keys >= set(ids), "every instance's alarm is stored"
    assert len(pending) < len(ids) / 4, f"{len(pending)} schedules for {len(ids)} instances: alarms are grouped"
    await asyncio.sleep(4)  # past the timeout: each instance undoes the reservation it may have (nobody confirms)
    records = await wait_terminal(js, ids, within=0)
    for rec in records.values():
        assert rec is not None and rec["state"] == "compensating" and rec["pending"] == ["inventory"]
        assert rec["reason"] == "inventory did not answer"


async def test_a_forged_timer_naming_other_subjects_is_dead_lettered_and_touches_no_instance(
    nats_server, js, spawn, fast_config: Path
) -> None:
    for service in ("order", "inventory", "payment"):
        spawn(service, nats_server.url, fast_config)
    genuine = order("MOUSE-001")
    await inject(js, [genuine])
    forged = {"alarm": 0, "keys": [genuine["orderId"], "*", "a.b"]}  # wildcards would reach other keys' subjects
    await js.publish("flowrun.timers.order.fire", codec.dumps(forged))
    assert await dead_letters(js, at_least=1, within=15) == 1
    dead = await js.get_last_msg("DLQ", "dlq.>")
    assert dead.headers["Flowrun-Error-Type"] == "DecodeError" and "identifier" in dead.headers["Flowrun-Error"]
    records = await wait_terminal(js, [genuine["orderId"]], within=20)
    assert records[genuine["orderId"]]["state"] == "completed", "the genuine instance is not timed out"
