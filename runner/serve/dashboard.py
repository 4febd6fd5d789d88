"""The live dashboard at /ui/: a static page (runner/serve/ui/, shipped in the package, no CDN) and the JSON
it polls under /ui/api/.

    GET  /ui/api/overview                          the sagas as tables of states and transitions; is replay on
    GET  /ui/api/live                              consumers, instances by state, recent ones, the series
    GET  /ui/api/instances/{saga}/{key}            one instance's event timeline
    GET  /ui/api/deadletters                       the newest dead letters, with payload and headers
    POST /ui/api/deadletters/{stream}/{id}/replay  admin only: X-Flowrun-Admin-Token must equal FLOWRUN_ADMIN_TOKEN

Read-only unless FLOWRUN_ADMIN_TOKEN is set in the environment. The token is compared in constant time and
never logged or echoed. The page, script and style get a Content-Security-Policy that lets them load
each other ('self' only, no inline code); the JSON keeps the app's `default-src 'none'`.
"""

from __future__ import annotations

import hmac
import os
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web

from runner.config.model import Config, DeadLetterSpec, SagaSpec
from runner.config.subjects import is_identifier
from runner.engine import dlq
from runner.engine.saga import iso
from runner.serve.dashboard_sampler import Sampler
from runner.serve.replies import error, ok

if TYPE_CHECKING:
    from runner.serve.runtime_view import RuntimeView

TOKEN_ENV = "FLOWRUN_ADMIN_TOKEN"
TOKEN_HEADER = "X-Flowrun-Admin-Token"
DEAD_LETTERS_SHOWN = 50
DEAD_LETTERS_READ = 200  # the dead-letter stream's newest messages read per refresh (entries and replay marks)
ASSETS = {  # file in runner/serve/ui → content type
    "index.html": "text/html",
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
}
PAGE_POLICY = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:"
SAMPLER: web.AppKey[Sampler] = web.AppKey("sampler", Sampler)


def dashboard_app(runtime: RuntimeView) -> web.Application:
    """The sub-application to mount at /ui/."""
    assert runtime.nc is not None
    config = runtime.config
    nc = runtime.nc
    js = nc.jetstream()
    token = os.environ.get(TOKEN_ENV) or None
    targets = _dead_letter_targets(config)
    overview = {"sagas": [_saga_table(spec) for spec in config.sagas.values()], "replay": token is not None}
    assets = {name: (resources.files("runner.serve.ui") / name).read_bytes() for name in ASSETS}
    app = web.Application()
    app[SAMPLER] = Sampler(nc, config)

    def asset(name: str) -> Any:
        async def serve(_: web.Request) -> web.Response:
            response = web.Response(body=assets[name], content_type=ASSETS[name])
            response.headers["Content-Security-Policy"] = PAGE_POLICY  # the app's default is kept for the API
            return response

        return serve

    async def get_overview(_: web.Request) -> web.Response:
        return ok(overview)

    async def live(request: web.Request) -> web.Response:
        sampler = request.app[SAMPLER]
        sampler.touch()
        return ok(sampler.live())

    async def timeline(request: web.Request) -> web.Response:
        name, key = request.match_info["saga"], request.match_info["key"]
        spec = config.sagas.get(name)
        if spec is None or not is_identifier(key):
            return error(404, "no such saga instance")
        record, _ = await runtime.buckets[spec.bucket].get(key)
        if record is None:
            return error(404, f"{name} {key} not found")
        return ok(_timeline(record))

    async def dead_letters(_: web.Request) -> web.Response:
        shown: list[dict[str, Any]] = []
        for spec in targets.values():
            found = await dlq.entries(js, spec.stream, spec.subject_prefix, newest=DEAD_LETTERS_READ)
            shown += [{**e.detail(), "stream": spec.stream} for e in found[-DEAD_LETTERS_SHOWN:]]
        shown.sort(key=lambda e: e["time"], reverse=True)
        return ok({"items": shown[:DEAD_LETTERS_SHOWN]})

    async def replay(request: web.Request) -> web.Response:
        if token is None:
            return error(403, f"read-only dashboard: set {TOKEN_ENV} to allow replay")
        given = request.headers.get(TOKEN_HEADER, "")
        if not hmac.compare_digest(given.encode(), token.encode()):
            return error(401, f"replay needs the admin token in {TOKEN_HEADER}", TOKEN_HEADER)
        spec = targets.get(request.match_info["stream"])
        raw_id = request.match_info["id"]
        if spec is None or not raw_id.isdigit():
            return error(404, "no such dead letter")
        try:
            done = await dlq.replay_selected(js, spec.stream, spec.subject_prefix, int(raw_id))
        except LookupError as exc:
            return error(404, str(exc))
        return ok({"replayed": [{"id": entry, "seq": seq} for entry, seq in done]})

    async def close(app: web.Application) -> None:
        await app[SAMPLER].close()

    app.on_cleanup.append(close)
    app.add_routes([web.get("/" if name == "index.html" else f"/{name}", asset(name)) for name in ASSETS])
    app.add_routes(
        [
            web.get("/api/overview", get_overview),
            web.get("/api/live", live),
            web.get("/api/instances/{saga}/{key}", timeline),
            web.get("/api/deadletters", dead_letters),
            web.post("/api/deadletters/{stream}/{id}/replay", replay),
        ]
    )
    return app


def _dead_letter_targets(config: Config) -> dict[str, DeadLetterSpec]:
    """Every dead-letter stream a service writes to, by stream name."""
    return {s.dead_letter.stream: s.dead_letter for s in config.services.values()}


def _saga_table(spec: SagaSpec) -> dict[str, Any]:
    """The state machine as rows a table can show: each state's transitions, timeout and whether it ends."""
    states = []
    for state in spec.states.values():
        rows = [
            {
                "event": event,
                "goto": t.goto,
                "emit": [e.subject for e in t.emit],
                "compensate": t.compensate,
                "completes": t.completes,
            }
            for event, t in state.on.items()
        ]
        if state.timeout is not None:
            rows.append(
                {
                    "event": f"timeout after {state.timeout.after:g}s",
                    "goto": state.timeout.goto,
                    "emit": [],
                    "compensate": state.timeout.compensate,
                    "completes": None,
                }
            )
        states.append({"name": state.name, "terminal": state.terminal, "transitions": rows})
    return {
        "name": spec.name,
        "key": spec.key,
        "start": {"on": spec.start_on, "state": spec.start_state, "emit": [e.subject for e in spec.start_emit]},
        "states": states,
        "steps": [
            {"name": s.name, "compensate": s.compensate.subject, "confirmed_by": s.confirmed_by}
            for s in spec.steps.values()
        ],
        "compensation_failed_state": spec.compensation_failed_state,
    }


def _timeline(record: dict[str, Any]) -> dict[str, Any]:
    """Events oldest first, each with its time and the time since the previous one."""
    events = []
    previous = record["created"]
    for e in record.get("history", []):
        events.append(
            {
                "subject": e["subject"],
                "time": iso(e["time"]),
                "after": round(max(0.0, e["time"] - previous), 3),
                "kind": "emitted" if "cause" in e else "received",
                "data": e.get("data"),
                **({"ignored": e["ignored"]} if "ignored" in e else {}),
            }
        )
        previous = e["time"]
    return {
        "key": record["key"],
        "state": record.get("state"),
        "reason": record.get("reason"),
        "created": iso(record["created"]),
        "updated": iso(record["updated"]),
        "events": events,
    }
