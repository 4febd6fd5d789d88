"""The flight service: books seats for a booking; cancels them as a compensation."""

from __future__ import annotations

from typing import Any

from runner.handler import Context, Outcome, emit
from travel import inventory


async def book(msg: dict[str, Any], ctx: Context) -> Outcome:
    booking, flight = msg["bookingId"], msg["flightId"]
    status, detail = await ctx.kv("FLIGHTS").mutate(flight, inventory.hold(booking, msg["seats"], "seats"))
    if status == inventory.HELD:
        return emit("booked", flightFare=detail, ticket=f"{flight}-{booking[:8].upper()}")
    return emit("failed", reason=f"flight {flight}: {detail}")


async def cancel(msg: dict[str, Any], ctx: Context) -> Outcome:
    await ctx.kv("FLIGHTS").mutate(msg["flightId"], inventory.release(msg["bookingId"], msg["seats"]))
    return emit("cancelled")
