"""The order service's HTTP API (aiohttp): start saga instances, read them, their events, KV views.

Client input never causes a 5xx: bodies are size-capped, parsed and validated with the YAML's JSON
Schema before anything is published, and errors name the offending field.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web

from runner import codec
from runner.config.dotted import resolve
from runner.config.model import ServiceSpec
from runner.config.subjects import is_identifier
from runner.engine.intake import IdempotencyMismatch, Intake, NotAccepted, key_for, request_digest
from runner.engine.saga import iso, public_view
from runner.engine.validation import PayloadValidator
from runner.logs import event
from runner.serve import jsonbody
from runner.serve.http_guard import (
    BODY_TIMEOUT,
    BROKER_UNAVAILABLE,
    CLIENT_ERRORS,
    PROTOCOL_LOG,
    READ_DEADLINE,
    RETRY_AFTER_SECONDS,
    WRITE_BACKSTOP,
    add_security_headers,
    clip,
    is_json,
    unreadable_body_message,
)

if TYPE_CHECKING:
    from runner.serve.service import Runtime

log = logging.getLogger("flowrun.http")

MAX_BODY = 1024 * 1024
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
RUNTIME = web.AppKey("runtime", object)


def error(status: int, message: str, field: str | None = None, retry_after: int | None = None) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    extra = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return web.json_response(body, status=status, dumps=lambda v: codec.dumps(v).decode(), headers=extra)


def ok(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=codec.dumps(body), status=status, content_type="application/json", headers=headers)


def field_path(path: Any) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{clip(part)}" if out else clip(part))
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
    if err.validator == "maxItems":
        return f"{name} must have at most {err.validator_value} items", name
    if err.validator in ("minimum", "exclusiveMinimum") and isinstance(err.instance, (int, float)):
        return f"{name} must be at least {err.validator_value}", name
    if err.validator in ("maximum", "exclusiveMaximum") and isinstance(err.instance, (int, float)):
        return f"{name} must be at most {err.validator_value}", name
    if err.validator == "type" and err.validator_value == "integer":
        return f"{name} must be a positive integer", name
    if err.validator == "type":
        return f"{name} must be of type {err.validator_value}", name
    return f"{name}: {clip(err.message)}", name  # jsonschema's messages quote the value: clipped


class OrdersApi:
    def __init__(self, runtime: Runtime, service: ServiceSpec):
        http = service.http
        assert http is not None
        self.rt = runtime
        self.saga = runtime.config.sagas[http.saga] if http.saga else None
        self.machine = runtime.machines.get(http.saga) if http.saga else None
        self.bucket = runtime.buckets[self.saga.bucket] if self.saga else None
        self.accept = resolve(runtime.config.root, http.accept) if http.accept else None
        self.validator = PayloadValidator(http.body_schema) if http.body_schema else None
        publisher = runtime.publisher
        assert publisher is not None
        self.intake: Intake | None = None
        if self.machine is not None and self.bucket is not None:
            self.intake = Intake(self.machine, self.bucket, publisher, deadline=http.deadline)
        self.views = {
            name: (runtime.buckets[v.bucket], resolve(runtime.config.root, v.view)) for name, v in http.views.items()
        }

    async def create(self, request: web.Request) -> web.Response:
        if self.saga is None or self.intake is None or self.accept is None:
            return error(404, "this service does not accept new instances")
        if not is_json(request):
            return error(415, "Content-Type must be application/json (UTF-8)", "Content-Type")
        try:
            async with asyncio.timeout(BODY_TIMEOUT):
                raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return error(413, f"request body exceeds {MAX_BODY} bytes")
        except TimeoutError:
            return error(408, f"request body not received within {BODY_TIMEOUT:g}s")
        if not raw.strip():
            return error(400, "request body is empty; send a JSON object")
        try:
            body = jsonbody.loads(raw)
        except jsonbody.DuplicateKeyError as exc:
            where = f"duplicate key {clip(exc.key)!r}" if exc.key is not None else "a duplicate key"
            return error(400, f"request body has {where}: each key may appear once per object")
        except jsonbody.DecodeError as exc:
            return error(400, f"request body is not valid JSON: {clip(exc)}")
        if not isinstance(body, dict):
            return error(400, f"request body must be a JSON object, not {type(body).__name__}")
        if self.validator is not None:
            err = self.validator.first_error(body)
            if err is not None:
                message, field = _schema_message(err)
                return error(422, message, field)
        key_field = self.saga.key
        idempotency_key = request.headers.get("Idempotency-Key")
        if idempotency_key is not None and not IDEMPOTENCY_KEY.fullmatch(idempotency_key):
            return error(400, "Idempotency-Key must be 1-255 printable ASCII characters", "Idempotency-Key")
        new_key = key_for(idempotency_key, self.saga.name) if idempotency_key else str(uuid.uuid4())
        try:
            data = self.accept(body, new_key)
        except ValueError as exc:
            return error(422, str(exc))
        digest = request_digest(body) if idempotency_key else None
        try:
            started = await self.intake.start(data[key_field], data, digest)
        except IdempotencyMismatch as exc:
            return error(422, str(exc), "Idempotency-Key")
        except NotAccepted as exc:
            event(log, logging.WARNING, "start not accepted", key=data[key_field], reason=str(exc))
            return error(503, f"not accepted: {exc}; nothing was started, retry", retry_after=1)
        key = started.key
        location = f"{request.path.rstrip('/')}/{key}"
        reply_headers = {"Location": location, **({"Idempotent-Replayed": "true"} if started.replayed else {})}
        return ok({key_field: key, "status": started.record["state"]}, status=202, headers=reply_headers)

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
            return error(404, f"no such resource: {clip(name)}")
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

    async def ready(self, request: web.Request) -> web.Response:
        is_ready, body = self.rt.readiness()
        return ok(body, status=200 if is_ready else 503)


def json_errors(write_deadline: float) -> Any:
    """Every answer JSON, and within a deadline: aiohttp's own errors (404, 405, 413), a body the
    client mangled (400), NATS not answering (503 with Retry-After), and only a bug of ours as a 500.

    Reads are given up early (READ_DEADLINE). Writes get the body's timeout and the intake's own
    deadline plus a backstop: the intake answers by itself within those and knows what a given-up
    write means, so cutting it short could only make the answer less true.
    """
    read_deadline = min(READ_DEADLINE, write_deadline)
    write_backstop = BODY_TIMEOUT + write_deadline + WRITE_BACKSTOP

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        deadline = read_deadline if request.method in ("GET", "HEAD") else write_backstop
        try:
            async with asyncio.timeout(deadline):
                return await handler(request)
        except web.HTTPException as exc:
            if exc.status == 413:
                return error(413, f"request body exceeds {MAX_BODY} bytes")
            return error(exc.status, exc.reason)
        except CLIENT_ERRORS as exc:  # aiohttp logs it once more, through PROTOCOL_LOG: no line of ours
            return error(400, unreadable_body_message(exc))
        except BROKER_UNAVAILABLE as exc:
            event(log, logging.INFO, "request not answered: NATS unavailable", path=clip(request.path), error=repr(exc))
            return error(503, "NATS is not answering; try again", retry_after=RETRY_AFTER_SECONDS)
        except Exception as exc:
            event(log, logging.ERROR, "request failed", path=clip(request.path), error=repr(exc))
            return error(500, "internal error")

    return middleware


def build_app(runtime: Runtime, service: ServiceSpec) -> web.Application:
    assert service.http is not None
    api = OrdersApi(runtime, service)
    app = web.Application(client_max_size=MAX_BODY, middlewares=[json_errors(service.http.deadline)])
    app.on_response_prepare.append(add_security_headers)
    if api.intake is not None:
        intake = api.intake

        async def close_intake(_: web.Application) -> None:
            await intake.close()

        app.on_cleanup.append(close_intake)
    base = f"/api/{api.saga.name}s" if api.saga else "/api/orders"
    app.add_routes(
        [
            web.post(base, api.create),
            web.get(base + "/{key}", api.get),
            web.get(base + "/{key}/events", api.events),
            web.get("/api/{view}/{key}", api.view),
            web.get("/healthz", api.health),
            web.get("/readyz", api.ready),
        ]
    )
    return app


async def start_http(runtime: Runtime, service: ServiceSpec, port: int | None) -> tuple[web.AppRunner, str]:
    assert service.http is not None
    app = build_app(runtime, service)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, logger=PROTOCOL_LOG)
    await runner.setup()
    host = service.http.host
    site = web.TCPSite(runner, host, service.http.port if port is None else port, reuse_address=True)
    await site.start()
    bound = runner.addresses[0][1]  # the port actually bound (port 0 picks a free one)
    url = f"http://{host}:{bound}"
    event(log, logging.INFO, "http listening", service=service.name, url=url)
    return runner, url
