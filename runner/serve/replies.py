"""JSON answers: every response of the API, errors included, is a JSON object."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from runner import codec


def error(
    status: int, message: str, field: str | None = None, retry_after: int | None = None, **details: Any
) -> web.Response:
    """`{"error": message, "field"?: the input at fault, **details}`, with Retry-After when worth retrying."""
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    body.update(details)
    extra = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return ok(body, status=status, headers=extra)


def ok(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=codec.dumps(body), status=status, content_type="application/json", headers=headers)
