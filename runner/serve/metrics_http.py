"""`/metrics` for Prometheus: on a service's HTTP app, or on its own port (`flowrun start --metrics-port`).

Also HTTP requests, by route template (never the raw path, so the label stays bounded), method and status.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest

from runner.engine.metrics import ENABLED
from runner.logs import event

log = logging.getLogger("flowrun.metrics")

UNMATCHED = "(unmatched)"  # a path no route serves: one label value, whatever was asked
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})  # any other: "other"

HTTP_REQUESTS = Counter("flowrun_http_requests", "HTTP requests answered", ["route", "method", "status"])
HTTP_SECONDS = Histogram("flowrun_http_request_duration_seconds", "Time to answer an HTTP request", ["route", "method"])


async def scrape(_: web.Request) -> web.Response:
    return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})


@web.middleware
async def count_requests(request: web.Request, handler: Any) -> web.StreamResponse:
    """Outermost middleware: sees the status the client gets, errors turned into answers included."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else UNMATCHED
        method = request.method if request.method in METHODS else "other"
        HTTP_REQUESTS.labels(route, method, str(status)).inc()
        HTTP_SECONDS.labels(route, method).observe(time.perf_counter() - started)


def middlewares() -> list[Any]:
    return [count_requests] if ENABLED else []


def add_route(app: web.Application) -> None:
    app.add_routes([web.get("/metrics", scrape)])


async def start_metrics_server(host: str, port: int) -> tuple[web.AppRunner, str]:
    """`/metrics` alone, for a process whose services serve no HTTP."""
    app = web.Application()
    add_route(app)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    url = f"http://{host}:{runner.addresses[0][1]}/metrics"
    event(log, logging.INFO, "metrics listening", url=url)
    return runner, url
