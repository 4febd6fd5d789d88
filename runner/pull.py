"""A continuous pull subscription on a durable consumer (nats.go's `Consume()`, for nats-py).

nats-py's `fetch()` asks for a batch and waits for it, so the pipe runs dry between batches. Here
pull requests are kept outstanding up to `max_inflight` messages: each request replies to its own
inbox token, so we know how many of its messages are still owed, and we top up as soon as
processing frees room. Idle heartbeats tell a live server from a lost request.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections import deque

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

log = logging.getLogger("flowrun.pull")

_STATUS = "Status"
_PENDING = "Nats-Pending-Messages"


class ConsumerGone(Exception):
    """The durable consumer was deleted or the server refused our pulls for good."""


class PullStream:
    """Messages of one durable consumer, delivered into an in-process queue."""

    def __init__(
        self,
        nc: Client,
        stream: str,
        durable: str,
        batch: int,
        max_inflight: int,
        expires: float = 30.0,
        heartbeat: float = 5.0,
    ):
        self.nc = nc
        self.stream = stream
        self.durable = durable
        self.batch = batch
        self.max_inflight = max(max_inflight, batch)
        self.expires = expires
        self.heartbeat = heartbeat
        self._next_api = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._owed: dict[str, int] = {}  # request token → messages still owed by that request
        self._issued: dict[str, float] = {}
        self._tokens = itertools.count()
        self._queue: deque[Msg] = deque()
        self._ready = asyncio.Event()
        self._busy = 0  # messages handed out and not yet released
        self._sub: Subscription | None = None
        self._prefix = ""
        self._last_seen = time.monotonic()
        self._stopping = False
        self.error: Exception | None = None

    async def start(self) -> None:
        self._prefix = self.nc.new_inbox()
        self._sub = await self.nc.subscribe(f"{self._prefix}.*", cb=self._on_msg)
        await self._top_up()

    @property
    def owed(self) -> int:
        return sum(self._owed.values())

    async def _on_msg(self, msg: Msg) -> None:
        self._last_seen = time.monotonic()
        token = msg.subject[len(self._prefix) + 1 :]
        headers = msg.headers
        if headers and _STATUS in headers and not msg.data:
            await self._on_status(token, headers)
            return
        if self._stopping:  # hand it straight back so another instance takes it now
            await msg.nak()
            return
        owed = self._owed.get(token)
        if owed is not None:
            if owed <= 1:
                self._owed.pop(token, None)
                self._issued.pop(token, None)
            else:
                self._owed[token] = owed - 1
        self._queue.append(msg)
        self._ready.set()

    async def _on_status(self, token: str, headers: dict[str, str]) -> None:
        status = headers.get(_STATUS, "")
        if status == "100":  # idle heartbeat: the request is alive
            return
        # 404 no messages, 408 request expired, 409 limits or consumer trouble: the request is over.
        self._owed.pop(token, None)
        self._issued.pop(token, None)
        if status == "409":
            description = headers.get("Description", "")
            if "Consumer Deleted" in description or "Consumer is push based" in description:
                self.error = ConsumerGone(f"{self.stream}/{self.durable}: {description}")
                self._ready.set()
                return
            log.debug("pull 409 on %s/%s: %s", self.stream, self.durable, description)
        if not self._stopping:
            await self._top_up()

    async def _top_up(self) -> None:
        """Ask for more when owed + queued + busy has fallen to half the window."""
        if self._stopping or not self.nc.is_connected:
            return
        room = self.max_inflight - self.owed - len(self._queue) - self._busy
        if room < max(1, min(self.batch, self.max_inflight // 2)):
            return
        while room > 0:
            n = min(room, self.batch)
            token = str(next(self._tokens))
            self._owed[token] = n
            self._issued[token] = time.monotonic()
            request = {
                "batch": n,
                "expires": int(self.expires * 1e9),
                "idle_heartbeat": int(self.heartbeat * 1e9),
            }
            await self.nc.publish(self._next_api, json.dumps(request).encode(), reply=f"{self._prefix}.{token}")
            room -= n

    async def take(self, limit: int, wait: float) -> list[Msg]:
        """Up to `limit` queued messages; waits up to `wait` seconds for the first one."""
        if self._stopping:
            return []
        if not self._queue:
            self._ready.clear()
            await self._check_liveness()
            try:
                await asyncio.wait_for(self._ready.wait(), wait)
            except TimeoutError:
                return []
        if self.error:
            raise self.error
        out = []
        while self._queue and len(out) < limit:
            out.append(self._queue.popleft())
        self._busy += len(out)
        return out

    async def release(self, count: int) -> None:
        """Processing of `count` taken messages is over: make room for more."""
        self._busy -= count
        await self._top_up()

    async def _check_liveness(self) -> None:
        """Forget requests the server stopped heart-beating (lost on a reconnect), then top up."""
        now = time.monotonic()
        if self._owed and now - self._last_seen > 3 * self.heartbeat:
            stale = [t for t, at in self._issued.items() if now - at > 3 * self.heartbeat]
            for token in stale:
                self._owed.pop(token, None)
                self._issued.pop(token, None)
            self._last_seen = now
        await self._top_up()

    async def stop(self) -> list[Msg]:
        """Stop asking; hand back queued messages (nak) so other instances get them at once."""
        self._stopping = True
        self._ready.set()  # wake idle takers so they notice at once
        leftovers = list(self._queue)
        self._queue.clear()
        for msg in leftovers:
            await msg.nak()
        return leftovers

    async def close(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:  # the connection may already be closed
                pass
            self._sub = None
