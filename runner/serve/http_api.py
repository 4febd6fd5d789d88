"""A service's HTTP API (aiohttp): the resources its YAML declares, health and readiness.

Each resource is a saga's instances (runner/serve/saga_resource.py) or a KV bucket's values
(runner/serve/kv_view.py). Client input never causes a 5xx: bodies are size-capped, parsed and
validated with the YAML's JSON Schema before anything is published, and errors name the offending field.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from runner.config.model import ServiceSpec
from runner.logs import event
from runner.serve import metrics_http, openapi
from runner.serve.dashboard import dashboard_app
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
    unreadable_body_message,
)
from runner.serve.kv_view import KvView
from runner.serve.replies import error, ok
from runner.serve.request_body import MAX_BODY, too_large
from runner.serve.saga_resource import SagaResource

if TYPE_CHECKING:
    from runner.serve.runtime_view import RuntimeView

log = logging.getLogger("flowrun.http")


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
                return too_large()
            answer = error(exc.status, exc.reason)
            if "Allow" in exc.headers:  # a 405 says which methods the resource takes (RFC 9110)
                answer.headers["Allow"] = exc.headers["Allow"]
            return answer
        except CLIENT_ERRORS as exc:  # aiohttp logs it once more, through PROTOCOL_LOG: no line of ours
            return error(400, unreadable_body_message(exc))
        except BROKER_UNAVAILABLE as exc:
            event(log, logging.INFO, "request not answered: NATS unavailable", path=clip(request.path), error=repr(exc))
            return error(503, "NATS is not answering; try again", retry_after=RETRY_AFTER_SECONDS)
        except Exception as exc:
            event(log, logging.ERROR, "request failed", path=clip(request.path), error=repr(exc))
            return error(500, "internal error")

    return middleware


def build_app(runtime: RuntimeView, service: ServiceSpec) -> web.Application:
    http = service.http
    assert http is not None
    middlewares = [*metrics_http.middlewares(), json_errors(http.deadline)]
    app = web.Application(client_max_size=MAX_BODY, middlewares=middlewares)
    app.on_response_prepare.append(add_security_headers)
    sagas = [SagaResource(runtime, spec, http.deadline) for spec in http.saga_resources()]
    views = [KvView(runtime, spec) for spec in http.view_resources()]

    async def close(_: web.Application) -> None:
        for resource in sagas:
            await resource.close()

    async def health(_: web.Request) -> web.Response:
        healthy, body = runtime.health()
        return ok(body, status=200 if healthy else 503)

    async def ready(_: web.Request) -> web.Response:
        is_ready, body = runtime.readiness()
        return ok(body, status=200 if is_ready else 503)

    app.on_cleanup.append(close)
    for resource in [*sagas, *views]:
        app.add_routes(resource.routes())
    app.add_routes([web.get("/healthz", health), web.get("/readyz", ready)])
    metrics_http.add_route(app)
    app.add_routes(openapi.routes(runtime.config, service))
    app.add_subapp("/ui/", dashboard_app(runtime))
    return app


async def start_http(
    runtime: RuntimeView, service: ServiceSpec, port: int | None, reuse_port: bool = False
) -> tuple[web.AppRunner, str]:
    """Serve the service's API; `reuse_port` lets several processes of the service share the port (SO_REUSEPORT)."""
    assert service.http is not None
    app = build_app(runtime, service)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, logger=PROTOCOL_LOG)
    await runner.setup()
    host = service.http.host
    site = web.TCPSite(
        runner, host, service.http.port if port is None else port, reuse_address=True, reuse_port=reuse_port
    )
    await site.start()
    bound = runner.addresses[0][1]  # the port actually bound (port 0 picks a free one)
    url = f"http://{host}:{bound}"
    event(log, logging.INFO, "http listening", service=service.name, url=url)
    return runner, url
