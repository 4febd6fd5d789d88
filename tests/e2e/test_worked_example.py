"""The README's worked example: a fourth service added by YAML plus one handler actually runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runner import codec
from tests.conftest import ROOT
from tests.faults.conftest import edit
from tests.faults.ledger import inject, order, wait_terminal

pytestmark = pytest.mark.asyncio(loop_scope="session")
EXAMPLE = ROOT / "examples" / "shipping"


def add_shipping(project: Path) -> None:
    """Exactly the steps of the README's 'Worked example: a shipping service'."""
    shutil.copy(EXAMPLE / "flows" / "shipping.yaml", project / "flows" / "shipping.yaml")
    shutil.copy(EXAMPLE / "handlers" / "shipping.py", project / "handlers" / "shipping.py")
    saga = project / "flows" / "saga.yaml"
    edit(
        saga,
        "orders.payment.completed: {goto: completed, completes: payment, keep: {paymentId: paymentId}}",
        "orders.payment.completed: {goto: shipping, completes: payment, keep: {paymentId: paymentId},"
        " emit: [orders.shipping.requested]}",
    )
    edit(
        saga,
        "      completed:\n        terminal: true",
        "      shipping:\n        on:\n          orders.shipping.scheduled: {goto: completed}\n"
        "      completed:\n        terminal: true",
    )
    edit(
        project / "flows" / "order.yaml",
        "          - orders.payment.refunded\n",
        "          - orders.payment.refunded\n          - orders.shipping.scheduled\n",
    )


def validate(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner.cli", "validate", "--config", str(project)],
        capture_output=True,
        text=True,
        cwd=project,
        timeout=60,
    )


async def test_shipping_service_from_the_readme(nats_server, js, spawn, config_copy: Path) -> None:
    add_shipping(config_copy)
    check = validate(config_copy)
    assert check.returncode == 0, check.stderr
    assert "4 services" in check.stdout
    for service in ("order", "inventory", "payment", "shipping"):
        spawn(service, nats_server.url, config_copy)
    o = order("LAPTOP-001", quantity=1, price="999.99")
    await inject(js, [o])
    record = (await wait_terminal(js, [o["orderId"]], within=20))[o["orderId"]]
    assert record["state"] == "completed"
    subjects = [e["subject"] for e in record["history"]]
    assert subjects[-2:] == ["orders.shipping.requested", "orders.shipping.scheduled"]
    shipment = codec.loads((await (await js.key_value("SHIPMENTS")).get(o["orderId"])).value)
    assert shipment == {"carrier": "ACME", "items": 1}
