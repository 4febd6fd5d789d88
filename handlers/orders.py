"""Order intake: turn a validated request body into the `orders.created` event."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from handlers import money


def accept(body: dict[str, Any], order_id: str) -> dict[str, Any]:
    """Price the order server-side, exactly: prices and the total leave as two-place decimal strings.

    A price with more than two decimal places is refused (ValueError: the API answers 422) rather than
    rounded: nobody should pay an amount they did not send.
    """
    items, total = [], Decimal(0)
    for index, item in enumerate(body["items"]):
        price = money.parse(item["price"])
        if not money.has_cents_only(price):
            raise ValueError(f"items[{index}].price must have at most 2 decimal places")
        quantity = int(item["quantity"])  # JSON Schema's "integer" admits 1.0
        total += price * quantity
        items.append({"productId": item["productId"], "quantity": quantity, "price": money.text(price)})
    return {"orderId": order_id, "customerId": body["customerId"], "items": items, "total": money.text(total)}
