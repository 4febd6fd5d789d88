"""A KV bucket's entries, most recently written first, read in bounded windows (the HTTP API's lists).

JetStream cannot read a stream backwards, but its batched direct get (`{"seq": lo, "batch": n}` on
`$JS.API.DIRECT.GET.KV_<bucket>`) returns up to n stored messages from `lo` upwards in one request,
skipping deleted sequences. So the walk goes down the bucket's stream in windows of sequences, one
request per window (more only where a window holds more than expected), each answering the window's
messages plus at most a few above it (already seen, dropped). The window's span follows the density
seen so far, so sparse stretches (a few keys rewritten many times) take fewer requests; it never
exceeds MAX_SPAN sequences, so one window never reads more than MAX_SPAN entries.

Superseded revisions: with `history: 1` the server keeps only each key's latest revision, so every
entry found is current (or was an instant ago). With more history, one `multi_last` request per window
asks for the latest sequence of each key found, and older revisions are skipped. Delete and purge
markers are skipped. The walk is no snapshot: a key written while it runs moves above its start.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from runner import codec
from runner.errors import RetryableError
from runner.jetstream.publish import Unavailable

TARGET = 64  # entries a window should hold
MIN_SPAN, MAX_SPAN = 16, 2048  # sequences per window
MAX_BATCH = 256  # messages per request


@dataclass(frozen=True)
class Entry:
    key: str
    seq: int  # the revision
    value: bytes


@dataclass(frozen=True)
class Window:
    entries: list[Entry]  # newest first
    low: int  # every sequence from here up to the walk's start has been read


class NewestFirst:
    """Walks one bucket's stream downwards from `below` (exclusive; None: from the newest entry).

    `async with NewestFirst(...) as walk:` then `await walk.next_window()` until it returns None.
    """

    def __init__(self, nc: Client, bucket: str, history: int, below: int | None = None, timeout: float = 2.0):
        self.nc = nc
        self.bucket = bucket
        self.history = history
        self.timeout = timeout
        self._api = f"$JS.API.DIRECT.GET.KV_{bucket}"
        self._prefix = f"$KV.{bucket}."
        self._below = below
        self._high = 0  # the next window ends here
        self._first = 1
        self._span = TARGET
        self._density = 1.0  # entries per sequence, as seen so far
        self.requests = 0  # what the walk cost, for the caller's budget
        self.read = 0
        self._sub: Subscription | None = None
        self._replies: asyncio.Queue[Msg] = asyncio.Queue()

    async def __aenter__(self) -> NewestFirst:
        first, last = await self._bounds()
        self._first = max(first, 1)  # an empty stream reports 0
        self._high = last if self._below is None else min(self._below - 1, last)
        self._sub = await self.nc.subscribe(self.nc.new_inbox(), cb=self._on_reply)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:  # the connection may be gone: the subscription is gone with it
                pass

    async def next_window(self) -> Window | None:
        """The next older window's current entries, or None below the stream's first sequence."""
        if self._high < self._first:
            return None
        high = self._high
        low = max(self._first, high - self._span + 1)
        found, stored = await self._read(low, high)
        if self.history > 1 and found:
            found = await self._current(found)
        self._density = max(stored, 1) / (high - low + 1)
        self._span = max(MIN_SPAN, min(MAX_SPAN, int(TARGET / self._density)))
        self._high = low - 1
        return Window(found[::-1], low)

    async def _bounds(self) -> tuple[int, int]:
        try:
            reply = await self.nc.request(f"$JS.API.STREAM.INFO.KV_{self.bucket}", b"", timeout=self.timeout)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            raise Unavailable(f"KV {self.bucket}: stream info unavailable ({type(exc).__name__})") from exc
        self.requests += 1
        info = codec.loads(reply.data)
        if "error" in info:
            raise RetryableError(f"KV {self.bucket}: {info['error'].get('description', 'stream info failed')}")
        return info["state"]["first_seq"], info["state"]["last_seq"]

    async def _read(self, low: int, high: int) -> tuple[list[Entry], int]:
        """The window's entries, oldest first, and how many messages it holds (delete markers too):
        batches from `low` until one passes `high`."""
        found: list[Entry] = []
        stored = 0
        start = low
        while start <= high:
            expected = int(self._density * (high - start + 1))
            batch = max(MIN_SPAN, min(MAX_BATCH, expected + expected // 4 + 8))
            replies = await self._batch({"seq": start, "batch": batch})
            for msg in replies:
                if _seq(msg) > high:
                    break
                stored += 1
                entry = self._entry(msg)
                if entry is not None:
                    found.append(entry)
            last = _seq(replies[-1]) if replies else high
            if len(replies) < batch or last >= high:
                break
            start = last + 1
        return found, stored

    async def _current(self, entries: list[Entry]) -> list[Entry]:
        """Those that are still their key's latest revision."""
        subjects = sorted({self._prefix + e.key for e in entries})
        latest = {_subject(m): _seq(m) for m in await self._batch({"multi_last": subjects, "batch": len(subjects)})}
        return [e for e in entries if latest.get(self._prefix + e.key) == e.seq]

    def _entry(self, msg: Msg) -> Entry | None:
        headers = msg.headers or {}
        if headers.get("KV-Operation") in ("DEL", "PURGE") or not msg.data:
            return None
        return Entry(_subject(msg)[len(self._prefix) :], _seq(msg), msg.data)

    async def _on_reply(self, msg: Msg) -> None:
        self._replies.put_nowait(msg)

    async def _batch(self, request: dict[str, Any]) -> list[Msg]:
        """One batched direct get: its messages, up to the end-of-batch marker."""
        assert self._sub is not None
        self.requests += 1
        await self.nc.publish(self._api, codec.dumps(request), reply=self._sub.subject)
        out: list[Msg] = []
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    msg = await self._replies.get()
                    status = (msg.headers or {}).get("Status")
                    if status is None:
                        out.append(msg)
                        continue
                    if status in ("204", "404"):  # end of batch; nothing stored from there on
                        self.read += len(out)
                        return out
                    if status in ("408", "503"):
                        raise Unavailable(f"KV {self.bucket}: read unavailable (status {status})", int(status))
                    raise RetryableError(f"KV {self.bucket}: batched read failed (status {status})")
        except TimeoutError as exc:
            raise Unavailable(f"KV {self.bucket}: no reply within {self.timeout:g}s") from exc


def _seq(msg: Msg) -> int:
    return int((msg.headers or {})["Nats-Sequence"])


def _subject(msg: Msg) -> str:
    return (msg.headers or {})["Nats-Subject"]
