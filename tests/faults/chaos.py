"""Handlers that misbehave on purpose, copied into a test's private config as package `chaos`.

Switches are files next to the package (so a test can flip them while the service runs); every
call is appended to calls.log as `<epoch seconds> <handler> <orderId>`.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from handlers import inventory, payment
from runner.handler import Context, FatalError, Outcome, RetryableError

HERE = Path(__file__).resolve().parent
CALLS = HERE / "calls.log"


def _record(name: str, msg: dict[str, Any]) -> None:
    with CALLS.open("a") as f:
        f.write(f"{time.time():.6f} {name} {msg['orderId']}\n")


async def flaky_charge(msg: dict[str, Any], ctx: Context) -> Outcome:
    """Fails retryably for customer FAIL while the `broken` switch exists; otherwise the real charge."""
    _record("charge", msg)
    if msg.get("customerId") == "FAIL" and (HERE / "broken").exists():
        raise RetryableError("payment gateway unavailable")
    return await payment.charge(msg, ctx)


async def fatal_charge(msg: dict[str, Any], ctx: Context) -> Outcome:
    """Fails fatally while the `broken` switch exists (a bug the operator fixes, then replays)."""
    _record("charge", msg)
    if (HERE / "broken").exists():
        raise FatalError("card processor rejected the request format")
    return await payment.charge(msg, ctx)


async def fatal_reserve(msg: dict[str, Any], ctx: Context) -> Outcome:
    """Fails fatally while the `broken` switch exists: a dead letter on orders.created, a subject the saga shares."""
    _record("reserve", msg)
    if (HERE / "broken").exists():
        raise FatalError("stock service rejected the request format")
    return await inventory.reserve(msg, ctx)


async def slow_reserve(msg: dict[str, Any], ctx: Context) -> Outcome:
    """The real reservation, after a pause longer than the consumer's ack wait."""
    _record("reserve", msg)
    await asyncio.sleep(float((HERE / "delay").read_text()))
    return await inventory.reserve(msg, ctx)


async def charge_answer_lost(msg: dict[str, Any], ctx: Context) -> Outcome:
    """Charges for real, then fails fatally: the money moved but its answer never reaches the saga."""
    _record("charge", msg)
    await payment.charge(msg, ctx)
    raise FatalError("connection to the card processor dropped after the charge")
