"""`python -m bench.http_load URL --out FILE`: POST /api/orders from N keep-alive connections for a duration.

Its own process (the system under test keeps its cores), uvloop and a raw asyncio Protocol: one
pre-built HTTP/1.1 request, written as is, one request in flight per connection, answers framed by
Content-Length. aiohttp's client costs several times the CPU per request and could not saturate
flowrun on a 2-core machine; wrk is not installed here and, more to the point, cannot say which order
each answer started or when its request was sent, which the bench needs for POST -> completed per order.

For every 202 it records the orderId from the JSON answer, `time.monotonic()` when the request was
sent and when the answer arrived. CLOCK_MONOTONIC is system-wide on Linux, so the bench process,
which watches orders reach a terminal state, can subtract these times from its own. Other answers
are counted by status, failed connections and requests past their deadline by kind.

Bounded: no request is sent after the duration, every request has a deadline (its connection is
aborted then), and the whole run a hard limit. The result is one JSON object written to FILE.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import orjson
import uvloop

from bench.load import PRICE, PRODUCT, QTY

WATCHDOG_PERIOD = 0.05


def build_request(host: str, port: int) -> bytes:
    """The one request every connection sends; the price is a JSON number, as a client would send it."""
    body = orjson.dumps(
        {"customerId": "CUST123", "items": [{"productId": PRODUCT, "quantity": QTY, "price": float(PRICE)}]}
    )
    head = (
        f"POST /api/orders HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class ProtocolError(Exception):
    """An answer this client cannot frame (no Content-Length, or bytes nobody asked for)."""


class Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight; `deadline` is watched from outside."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.answer: asyncio.Future[tuple[int, bytes]] | None = None
        self.deadline = float("inf")
        self.closed = False
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def request(self, raw: bytes, deadline: float) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None
        self.answer = asyncio.get_running_loop().create_future()
        self.deadline = deadline
        self.transport.write(raw)
        return self.answer

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        line_end = head.find(b"\r\n", at + 2)  # -1 on the last header line: head ends before its CRLF
        try:
            status = int(head[9:12])  # "HTTP/1.1 202 Accepted"
            length = int(head[at + 17 : line_end if line_end > 0 else len(head)]) if at >= 0 else -1
        except ValueError:
            length = -1
        if length < 0:
            self._fail(ProtocolError("answer without a status or Content-Length"))
            return
        if len(self.buffer) < end + 4 + length:
            return
        if len(self.buffer) > end + 4 + length or self.answer is None or self.answer.done():
            self._fail(ProtocolError("bytes nobody asked for"))
            return
        self.keep_alive = b"\r\nconnection: close" not in head
        body = bytes(self.buffer[end + 4 : end + 4 + length])
        self.buffer.clear()
        self.deadline = float("inf")
        self.answer.set_result((status, body))

    def _fail(self, exc: Exception) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(exc)
        self.abort()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(ConnectionError(f"connection lost: {exc!r}"))


class Load:
    """One run: N clients on keep-alive connections, a watchdog for their deadlines, what they got back."""

    def __init__(self, url: str, seconds: float, connections: int, per_request: float):
        self.url, self.connections = url, connections
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.raw = build_request(self.host, self.port)
        self.seconds, self.per_request = seconds, per_request
        self.started = self.stop_at = self.cpu = 0.0
        self.live: set[Connection] = set()
        self.timed_out: set[Connection] = set()
        self.ids: list[str] = []
        self.sent: list[float] = []
        self.answered: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.requests = self.connects = 0

    async def run(self) -> None:
        cpu = time.process_time()
        self.started = time.monotonic()
        self.stop_at = self.started + self.seconds
        guard = asyncio.create_task(self.watchdog())
        clients = [asyncio.create_task(self.client()) for _ in range(self.connections)]
        try:
            # the hard limit: the last request's connect and answer each have per_request at most
            done, pending = await asyncio.wait(clients, timeout=self.seconds + 2 * self.per_request + 5)
            for task in pending:
                task.cancel()
            if pending:
                self.errors["hard limit"] += len(pending)
            for task in done:
                task.result()  # a bug here must not pass for a quiet run
        finally:
            guard.cancel()
            for conn in self.live:
                conn.abort()
            self.cpu = time.process_time() - cpu

    async def connect(self) -> Connection | None:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(loop.create_connection(Connection, self.host, self.port), self.per_request)
        except (OSError, TimeoutError) as exc:
            self.errors[f"connect: {type(exc).__name__}"] += 1
            await asyncio.sleep(0.05)
            return None
        self.live.add(conn)
        self.connects += 1
        return conn

    async def client(self) -> None:
        conn: Connection | None = None
        while time.monotonic() < self.stop_at:
            if conn is None or conn.closed or not conn.keep_alive:
                if conn is not None:
                    conn.abort()
                if (conn := await self.connect()) is None:
                    continue
            sent = time.monotonic()
            self.requests += 1
            try:
                status, body = await conn.request(self.raw, sent + self.per_request)
            except (ConnectionError, ProtocolError) as exc:
                self.errors["deadline" if conn in self.timed_out else type(exc).__name__] += 1
                continue
            answered = time.monotonic()
            if status == 202:
                self.ids.append(orjson.loads(body)["orderId"])
                self.sent.append(sent)
                self.answered.append(answered)
            else:
                self.statuses[status] += 1
        if conn is not None:
            conn.abort()

    async def watchdog(self) -> None:
        """Abort every connection whose request is past its deadline (one timer for all requests)."""
        while True:
            await asyncio.sleep(WATCHDOG_PERIOD)
            now = time.monotonic()
            for conn in list(self.live):
                if conn.closed:
                    self.live.discard(conn)
                elif now > conn.deadline:
                    self.timed_out.add(conn)
                    conn.abort()

    def result(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "connections": self.connections,
            "seconds": self.seconds,
            "started": self.started,
            "elapsed": max(self.answered, default=time.monotonic()) - self.started,
            "requests": self.requests,
            "connects": self.connects,  # more than `connections`: the server closed some (or they failed)
            "cpu_s": self.cpu,  # this process's CPU while it sent (its start-up left out)
            "accepted": len(self.ids),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": dict(self.errors),
            "ids": self.ids,
            "sent": self.sent,
            "answered": self.answered,
        }


async def run(url: str, seconds: float, connections: int, per_request: float) -> dict[str, Any]:
    load = Load(url, seconds, connections, per_request)
    await load.run()
    return load.result()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.http_load", description=__doc__.splitlines()[0])
    p.add_argument("url", help="the API's base URL, e.g. http://127.0.0.1:5100")
    p.add_argument("--out", type=Path, required=True, help="where to write the JSON result")
    p.add_argument("--seconds", type=float, default=5.0, help="how long to send (default 5)")
    p.add_argument("--connections", type=int, default=64, help="keep-alive connections (default 64)")
    p.add_argument("--timeout", type=float, default=15.0, help="deadline of each request, seconds (default 15)")
    args = p.parse_args(argv)
    if args.seconds <= 0 or args.connections < 1 or args.timeout <= 0:
        p.error("--seconds and --timeout must be positive, --connections at least 1")
    result = uvloop.run(run(args.url, args.seconds, args.connections, args.timeout))
    args.out.write_text(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
