"""A saga's instances as an HTTP resource, named and shaped by the YAML (`http: resources:`).

    POST <path>                      start an instance: 202 {<id field>, status} + Location
    GET  <path>?state=&limit=&cursor= list them, most recently changed first (runner/serve/listing.py)
    GET  <path>/{id}                 one instance, as `view` shapes it
    GET  <path>/{id}/events          its events, oldest first
    POST <path>/{id}/<command>       an event into it, if its state takes it (runner/engine/commands.py)

Errors say the resource's names: "booking 42 not found", the id field's name in 400s.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from runner.config.dotted import resolve
from runner.config.model import ResourceSpec
from runner.config.subjects import is_identifier
from runner.engine.commands import Commands
from runner.engine.intake import (
    IdempotencyMismatch,
    Intake,
    NotAccepted,
    StartRejected,
    key_for,
    request_digest,
    start_validator,
)
from runner.engine.saga import COMPENSATING, iso, public_view
from runner.engine.validation import PayloadValidator
from runner.logs import event
from runner.serve import listing
from runner.serve.http_guard import clip
from runner.serve.replies import error, ok
from runner.serve.request_body import json_object
from runner.serve.schema_errors import schema_error

if TYPE_CHECKING:
    from runner.serve.runtime_view import RuntimeView

log = logging.getLogger("flowrun.http")

IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
ID_RULE = "1-128 letters, digits, '-' or '_'"


def idempotency_key(request: web.Request) -> tuple[str | None, web.Response | None]:
    """The request's Idempotency-Key (or None), or the 400 for a malformed one."""
    key = request.headers.get("Idempotency-Key")
    if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
        return None, error(400, "Idempotency-Key must be 1-255 printable ASCII characters", "Idempotency-Key")
    return key, None


class SagaResource:
    """One `resources:` entry with `saga:`; its routes are listed in the module docstring."""

    def __init__(self, runtime: RuntimeView, spec: ResourceSpec, deadline: float):
        assert spec.saga is not None and runtime.publisher is not None and runtime.nc is not None
        config = runtime.config
        self.spec = spec
        self.nc = runtime.nc
        self.saga = config.sagas[spec.saga]
        self.key_field = self.saga.key
        self.bucket = runtime.buckets[self.saga.bucket]
        self.history = config.buckets[self.saga.bucket].history
        self.states = {*self.saga.states, COMPENSATING}
        self.intake = Intake(
            runtime.machines[self.saga.name],
            self.bucket,
            runtime.publisher,
            deadline=deadline,
            validator=start_validator(config, self.saga),  # refused here (422), not dead-lettered after a 202
        )
        self.commands = Commands(self.saga, spec.commands, runtime.publisher)
        self.versions = runtime.versions[self.saga.name]
        self.accept: Callable[[dict[str, Any], str], dict[str, Any]] | None = (
            resolve(config.root, spec.accept) if spec.accept else None
        )
        self.shape: Callable[[str, dict[str, Any]], dict[str, Any]] | None = (
            resolve(config.root, spec.view) if spec.view else None
        )
        self.validator = PayloadValidator(spec.body_schema) if spec.body_schema else None

    def routes(self) -> list[web.RouteDef]:
        path = self.spec.path
        routes = [
            web.post(path, self.create),
            web.get(path, self.list_instances),
            web.get(path + "/{key}", self.get),
            web.get(path + "/{key}/events", self.events),
        ]
        if self.spec.commands:
            routes.append(web.post(path + "/{key}/{command}", self.command))
        return routes

    def view(self, record: dict[str, Any]) -> dict[str, Any]:
        shown = public_view(record, self.key_field)  # the id, start payload, gathered data, status, times
        return self.shape(record["key"], shown) if self.shape else shown

    async def create(self, request: web.Request) -> web.Response:
        body, problem = await json_object(request)
        if problem is not None:
            return problem
        assert body is not None
        if self.validator is not None and (err := self.validator.first_error(body)) is not None:
            message, field = schema_error(err)
            return error(422, message, field)
        client_key, problem = idempotency_key(request)
        if problem is not None:
            return problem
        if self.spec.id_source == "client":
            key = body.get(self.key_field)
            if not is_identifier(key):
                return error(422, f"{self.key_field} must be {ID_RULE}", self.key_field)
            digest: str | None = request_digest(body)
        else:
            key = key_for(client_key, self.saga.name) if client_key else str(uuid.uuid4())
            digest = request_digest(body) if client_key else None
        try:
            payload = self.accept(body, key) if self.accept else dict(body)
        except ValueError as exc:
            return error(422, str(exc))
        payload = {**payload, self.key_field: key}
        try:
            started = await self.intake.start(key, payload, digest)
        except IdempotencyMismatch as exc:
            if self.spec.id_source == "client":
                return error(409, f"{self.spec.name} {key} exists, started by a different request", self.key_field)
            return error(422, str(exc), "Idempotency-Key")
        except StartRejected as exc:
            return error(422, clip(str(exc), 300))
        except NotAccepted as exc:
            event(log, logging.WARNING, "start not accepted", key=key, reason=str(exc))
            return error(503, f"not accepted: {exc}; nothing was started, retry", retry_after=1)
        headers = {"Location": f"{self.spec.path}/{started.key}"}
        if started.replayed:
            headers["Idempotent-Replayed"] = "true"
        return ok({self.key_field: started.key, "status": started.record["state"]}, status=202, headers=headers)

    async def _record(self, request: web.Request) -> tuple[dict[str, Any] | None, web.Response | None]:
        key = request.match_info["key"]
        if not is_identifier(key):
            return None, error(400, f"invalid {self.key_field}: use {ID_RULE}", self.key_field)
        record, _ = await self.bucket.get(key)
        if record is None:
            return None, error(404, f"{self.spec.name} {key} not found")
        return record, None

    async def get(self, request: web.Request) -> web.Response:
        record, problem = await self._record(request)
        if problem is not None:
            return problem
        assert record is not None
        return ok(self.view(record))

    async def events(self, request: web.Request) -> web.Response:
        record, problem = await self._record(request)
        if problem is not None:
            return problem
        assert record is not None
        return ok(
            [
                {
                    "subject": e["subject"],
                    "time": iso(e["time"]),
                    "data": e["data"],
                    **({"ignored": e["ignored"]} if "ignored" in e else {}),
                }
                for e in record["history"]
            ]
        )

    async def list_instances(self, request: web.Request) -> web.Response:
        try:
            query = listing.parse_query(request.query, self.states)
        except listing.BadQuery as exc:
            return error(400, str(exc), exc.parameter)
        return ok(await listing.page(self.nc, self.saga.bucket, self.history, query, self.view))

    async def command(self, request: web.Request) -> web.Response:
        name = request.match_info["command"]
        if name not in self.spec.commands:
            known = ", ".join(self.spec.commands)
            return error(404, f"{self.spec.name} has no command {clip(name)!r} (commands: {known})")
        client_key, problem = idempotency_key(request)
        if problem is not None:
            return problem
        record, problem = await self._record(request)
        if problem is not None:
            return problem
        assert record is not None
        key, state = record["key"], record["state"]
        event_id = self.commands.event_id(key, name, client_key)
        headers = {"Location": f"{self.spec.path}/{key}"}
        if self.commands.applied(record, event_id):
            headers["Idempotent-Replayed"] = "true"
            return ok({self.key_field: key, "command": name}, status=202, headers=headers)
        allowed = self.commands.allowed(state, (await self.versions.machine_of(record)).spec)
        if name not in allowed:
            return error(
                409,
                f"{self.spec.name} {key} is {state}: {name} is not possible now "
                f"(possible in this state: {', '.join(allowed) or 'none'})",
                state=state,
                allowed=allowed,
            )
        await self.commands.send(key, name, event_id)
        return ok({self.key_field: key, "command": name}, status=202, headers=headers)

    async def close(self) -> None:
        await self.intake.close()
