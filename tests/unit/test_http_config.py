"""`http: resources:` in the YAML: names derived where not declared, and every mistake reported at its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.config.http import singular
from tests.unit.test_config_errors import assert_at, make, only
from tests.unit.test_config_hardening import loaded


@pytest.mark.parametrize(
    ("plural", "one"),
    [("orders", "order"), ("bookings", "booking"), ("categories", "category"), ("addresses", "address"),
     ("boxes", "box"), ("inventory", "inventory"), ("status", "status"), ("glass", "glass"), ("analysis", "analysis")],
)  # fmt: skip
def test_singular_names_for_messages(plural: str, one: str) -> None:
    assert singular(plural) == one


def test_shipped_resources_take_their_names_from_the_yaml(config_copy: Path) -> None:
    http = loaded(make(config_copy)).services["order"].http
    assert http is not None
    orders, inventory = http.resources["orders"], http.resources["inventory"]
    assert (orders.path, orders.name, orders.saga, orders.id_source) == ("/api/orders", "order", "order", "generated")
    assert orders.commands == {"cancel": "orders.cancel.requested"}
    assert (inventory.path, inventory.name, inventory.bucket, inventory.key) == (
        "/api/inventory",
        "inventory",
        "INVENTORY",
        "productId",
    )


def test_declared_path_and_name_win(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace(
        "flows/order.yaml",
        "          saga: order   ",
        "          path: /v2/purchases\n          name: buy\n          saga: order   ",
    )
    orders = loaded(p).services["order"].http.resources["orders"]
    assert (orders.path, orders.name) == ("/v2/purchases", "buy")


def test_a_command_no_state_takes_is_refused(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace("flows/order.yaml", "cancel: {event: orders.cancel.requested}", "cancel: {event: orders.cancel.asked}")
    problem = only(p.problems(), "no state of saga 'order' has a transition on 'orders.cancel.asked'")
    assert_at(
        problem,
        p,
        "flows/order.yaml",
        p.line("flows/order.yaml", "orders.cancel.asked"),
        "services.order.http.resources.orders.commands.cancel.event",
    )


def test_client_ids_need_the_body_to_require_the_id(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace("flows/order.yaml", "          id: generated ", "          id: client    ")
    problem = only(p.problems(), "id: client takes the id from the body's orderId: body_schema must require it")
    assert problem.path == "services.order.http.resources.orders.id"


def test_clashing_and_reserved_paths_are_refused(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace(
        "flows/order.yaml",
        "          bucket: INVENTORY\n",
        "          bucket: INVENTORY\n          path: /api/orders/stock\n",
    )
    problem = only(p.problems(), "clashes with resource 'orders'")
    assert problem.path == "services.order.http.resources.inventory.path"
    p.replace("flows/order.yaml", "path: /api/orders/stock", "path: /healthz")
    only(p.problems(), "path /healthz is the service's own")


def test_a_resource_is_a_saga_or_a_bucket(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace(
        "flows/order.yaml", "          bucket: INVENTORY\n", "          bucket: INVENTORY\n          saga: order\n"
    )
    problem = only(p.problems(), "either a saga's instances (saga:) or a KV bucket's values (bucket:)")
    assert problem.path == "services.order.http.resources.inventory"


def test_saga_only_keys_on_a_kv_view_are_refused(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace(
        "flows/order.yaml",
        "          key: productId\n",
        "          key: productId\n          accept: handlers.orders.accept\n",
    )
    problem = only(p.problems(), "accept: applies to saga resources only")
    assert problem.path == "services.order.http.resources.inventory.accept"
