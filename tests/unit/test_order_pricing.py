"""Order intake prices exactly: two-place decimal strings out, no float drift, no silent rounding."""

from __future__ import annotations

import pytest

from handlers.orders import accept


def body(*items: tuple[int | float, int | float]) -> dict:
    return {
        "customerId": "C1",
        "items": [{"productId": f"P-{i}", "quantity": q, "price": p} for i, (q, p) in enumerate(items)],
    }


def test_seed_order_totals_exactly() -> None:
    created = accept(body((1, 999.99), (2, 29.99)), "ORD-1")
    assert created["total"] == "1059.97"
    assert [i["price"] for i in created["items"]] == ["999.99", "29.99"]


def test_largest_order_is_exact_to_the_cent() -> None:
    assert accept(body((999_999, 999_999_999.99)), "ORD-1")["total"] == "999998999990000.01"


def test_sums_that_drift_as_floats_do_not_drift() -> None:
    assert 0.1 + 0.2 != 0.3
    assert accept(body((1, 0.1), (1, 0.2)), "ORD-1")["total"] == "0.30"


def test_integral_float_quantity_becomes_an_integer() -> None:
    created = accept(body((2.0, 10)), "ORD-1")
    assert created["items"][0]["quantity"] == 2 and type(created["items"][0]["quantity"]) is int
    assert created["total"] == "20.00"


@pytest.mark.parametrize("price", [10.005, 0.001, 1e-7])
def test_more_than_two_decimal_places_is_refused(price: float) -> None:
    with pytest.raises(ValueError, match=r"items\[1\]\.price must have at most 2 decimal places"):
        accept(body((1, 1), (1, price)), "ORD-1")
