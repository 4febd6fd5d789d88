"""The order service's HTTP API (aiohttp): start saga instances, read them, their events, KV views.

Client input never causes a 5xx: bodies are size-capped, parsed and validated with the YAML's JSON
Schema before anything is published, and errors name the offending field.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web

from runner import codec
from runner.config import resolve
from runner.deadletter import H_CORRELATION
from runner.logs import event
from runner.model import ServiceSpec
from runner.saga import iso, public_view
from runner.subjects import is_identifier
from runner.validation import PayloadValidator

if TYPE_CHECKING:
    from runner.service import Runtime

log = logging.getLogger("flowrun.http")

MAX_BODY = 1024 * 1024
RUNTIME = web.AppKey("runtime", object)


def error(status: int, message: str, field: str | None = None) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    return web.json_response(body, status=status, dumps=lambda v: codec.dumps(v).decode())


def ok(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=codec.dumps(body), status=status, content_type="application/json", headers=headers)


def field_path(path: Any) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _schema_message(err: Any) -> tuple[str, str]:
    """A short message and the field it concerns (a missing property names that property)."""
    path = list(err.absolute_path)
    if err.validator == "required":
        missing = next((p for p in err.validator_value if p not in err.instance), None)
        if missing is not None:
            return f"{field_path([*path, missing])} is required", field_path([*path, missing])
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        name = field_path([*path, extra[0]]) if extra else field_path(path)
        return f"unknown field {name}", name
    name = field_path(path) or "body"
    if err.validator == "pattern":
        return f"{name} must be 1-64 letters, digits, '-' or '_' (no '.', '*', '>' or spaces)", name
    if err.validator == "minItems":
        return f"{name} must not be empty", name
    if err.validator in ("minimum", "exclusiveMinimum") and isinstance(err.instance, (int, float)):
        return f"{name} must be at least {err.validator_value}", name
    if err.validator == "type" and err.validator_value == "integer":
        return f"{name} must be a positive integer", name
    return f"{name}: {err.message}", name


class OrdersApi:
    PUBLISH_TIMEOUT = 5.0

    def __init__(self, runtime: Runtime, service: ServiceSpec):
        http = service.http
        assert http is not None
        self.rt = runtime
        self.saga = runtime.config.sagas[http.saga] if http.saga else None
        self.machine = runtime.machines.get(http.saga) if http.saga else None
        self.bucket = runtime.buckets[self.saga.bucket] if self.saga else None
        self.accept = resolve(runtime.config.root, http.accept) if http.accept else None
        self.validator = PayloadValidator(http.body_schema) if http.body_schema else None
        self.views = {
            name: (runtime.buckets[v.bucket], resolve(runtime.config.root, v.view)) for name, v in http.views.items()
        }

    async def create(self, request: web.Request) -> web.Response:
        if self.saga is None or self.machine is None or self.bucket is None or self.accept is None:
            return error(404, "this service does not accept new instances")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return error(413, f"request body exceeds {MAX_BODY} bytes")
        if not raw.strip():
            return error(400, "request body is empty; send a JSON object")
        try:
            body = codec.loads(raw)
        except codec.DecodeError as exc:
            return error(400, f"request body is not valid JSON: {exc}")
        if not isinstance(body, dict):
            return error(400, f"request body must be a JSON object, not {type(body).__name__}")
        if self.validator is not None:
            err = self.validator.first_error(body)
            if err is not None:
                message, field = _schema_message(err)
                return error(422, message, field)
        key_field = self.saga.key
        try:
            data = self.accept(body, str(uuid.uuid4()))
        except ValueError as exc:
            return error(422, str(exc))
        key = data[key_field]
        event_id = f"{key}.{self.saga.start_on}"
        record = self.machine.start(key, data, event_id)
        # Both writes go out at once: the instance (so GET works at once) and the start event. The
        # event is what matters: the saga creates the instance from it if the first write is lost.
        publisher = self.rt.publisher
        assert publisher is not None
        try:
            async with asyncio.timeout(self.PUBLISH_TIMEOUT):
                stored = await self.bucket.send_create(key, record)
                sent = await publisher.publish(
                    self.saga.start_on, codec.dumps(data), {"Nats-Msg-Id": event_id, H_CORRELATION: key}
                )
                await asyncio.wait((stored, sent))
            sent.result()
        except Exception as exc:
            event(log, logging.ERROR, "publish failed; order not accepted", orderId=key, error=repr(exc))
            try:
                await self.bucket.kv.delete(key)
            except Exception:  # best effort: the record alone would stay pending, visibly
                pass
            return error(503, "the order could not be stored; try again")
        location = f"{request.path.rstrip('/')}/{key}"
        return ok({key_field: key, "status": record["state"]}, status=202, headers={"Location": location})

    async def _record(self, request: web.Request) -> tuple[dict[str, Any] | None, web.Response | None]:
        key = request.match_info["key"]
        if not is_identifier(key):
            return None, error(400, "invalid id: use letters, digits, '-' or '_'", "orderId")
        if self.bucket is None:
            return None, error(404, "no saga behind this API")
        record, _ = await self.bucket.get(key)
        if record is None:
            return None, error(404, f"order {key} not found")
        return record, None

    async def get(self, request: web.Request) -> web.Response:
        record, problem = await self._record(request)
        if problem is not None:
            return problem
        assert record is not None and self.saga is not None
        return ok(public_view(record, self.saga.key))

    async def events(self, request: web.Request) -> web.Response:
        record, problem = await self._record(request)
        if problem is not None:
            return problem
        assert record is not None
        history = [
            {
                "subject": e["subject"],
                "time": iso(e["time"]),
                "data": e["data"],
                **({"ignored": e["ignored"]} if "ignored" in e else {}),
            }
            for e in record["history"]
        ]
        return ok(history)

    async def view(self, request: web.Request) -> web.Response:
        name, key = request.match_info["view"], request.match_info["key"]
        if name not in self.views:
            return error(404, f"no such resource: {name}")
        if not is_identifier(key):
            return error(400, "invalid id: use letters, digits, '-' or '_'", "id")
        bucket, shape = self.views[name]
        value, _ = await bucket.get(key)
        if value is None:
            return error(404, f"{name} {key} not found")
        return ok(shape(key, value))

    async def health(self, request: web.Request) -> web.Response:
        healthy, body = self.rt.health()
        return ok(body, status=200 if healthy else 503)


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """aiohttp's own errors (404, 405, 413) as JSON; an unexpected failure as a JSON 500."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status == 413:
            return error(413, f"request body exceeds {MAX_BODY} bytes")
        return error(exc.status, exc.reason)
    except Exception as exc:
        event(log, logging.ERROR, "request failed", path=request.path, error=repr(exc))
        return error(500, "internal error")


def build_app(runtime: Runtime, service: ServiceSpec) -> web.Application:
    api = OrdersApi(runtime, service)
    app = web.Application(client_max_size=MAX_BODY, middlewares=[json_errors])
    base = f"/api/{api.saga.name}s" if api.saga else "/api/orders"
    app.add_routes(
        [
            web.post(base, api.create),
            web.get(base + "/{key}", api.get),
            web.get(base + "/{key}/events", api.events),
            web.get("/api/{view}/{key}", api.view),
            web.get("/healthz", api.health),
        ]
    )
    return app


async def start_http(runtime: Runtime, service: ServiceSpec, port: int | None) -> tuple[web.AppRunner, str]:
    assert service.http is not None
    app = build_app(runtime, service)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    host = service.http.host
    site = web.TCPSite(runner, host, service.http.port if port is None else port, reuse_address=True)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1] if site._server and site._server.sockets else port
    url = f"http://{host}:{bound}"
    event(log, logging.INFO, "http listening", service=service.name, url=url)
    return runner, url
