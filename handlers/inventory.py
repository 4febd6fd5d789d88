"""Stock reservations: never oversell, never reserve or release twice.

State: INVENTORY holds one record per product ({available, reserved, applied}); RESERVATIONS holds
one record per order ({state, items, reason}) and is the idempotency key of the whole order.

A multi-product reservation cannot be one atomic write, so each per-product change is itself
idempotent: it records `<orderId>:<op>` in the product's `applied` map in the same compare-and-set
write. A redelivery after a crash re-runs the steps and every finished one is a no-op. Once the
order's record is final the markers are no longer needed and are dropped on the product's next write.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from runner.handler import Context, Outcome, RetryableError, emit

RESERVING, FAILING, RESERVED, FAILED, RELEASING, RELEASED = (
    "reserving",
    "failing",
    "reserved",
    "failed",
    "releasing",
    "released",
)
FINAL = (RESERVED, FAILED, RELEASED)

# Markers of orders whose reservation is final, dropped from each product on its next write.
_stale: dict[str, set[str]] = defaultdict(set)


def _quantities(items: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for item in items:
        out[item["productId"]] += int(item["quantity"])
    return dict(sorted(out.items()))


def _product_op(product: str, order_id: str, op: str, qty: int):
    """A pure mutation of one product record; returns True, or why it could not reserve."""
    marker = f"{order_id}:{op}"
    stale = set(_stale.pop(product, ()))

    def apply(value: dict[str, Any] | None) -> tuple[Any, Any]:
        if value is None:
            return value, (f"unknown product {product}" if op == "r" else True)
        applied = value.get("applied", {})
        if marker in applied:
            return value, applied[marker]
        if op == "u" and applied.get(f"{order_id}:r") is not True:
            return value, True  # nothing was reserved here, so nothing to undo
        available, reserved = value["available"], value["reserved"]
        if op == "r":
            if available < qty:
                return value, f"insufficient stock for {product}: {qty} requested, {available} available"
            available, reserved = available - qty, reserved + qty
        else:  # undo a partial reservation, or release a complete one
            available, reserved = available + qty, reserved - qty
        applied = {k: v for k, v in applied.items() if k.split(":", 1)[0] not in stale}
        applied[marker] = True
        return {**value, "available": available, "reserved": reserved, "applied": applied}, True

    return apply


def _finish(quantities: dict[str, int], order_id: str) -> None:
    for product in quantities:
        _stale[product].add(order_id)


def _set_state(expect: tuple[str, ...], state: str, reason: str | None = None):
    def apply(value: dict[str, Any] | None) -> tuple[Any, Any]:
        if value is None or value["state"] not in expect:
            return value, value
        new = {**value, "state": state}
        if reason:
            new["reason"] = reason
        return new, new

    return apply


async def reserve(msg: dict[str, Any], ctx: Context) -> Outcome:
    order_id = msg["orderId"]
    quantities = _quantities(msg["items"])
    reservations, stock = ctx.kv("RESERVATIONS"), ctx.kv("INVENTORY")

    def begin(value: dict[str, Any] | None) -> tuple[Any, Any]:
        if value is not None:
            return value, value
        new = {"state": RESERVING, "items": quantities}
        return new, new

    record = await reservations.mutate(order_id, begin)
    if record["state"] == RESERVING:
        reason = None
        for product, qty in quantities.items():
            result = await stock.mutate(product, _product_op(product, order_id, "r", qty))
            if result is not True:
                reason = result
                break
        if reason is None:
            record = await reservations.mutate(order_id, _set_state((RESERVING,), RESERVED))
        else:
            record = await reservations.mutate(order_id, _set_state((RESERVING,), FAILING, reason))
    if record["state"] == FAILING:
        for product, qty in record["items"].items():
            await stock.mutate(product, _product_op(product, order_id, "u", qty))
        record = await reservations.mutate(order_id, _set_state((FAILING,), FAILED))
    _finish(quantities, order_id)
    if record["state"] == RESERVED or record["state"] == RELEASING:
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
        if value["state"] in (RESERVING, FAILING):
            raise RetryableError(f"reservation of order {order_id} is still in progress")
        if value["state"] == RESERVED:
            new = {**value, "state": RELEASING}
            return new, new
        return value, value

    record = await reservations.mutate(order_id, begin)
    if record["state"] == RELEASING:
        for product, qty in record["items"].items():
            await stock.mutate(product, _product_op(product, order_id, "x", qty))
        record = await reservations.mutate(order_id, _set_state((RELEASING,), RELEASED))
    _finish(record.get("items", {}), order_id)
    return emit("released")


def view(product_id: str, value: dict[str, Any]) -> dict[str, Any]:
    """GET /api/inventory/{productId}."""
    return {"productId": product_id, "available": value["available"], "reserved": value["reserved"]}
