"""The hotel service: reserves a room for a booking's nights; cancels it as a compensation."""

from __future__ import annotations

from typing import Any

from runner.handler import Context, Outcome, emit
from travel import inventory


async def reserve(msg: dict[str, Any], ctx: Context) -> Outcome:
    booking, hotel = msg["bookingId"], msg["hotelId"]
    status, detail = await ctx.kv("HOTELS").mutate(hotel, inventory.hold(booking, 1, "rooms", priced_as=msg["nights"]))
    if status == inventory.HELD:
        return emit("reserved", hotelPrice=detail, confirmation=f"{hotel}-{booking[:8].upper()}")
    return emit("failed", reason=f"hotel {hotel}: {detail}")


async def cancel(msg: dict[str, Any], ctx: Context) -> Outcome:
    await ctx.kv("HOTELS").mutate(msg["hotelId"], inventory.release(msg["bookingId"], 1))
    return emit("cancelled")
