"""Shipping: book one shipment per order. Idempotent: a redelivery finds the booking."""

from __future__ import annotations

from typing import Any

from runner.handler import Context, Outcome, emit


async def schedule(msg: dict[str, Any], ctx: Context) -> Outcome:
    def book(value: dict[str, Any] | None) -> tuple[Any, Any]:
        if value is not None:
            return value, value  # already booked: answer as before
        shipment = {"carrier": "ACME", "items": len(msg["items"])}
        return shipment, shipment

    shipment = await ctx.kv("SHIPMENTS").mutate(msg["orderId"], book)
    return emit("scheduled", carrier=shipment["carrier"])
