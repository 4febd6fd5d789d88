"""Payments: charge an order's total at most once; refund at most once.

One PAYMENTS record per order, written with compare-and-set, is the idempotency key: a redelivered
charge finds the record and answers as before instead of charging again.
"""

from __future__ import annotations

import uuid
from typing import Any

from handlers import money
from runner.handler import Context, Outcome, emit

CHARGED, DECLINED, REFUNDED, VOIDED = "charged", "declined", "refunded", "voided"


async def charge(msg: dict[str, Any], ctx: Context) -> Outcome:
    order_id, total = msg["orderId"], money.parse(msg["total"])
    limit = ctx.settings["decline_over"]  # a Decimal with 2 places (type: decimal in flows/payment.yaml)

    def decide(value: dict[str, Any] | None) -> tuple[Any, Any]:
        if value is not None:
            return value, value
        if total > limit:
            new = {
                "status": DECLINED,
                "amount": money.text(total),
                "reason": f"payment declined: total {money.text(total)} exceeds limit {money.text(limit)}",
            }
        else:  # the gateway's reference for the charge; stored once, so a redelivery answers with the same
            new = {"status": CHARGED, "amount": money.text(total), "paymentId": f"PAY-{uuid.uuid4().hex[:16]}"}
        return new, new

    record = await ctx.kv("PAYMENTS").mutate(order_id, decide, assume_absent=True)
    if record["status"] == CHARGED or record["status"] == REFUNDED:
        return emit("completed", amount=record["amount"], paymentId=record.get("paymentId"))
    return emit("failed", reason=record.get("reason") or "order was cancelled")


async def refund(msg: dict[str, Any], ctx: Context) -> Outcome:
    """Compensation: undo a charge. Before any charge, a tombstone makes a late charge decline."""
    order_id = msg["orderId"]

    def undo(value: dict[str, Any] | None) -> tuple[Any, Any]:
        if value is None:
            new = {"status": VOIDED, "amount": "0.00", "reason": "order was cancelled before payment"}
            return new, new
        if value["status"] == CHARGED:
            new = {**value, "status": REFUNDED}
            return new, new
        return value, value

    await ctx.kv("PAYMENTS").mutate(order_id, undo)
    return emit("refunded")
