"""Stock reservations: never oversell, never reserve or release twice.

State: INVENTORY holds one record per product ({available, reserved, applied}); RESERVATIONS holds
one record per order ({state, items, reason}), written once the order's outcome is known: it is the
idempotency key of the whole order (a redelivery that finds it answers as before).

A multi-product reservation cannot be one atomic write, so each per-product change is itself
idempotent: it records what it did for the order in the product's `applied` map, in the same
compare-and-set write. A redelivery after a crash re-runs the steps and every finished one is a
no-op. Once the order's record exists the markers are no longer needed; they are dropped on the
product's next write.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from runner.handler import Context, Outcome, RetryableError, emit

RESERVED, FAILED, RELEASING, RELEASED = "reserved", "failed", "releasing", "released"
RESERVE, UNDO, RELEASE = "r", "u", "x"

# Orders whose RESERVATIONS record is written: their markers go on each product's next write.
_settled: dict[str, set[str]] = defaultdict(set)


def _quantities(items: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for item in items:
        out[item["productId"]] += int(item["quantity"])
    return dict(sorted(out.items()))


def _product_op(product: str, order_id: str, op: str, qty: int):
    """A pure mutation of one product record; its result is True, or why it could not reserve."""
    settled = _settled.pop(product, set())

    def apply(value: dict[str, Any] | None) -> tuple[Any, Any]:
        if value is None:
            return value, (f"unknown product {product}" if op == RESERVE else True)
        applied: dict[str, dict[str, Any]] = value.get("applied", {})
        stale = settled.intersection(applied) if settled else None
        if stale:  # cleaning up is a change of its own, written even if the op itself is a no-op
            applied = {k: v for k, v in applied.items() if k not in stale}
            value = {**value, "applied": applied}
        mine = applied.get(order_id, {})
        if op in mine:
            return value, mine[op]
        if op == RESERVE and UNDO in mine:
            return value, "reservation was rolled back"
        if op == UNDO and mine.get(RESERVE) is not True:
            return value, True  # nothing was reserved here, so nothing to undo
        available, reserved = value["available"], value["reserved"]
        if op == RESERVE:
            if available < qty:
                return value, f"insufficient stock for {product}: {qty} requested, {available} available"
            available, reserved = available - qty, reserved + qty
        else:  # undo a partial reservation, or release a complete one
            available, reserved = available + qty, reserved - qty
        applied = {**applied, order_id: {**mine, op: True}}
        return {**value, "available": available, "reserved": reserved, "applied": applied}, True

    return apply


def _settle(products: Any, order_id: str) -> None:
    for product in products:
        _settled[product].add(order_id)


def _record(state: str, items: dict[str, int], reason: str | None = None):
    def apply(value: dict[str, Any] | None) -> tuple[Any, Any]:
        if value is not None:
            return value, value  # already decided (a concurrent duplicate, or a release tombstone)
        new = {"state": state, "items": items, **({"reason": reason} if reason else {})}
        return new, new

    return apply


async def reserve(msg: dict[str, Any], ctx: Context) -> Outcome:
    order_id = msg["orderId"]
    quantities = _quantities(msg["items"])
    reservations, stock = ctx.kv("RESERVATIONS"), ctx.kv("INVENTORY")

    record, _ = await reservations.get(order_id)
    if record is None:
        reason = None
        for product, qty in quantities.items():
            result = await stock.mutate(product, _product_op(product, order_id, RESERVE, qty))
            if result is not True:
                reason = result
                break
        if reason is None:
            record = await reservations.mutate(order_id, _record(RESERVED, quantities), assume_absent=True)
        else:
            record = {"state": FAILED, "reason": reason}
        if record["state"] != RESERVED:  # failed, or cancelled meanwhile (a release tombstone): roll back
            for product, qty in quantities.items():
                await stock.mutate(product, _product_op(product, order_id, UNDO, qty))
            if reason is not None:
                record = await reservations.mutate(order_id, _record(FAILED, quantities, reason), assume_absent=True)
    _settle(quantities, order_id)
    if record["state"] in (RESERVED, RELEASING):
        return emit("reserved", items=msg["items"])
    return emit("failed", reason=record.get("reason") or "order was cancelled")


async def release(msg: dict[str, Any], ctx: Context) -> Outcome:
    """Compensation: return an order's reserved stock, exactly once."""
    order_id = msg["orderId"]
    reservations, stock = ctx.kv("RESERVATIONS"), ctx.kv("INVENTORY")

    def begin(value: dict[str, Any] | None) -> tuple[Any, Any]:
        if value is None:  # cancelled before any reservation: a tombstone stops a late one
            new = {"state": RELEASED, "items": {}, "reason": "order was cancelled before reservation"}
            return new, new
        if value["state"] == RESERVED:
            new = {**value, "state": RELEASING}
            return new, new
        return value, value

    record = await reservations.mutate(order_id, begin)
    if record["state"] == RELEASING:
        for product, qty in record["items"].items():
            await stock.mutate(product, _product_op(product, order_id, RELEASE, qty))

        def done(value: dict[str, Any] | None) -> tuple[Any, Any]:
            if value is None or value["state"] != RELEASING:
                raise RetryableError(f"reservation of order {order_id} changed while releasing")
            new = {**value, "state": RELEASED}
            return new, new

        record = await reservations.mutate(order_id, done)
    _settle(record.get("items", {}), order_id)
    return emit("released")


def view(product_id: str, value: dict[str, Any]) -> dict[str, Any]:
    """GET /api/inventory/{productId}."""
    return {"productId": product_id, "available": value["available"], "reserved": value["reserved"]}
