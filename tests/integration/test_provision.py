"""Provisioning against a real nats-server: create, idempotence, updates, drift, verify, and the CLI."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from nats.js import JetStreamContext

from runner.cli import main
from runner.config.loader import load_or_raise
from runner.config.model import Config
from runner.jetstream.embedded import EmbeddedServer, free_port
from runner.jetstream.provision import Plan, plan_and_apply
from tests.conftest import ROOT

pytestmark = pytest.mark.asyncio(loop_scope="session")

STREAMS = {"ORDERS", "DLQ", "TIMERS", "TASKS", "AUDIT"}
BUCKETS = {"INVENTORY", "RESERVATIONS", "PAYMENTS", "ORDER_SAGA", "FLOWRUN_SAGAS"}  # the last: saga definitions
ORDERS_CONSUMERS = {"order-service", "inventory-service", "payment-service"}
TIMERS_NEVER_CONVERGES = (
    "bug: TIMERS sets allow_msg_schedules, for which nats-server forces allow_rollup_hdrs on; "
    "provision._diff then reports 'update stream TIMERS: allow_rollup True → False' on every run"
)


def shipped() -> Config:
    return load_or_raise(ROOT, {})


def edited(config_copy: Path, old: str, new: str, file: str = "streams.yaml") -> Config:
    path = config_copy / file
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} should occur once in {file}"
    path.write_text(text.replace(old, new))
    return load_or_raise(config_copy, {})


def val(x: object) -> object:
    """An enum's value (nats-py returns enums or plain strings depending on the field)."""
    return getattr(x, "value", x)


def kinds(plan: Plan) -> dict[str, str]:
    return {c.what: c.kind for c in plan.changes}


def change(plan: Plan, what: str) -> str:
    [c] = [c for c in plan.changes if c.what == what]
    return c.kind


async def stream_names(js: JetStreamContext) -> set[str]:
    """Streams other than the ones backing KV buckets."""
    return {s.config.name for s in await js.streams_info() if not s.config.name.startswith("KV_")}


async def bucket_names(js: JetStreamContext) -> set[str]:
    return {s.config.name.removeprefix("KV_") for s in await js.streams_info() if s.config.name.startswith("KV_")}


async def cli(*args: str) -> Result:
    """Run the CLI in a worker thread: it starts its own event loop with asyncio.run."""
    return await asyncio.to_thread(CliRunner().invoke, main, list(args), catch_exceptions=False)


# --- plan_and_apply ---


async def test_first_provision_creates_streams_kv_consumers_and_seeds(js: JetStreamContext) -> None:
    plan = await plan_and_apply(js, shipped())

    assert {c.kind for c in plan.changes} == {"create"}
    assert {f"stream {s}" for s in STREAMS} <= set(kinds(plan))
    assert await stream_names(js) == STREAMS

    orders = (await js.stream_info("ORDERS")).config
    assert orders.subjects == ["orders.>", "payment.>", "inventory.>"]
    assert orders.max_msgs == 1_000_000
    assert orders.max_bytes == 1073741824
    assert orders.max_age == 30 * 86400
    assert orders.num_replicas == 1
    assert orders.duplicate_window == 120
    assert val((await js.stream_info("TASKS")).config.retention) == "workqueue"
    assert val((await js.stream_info("TIMERS")).config.retention) == "workqueue"
    assert (await js.stream_info("AUDIT")).config.deny_delete is True

    assert {c.name for c in await js.consumers_info("ORDERS")} == ORDERS_CONSUMERS
    assert {c.name for c in await js.consumers_info("TIMERS")} == {"order-service-timers"}
    inventory = await js.consumer_info("ORDERS", "inventory-service")
    assert sorted(inventory.config.filter_subjects) == ["orders.created", "orders.inventory.release"]
    assert val(inventory.config.ack_policy) == "explicit"
    assert inventory.config.ack_wait == 30
    assert inventory.config.max_deliver in (-1, None)  # the runner dead-letters; the server never gives up
    timers = await js.consumer_info("TIMERS", "order-service-timers")
    timer_filters = timers.config.filter_subjects or [timers.config.filter_subject]
    assert all(f.startswith("flowrun.timers.order") for f in timer_filters)

    assert await bucket_names(js) == BUCKETS
    stock = await js.key_value("INVENTORY")
    assert json.loads((await stock.get("LAPTOP-001")).value) == {"available": 50, "reserved": 0}
    assert json.loads((await stock.get("MOUSE-001")).value) == {"available": 200, "reserved": 0}


async def test_second_provision_changes_nothing_and_keeps_seeded_values(js: JetStreamContext) -> None:
    config = shipped()
    await plan_and_apply(js, config)
    stock = await js.key_value("INVENTORY")
    await stock.put("LAPTOP-001", b'{"available": 7, "reserved": 3}')  # the business moved on
    before = {name: (await js.stream_info(name)).config for name in STREAMS}
    consumers_before = {c.name: c.config for c in await js.consumers_info("ORDERS")}

    plan = await plan_and_apply(js, config)

    assert plan.drift == []
    assert {k for c in plan.changes if c.what != "stream TIMERS" for k in [c.kind]} == {"ok"}
    assert not any(c.what.startswith("seed ") for c in plan.changes)
    assert {name: (await js.stream_info(name)).config for name in STREAMS} == before
    assert {c.name: c.config for c in await js.consumers_info("ORDERS")} == consumers_before
    assert json.loads((await stock.get("LAPTOP-001")).value) == {"available": 7, "reserved": 3}


async def test_second_provision_is_all_ok(js: JetStreamContext) -> None:
    await plan_and_apply(js, shipped())
    plan = await plan_and_apply(js, shipped())
    assert {c.kind for c in plan.changes} == {"ok"}, [str(c) for c in plan.changes]
    assert plan.pending == []


async def test_dry_run_on_an_empty_server_lists_creates_and_creates_nothing(js: JetStreamContext) -> None:
    plan = await plan_and_apply(js, shipped(), dry_run=True)

    assert {c.kind for c in plan.changes} == {"create"}
    whats = set(kinds(plan))
    assert {f"stream {s}" for s in STREAMS} | {f"kv {b}" for b in BUCKETS} <= whats
    assert {f"consumer ORDERS/{c}" for c in ORDERS_CONSUMERS} | {"consumer TIMERS/order-service-timers"} <= whats
    assert {"seed INVENTORY/LAPTOP-001", "seed INVENTORY/MOUSE-001"} <= whats
    assert len(plan.pending) == len(plan.changes) == 17  # with the saga definitions bucket and the order saga
    assert await stream_names(js) == set()
    assert await bucket_names(js) == set()


async def test_mutable_change_is_applied_as_update(js: JetStreamContext, config_copy: Path) -> None:
    await plan_and_apply(js, shipped())
    config = edited(config_copy, "    max_age: 30d\n    storage:", "    max_age: 1d\n    storage:")

    plan = await plan_and_apply(js, config)

    [update] = [c for c in plan.changes if c.what == "stream ORDERS"]
    assert update.kind == "update"
    assert "max_age" in update.detail
    assert (await js.stream_info("ORDERS")).config.max_age == 86400
    assert kinds(await plan_and_apply(js, config))["stream ORDERS"] == "ok"


async def test_consumer_change_is_applied_as_update(js: JetStreamContext, config_copy: Path) -> None:
    await plan_and_apply(js, shipped())
    config = edited(
        config_copy,
        "        ack_wait: 30s\n    retry:",
        "        ack_wait: 45s\n    retry:",
        "flows/inventory.yaml",
    )
    plan = await plan_and_apply(js, config)
    assert change(plan, "consumer ORDERS/inventory-service") == "update"
    assert (await js.consumer_info("ORDERS", "inventory-service")).config.ack_wait == 45
    assert change(await plan_and_apply(js, config), "consumer ORDERS/inventory-service") == "ok"


async def test_immutable_change_is_drift_not_applied_and_data_kept(js: JetStreamContext, config_copy: Path) -> None:
    await plan_and_apply(js, shipped())
    await js.publish("orders.created", b'{"orderId": "ORD-1"}')
    config = edited(config_copy, "    storage: file\n", "    storage: memory\n")

    plan = await plan_and_apply(js, config)

    assert change(plan, "stream ORDERS") == "drift"
    [drift] = plan.drift
    assert "storage" in drift.detail and "memory" in drift.detail
    assert [c for c in plan.pending if c.what == "stream ORDERS"] == []
    info = await js.stream_info("ORDERS")
    assert val(info.config.storage) == "file"
    assert info.state.messages == 1
    assert change(await plan_and_apply(js, config), "stream ORDERS") == "drift"  # still reported


async def test_drift_does_not_block_the_mutable_part(js: JetStreamContext, config_copy: Path) -> None:
    await plan_and_apply(js, shipped())
    await js.publish("orders.created", b'{"orderId": "ORD-1"}')
    edited(config_copy, "    storage: file\n", "    storage: memory\n")
    config = edited(config_copy, "    max_age: 30d\n    storage:", "    max_age: 1d\n    storage:")

    plan = await plan_and_apply(js, config)

    assert sorted(c.kind for c in plan.changes if c.what == "stream ORDERS") == ["drift", "update"]
    info = await js.stream_info("ORDERS")
    assert val(info.config.storage) == "file"
    assert info.config.max_age == 86400
    assert info.state.messages == 1


async def test_verify_reports_pending_changes_and_applies_none(js: JetStreamContext, config_copy: Path) -> None:
    plan = await plan_and_apply(js, shipped(), mode="verify")
    assert len(plan.pending) == 16  # saga definitions are not checked: each service stores its own
    assert await stream_names(js) == set()
    assert await bucket_names(js) == set()

    await plan_and_apply(js, shipped())
    config = edited(config_copy, "    max_age: 30d\n    storage:", "    max_age: 1d\n    storage:")
    plan = await plan_and_apply(js, config, mode="verify")
    assert change(plan, "stream ORDERS") == "update"
    assert all(c.what.startswith("stream ") for c in plan.pending)
    assert (await js.stream_info("ORDERS")).config.max_age == 30 * 86400


async def test_mode_off_does_nothing(js: JetStreamContext) -> None:
    plan = await plan_and_apply(js, shipped(), mode="off")
    assert plan.changes == []
    assert await stream_names(js) == set()


async def test_changed_kv_bucket_is_not_reported_ok(js: JetStreamContext, config_copy: Path) -> None:
    await plan_and_apply(js, shipped())
    config = edited(
        config_copy,
        "    description: Stock per product (available, reserved)\n    history: 1\n",
        "    description: Stock per product (available, reserved)\n    history: 5\n",
        "flows/inventory.yaml",
    )
    plan = await plan_and_apply(js, config, mode="verify")
    assert change(plan, "kv INVENTORY") != "ok"


# --- the CLI ---


async def test_cli_dry_run_then_provision_then_verify(nats_server: EmbeddedServer, js: JetStreamContext) -> None:
    url, root = nats_server.url, str(ROOT)

    dry = await cli("provision", "--nats", url, "--config", root, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert any(
        line.startswith("create") and line.endswith("stream ORDERS: orders.>, payment.>, inventory.>")
        for line in dry.stdout.splitlines()
    )
    assert "17 change(s) to apply, 0 drift(s) (dry run)" in dry.stdout
    assert await stream_names(js) == set()

    applied = await cli("provision", "--nats", url, "--config", root)
    assert applied.exit_code == 0, applied.output
    assert "applied 17 change(s); 0 drift(s)" in applied.stdout
    assert await stream_names(js) == STREAMS
    assert await bucket_names(js) == BUCKETS


async def test_cli_verify_after_provision_exits_0(nats_server: EmbeddedServer) -> None:
    assert (await cli("provision", "--nats", nats_server.url, "--config", str(ROOT))).exit_code == 0
    verify = await cli("provision", "--nats", nats_server.url, "--config", str(ROOT), "--mode", "verify")
    assert "0 change(s) to apply, 0 drift(s)" in verify.stdout
    assert verify.exit_code == 0


async def test_cli_verify_exits_1_on_pending_changes(nats_server: EmbeddedServer, config_copy: Path) -> None:
    edited(config_copy, "    max_age: 30d\n    storage:", "    max_age: 1d\n    storage:")
    assert (await cli("provision", "--nats", nats_server.url, "--config", str(ROOT))).exit_code == 0

    verify = await cli("provision", "--nats", nats_server.url, "--config", str(config_copy), "--mode", "verify")

    assert verify.exit_code == 1
    assert "update  stream ORDERS: max_age 2592000 → 86400" in verify.stdout


async def test_cli_provision_exits_2_on_drift(nats_server: EmbeddedServer, config_copy: Path) -> None:
    edited(config_copy, "    storage: file\n", "    storage: memory\n")
    assert (await cli("provision", "--nats", nats_server.url, "--config", str(ROOT))).exit_code == 0

    result = await cli("provision", "--nats", nats_server.url, "--config", str(config_copy))

    assert result.exit_code == 2
    assert "drift   stream ORDERS: storage 'file' → 'memory'" in result.stdout
    assert "1 drift(s) left for you to decide" in result.stdout


async def test_cli_provision_with_an_invalid_config_exits_1(nats_server: EmbeddedServer, config_copy: Path) -> None:
    path = config_copy / "streams.yaml"
    path.write_text(path.read_text().replace("    storage: file\n", "    storage: disk\n"))
    result = await cli("provision", "--nats", nats_server.url, "--config", str(config_copy))
    assert result.exit_code == 1
    assert "streams.yaml:" in result.stderr and "problem(s) found" in result.stderr


async def test_cli_unreachable_server_fails_instead_of_hanging() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    try:
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "runner.cli", "provision", "--nats", url, "--config", str(ROOT)],
            capture_output=True,
            text=True,
            timeout=8,  # a hang guard, not a speed limit: a refused connection fails at once
        )
    except subprocess.TimeoutExpired:
        pytest.fail("flowrun provision hangs on an unreachable NATS server")
    assert done.returncode == 1
    assert "cannot connect to NATS" in done.stderr


# --- stream info / consumer info ---


async def test_cli_stream_info_orders(nats_server: EmbeddedServer, js: JetStreamContext) -> None:
    await plan_and_apply(js, shipped())
    for n in range(3):
        await js.publish("orders.created", json.dumps({"orderId": f"ORD-{n}"}).encode())

    text = await cli("stream", "info", "ORDERS", "--nats", nats_server.url)
    assert text.exit_code == 0, text.output
    for expected in (
        "name: ORDERS",
        "subjects: orders.>, payment.>, inventory.>",
        "retention: limits",
        "storage: file",
        "replicas: 1",
        "max msgs: 1000000",
        "max bytes: 1.0 GiB",
        "max age: 30d",
        "duplicate window: 2m",
        "messages: 3",
        "last seq: 3",
        "consumers: 3",
    ):
        assert expected in text.stdout.splitlines() or f"  {expected}" in text.stdout.splitlines(), expected

    as_json = await cli("stream", "info", "ORDERS", "--nats", nats_server.url, "--json")
    info = json.loads(as_json.stdout)
    assert info["state"]["messages"] == 3
    assert info["max_age"] == "30d"


async def test_cli_stream_info_unknown_stream(nats_server: EmbeddedServer) -> None:
    result = await cli("stream", "info", "NOPE", "--nats", nats_server.url)
    assert result.exit_code == 1
    assert "stream NOPE not found" in result.stderr


async def test_cli_consumer_info_shows_config_and_state(nats_server: EmbeddedServer, js: JetStreamContext) -> None:
    await plan_and_apply(js, shipped())
    for n in (1, 2, 3):
        await js.publish("orders.created", json.dumps({"orderId": f"ORD-{n}"}).encode())
    sub = await js.pull_subscribe_bind("inventory-service", "ORDERS")
    [first] = await sub.fetch(1)
    await first.ack_sync()  # ack floor: stream seq 1
    second, _third = await sub.fetch(2)  # delivered, left un-acked
    await second.nak()
    [again] = await sub.fetch(1)  # nothing new is left: only the nak'd message can come back
    assert (again.metadata.sequence.stream, again.metadata.num_delivered) == (2, 2)
    await sub.unsubscribe()
    await js.publish("orders.created", b'{"orderId": "ORD-4"}')  # not delivered yet

    result = await cli("consumer", "info", "ORDERS", "inventory-service", "--nats", nats_server.url, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["name"] == "inventory-service"
    assert info["ack_policy"] == "explicit"
    assert info["max_deliver"] == -1  # unlimited: the runner dead-letters by itself
    assert sorted(info["filter_subjects"]) == ["orders.created", "orders.inventory.release"]
    assert info["state"]["pending"] == 1
    assert info["state"]["ack_pending"] == 2
    assert info["state"]["redelivered"] == 1
    assert info["state"]["ack_floor"]["stream_seq"] == 1
    assert info["state"]["delivered"]["stream_seq"] == 3

    text = await cli("consumer", "info", "ORDERS", "inventory-service", "--nats", nats_server.url)
    assert text.exit_code == 0, text.output
    lines = [line.strip() for line in text.stdout.splitlines()]
    for expected in (
        "stream: ORDERS",
        "name: inventory-service",
        "ack policy: explicit",
        "ack wait: 30s",
        "max deliver: -1",
        "pending: 1",
        "ack pending: 2",
        "redelivered: 1",
        "ack floor:",
    ):
        assert expected in lines, expected
    floor = lines.index("ack floor:")
    assert "stream seq: 1" in lines[floor + 1 : floor + 3]


async def test_cli_consumer_info_unknown_consumer(nats_server: EmbeddedServer, js: JetStreamContext) -> None:
    await plan_and_apply(js, shipped())
    result = await cli("consumer", "info", "ORDERS", "nobody", "--nats", nats_server.url)
    assert result.exit_code == 1
    assert "consumer ORDERS/nobody not found" in result.stderr
