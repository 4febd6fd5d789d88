"""`GET /openapi.json`: the service's HTTP API as an OpenAPI 3.1 document, built from its YAML.

Every operation the resources serve (runner/serve/saga_resource.py, kv_view.py, listing.py) is described
with the names the YAML gives it (the id field, the states, the commands) and the request body schema it
declares, so the document is exactly as true as the YAML. Errors are all `{"error", "field"?}`; a 503 says
when to retry. Endpoints added by other parts of the process (/metrics) are described when they are served.
"""

from __future__ import annotations

import copy
from importlib.metadata import version
from typing import Any

from aiohttp import web

from runner import codec
from runner.config.model import Config, ResourceSpec, ServiceSpec
from runner.config.subjects import IDENTIFIER
from runner.engine.saga import COMPENSATING
from runner.serve import api_docs, listing
from runner.serve.request_body import MAX_BODY
from runner.serve.saga_resource import ID_RULE, IDEMPOTENCY_KEY

OPENAPI_PATH = "/openapi.json"
DOCS_PATH = "/docs"
METRICS_PATH = "/metrics"

JSON = "application/json"
ERRORS = {
    400: "the request is malformed: a bad id, query parameter or header, or a body that is not a JSON object",
    404: "not found",
    408: "the request body was not received in time",
    409: "conflicts with the instance's current state",
    413: f"the request body exceeds {MAX_BODY} bytes",
    415: "the body is not application/json (UTF-8)",
    422: "the body is well-formed JSON but not acceptable: it names the field at fault",
    503: "NATS is not answering: nothing was done; retry after Retry-After seconds",
}
READ_ERRORS = (400, 404, 503)
WRITE_ERRORS = (400, 408, 413, 415, 422, 503)
EVENT = {"$ref": "#/components/schemas/Event"}


def document(config: Config, service: ServiceSpec, served_paths: frozenset[str]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of one service's HTTP API; `served_paths`: the app's route paths."""
    assert service.http is not None
    paths: dict[str, Any] = {}
    tags = []
    for name, resource in service.http.resources.items():
        tags.append({"name": name, "description": _resource_summary(resource)})
        if resource.saga:
            paths.update(_saga_paths(config, name, resource))
        else:
            paths.update(_view_paths(name, resource))
    paths.update(_service_paths(served_paths))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"flowrun service {service.name}",
            "version": version("flowrun"),
            "description": service.description or f"The HTTP API of the {service.name} service, from its YAML.",
        },
        "tags": [*tags, {"name": "service", "description": "health, readiness and this document"}],
        "paths": paths,
        "components": _components(),
    }


def routes(config: Config, service: ServiceSpec) -> list[web.RouteDef]:
    """`GET /openapi.json` and `GET /docs`, built on first request (when every route of the app is registered)."""
    built: dict[str, Any] = {}

    def built_document(request: web.Request) -> dict[str, Any]:
        if "doc" not in built:
            served = frozenset(r.canonical for r in request.app.router.resources())
            built["doc"] = document(config, service, served)
        return built["doc"]

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=codec.dumps(built_document(request)), content_type=JSON)

    async def docs(request: web.Request) -> web.Response:
        headers = {"Content-Security-Policy": api_docs.CONTENT_SECURITY_POLICY}
        return web.Response(text=api_docs.render(built_document(request)), content_type="text/html", headers=headers)

    return [web.get(OPENAPI_PATH, openapi), web.get(DOCS_PATH, docs)]


def _resource_summary(resource: ResourceSpec) -> str:
    if resource.saga:
        return f"instances of the saga {resource.saga!r}"
    return f"values of the KV bucket {resource.bucket!r} (read-only)"


def _saga_paths(config: Config, tag: str, resource: ResourceSpec) -> dict[str, Any]:
    saga = config.sagas[resource.saga or ""]
    key, noun = saga.key, resource.name
    states = sorted({*saga.states, COMPENSATING})
    item = f"{resource.path}/{{{key}}}"
    id_param = _id_parameter(key, noun)
    instance = _instance(resource, key, states)
    create_errors = (*WRITE_ERRORS, 409) if resource.id_source == "client" else WRITE_ERRORS
    paths: dict[str, Any] = {
        resource.path: {
            "post": {
                "tags": [tag],
                "operationId": f"{tag}.create",
                "summary": f"start a new {noun}",
                "description": (
                    f"Starts an instance of the saga {saga.name!r}; answered once it is recorded. "
                    + (
                        f"The id is the body's {key}."
                        if resource.id_source == "client"
                        else "The id is generated: the same one for a repeated Idempotency-Key."
                    )
                ),
                "parameters": [{"$ref": "#/components/parameters/IdempotencyKey"}],
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": copy.deepcopy(resource.body_schema) or {"type": "object"}}},
                },
                "responses": {
                    "202": {
                        "description": f"the {noun} is started (or was, for a replayed Idempotency-Key)",
                        "headers": {
                            "Location": {"schema": {"type": "string"}, "description": f"the {noun}'s URL"},
                            "Idempotent-Replayed": {
                                "schema": {"type": "string", "enum": ["true"]},
                                "description": "present when an earlier request with this key started it",
                            },
                        },
                        "content": {JSON: {"schema": _started(key, states)}},
                    },
                    **_errors(create_errors),
                },
            },
            "get": {
                "tags": [tag],
                "operationId": f"{tag}.list",
                "summary": f"list {noun} instances, most recently changed first",
                "description": (
                    "A page may hold fewer than `limit` items, even none, and still have a cursor: "
                    "only `cursor: null` means the end."
                ),
                "parameters": _list_parameters(states),
                "responses": {
                    "200": {
                        "description": "one page",
                        "content": {JSON: {"schema": _page(instance)}},
                    },
                    **_errors((400, 503)),
                },
            },
        },
        item: {
            "get": {
                "tags": [tag],
                "operationId": f"{tag}.get",
                "summary": f"one {noun}",
                "parameters": [id_param],
                "responses": {
                    "200": {"description": f"the {noun}", "content": {JSON: {"schema": instance}}},
                    **_errors(READ_ERRORS),
                },
            }
        },
        f"{item}/events": {
            "get": {
                "tags": [tag],
                "operationId": f"{tag}.events",
                "summary": f"the {noun}'s events, oldest first",
                "parameters": [id_param],
                "responses": {
                    "200": {
                        "description": "its event history",
                        "content": {
                            JSON: {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}}
                        },
                    },
                    **_errors(READ_ERRORS),
                },
            }
        },
    }
    for command, subject in resource.commands.items():
        paths[f"{item}/{command}"] = {
            "post": {
                "tags": [tag],
                "operationId": f"{tag}.commands.{command}",
                "summary": f"{command} the {noun}",
                "description": f"Publishes {subject} into the {noun} if its state takes it (else 409).",
                "parameters": [id_param, {"$ref": "#/components/parameters/IdempotencyKey"}],
                "responses": {
                    "202": {
                        "description": "the command is sent (or was, for a replayed Idempotency-Key)",
                        "content": {JSON: {"schema": _command_sent(key, command)}},
                    },
                    **_errors((*READ_ERRORS, 409)),
                },
            }
        }
    return paths


def _view_paths(tag: str, resource: ResourceSpec) -> dict[str, Any]:
    return {
        f"{resource.path}/{{{resource.key}}}": {
            "get": {
                "tags": [tag],
                "operationId": f"{tag}.get",
                "summary": f"one {resource.name}",
                "parameters": [_id_parameter(resource.key, resource.name)],
                "responses": {
                    "200": {
                        "description": f"the {resource.name}, as {resource.view} shapes it",
                        "content": {JSON: {"schema": {"type": "object"}}},
                    },
                    **_errors(READ_ERRORS),
                },
            }
        }
    }


def _service_paths(served_paths: frozenset[str]) -> dict[str, Any]:
    def probe(operation_id: str, summary: str) -> dict[str, Any]:
        body = {JSON: {"schema": {"$ref": "#/components/schemas/Probe"}}}
        return {
            "get": {
                "tags": ["service"],
                "operationId": operation_id,
                "summary": summary,
                "responses": {
                    "200": {"description": "yes", "content": body},
                    "503": {"description": "no", "content": body},
                },
            }
        }

    paths = {
        "/healthz": probe("service.health", "alive: the process works (a NATS outage makes it unready, not unhealthy)"),
        "/readyz": probe("service.ready", "ready: connected, JetStream answering, every consumer bound"),
        OPENAPI_PATH: _plain_get("service.openapi", "this document", JSON, {"type": "object"}),
        DOCS_PATH: _plain_get("service.docs", "this document as a web page", "text/html", {"type": "string"}),
    }
    if METRICS_PATH in served_paths:
        metrics = _plain_get("service.metrics", "Prometheus metrics", "text/plain", {"type": "string"})
        paths[METRICS_PATH] = metrics
    return paths


def _plain_get(operation_id: str, summary: str, media_type: str, schema: dict[str, Any]) -> dict[str, Any]:
    response = {"description": summary, "content": {media_type: {"schema": schema}}}
    return {
        "get": {"tags": ["service"], "operationId": operation_id, "summary": summary, "responses": {"200": response}}
    }


def _id_parameter(name: str, noun: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": f"the {noun}'s id: {ID_RULE}",
        "schema": {"type": "string", "pattern": IDENTIFIER.pattern},
    }


def _list_parameters(states: list[str]) -> list[dict[str, Any]]:
    return [
        {"name": "state", "in": "query", "description": "only instances in this state", "schema": {"enum": states}},
        {
            "name": "limit",
            "in": "query",
            "description": "at most this many items",
            "schema": {"type": "integer", "minimum": 1, "maximum": listing.MAX_LIMIT, "default": listing.DEFAULT_LIMIT},
        },
        {
            "name": "cursor",
            "in": "query",
            "description": "the previous page's cursor, to continue",
            "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,40}$"},
        },
    ]


def _instance(resource: ResourceSpec, key: str, states: list[str]) -> dict[str, Any]:
    """The instance view (runner/engine/saga.py public_view), or what the resource's `view` makes of it."""
    if resource.view:
        return {"type": "object", "description": f"an instance as {resource.view} shapes it"}
    return {
        "type": "object",
        "description": "the id, the start payload, what the saga gathered, its status and times",
        "properties": {
            key: {"type": "string"},
            "status": {"enum": states},
            "reason": {"type": "string"},
            "createdAt": {"type": "string", "format": "date-time"},
            "updatedAt": {"type": "string", "format": "date-time"},
        },
    }


def _page(instance: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items", "cursor"],
        "properties": {
            "items": {"type": "array", "items": instance},
            "cursor": {"type": ["string", "null"], "description": "the next page's cursor; null at the end"},
        },
    }


def _started(key: str, states: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": [key, "status"],
        "properties": {key: {"type": "string"}, "status": {"enum": states}},
    }


def _command_sent(key: str, command: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": [key, "command"],
        "properties": {key: {"type": "string"}, "command": {"const": command}},
    }


def _errors(statuses: tuple[int, ...]) -> dict[str, Any]:
    return {str(status): {"$ref": f"#/components/responses/Error{status}"} for status in sorted(set(statuses))}


def _components() -> dict[str, Any]:
    error_body = {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}}
    responses: dict[str, Any] = {
        f"Error{status}": {"description": description, "content": error_body} for status, description in ERRORS.items()
    }
    responses["Error503"]["headers"] = {
        "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "string"}}
    }
    responses["Error409"]["content"] = {JSON: {"schema": {"$ref": "#/components/schemas/Conflict"}}}
    return {
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {"type": "string", "description": "what is wrong, in words"},
                    "field": {"type": "string", "description": "the input at fault: a body field, parameter or header"},
                },
            },
            "Conflict": {
                "allOf": [{"$ref": "#/components/schemas/Error"}],
                "properties": {
                    "state": {"type": "string", "description": "the instance's state (a refused command)"},
                    "allowed": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "the commands possible in that state",
                    },
                },
            },
            "Event": {
                "type": "object",
                "required": ["subject", "time", "data"],
                "properties": {
                    "subject": {"type": "string"},
                    "time": {"type": "string", "format": "date-time"},
                    "data": {"description": "the event's payload"},
                    "ignored": {
                        "type": "string",
                        "description": "present when the event did not change the state: why",
                    },
                },
            },
            "Probe": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
        },
        "parameters": {
            "IdempotencyKey": {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "a repeated request with the same key does the work once and answers the same",
                "schema": {"type": "string", "pattern": f"^{IDEMPOTENCY_KEY.pattern}$"},
            }
        },
        "responses": responses,
    }
