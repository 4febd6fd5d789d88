"""Reading a request's JSON object body: content type, size, time and syntax checked before anything else."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from runner.serve import jsonbody
from runner.serve.http_guard import BODY_TIMEOUT, clip, is_json
from runner.serve.replies import error

MAX_BODY = 1024 * 1024


async def json_object(request: web.Request) -> tuple[dict[str, Any] | None, web.Response | None]:
    """(the body, None), or (None, the 4xx answer saying what is wrong with it)."""
    if not is_json(request):
        return None, error(415, "Content-Type must be application/json (UTF-8)", "Content-Type")
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return None, too_large()
    except TimeoutError:
        return None, error(408, f"request body not received within {BODY_TIMEOUT:g}s")
    if not raw.strip():
        return None, error(400, "request body is empty; send a JSON object")
    try:
        body = jsonbody.loads(raw)
    except jsonbody.DuplicateKeyError as exc:
        where = f"duplicate key {clip(exc.key)!r}" if exc.key is not None else "a duplicate key"
        return None, error(400, f"request body has {where}: each key may appear once per object")
    except jsonbody.DecodeError as exc:
        return None, error(400, f"request body is not valid JSON: {clip(exc)}")
    if not isinstance(body, dict):
        return None, error(400, f"request body must be a JSON object, not {type(body).__name__}")
    return body, None


def too_large() -> web.Response:
    return error(413, f"request body exceeds {MAX_BODY} bytes")
