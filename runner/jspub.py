"""Pipelined JetStream publishes: send now, await the PubAck later, on one reply subscription.

nats-py's `publish()` costs a request timer per message and `publish_async()` a NUID plus an
os.urandom call; on the hot path (every output, timer and KV compare-and-set) that overhead is
measurable. This keeps one wildcard inbox and a counter. Callers bound their waits (handler and
batch timeouts); a cancelled wait forgets its future.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from runner import codec

WRONG_LAST_SEQUENCE = (10071, 10164)


class PublishError(Exception):
    """JetStream refused the message (no stream, limits, a failed expectation)."""

    def __init__(self, description: str, err_code: int = 0):
        super().__init__(description)
        self.err_code = err_code


class Publisher:
    PRUNE_AT = 50_000

    def __init__(self, nc: Client):
        self.nc = nc
        self._prefix = ""
        self._futures: dict[str, asyncio.Future[Any]] = {}
        self._tokens = itertools.count()
        self._sub: Subscription | None = None

    async def start(self) -> Publisher:
        self._prefix = self.nc.new_inbox()
        self._sub = await self.nc.subscribe(f"{self._prefix}.*", cb=self._on_reply)
        return self

    async def publish(
        self, subject: str, payload: bytes, headers: dict[str, str] | None = None
    ) -> asyncio.Future[dict[str, Any]]:
        """Send; the returned future resolves to the PubAck ({"stream", "seq", "duplicate"?})."""
        token = str(next(self._tokens))
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._track(token, future)
        await self.nc.publish(subject, payload, reply=f"{self._prefix}.{token}", headers=headers)
        return future

    async def request(self, subject: str, payload: bytes = b"") -> asyncio.Future[Msg]:
        """A raw request on the same inbox (e.g. a KV direct get); the future resolves to the reply."""
        token = f"r{next(self._tokens)}"
        future: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._track(token, future)
        await self.nc.publish(subject, payload, reply=f"{self._prefix}.{token}")
        return future

    def _track(self, token: str, future: asyncio.Future[Any]) -> None:
        self._futures[token] = future
        if len(self._futures) > self.PRUNE_AT:  # callers that gave up (timeouts) leave entries behind
            for stale in [t for t, f in self._futures.items() if f.done()]:
                del self._futures[stale]

    async def _on_reply(self, msg: Msg) -> None:
        token = msg.subject[len(self._prefix) + 1 :]
        future = self._futures.pop(token, None)
        if future is None or future.done():
            return
        if token[0] == "r":
            future.set_result(msg)
            return
        if not msg.data:
            status = (msg.headers or {}).get("Status", "")
            future.set_exception(PublishError(f"no stream listens on this subject (status {status})", 503))
            return
        response = codec.loads(msg.data)
        error = response.get("error")
        if error:
            future.set_exception(PublishError(error.get("description", "publish failed"), error.get("err_code", 0)))
        else:
            future.set_result(response)

    async def close(self) -> None:
        for future in list(self._futures.values()):
            if not future.done():
                future.set_exception(PublishError("publisher closed"))
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:  # the connection may be closing already
                pass
