"""Saga contracts in YAML: a required key, each consumer's correlation key, field picks that can be right."""

from __future__ import annotations

from pathlib import Path

from runner.config.loader import load
from tests.unit.test_config_errors import assert_at, make, only

SAGA = "flows/saga.yaml"


def test_a_saga_without_a_key_is_a_problem_at_its_line(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace(SAGA, "    key: orderId", "    # no key")
    problem = only(p.problems(), "'key' is a required property")
    assert_at(problem, p, SAGA, p.line(SAGA, "  order:", exact=True), "sagas.order")


def test_every_consumer_takes_the_key_of_the_saga_whose_subjects_it_handles(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace(SAGA, "    key: orderId", "    key: purchaseId")
    p.replace("flows/messages.yaml", "required: [orderId, customerId, items, total]", "required: [customerId]")
    config, problems = load(p.root, {})
    assert problems == [] and config is not None
    keys = {c.durable: c.key for s in config.services.values() for c in s.consumers.values()}
    assert keys == {"order-service": "purchaseId", "inventory-service": "purchaseId", "payment-service": "purchaseId"}


AUDIT = """
  audit:
    consumers:
      audit-service:
        stream: ORDERS
        filter_subjects: [payment.audit]
    handlers:
      - {subject: payment.audit, handler: handlers.payment.refund}
"""


def test_a_consumer_of_no_sagas_subjects_must_declare_its_key(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace("flows/payment.yaml", "\nkv:\n", AUDIT + "\nkv:\n")
    problem = only(p.problems(), "consumer 'audit-service' handles no saga's subjects")
    assert problem.message.endswith("declare it (key: <field>)")
    assert_at(problem, p, "flows/payment.yaml", p.line("flows/payment.yaml", "audit-service:"), _at("audit"))

    p.replace(
        "flows/payment.yaml",
        "        filter_subjects: [payment.audit]\n",
        "        filter_subjects: [payment.audit]\n        key: auditId\n",
    )
    config, problems = load(p.root, {})
    assert problems == [] and config is not None
    assert config.services["audit"].consumers["audit-service"].key == "auditId"


RESTOCK = """
  restock:
    service: inventory
    consumer: restock-service
    key: productId
    bucket: INVENTORY
    start: {on: orders.created, state: open}
    states:
      open: {terminal: true}
"""


def test_a_consumer_of_two_sagas_subjects_with_different_keys_must_declare_its_key(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace(SAGA, "\nkv:\n", RESTOCK + "\nkv:\n")
    p.replace(
        "flows/inventory.yaml",
        "    retry:\n",
        "      restock-service: {stream: ORDERS, filter_subjects: [orders.created]}\n    retry:\n",
    )
    problem = only(p.problems(), "consumer 'inventory-service' handles subjects of sagas")
    assert "order (key orderId), restock (key productId)" in problem.message
    where = "services.inventory.consumers.inventory-service"
    assert_at(problem, p, "flows/inventory.yaml", p.line("flows/inventory.yaml", "inventory-service:"), where)

    p.replace("flows/inventory.yaml", "        batch: 128\n", "        batch: 128\n        key: orderId\n")
    config, problems = load(p.root, {})
    assert problems == [] and config is not None
    assert config.services["inventory"].consumers["restock-service"].key == "productId"  # the saga it delivers


def test_a_sagas_own_consumer_cannot_use_another_key(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace("flows/order.yaml", "        batch: 128", "        key: customerId\n        batch: 128")
    problem = only(p.problems(), "delivers saga order's events, keyed by 'orderId'")
    assert_at(problem, p, "flows/order.yaml", p.line("flows/order.yaml", "key: customerId"), _at("order") + ".key")


def test_field_picks_are_checked_where_knowable(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace(
        SAGA, "customerId: data.customerId, total: data.total}", "customerId: data.customer, ticket: gathered.ticket}"
    )
    p.replace(
        SAGA,
        "keep: {paymentId: paymentId}}\n          orders.payment.failed",
        "keep: {orderId: id}}\n          orders.payment.failed",
    )
    problems = p.problems()
    emit = "sagas.order.states.pending.on.orders.inventory.reserved.emit[0]"
    line = p.line(SAGA, "data.customer,")
    assert_at(only(problems, "orders.created has no field 'customer'"), p, SAGA, line, f"{emit}.with.customerId")
    assert_at(only(problems, "no transition keeps 'ticket'"), p, SAGA, line, f"{emit}.with.ticket")
    assert_at(only(problems, "orders.payment.requested requires 'total'"), p, SAGA, line, f"{emit}.with")
    kept = only(problems, "'orderId' is the saga's key: gathered fields need other names")
    assert kept.path == "sagas.order.states.awaiting_payment.on.orders.payment.completed.keep.orderId"


def test_a_pick_is_a_path_never_code(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace(SAGA, "total: data.total}", "total: \"data['total']\"}")
    problem = only(p.problems(), "does not match")
    assert problem.path == "sagas.order.states.pending.on.orders.inventory.reserved.emit[0].with.total"


def test_a_declared_failed_state_must_be_terminal(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace(SAGA, "      failed:   ", "      failed: {}\n      old_failed:   ")  # declared, and not terminal
    problem = only(p.problems(), "state 'failed' is where an instance whose start was rejected ends: mark it terminal")
    assert problem.path == "sagas.order.states.failed"


def _at(service: str) -> str:
    durable = {"audit": "audit-service", "order": "order-service"}[service]
    return f"services.{service}.consumers.{durable}"
