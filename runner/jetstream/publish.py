"""Pipelined JetStream publishes: send now, await the PubAck later, on one reply subscription.

nats-py's `publish()` costs a request timer per message and `publish_async()` a NUID plus an
os.urandom call; on the hot path (every output, timer and KV compare-and-set) that overhead is
measurable. This keeps one wildcard inbox and a counter.

Every wait has a deadline: one sweeper task fails replies older than `reply_timeout` with
`Unavailable` (no timer per message), and a lost connection fails every open wait at once, since
replies in flight are gone with it. Unavailability (no responders, no leader during an election,
no reply) is its own error class: callers retry it as weather, never as a failed message.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from runner import codec

WRONG_LAST_SEQUENCE = (10071, 10164)
# "temporarily unavailable", "cluster can not handle request" (no leader), "stream is offline"
UNAVAILABLE_CODES = frozenset({10008, 10009, 10118})


class PublishError(Exception):
    """JetStream refused the message (no stream, limits, a failed expectation)."""

    def __init__(self, description: str, err_code: int = 0):
        super().__init__(description)
        self.err_code = err_code


class Unavailable(PublishError):
    """JetStream did not answer, or answered that it cannot serve now (an election, a restart, a
    stall). The request may still have taken effect: retry it idempotently, never treat it as final."""


class Publisher:
    def __init__(self, nc: Client, reply_timeout: float = 5.0):
        self.nc = nc
        self.reply_timeout = reply_timeout
        self._prefix = ""
        self._futures: dict[str, asyncio.Future[Any]] = {}
        # (monotonic deadline, token), oldest first: tokens are issued in order, so the sweeper only
        # ever looks at the front.
        self._deadlines: deque[tuple[float, str]] = deque()
        self._tokens = itertools.count()
        self._sub: Subscription | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> Publisher:
        self._prefix = self.nc.new_inbox()
        self._sub = await self.nc.subscribe(f"{self._prefix}.*", cb=self._on_reply)
        self._sweeper = asyncio.create_task(self._sweep(), name="publisher-sweeper")
        return self

    @property
    def in_flight(self) -> int:
        return len(self._futures)

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
        self._deadlines.append((time.monotonic() + self.reply_timeout, token))

    async def _sweep(self) -> None:
        """Fail the waits whose reply is overdue (a stalled server, a reply lost with a connection)."""
        period = min(0.25, self.reply_timeout / 4)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            deadlines, futures = self._deadlines, self._futures
            while deadlines and deadlines[0][0] <= now:
                future = futures.pop(deadlines.popleft()[1], None)
                if future is not None and not future.done():
                    future.set_exception(Unavailable(f"no reply from JetStream within {self.reply_timeout:g}s"))

    def connection_lost(self) -> None:
        """The connection dropped: replies to what was sent are lost with it. Fail every open wait
        now (callers retry idempotently) instead of letting each run into its deadline."""
        futures, self._futures = self._futures, {}
        self._deadlines.clear()
        for future in futures.values():
            if not future.done():
                future.set_exception(Unavailable("connection to NATS lost before JetStream replied"))

    async def _on_reply(self, msg: Msg) -> None:
        token = msg.subject[len(self._prefix) + 1 :]
        future = self._futures.pop(token, None)
        # Replies come back about in order: drop the answered waits from the front, so the deadlines kept
        # are about the waits still open, not every request of the last `reply_timeout` seconds.
        deadlines, futures = self._deadlines, self._futures
        while deadlines and deadlines[0][1] not in futures:
            deadlines.popleft()
        if future is None or future.done():
            return
        if token[0] == "r":
            future.set_result(msg)
            return
        if not msg.data:
            status = (msg.headers or {}).get("Status", "")
            # 503 "no responders": no stream listens, or (in a cluster) its leader is being elected.
            future.set_exception(Unavailable(f"JetStream did not accept the message (status {status})", 503))
            return
        response = codec.loads(msg.data)
        error = response.get("error")
        if error:
            code = error.get("err_code", 0)
            kind = Unavailable if code in UNAVAILABLE_CODES else PublishError
            future.set_exception(kind(error.get("description", "publish failed"), code))
        else:
            future.set_result(response)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for future in list(self._futures.values()):
            if not future.done():
                future.set_exception(PublishError("publisher closed"))
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:  # the connection may be closing already
                pass


class JetStreamProbe:
    """Asks JetStream for its account info every few seconds, so readiness reflects whether it
    answers (a stalled or leaderless cluster), not only whether the TCP connection is up."""

    def __init__(self, publisher: Publisher, every: float = 2.0):
        self.publisher = publisher
        self.every = every
        self.ok = True
        self.error = ""
        self._task: asyncio.Task[None] | None = None

    def start(self) -> JetStreamProbe:
        self._task = asyncio.create_task(self._run(), name="jetstream-probe")
        return self

    async def _run(self) -> None:
        while True:
            try:
                reply = await (await self.publisher.request("$JS.API.INFO"))
                status = (reply.headers or {}).get("Status")
                self.ok, self.error = (False, f"status {status}") if status and not reply.data else (True, "")
            except Exception as exc:  # a timeout, a lost connection: keep probing
                self.ok, self.error = False, str(exc) or type(exc).__name__
            await asyncio.sleep(self.every)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
