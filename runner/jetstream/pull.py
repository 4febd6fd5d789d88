"""A continuous pull subscription on a durable consumer (nats.go's `Consume()`, for nats-py).

nats-py's `fetch()` asks for a batch and waits for it, so the pipe runs dry between batches. Here
pull requests are kept outstanding up to `max_inflight` messages and topped up as soon as processing
frees room. Pulled messages arrive under their own subject, so what is still owed is counted in
total: +n per request, -1 per message, minus `Nats-Pending-Messages` when the server ends a request
early (408 expired, 409). Idle heartbeats tell a live server from requests lost on a reconnect.

Acks sent just before a connection drops may never reach the server, which would redeliver those
messages only after the full ack wait. The last few seconds of acks are kept and sent again after a
reconnect: acking twice is harmless, a stall of `ack_wait` is not.
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
ACK, TERM = b"+ACK", b"+TERM"


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
        resend_window: float = 5.0,
    ):
        self.nc = nc
        self.stream = stream
        self.durable = durable
        self.batch = batch
        self.max_inflight = max(max_inflight, batch)
        self.expires = expires
        self.heartbeat = heartbeat
        self._next_api = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._owed = 0  # messages requested and not yet received, over all open requests
        self._sizes: dict[str, int] = {}  # request token → batch asked, for a 409 that names no count
        self._tokens = itertools.count()
        self._queue: deque[Msg] = deque()
        self._ready = asyncio.Event()
        self._busy = 0  # messages handed out and not yet released
        self._sub: Subscription | None = None
        self._prefix = ""
        self._last_seen = time.monotonic()
        self._stopping = False
        self.error: Exception | None = None
        self.resend_window = resend_window
        self._settled: deque[tuple[float, str, bytes]] = deque(maxlen=50_000)  # (monotonic, reply, ack kind)
        self._disconnected_at: float | None = None

    async def start(self) -> None:
        self._prefix = self.nc.new_inbox()
        self._sub = await self.nc.subscribe(f"{self._prefix}.*", cb=self._on_msg)
        await self._top_up()

    @property
    def owed(self) -> int:
        return self._owed

    async def _on_msg(self, msg: Msg) -> None:
        self._last_seen = time.monotonic()
        headers = msg.headers
        if headers and _STATUS in headers and not msg.data and msg.subject.startswith(self._prefix):
            await self._on_status(msg.subject[len(self._prefix) + 1 :], headers)
            return
        if self._owed > 0:
            self._owed -= 1
        if self._stopping:  # hand it straight back so another instance takes it now
            await msg.nak()
            return
        self._queue.append(msg)
        self._ready.set()

    async def _on_status(self, token: str, headers: dict[str, str]) -> None:
        status = headers.get(_STATUS, "")
        if status == "100":  # idle heartbeat: the request is alive
            return
        # 404 no messages, 408 request expired, 409 limits or consumer trouble: the request is over.
        asked = self._sizes.pop(token, 0)
        unfilled = headers.get(_PENDING)
        self._owed -= int(unfilled) if unfilled and unfilled.isdigit() else min(asked, self._owed)
        self._owed = max(self._owed, 0)
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
            self._owed += n
            self._sizes[token] = n
            if len(self._sizes) > 64:  # fulfilled requests send no status: forget the oldest
                del self._sizes[next(iter(self._sizes))]
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
            self._owed = 0
            self._sizes.clear()
            self._last_seen = now
        await self._top_up()

    def settled(self, reply: str, kind: bytes) -> None:
        """An ack or term was sent for this delivery: remember it for a while, in case it is lost."""
        now = time.monotonic()
        settled = self._settled
        settled.append((now, reply, kind))
        while settled[0][0] < now - self.resend_window:  # only the window is ever sent again
            settled.popleft()

    def disconnected(self) -> None:
        self._disconnected_at = time.monotonic()

    async def reconnected(self) -> None:
        """After a reconnect our open requests may be gone (a restarted server forgets them): ask
        again now instead of waiting for the heartbeat check. Over-asking is bounded by the server's
        max_ack_pending. Acks sent shortly before the connection dropped are sent again."""
        self._owed = 0
        self._sizes.clear()
        self._last_seen = time.monotonic()
        await self._resend_recent_acks()
        await self._top_up()

    async def _resend_recent_acks(self) -> None:
        since = (self._disconnected_at or time.monotonic()) - self.resend_window
        recent = [(reply, kind) for at, reply, kind in self._settled if at >= since]
        self._settled.clear()
        for reply, kind in recent:
            await self.nc.publish(reply, kind)
        if recent:
            log.info("re-sent %d acks of %s/%s after a reconnect", len(recent), self.stream, self.durable)

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
