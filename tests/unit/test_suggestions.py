"""A misspelt name gets "did you mean …?" with the closest declared one, and cross-file problems point at the line
that causes them. Each test makes one typo in a private copy of the shipped configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.config.suggest import closest, did_you_mean
from tests.unit.test_config_errors import assert_at, make, only


def test_closest_picks_the_nearest_name_or_none() -> None:
    assert closest("cancelld", ["completed", "cancelled", "pending"]) == "cancelled"
    assert closest("zzz", ["completed", "cancelled"]) is None
    assert closest("cancelled", ["cancelled"]) is None  # never the name itself
    assert did_you_mean("INVENTRY", ["INVENTORY", "ORDER_SAGA"]) == "; did you mean 'INVENTORY'?"
    assert did_you_mean("zzz", ["INVENTORY"]) == ""


# (file, text written, its typo, the problem's start, the suggestion, the key path)
CASES = [
    (
        "flows/inventory.yaml",
        "        batch: 128\n",
        "        btach: 128\n",
        "unknown key 'btach'",
        "batch",
        "services.inventory.consumers.inventory-service.btach",
    ),
    (
        "flows/saga.yaml",
        "orders.inventory.failed: {goto: cancelled}",
        "orders.inventory.failed: {goto: canceled}",
        "state 'canceled' is not declared",
        "cancelled",
        "sagas.order.states.pending.on.orders.inventory.failed.goto",
    ),
    (
        "flows/saga.yaml",
        "goto: cancelled, compensate: true, reason: inventory did not answer",
        "goto: cancelld, compensate: true, reason: inventory did not answer",
        "state 'cancelld' is not declared",
        "cancelled",
        "sagas.order.states.pending.timeout.goto",
    ),
    (
        "flows/saga.yaml",
        "awaits: inventory ",
        "awaits: inventroy ",
        "step 'inventroy' is not declared",
        "inventory",
        "sagas.order.states.pending.awaits",
    ),
    (
        "flows/saga.yaml",
        "completes: inventory\n",
        "completes: invntory\n",
        "step 'invntory' is not declared",
        "inventory",
        "sagas.order.states.pending.on.orders.inventory.reserved.completes",
    ),
    (
        "flows/saga.yaml",
        "orders.payment.failed: {goto: cancelled, compensate: true}",
        "orders.paymnt.failed: {goto: cancelled, compensate: true}",
        "consumer 'order-service' does not receive 'orders.paymnt.failed'",
        "orders.payment.failed",
        "sagas.order.states.awaiting_payment.on.orders.paymnt.failed",
    ),
    (
        "flows/saga.yaml",
        "{subject: orders.payment.requested,",
        "{subject: order.payment.requested,",
        "subject 'order.payment.requested' is not covered by any stream",
        "orders.payment.requested",
        "sagas.order.states.pending.on.orders.inventory.reserved.emit[0]",
    ),
    (
        "flows/inventory.yaml",
        "- subject: orders.created",
        "- subject: orders.creatd",
        "no consumer of service 'inventory' receives 'orders.creatd'",
        "orders.created",
        "services.inventory.handlers[0].subject",
    ),
    (
        "flows/saga.yaml",
        "bucket: ORDER_SAGA",
        "bucket: ORDER_SAGAS",
        "KV bucket 'ORDER_SAGAS' is not declared",
        "ORDER_SAGA",
        "sagas.order.bucket",
    ),
    (
        "flows/inventory.yaml",
        "kv: [INVENTORY, RESERVATIONS]",
        "kv: [INVENTORY, RESERVATION]",
        "KV bucket 'RESERVATION' is not declared",
        "RESERVATIONS",
        "services.inventory.kv[1]",
    ),
    (
        "flows/order.yaml",
        "bucket: INVENTORY",
        "bucket: INVENTRY",
        "KV bucket 'INVENTRY' is not declared",
        "INVENTORY",
        "services.order.http.resources.inventory.bucket",
    ),
    (
        "flows/inventory.yaml",
        "handler: handlers.inventory.reserve",
        "handler: handlers.inventory.reserv",
        "module 'handlers.inventory' has no attribute 'reserv'",
        "reserve",
        "services.inventory.handlers[0].handler",
    ),
    (
        "flows/saga.yaml",
        "customerId: data.customerId",
        "customerId: data.custmerId",
        "the start event orders.created has no field 'custmerId'",
        "customerId",
        "sagas.order.states.pending.on.orders.inventory.reserved.emit[0].with.customerId",
    ),
]


@pytest.mark.parametrize(("name", "old", "new", "problem", "suggestion", "path"), CASES, ids=[c[3] for c in CASES])
def test_typo_gets_the_closest_declared_name_at_its_line(
    config_copy: Path, name: str, old: str, new: str, problem: str, suggestion: str, path: str
) -> None:
    p = make(config_copy)
    p.replace(name, old, new)
    found = only(p.problems(), problem)
    assert found.message.endswith(f"; did you mean {suggestion!r}?"), found.message
    assert_at(found, p, name, p.line(name, new.strip()), path)


def test_no_suggestion_when_nothing_is_close(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace("flows/saga.yaml", "orders.inventory.failed: {goto: cancelled}", "orders.inventory.failed: {goto: xyz}")
    found = only(p.problems(), "state 'xyz' is not declared")
    assert "did you mean" not in found.message


def test_timer_stream_without_schedules_is_reported_at_the_stream(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace("streams.yaml", "    allow_msg_schedules: true\n", "")
    found = only(p.problems(), "allow_msg_schedules")
    assert "saga 'order'" in found.message
    assert_at(
        found, p, "streams.yaml", p.line("streams.yaml", "  TIMERS:", exact=True), "streams.TIMERS.allow_msg_schedules"
    )


def test_missing_timers_is_reported_at_the_first_timeout(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace("flows/saga.yaml", "    timers: {stream: TIMERS, subject: flowrun.timers.order}\n", "")
    found = only(p.problems(), "need a 'timers' stream")
    line = p.line("flows/saga.yaml", "INVENTORY_TIMEOUT")
    assert_at(found, p, "flows/saga.yaml", line, "sagas.order.states.pending.timeout")
