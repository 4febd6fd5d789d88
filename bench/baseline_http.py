"""The hand-written baseline's order API: `POST /api/orders` in aiohttp, the same contract as flowrun's.

Same request rules (the JSON Schema flowrun's API checks, read from flows/order.yaml so the two cannot
drift, compiled with jsonschema-rs), same pricing (prices and total as two-place decimal strings, a
price with more than two places refused), same answer: 202 `{"orderId", "status": "pending"}` with a
Location, once the instance record and `orders.created` are both stored (the caller's `start`).
Errors are JSON `{"error": ...}`: 415 without `Content-Type: application/json`, 400 for a body that is
not a JSON object, 422 for one that breaks the rules, 503 when NATS does not confirm in time.

What it leaves out, and flowrun's API pays for: Idempotency-Key replays, the accept-by fence (a 503
there is never followed by the order starting after all), the instance's timer armed before its start
event, reads (GET, lists), health and metrics.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson
import yaml
from aiohttp import web
from nats.errors import Error as NatsError

ORDER_YAML = Path(__file__).resolve().parent.parent / "flows" / "order.yaml"
MAX_BODY = 1024 * 1024
DEADLINE = 10.0  # seconds to store the order before answering 503, as flowrun's API
CENT = Decimal("0.01")

Start = Callable[[dict[str, Any]], Awaitable[None]]  # stores the instance and publishes orders.created


def body_schema() -> dict[str, Any]:
    """The request body schema of flowrun's `orders` resource."""
    spec = yaml.safe_load(ORDER_YAML.read_text())
    return spec["services"]["order"]["http"]["resources"]["orders"]["body_schema"]


def price(body: dict[str, Any], order_id: str) -> dict[str, Any]:
    """The `orders.created` payload: exact prices and total as strings; ValueError for sub-cent prices."""
    items, total = [], Decimal(0)
    for index, item in enumerate(body["items"]):
        try:
            amount = Decimal(str(item["price"]))
        except InvalidOperation as exc:
            raise ValueError(f"items[{index}].price is not a number") from exc
        if amount != amount.quantize(CENT):
            raise ValueError(f"items[{index}].price must have at most 2 decimal places")
        quantity = int(item["quantity"])
        total += amount * quantity
        items.append({"productId": item["productId"], "quantity": quantity, "price": f"{amount.quantize(CENT):f}"})
    return {"orderId": order_id, "customerId": body["customerId"], "items": items, "total": f"{total.quantize(CENT):f}"}


def _answer(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json", headers=headers)


def order_app(start: Start) -> web.Application:
    validator = jsonschema_rs.validator_for(body_schema())

    async def create(request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            return _answer(415, {"error": "Content-Type must be application/json"})
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _answer(400, {"error": "request body is not valid JSON"})
        if not isinstance(body, dict):
            return _answer(400, {"error": "request body must be a JSON object"})
        if (problem := next(validator.iter_errors(body), None)) is not None:
            return _answer(422, {"error": problem.message, "field": "/".join(map(str, problem.instance_path))})
        order_id = str(uuid.uuid4())
        try:
            order = price(body, order_id)
        except ValueError as exc:
            return _answer(422, {"error": str(exc)})
        try:
            async with asyncio.timeout(DEADLINE):
                await start(order)
        except (TimeoutError, NatsError):
            return _answer(503, {"error": "not accepted; retry"}, {"Retry-After": "1"})
        return _answer(202, {"orderId": order_id, "status": "pending"}, {"Location": f"/api/orders/{order_id}"})

    app = web.Application(client_max_size=MAX_BODY)
    app.add_routes([web.post("/api/orders", create)])
    return app


async def serve_http(start: Start, port: int) -> web.AppRunner:
    """Listen on 127.0.0.1:`port`; the caller cleans the runner up."""
    runner = web.AppRunner(order_app(start), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, reuse_address=True).start()
    return runner
