"""Order intake: turn a validated request body into the `orders.created` event."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any


def accept(body: dict[str, Any], order_id: str) -> dict[str, Any]:
    """Price the order server-side (exact decimal arithmetic, rounded to cents)."""
    total = sum((Decimal(str(i["price"])) * i["quantity"] for i in body["items"]), Decimal(0))
    return {
        "orderId": order_id,
        "customerId": body["customerId"],
        "items": [{"productId": i["productId"], "quantity": i["quantity"], "price": i["price"]} for i in body["items"]],
        "total": float(total.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)),
    }
