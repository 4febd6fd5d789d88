"""JetStream KV with JSON values, compare-and-set, and group commit for hot keys.

`mutate` is the one way handlers change shared state: a pure function of the current value, applied
under compare-and-set. Mutations of one key that queue up in a process are applied together in one
write (group commit), so a hot key (a popular product) costs one round trip per batch, not per
message; a conflict with another process re-reads and re-applies them.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from runner import codec
from runner.errors import RetryableError
from runner.jetstream.publish import WRONG_LAST_SEQUENCE, Publisher, PublishError, Unavailable

T = TypeVar("T")

Mutation = Callable[[Any], tuple[Any, T]]
"""f(current value or None) -> (new value, result). Must not modify its argument: return a new
object to change the value, the same object to leave it unchanged."""


class Conflict(RetryableError):
    """Compare-and-set lost to another writer."""


class _Pending(Generic[T]):
    __slots__ = ("fn", "future")

    def __init__(self, fn: Mutation[T], future: asyncio.Future[T]):
        self.fn = fn
        self.future = future


class Bucket:
    """One KV bucket. Values are JSON objects."""

    def __init__(
        self,
        kv: KeyValue,
        name: str,
        publisher: Publisher,
        max_conflicts: int = 50,
        cache_size: int = 1024,
        decoded: int = 0,
    ):
        self.kv = kv
        self.name = name
        self.publisher = publisher
        self._subject = f"$KV.{name}."
        self.max_conflicts = max_conflicts
        self.cache_size = cache_size
        self._queues: dict[str, list[_Pending[Any]]] = {}
        # Values this process wrote last, so a read-modify-write usually needs no read. Another process's
        # write makes an entry stale; the compare-and-set then fails and we re-read. Kept as stored bytes
        # (compact: ~1.4 KB for an order instance, ~5.5 KB decoded), and the `decoded` most recently used
        # also as objects, where every mutation is the engine's own and returns new objects (saga
        # instances): decoding their records was the hot path's top cost.
        self._cache: OrderedDict[str, tuple[bytes | None, int]] = OrderedDict()
        self.decoded = decoded
        self._hot: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._direct = f"$JS.API.DIRECT.GET.KV_{name}.$KV.{name}."

    async def get(self, key: str) -> tuple[Any, int]:
        """(value, revision); (None, 0) when the key never existed, (None, rev) when it was deleted."""
        raw, revision = await self._read(key)
        return (codec.loads(raw) if raw else None), revision

    async def _read(self, key: str) -> tuple[bytes | None, int]:
        """A direct get on the shared inbox: (stored bytes or None, revision)."""
        reply = await (await self.publisher.request(self._direct + key))
        headers = reply.headers or {}
        if not reply.data and headers.get("Status") == "404":
            return None, 0
        if "Status" in headers and not reply.data:
            status = headers.get("Status")
            if status in ("503", "408"):  # no responders (no leader yet), or the server timed out
                raise Unavailable(f"{self.name}/{key}: KV read unavailable (status {status})", int(status))
            raise RetryableError(f"{self.name}/{key}: direct get failed: {headers}")
        revision = int(headers.get("Nats-Sequence", "0"))
        if headers.get("KV-Operation") in ("DEL", "PURGE"):
            return None, revision  # deleted: the next create must expect this revision
        return reply.data or None, revision

    def _remember(self, key: str, value: Any, raw: bytes | None, revision: int) -> None:
        # orjson hands out bytes inside an 8 KiB block; a copy of the exact size keeps the cache compact.
        self._cache[key] = (bytes(memoryview(raw)) if raw else None, revision)
        self._cache.move_to_end(key)
        if len(self._cache) > self.cache_size:
            self._hot.pop(self._cache.popitem(last=False)[0], None)
        if self.decoded:
            self._hot[key] = (value, revision)
            self._hot.move_to_end(key)
            if len(self._hot) > self.decoded:
                self._hot.popitem(last=False)

    def _cached(self, key: str) -> tuple[Any, int] | None:
        """(value, revision) as this process last saw it, decoded; None if not cached."""
        hot = self._hot.get(key)
        if hot is not None:
            return hot
        entry = self._cache.get(key)
        if entry is None:
            return None
        raw, revision = entry
        return (codec.loads(raw) if raw else None), revision

    def forget(self, key: str) -> None:
        """Drop a cached value that will not be needed soon (e.g. a finished saga instance)."""
        self._cache.pop(key, None)
        self._hot.pop(key, None)

    async def create(self, key: str, value: Any, revision: int = 0) -> int:
        """Store a value where the key is absent (revision 0) or was deleted at `revision`; raises
        Conflict if it exists. The value is cached, so the next mutate of the key needs no read."""
        raw = codec.dumps(value)
        stored = await self._write(key, raw, revision)
        self._remember(key, value, raw, stored)
        return stored

    async def delete(self, key: str, revision: int) -> None:
        """Delete the key if it is still at `revision`; raises Conflict if it changed."""
        self.forget(key)
        headers = {"KV-Operation": "DEL", "Nats-Expected-Last-Subject-Sequence": str(revision)}
        try:
            await (await self.publisher.publish(self._subject + key, b"", headers))
        except PublishError as exc:
            if exc.err_code in WRONG_LAST_SEQUENCE:
                raise Conflict(f"{self.name}/{key} changed concurrently") from exc
            raise

    async def _write(self, key: str, raw: bytes, revision: int) -> int:
        """Compare-and-set: store `raw` if the key is still at `revision` (0: absent)."""
        headers = {"Nats-Expected-Last-Subject-Sequence": str(revision)}
        try:
            ack = await (await self.publisher.publish(self._subject + key, raw, headers))
        except PublishError as exc:
            if exc.err_code in WRONG_LAST_SEQUENCE:
                raise Conflict(f"{self.name}/{key} changed concurrently") from exc
            raise
        return ack["seq"]

    async def mutate(self, key: str, fn: Mutation[T], assume_absent: bool = False) -> T:
        """Apply `fn` atomically to the key's value; coalesced with other queued mutations of the key.

        `assume_absent` skips the read for a key that is almost always new (a create); if it exists
        after all, the compare-and-set fails and the value is read as usual.
        """
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        queue = self._queues.get(key)
        if queue is not None:  # a writer for this key is running: it picks this up next round
            queue.append(_Pending(fn, future))
            return await future
        self._queues[key] = [_Pending(fn, future)]
        try:
            await self._drain(key, assume_absent)
        finally:
            del self._queues[key]
        return await future

    async def _drain(self, key: str, assume_absent: bool) -> None:
        queue = self._queues[key]
        while queue:
            batch = queue[:]
            del queue[:]
            await self._commit(key, batch, assume_absent)
            assume_absent = False

    async def _commit(self, key: str, batch: list[_Pending[Any]], assume_absent: bool) -> None:
        conflicts = 0
        while True:
            cached = self._cached(key)
            guessed = cached is None and assume_absent and not conflicts
            raw: bytes | None = None
            if cached is not None:
                value, revision = cached
            elif guessed:
                value, revision = None, 0
            else:
                try:
                    raw, revision = await self._read(key)
                except Exception as exc:  # unavailable: every queued caller hears it, none waits forever
                    self._fail_all(batch, exc)
                    return
                value = codec.loads(raw) if raw else None
            applied = self._apply(batch, value, guessed)
            if applied is None:  # a mutation objected to our guess of "absent": read the real value
                conflicts += 1
                continue
            current, results = applied
            if len(results) < len(batch):  # one mutation raised: it failed alone, re-apply the rest
                del batch[len(results)]
                if not batch:
                    return
                continue
            try:
                if current is not value:
                    raw = codec.dumps(current)
                    revision = await self._write(key, raw, revision)
                    self._remember(key, current, raw, revision)
                elif cached is not None:
                    self._touch(key)
                elif not guessed:
                    self._remember(key, value, raw, revision)
            except Conflict:
                self.forget(key)
                conflicts += 1
                if conflicts < self.max_conflicts:
                    if not guessed:  # a real race: let the other writer finish
                        await asyncio.sleep(0.001 * conflicts)
                    continue
                self._fail_all(batch, Conflict(f"{self.name}/{key}: too many concurrent writers"))
                return
            except Exception as exc:
                self.forget(key)
                self._fail_all(batch, exc)
                return
            for pending, result in zip(batch, results, strict=True):
                if not pending.future.done():
                    pending.future.set_result(result)
            return

    def _touch(self, key: str) -> None:
        """Used again unchanged: the last to be evicted."""
        if key in self._cache:
            self._cache.move_to_end(key)
        if key in self._hot:
            self._hot.move_to_end(key)

    @staticmethod
    def _apply(batch: list[_Pending[Any]], value: Any, guessed: bool) -> tuple[Any, list[Any]] | None:
        """Run the queued mutations in order. Stops at the first that raises (failing its caller),
        or returns None if that happened on a guessed value."""
        current, results = value, []
        for pending in batch:
            try:
                current, result = pending.fn(current)
            except Exception as exc:
                if guessed:
                    return None
                pending.future.set_exception(exc)
                break
            results.append(result)
        return current, results

    @staticmethod
    def _fail_all(batch: list[_Pending[Any]], exc: Exception) -> None:
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(exc)


async def stored_keys(js: JetStreamContext, bucket: str) -> list[str]:
    """Every key the bucket holds a message for (a deleted key's is its delete marker), from the stream's
    per-subject counts. Not nats-py's `KeyValue.keys()`: its watcher can answer "no keys" for a bucket that
    has some, when the first delivery is still in flight as it checks the consumer's pending count."""
    prefix = f"$KV.{bucket}."
    info = await js.stream_info(f"KV_{bucket}", subjects_filter=f"{prefix}>")
    return sorted(subject[len(prefix) :] for subject in info.state.subjects or {})
