"""Retries on the policy's schedule, dead letters with reasons, poison input, replay."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from runner import codec
from tests.conftest import free_port
from tests.faults.conftest import chaos_calls, edit
from tests.faults.ledger import FORWARD, dead_letters, get_record, inject, order, quiesce, wait_terminal

pytestmark = pytest.mark.asyncio(loop_scope="session")

PAYMENT_YAML = "flows/payment.yaml"


def flowrun(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner.cli", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=config,
    )


def bind_payment(config: Path, handler: str, retry: str) -> None:
    edit(config / PAYMENT_YAML, "handler: handlers.payment.charge", f"handler: {handler}")
    edit(
        config / PAYMENT_YAML,
        "          failed: orders.payment.failed\n",
        f"          failed: orders.payment.failed\n        retry: {retry}\n",
    )


async def test_retry_schedule_then_dead_letter_while_others_flow(nats_server, js, spawn, chaos_config: Path) -> None:
    bind_payment(
        chaos_config,
        "chaos.handlers.flaky_charge",
        "{max_attempts: 4, initial_delay: 300ms, backoff: exponential, multiplier: 2, jitter: none}",
    )
    (chaos_config / "chaos" / "broken").touch()
    url = nats_server.url
    for service in ("order", "inventory", "payment"):
        spawn(service, url, chaos_config)
    failing = order("MOUSE-001", customer="FAIL")
    await inject(js, [failing])
    await asyncio.sleep(0.2)
    others = [order("MOUSE-001") for _ in range(20)]
    await inject(js, others)

    records = await wait_terminal(js, [o["orderId"] for o in others], within=20)
    assert all(r and r["state"] == "completed" for r in records.values()), "other orders must keep flowing"

    await dead_letters(js, 1, within=20)
    attempts = [at for at, oid in chaos_calls(chaos_config, "charge") if oid == failing["orderId"]]
    assert len(attempts) == 4, f"delivered {len(attempts)} times, policy says 4"
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    for gap, expected in zip(gaps, [0.3, 0.6, 1.2], strict=True):
        assert expected * 0.9 <= gap <= expected + 0.6, f"gaps {gaps} do not follow 0.3s, 0.6s, 1.2s"

    listing = flowrun(chaos_config, "dlq", "ls", "--json", "--nats", url)
    assert listing.returncode == 0, listing.stderr
    entries = json.loads(listing.stdout)
    assert len(entries) == 1
    entry = entries[0]
    assert entry["service"] == "payment" and entry["subject"] == "orders.payment.requested"
    assert entry["attempts"] == 4
    assert entry["correlation_id"] == failing["orderId"]
    assert "RetryableError: payment gateway unavailable" in entry["error"]
    shown = json.loads(flowrun(chaos_config, "dlq", "show", str(entry["id"]), "--json", "--nats", url).stdout)
    text = flowrun(chaos_config, "dlq", "show", str(entry["id"]), "--nats", url).stdout
    assert "Subject      orders.payment.requested" in text and "Attempts     4" in text
    assert shown["payload"]["orderId"] == failing["orderId"]
    assert shown["headers"]["Flowrun-Original-Subject"] == "orders.payment.requested"
    await asyncio.sleep(0.5)
    assert len([1 for _, oid in chaos_calls(chaos_config, "charge") if oid == failing["orderId"]]) == 4, (
        "a dead-lettered message must not be delivered again"
    )


async def test_poison_messages_are_dead_lettered_on_first_delivery(nats_server, js, spawn, fast_config: Path) -> None:
    # An event for an instance that never starts is held back for `out_of_order_for` (1 s here), then
    # dead-lettered; the other poison goes at once.
    edit(
        fast_config / "flows" / "order.yaml", "      jitter: full\n", "      jitter: full\n      out_of_order_for: 1s\n"
    )
    url = nats_server.url
    port = free_port()
    spawn("order", url, fast_config, http_port=port)
    spawn("inventory", url, fast_config)
    spawn("payment", url, fast_config)
    await js.publish("orders.created", b"{not json", headers={"Nats-Msg-Id": "poison-1"})
    await js.publish(
        "orders.created", codec.dumps({"orderId": "p2", "items": "none"}), headers={"Nats-Msg-Id": "poison-2"}
    )
    await js.publish("orders.created", codec.dumps({"customerId": "C"}), headers={"Nats-Msg-Id": "poison-3"})
    await js.publish(
        "orders.inventory.reserved", codec.dumps({"orderId": "never-created"}), headers={"Nats-Msg-Id": "poison-4"}
    )
    good = order("MOUSE-001")
    await inject(js, [good])
    records = await wait_terminal(js, [good["orderId"]], within=20)
    assert records[good["orderId"]]["state"] == "completed"
    await quiesce(js, within=10)

    entries = json.loads(flowrun(fast_config, "dlq", "ls", "--json", "--nats", url).stdout)
    # Each of the three bad orders.created is dead-lettered by both of its consumers.
    by_reason = sorted((e["service"], e["subject"], e["error"].split(":")[0]) for e in entries)
    assert by_reason == sorted(
        [
            ("inventory", "orders.created", "DecodeError"),
            ("order", "orders.created", "DecodeError"),
            ("inventory", "orders.created", "ValidationError"),
            ("order", "orders.created", "ValidationError"),
            ("inventory", "orders.created", "ValidationError"),
            ("order", "orders.created", "ValidationError"),
            ("order", "orders.inventory.reserved", "OutOfOrder"),
        ]
    )
    assert all(e["attempts"] == 1 for e in entries if not e["error"].startswith("OutOfOrder")), "no retries"
    reasons = " | ".join(e["error"] for e in entries)
    assert "not valid JSON" in reasons
    assert "lacks its correlation id 'orderId'" in reasons
    assert "schema violation" in reasons
    assert "unknown order instance 'never-created'" in reasons
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/healthz") as resp:
        assert resp.status == 200


async def test_replay_after_fixing_a_handler_completes_with_one_charge(
    nats_server, js, spawn, chaos_config: Path
) -> None:
    bind_payment(chaos_config, "chaos.handlers.fatal_charge", "{max_attempts: 3, initial_delay: 100ms}")
    broken = chaos_config / "chaos" / "broken"
    broken.touch()
    url = nats_server.url
    for service in ("order", "inventory", "payment"):
        spawn(service, url, chaos_config)
    victim = order("MOUSE-001", quantity=2)
    await inject(js, [victim])
    await dead_letters(js, 1, within=20)
    entries = json.loads(flowrun(chaos_config, "dlq", "ls", "--json", "--service", "payment", "--nats", url).stdout)
    assert len(entries) == 1 and entries[0]["attempts"] == 1  # fatal: no retries
    assert "FatalError: card processor rejected" in entries[0]["error"]

    broken.unlink()  # the fix is deployed
    replay = flowrun(chaos_config, "dlq", "replay", str(entries[0]["id"]), "--nats", url)
    assert replay.returncode == 0, replay.stderr
    records = await wait_terminal(js, [victim["orderId"]], within=20)
    assert records[victim["orderId"]]["state"] == "completed"

    again = flowrun(chaos_config, "dlq", "replay", "--all", "--nats", url)  # already replayed: nothing to do
    assert again.returncode == 0 and "0 replayed" in again.stdout
    after = json.loads(flowrun(chaos_config, "dlq", "ls", "--json", "--nats", url).stdout)
    assert len(after) == 1 and after[0]["replayed"] is not None, "replayed entries are marked, not deleted"
    payments = await js.key_value("PAYMENTS")
    assert codec.loads((await payments.get(victim["orderId"])).value)["status"] == "charged"
    stock = codec.loads((await (await js.key_value("INVENTORY")).get("MOUSE-001")).value)
    assert (stock["available"], stock["reserved"]) == (198, 2)


async def test_replay_reaches_only_the_consumer_that_dead_lettered_it(
    nats_server, js, spawn, chaos_config: Path
) -> None:
    # orders.created reaches the saga and inventory; only inventory failed it, so only inventory gets it again.
    edit(
        chaos_config / "flows" / "inventory.yaml",
        "handler: handlers.inventory.reserve",
        "handler: chaos.handlers.fatal_reserve",
    )
    broken = chaos_config / "chaos" / "broken"
    broken.touch()
    url = nats_server.url
    for service in ("order", "inventory", "payment"):
        spawn(service, url, chaos_config)
    victim = order("MOUSE-001")
    await inject(js, [victim])
    await dead_letters(js, 1, within=20)
    await quiesce(js, within=10)
    started = await get_record(js, "ORDER_SAGA", victim["orderId"])
    assert started is not None and started["state"] == "pending", "the saga took its start event the first time"

    broken.unlink()  # the fix is deployed
    replay = flowrun(chaos_config, "dlq", "replay", "--all", "--nats", url)
    assert replay.returncode == 0 and "1 replayed" in replay.stdout, replay.stderr
    records = await wait_terminal(js, [victim["orderId"]], within=20)
    assert records[victim["orderId"]]["state"] == "completed"
    await quiesce(js, within=10)
    record = await get_record(js, "ORDER_SAGA", victim["orderId"])
    assert record is not None
    history = [e["subject"] for e in record["history"]]
    assert history == FORWARD, f"the saga must not see the replayed orders.created: {history}"
    assert [oid for _, oid in chaos_calls(chaos_config, "reserve")] == [victim["orderId"]] * 2
    entries = json.loads(flowrun(chaos_config, "dlq", "ls", "--json", "--nats", url).stdout)
    assert len(entries) == 1, "no consumer dead-lettered the replay"


async def test_replay_all_sends_each_entry_back_to_its_own_consumer(nats_server, js, spawn, fast_config: Path) -> None:
    # A poison orders.created is dead-lettered by both its consumers. Replayed, each entry reaches only its own
    # consumer, which dead-letters it again: two new entries, not four.
    url = nats_server.url
    spawn("order", url, fast_config)
    spawn("inventory", url, fast_config)
    await js.publish("orders.created", b"{not json", headers={"Nats-Msg-Id": "poison-1"})
    assert await dead_letters(js, 2, within=10) == 2
    replay = flowrun(fast_config, "dlq", "replay", "--all", "--nats", url)
    assert replay.returncode == 0 and "2 replayed" in replay.stdout, replay.stderr
    await quiesce(js, within=10)
    entries = json.loads(flowrun(fast_config, "dlq", "ls", "--json", "--nats", url).stdout)
    assert sorted((e["service"], e["replayed"] is not None) for e in entries) == [
        ("inventory", False),
        ("inventory", True),
        ("order", False),
        ("order", True),
    ]


async def test_dlq_purge_older_than(nats_server, js, spawn, fast_config: Path) -> None:
    spawn("inventory", nats_server.url, fast_config)
    await js.publish("orders.created", b"garbage", headers={"Nats-Msg-Id": "g1"})
    await dead_letters(js, 1, within=10)
    kept = flowrun(fast_config, "dlq", "purge", "--older-than", "1h", "--nats", nats_server.url)
    assert kept.returncode == 0 and "purged 0" in kept.stdout
    await asyncio.sleep(1.1)
    gone = flowrun(fast_config, "dlq", "purge", "--older-than", "1s", "--nats", nats_server.url)
    assert "purged 1" in gone.stdout
    assert json.loads(flowrun(fast_config, "dlq", "ls", "--json", "--nats", nats_server.url).stdout) == []
    bad = flowrun(fast_config, "dlq", "purge", "--older-than", "soon", "--nats", nats_server.url)
    assert bad.returncode == 2 and "not a duration" in bad.stderr


async def test_hung_handler_times_out_retries_then_dead_letters(nats_server, js, spawn, chaos_config: Path) -> None:
    inventory_yaml = chaos_config / "flows" / "inventory.yaml"
    edit(inventory_yaml, "handler: handlers.inventory.reserve", "handler: chaos.handlers.slow_reserve")
    edit(
        inventory_yaml,
        "          failed: orders.inventory.failed\n",
        "          failed: orders.inventory.failed\n        timeout: 500ms\n"
        "        retry: {max_attempts: 2, initial_delay: 200ms, jitter: none}\n",
    )
    (chaos_config / "chaos" / "delay").write_text("30")  # hangs far beyond its timeout
    spawn("inventory", nats_server.url, chaos_config)
    hung = order("MOUSE-001")
    await inject(js, [hung])
    assert await dead_letters(js, 1, within=15) == 1
    entries = json.loads(flowrun(chaos_config, "dlq", "ls", "--json", "--nats", nats_server.url).stdout)
    assert entries[0]["attempts"] == 2
    assert entries[0]["error"] == "HandlerTimeout: handler timed out after 0.5s"
    assert len(chaos_calls(chaos_config, "reserve")) == 2
