"""Holding one unit of a limited resource (a hotel room, a flight seat) for a booking, exactly once.

A resource's KV record holds its stock and, per booking, what was done: `held` (booking → price) and
`released` (bookings undone). Both the hold and its release are one compare-and-set of that record, so
a redelivered hold finds its own entry, and a release that arrives before its hold (a timeout, a lost
answer) leaves the booking in `released`: the late hold then fails instead of leaking a room.
The `released` list only grows; a real system would expire entries older than the saga's timeouts.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

HELD, FAILED = "held", "failed"


def hold(booking: str, units: int, what: str, priced_as: int | None = None):
    """A pure mutation of the resource record: (new record, (HELD, price) or (FAILED, reason)).
    `units` are taken from stock; the price is the unit price times `priced_as` (default: units),
    so one hotel room for three nights costs three nights."""

    def apply(record: dict[str, Any] | None) -> tuple[Any, tuple[str, str]]:
        if record is None:
            return record, (FAILED, f"unknown {what}")
        if booking in record["held"]:
            return record, (HELD, record["held"][booking])
        if booking in record["released"]:
            return record, (FAILED, "booking was cancelled")
        if record["available"] < units:
            return record, (FAILED, f"no {what} left: {units} wanted, {record['available']} available")
        price = f"{Decimal(record['price']) * (units if priced_as is None else priced_as):.2f}"
        changed = {**record, "available": record["available"] - units, "held": {**record["held"], booking: price}}
        return changed, (HELD, price)

    return apply


def release(booking: str, units: int):
    """Undo a hold (or forbid a later one): idempotent, whatever came first."""

    def apply(record: dict[str, Any] | None) -> tuple[Any, bool]:
        if record is None or booking in record["released"]:
            return record, True
        held = dict(record["held"])
        returned = units if held.pop(booking, None) is not None else 0
        changed = {
            **record,
            "available": record["available"] + returned,
            "held": held,
            "released": [*record["released"], booking],
        }
        return changed, True

    return apply


def view(key: str, record: dict[str, Any]) -> dict[str, Any]:
    """GET /api/<resource>/{id}: what is left and what is held."""
    return {"id": key, "available": record["available"], "price": record["price"], "held": len(record["held"])}
