"""What handler authors import: outcomes, the error kinds that steer retries, and the context they receive.

Handlers are `async def fn(msg: dict, ctx: Context) -> Outcome | None`. They see plain data and
KV buckets, never the NATS connection; the runner publishes what they emit and acks afterwards.

An HTTP resource (`http: resources:` in the YAML) may name two plain (not async) functions:

- `accept(body: dict, id: str) -> dict` — a POST body, already valid against the resource's
  `body_schema`, becomes the start event's payload. `id` is the new instance's id (generated, or the
  body's own with `id: client`); the runner sets the saga's key field to it in the payload. Raise
  ValueError to refuse the request: its message is the 422's error. Without `accept`, the payload
  is the body itself.
- `view(key: str, value: dict) -> dict` — what GET answers. For a KV view, `value` is the stored
  value; for a saga's instances, it is the instance as GET shows it by default (its id, the start
  payload's fields, the data the saga gathered, `status`, `reason` if any, `createdAt`, `updatedAt`).
  It must not modify `value`; the same shape is used for every item of a list.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runner.errors import FatalError, OutOfOrder, RetryableError

if TYPE_CHECKING:
    from runner.jetstream.kv import Bucket

__all__ = ["Context", "FatalError", "OutOfOrder", "Outcome", "RetryableError", "emit"]


@dataclass(frozen=True)
class Outcome:
    """A handler's result: an outcome name (mapped to a subject by `emits:`) and its payload."""

    name: str
    data: dict[str, Any] = field(default_factory=dict)


def emit(name: str, **data: Any) -> Outcome:
    return Outcome(name, data)


@dataclass
class Context:
    """Everything a handler may use. One per service process, shared by all messages."""

    service: str
    settings: dict[str, Any]
    buckets: dict[str, Bucket]
    log: logging.Logger

    def kv(self, bucket: str) -> Bucket:
        try:
            return self.buckets[bucket]
        except KeyError:
            raise FatalError(f"KV bucket {bucket!r} is not declared in flows/ (kv:)") from None
