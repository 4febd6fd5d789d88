"""Every kind of bad request gets a 4xx JSON error naming the field, and publishes nothing."""

from __future__ import annotations

import copy

import pytest

from tests.conftest import SEED_ORDER, System

pytestmark = pytest.mark.asyncio(loop_scope="session")


def with_item(**changes: object) -> dict:
    body = copy.deepcopy(SEED_ORDER)
    body["items"][0].update(changes)
    return body


def without(key: str) -> dict:
    body = copy.deepcopy(SEED_ORDER)
    del body[key]
    return body


CASES = [
    ("invalid json", b"{not json", 400, None),
    ("empty body", b"", 400, None),
    ("array body", b"[1, 2]", 400, None),
    ("string body", b'"order"', 400, None),
    ("missing customerId", without("customerId"), 422, "customerId"),
    ("missing items", without("items"), 422, "items"),
    ("empty items", {**SEED_ORDER, "items": []}, 422, "items"),
    ("empty customerId", {**SEED_ORDER, "customerId": ""}, 422, "customerId"),
    ("customerId with dot", {**SEED_ORDER, "customerId": "a.b"}, 422, "customerId"),
    ("customerId with star", {**SEED_ORDER, "customerId": "a*"}, 422, "customerId"),
    ("customerId with gt", {**SEED_ORDER, "customerId": "a>"}, 422, "customerId"),
    ("customerId with space", {**SEED_ORDER, "customerId": "a b"}, 422, "customerId"),
    ("productId with dot", with_item(productId="LAPTOP.001"), 422, "items[0].productId"),
    ("productId with tab", with_item(productId="LAP\tTOP"), 422, "items[0].productId"),
    ("quantity zero", with_item(quantity=0), 422, "items[0].quantity"),
    ("quantity negative", with_item(quantity=-3), 422, "items[0].quantity"),
    ("quantity fractional", with_item(quantity=1.5), 422, "items[0].quantity"),
    ("quantity string", with_item(quantity="2"), 422, "items[0].quantity"),
    ("negative price", with_item(price=-1), 422, "items[0].price"),
    ("price string", with_item(price="cheap"), 422, "items[0].price"),
    ("missing price", {**SEED_ORDER, "items": [{"productId": "X", "quantity": 1}]}, 422, "items[0].price"),
    ("item not object", {**SEED_ORDER, "items": ["LAPTOP-001"]}, 422, "items[0]"),
    ("unknown field", {**SEED_ORDER, "coupon": "FREE"}, 422, "coupon"),
]


async def _orders_stream_count(system: System) -> int:
    info = await system.runtime.js.stream_info("ORDERS")
    return info.state.messages


@pytest.mark.parametrize(("name", "body", "status", "field"), CASES, ids=[c[0] for c in CASES])
async def test_bad_order_is_rejected_with_a_named_field(system: System, name, body, status, field) -> None:
    before = await _orders_stream_count(system)
    kwargs = {"data": body} if isinstance(body, bytes) else {"json": body}
    async with system.http.post(
        f"{system.base}/api/orders", headers={"Content-Type": "application/json"}, **kwargs
    ) as resp:
        assert resp.status == status, await resp.text()
        payload = await resp.json()
    assert payload["error"]
    if field is not None:
        assert payload["field"] == field, payload
    assert await _orders_stream_count(system) == before, "a rejected request must publish nothing"


async def test_body_over_one_mebibyte_is_refused(system: System) -> None:
    before = await _orders_stream_count(system)
    huge = b'{"customerId": "C", "items": [], "pad": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    async with system.http.post(
        f"{system.base}/api/orders", data=huge, headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 413
        assert "exceeds" in (await resp.json())["error"]
    assert await _orders_stream_count(system) == before


async def test_wrong_method_is_a_json_405(system: System) -> None:
    async with system.http.delete(f"{system.base}/api/orders") as resp:
        assert resp.status == 405
        assert "error" in await resp.json()
