"""`flowrun saga ls|show` against a real nats-server with a few orders, run as a user runs the command."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import pytest

from runner.jetstream.embedded import EmbeddedServer
from tests.conftest import ROOT, SEED_ORDER, System

pytestmark = pytest.mark.asyncio(loop_scope="session")

DECLINED = {"customerId": "BIG", "items": [{"productId": "LAPTOP-001", "quantity": 6, "price": 999.99}]}


async def flowrun(server: EmbeddedServer, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "runner.cli",
        *args,
        "--config",
        str(ROOT),
        "--nats",
        server.url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode or 0, out.decode(), err.decode()


async def flowrun_json(server: EmbeddedServer, *args: str) -> Any:
    code, out, err = await flowrun(server, *args, "--json")
    assert code == 0, err
    return json.loads(out)


async def test_saga_ls_and_show(system: System, nats_server: EmbeddedServer) -> None:
    ids = []
    for body in (SEED_ORDER, SEED_ORDER, DECLINED):
        status, reply = await system.post_order(body)
        assert status == 202, reply
        ids.append(reply["orderId"])
    for order_id in ids:
        await system.wait_terminal(order_id)
    first, second, declined = ids

    listing = await flowrun_json(nats_server, "saga", "ls")
    updated = [i["updated"] for i in listing["instances"]]
    assert updated == sorted(updated, reverse=True), "most recently changed first"
    states = {i["id"]: i["state"] for i in listing["instances"]}
    assert states == {first: "completed", second: "completed", declined: "cancelled"}
    assert listing["complete"] is True and listing["missing"] == []

    cancelled = await flowrun_json(nats_server, "saga", "ls", "--saga", "order", "--state", "cancelled")
    assert [i["id"] for i in cancelled["instances"]] == [declined]
    assert "payment declined" in cancelled["instances"][0]["reason"]
    limited = await flowrun_json(nats_server, "saga", "ls", "--limit", "1")
    assert len(limited["instances"]) == 1

    code, table, _ = await flowrun(nats_server, "saga", "ls", "--state", "completed")
    assert code == 0
    assert first in table and second in table and declined not in table
    assert table.rstrip().endswith("2 instance(s)")

    shown = await flowrun_json(nats_server, "saga", "show", first)
    assert shown["state"] == "completed" and shown["saga"] == "order"
    assert shown["data"]["customerId"] == "CUST123" and "paymentId" in shown["gathered"]
    events = [(e["direction"], e["subject"]) for e in shown["timeline"]]
    assert events[0] == ("in", "orders.created")
    assert ("out", "orders.payment.requested") in events and events[-1] == ("in", "orders.payment.completed")
    assert shown["timeline"][0]["since_start"] == 0
    assert all(e["since_previous"] >= 0 for e in shown["timeline"])

    code, text, _ = await flowrun(nats_server, "saga", "show", declined)
    assert code == 0
    assert "State      cancelled (payment declined" in text
    assert "→ orders.inventory.release" in text and "← orders.inventory.released" in text

    code, _, err = await flowrun(nats_server, "saga", "show", "no-such-order")
    assert code == 1 and "no instance 'no-such-order' of order" in err
    code, _, err = await flowrun(nats_server, "saga", "ls", "--saga", "ordr")
    assert code == 2 and "unknown saga 'ordr'" in err
