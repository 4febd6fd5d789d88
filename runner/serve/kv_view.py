"""A KV bucket's values as a read-only HTTP resource: `GET <path>/{key}` → `view(key, value)`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from runner.config.dotted import resolve
from runner.config.model import ResourceSpec
from runner.config.subjects import is_identifier
from runner.serve.replies import error, ok

if TYPE_CHECKING:
    from runner.serve.runtime_view import RuntimeView


class KvView:
    def __init__(self, runtime: RuntimeView, spec: ResourceSpec):
        assert spec.bucket is not None and spec.view is not None
        self.spec = spec
        self.bucket = runtime.buckets[spec.bucket]
        self.shape = resolve(runtime.config.root, spec.view)

    def routes(self) -> list[web.RouteDef]:
        return [web.get(self.spec.path + "/{key}", self.get)]

    async def get(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        if not is_identifier(key):
            return error(400, f"invalid {self.spec.key}: use 1-128 letters, digits, '-' or '_'", self.spec.key)
        value, _ = await self.bucket.get(key)
        if value is None:
            return error(404, f"{self.spec.name} {key} not found")
        return ok(self.shape(key, value))
