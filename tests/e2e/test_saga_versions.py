"""Changing a saga while orders are in flight: each order finishes on the definition it started on.

Orders wait in `awaiting_payment` (no payment service runs); the saga is then changed under them: that
state becomes `charging`, and a fraud check (a fourth service) comes before it. The order service
restarts on the new config, new orders take the new path, and once payment runs, the old orders
complete on their old definition, which the new one could not do (it has no `awaiting_payment`).
`flowrun saga versions` follows the live counts of both versions.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from runner.config.loader import load_or_raise
from runner.jetstream.embedded import EmbeddedServer
from runner.serve.service import Runtime, RuntimeOptions
from tests.conftest import SEED_ORDER

pytestmark = pytest.mark.asyncio(loop_scope="session")

ENV = {"PAYMENT_TIMEOUT": "5m", "INVENTORY_TIMEOUT": "5m"}  # no timeout while payment is held back

FRAUD_FLOW = {
    "services": {
        "fraud": {
            "consumers": {"fraud-service": {"stream": "ORDERS", "filter_subjects": ["orders.fraud.check.requested"]}},
            "dead_letter": {"stream": "DLQ", "subject_prefix": "dlq"},
            "handlers": [
                {
                    "subject": "orders.fraud.check.requested",
                    "handler": "fraud_checks.rules.check",
                    "emits": {"cleared": "orders.fraud.cleared"},
                }
            ],
        }
    }
}
FRAUD_HANDLER = '''"""A fraud check that clears every order (the test needs the step, not a verdict)."""

from runner.handler import emit


async def check(msg, ctx):
    return emit("cleared", checked=True)
'''


def change_the_saga(project: Path) -> None:
    """awaiting_payment → charging, with a fraud_check between pending and charging."""
    saga_file = project / "flows" / "saga.yaml"
    doc = yaml_names(yaml.safe_load(saga_file.read_text()))
    states = doc["sagas"]["order"]["states"]
    charge = states["pending"]["on"]["orders.inventory.reserved"]["emit"]  # orders.payment.requested
    states["pending"]["on"]["orders.inventory.reserved"] = {
        "goto": "fraud_check",
        "completes": "inventory",
        "emit": [{"subject": "orders.fraud.check.requested", "with": {"orderId": "key", "total": "data.total"}}],
    }
    cancel = states["pending"]["on"]["orders.cancel.requested"]
    states["fraud_check"] = {
        "on": {"orders.fraud.cleared": {"goto": "charging", "emit": charge}, "orders.cancel.requested": cancel}
    }
    states["charging"] = states.pop("awaiting_payment")
    saga_file.write_text(yaml.safe_dump(doc, sort_keys=False))

    order_file = project / "flows" / "order.yaml"
    order = yaml.safe_load(order_file.read_text())
    order["services"]["order"]["consumers"]["order-service"]["filter_subjects"].append("orders.fraud.cleared")
    order_file.write_text(yaml.safe_dump(order, sort_keys=False))
    (project / "flows" / "fraud.yaml").write_text(yaml.safe_dump(FRAUD_FLOW, sort_keys=False))
    # A package of its own: `handlers` is already imported from the repository by earlier tests in this process.
    (project / "fraud_checks").mkdir()
    (project / "fraud_checks" / "__init__.py").write_text("")
    (project / "fraud_checks" / "rules.py").write_text(FRAUD_HANDLER)


def yaml_names(value: Any) -> Any:
    """PyYAML reads the key `on` as True (YAML 1.1); flowrun's loader keeps it a name."""
    if isinstance(value, dict):
        return {("on" if k is True else k): yaml_names(v) for k, v in value.items()}
    if isinstance(value, list):
        return [yaml_names(v) for v in value]
    return value


async def start(server: EmbeddedServer, project: Path, services: list[str]) -> Runtime:
    config = load_or_raise(project, {**os.environ, **ENV})
    http_port = 0 if "order" in services else None
    runtime = Runtime(config, services, server.url, RuntimeOptions(http_port=http_port))
    await runtime.start()
    return runtime


async def flowrun_saga_versions(server: EmbeddedServer, project: Path, *args: str) -> str:
    """The output of `flowrun saga versions`, run as a user would."""
    command = ["-m", "runner.cli", "saga", "versions", "--nats", server.url, "--config", str(project), *args]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *command,
        cwd=project,
        env={**os.environ, **ENV},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def versions(server: EmbeddedServer, project: Path) -> dict[str, dict[str, Any]]:
    """`flowrun saga versions --json`, by version."""
    report = json.loads(await flowrun_saga_versions(server, project, "--json"))
    assert all(scan["complete"] for scan in report["scans"])
    return {v["version"]: v for v in report["versions"]}


async def wait_status(http: aiohttp.ClientSession, base: str, order_id: str, status: str, within: float = 30) -> dict:
    deadline = time.monotonic() + within
    while True:
        async with http.get(f"{base}/api/orders/{order_id}") as resp:
            body = await resp.json()
        if resp.status == 200 and body["status"] == status:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"order {order_id} not {status} after {within}s: {resp.status} {body}")
        await asyncio.sleep(0.05)


async def post_order(http: aiohttp.ClientSession, base: str) -> str:
    async with http.post(f"{base}/api/orders", json=SEED_ORDER) as resp:
        assert resp.status == 202, await resp.text()
        return (await resp.json())["orderId"]


async def test_orders_in_flight_finish_on_the_definition_they_started_on(
    nats_server: EmbeddedServer, config_copy: Path
) -> None:
    async with aiohttp.ClientSession() as http:
        first = await start(nats_server, config_copy, ["order", "inventory"])
        try:
            old_version = first.machines["order"].version
            base = first.http_urls[0]
            *old_orders, to_cancel = [await post_order(http, base) for _ in range(3)]
            for order_id in [*old_orders, to_cancel]:
                await wait_status(http, base, order_id, "awaiting_payment")
        finally:
            await first.stop()
        seen = await versions(nats_server, config_copy)
        assert {v: (c["live"], c["current"]) for v, c in seen.items()} == {old_version: (3, True)}

        change_the_saga(config_copy)
        second = await start(nats_server, config_copy, ["order", "inventory", "fraud"])
        payment: Runtime | None = None
        try:
            new_version = second.machines["order"].version
            assert new_version != old_version
            base = second.http_urls[0]
            new_order = await post_order(http, base)
            await wait_status(http, base, new_order, "charging")
            for order_id in old_orders:  # untouched by the change
                await wait_status(http, base, order_id, "awaiting_payment")
            # The new definition has no awaiting_payment; the old one, which the order runs on, takes a cancel there.
            async with http.post(f"{base}/api/orders/{to_cancel}/cancel") as resp:
                assert resp.status == 202, await resp.text()
            await wait_status(http, base, to_cancel, "cancelled")
            seen = await versions(nats_server, config_copy)
            assert {v: (c["live"], c["finished"], c["current"]) for v, c in seen.items()} == {
                old_version: (2, 1, False),
                new_version: (1, 0, True),
            }
            assert seen[old_version]["stranded"] == []  # the new definition still takes what the old orders await
            table = (await flowrun_saga_versions(nats_server, config_copy)).splitlines()
            assert [line.split()[:4] for line in table[1:]] == [
                ["order", old_version, "2", "1"],
                ["order", new_version, "1", "0"],
            ]
            assert table[2].endswith("current")
            partial = json.loads(await flowrun_saga_versions(nats_server, config_copy, "--json", "--limit", "2"))
            assert partial["scans"] == [
                {"saga": "order", "bucket": "ORDER_SAGA", "instances": 2, "complete": False, "missing": False}
            ]
            assert (
                sum(v["live"] + v["finished"] for v in partial["versions"]) == 2
            )  # the newest two, said to be partial

            payment = await start(nats_server, config_copy, ["payment"])
            for order_id in [*old_orders, new_order]:
                await wait_status(http, base, order_id, "completed")
            bucket = second.buckets["ORDER_SAGA"]
            for order_id in old_orders:
                record, _ = await bucket.get(order_id)
                assert record["version"] == old_version
                assert "orders.fraud.check.requested" not in [e["subject"] for e in record["history"]]
            record, _ = await bucket.get(new_order)
            assert record["version"] == new_version
            subjects = [e["subject"] for e in record["history"]]
            assert subjects.index("orders.fraud.cleared") < subjects.index("orders.payment.requested")

            seen = await versions(nats_server, config_copy)
            assert {v: (c["live"], c["finished"]) for v, c in seen.items()} == {
                old_version: (0, 3),
                new_version: (0, 1),
            }
        finally:
            if payment is not None:
                await payment.stop()
            await second.stop()
