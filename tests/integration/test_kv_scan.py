"""Walking a KV bucket newest first (the HTTP lists): each live key once, as it is now, in order of its last write."""

from __future__ import annotations

import nats
import pytest
from nats.js import api

from runner.jetstream.embedded import EmbeddedServer
from runner.jetstream.kv_scan import NewestFirst

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def fill(nc: nats.NATS, bucket: str, history: int) -> list[tuple[str, bytes]]:
    """300 keys; every third rewritten twice, every tenth deleted, one purged.
    Returns (key, value) by last write, newest first."""
    kv = await nc.jetstream().create_key_value(api.KeyValueConfig(bucket=bucket, history=history, direct=True))
    last: dict[str, tuple[int, bytes]] = {}
    for i in range(300):
        last[f"k{i}"] = (await kv.put(f"k{i}", f"v{i}".encode()), f"v{i}".encode())
    for round_ in (1, 2):
        for i in range(0, 300, 3):
            value = f"v{i}.{round_}".encode()
            last[f"k{i}"] = (await kv.put(f"k{i}", value), value)
    for i in range(0, 300, 10):
        await kv.delete(f"k{i}")
        del last[f"k{i}"]
    await kv.purge("k1")
    del last["k1"]
    return [(key, value) for key, (_, value) in sorted(last.items(), key=lambda kv_: -kv_[1][0])]


async def walk(nc: nats.NATS, bucket: str, history: int, below: int | None = None, windows: int = 10_000) -> tuple:
    """(key, value) pairs, the low sequence reached, and the requests made, after at most `windows` windows."""
    out, low = [], None
    async with NewestFirst(nc, bucket, history, below=below) as scan:
        for _ in range(windows):
            window = await scan.next_window()
            if window is None:
                return out, None, scan.requests
            out += [(e.key, e.value) for e in window.entries]
            low = window.low
    return out, low, scan.requests


@pytest.mark.parametrize("history", [1, 5])
async def test_each_live_key_once_newest_first(nats_server: EmbeddedServer, history: int) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        expected = await fill(nc, f"SCAN{history}", history)
        found, _, requests = await walk(nc, f"SCAN{history}", history)
        assert found == expected
        assert requests < 40  # a few hundred entries in a handful of batched reads, not one request per key

        # Stopping after two windows and resuming below the last one reached gives the rest, exactly.
        head, low, _ = await walk(nc, f"SCAN{history}", history, windows=2)
        assert low is not None and 0 < len(head) < len(expected)
        tail, _, _ = await walk(nc, f"SCAN{history}", history, below=low)
        assert head + tail == expected
    finally:
        await nc.close()


async def test_an_empty_bucket_has_no_windows(nats_server: EmbeddedServer) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        await nc.jetstream().create_key_value(api.KeyValueConfig(bucket="EMPTY", history=1, direct=True))
        assert await walk(nc, "EMPTY", 1) == ([], None, 1)
    finally:
        await nc.close()
