"""The billing service: charges the hotel and the flight together, at most once; refunds at most once.

One CHARGES record per booking is the idempotency key. A refund before any charge leaves a `voided`
tombstone, so a late charge declines instead of taking money for a cancelled trip.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from runner.handler import Context, Outcome, emit

CHARGED, DECLINED, REFUNDED, VOIDED = "charged", "declined", "refunded", "voided"


async def charge(msg: dict[str, Any], ctx: Context) -> Outcome:
    amount = Decimal(msg["hotelPrice"]) + Decimal(msg["flightFare"])
    limit: Decimal = ctx.settings["card_limit"]

    def decide(record: dict[str, Any] | None) -> tuple[Any, dict[str, Any]]:
        if record is not None:
            return record, record
        if amount > limit:
            new = {"status": DECLINED, "amount": f"{amount:.2f}", "reason": f"card declined: {amount:.2f} over limit"}
        else:
            new = {"status": CHARGED, "amount": f"{amount:.2f}"}
        return new, new

    record = await ctx.kv("CHARGES").mutate(msg["bookingId"], decide, assume_absent=True)
    if record["status"] in (CHARGED, REFUNDED):
        return emit("charged", amount=record["amount"])
    return emit("declined", reason=record.get("reason") or "booking was cancelled")


async def refund(msg: dict[str, Any], ctx: Context) -> Outcome:
    def undo(record: dict[str, Any] | None) -> tuple[Any, None]:
        if record is None:
            return {"status": VOIDED, "amount": "0.00"}, None
        if record["status"] == CHARGED:
            return {**record, "status": REFUNDED}, None
        return record, None

    await ctx.kv("CHARGES").mutate(msg["bookingId"], undo)
    return emit("refunded")
