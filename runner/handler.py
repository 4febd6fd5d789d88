"""What handler authors import: outcomes, the two error kinds, and the context they receive.

Handlers are `async def fn(msg: dict, ctx: Context) -> Outcome | None`. They see plain data and
KV buckets, never the NATS connection; the runner publishes what they emit and acks afterwards.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runner.jetstream.kv import Bucket


class RetryableError(Exception):
    """A failure worth trying again later (an outage, a conflict). Unexpected exceptions count too."""


class FatalError(Exception):
    """A failure no retry can fix (bad input, unknown entity): dead-letter at once."""


class OutOfOrder(RetryableError):
    """The message depends on one not processed yet (a saga event before its start event): held back
    and retried for the policy's `out_of_order_for` without using up attempts, then dead-lettered."""


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
