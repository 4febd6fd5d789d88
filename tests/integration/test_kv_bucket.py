"""runner/jetstream/kv.py against a real nats-server: compare-and-set, group commit, the cache of hot values.

Every test runs twice: values cached as stored bytes (handlers' buckets), and the two most recently used also
kept decoded (as saga instances are).
Two Bucket objects on separate connections stand for two processes sharing a bucket.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from nats.js.api import KeyValueConfig

from runner.jetstream.kv import Bucket, Conflict, stored_keys
from runner.jetstream.publish import Publisher

pytestmark = pytest.mark.asyncio(loop_scope="session")

NAME = "COUNTERS"


@pytest.fixture(params=[0, 2], ids=["bytes", "decoded"])
async def buckets(request: pytest.FixtureRequest, nats_server: Any) -> AsyncIterator[tuple[Bucket, Bucket]]:
    """Two processes' views of one bucket."""
    conns = [await nats.connect(nats_server.url) for _ in range(2)]
    await conns[0].jetstream().create_key_value(KeyValueConfig(bucket=NAME, history=1, direct=True))
    made = []
    for nc in conns:
        publisher = await Publisher(nc).start()
        made.append(Bucket(await nc.jetstream().key_value(NAME), NAME, publisher, decoded=request.param))
    try:
        yield made[0], made[1]
    finally:
        for nc in conns:
            await nc.close()


def add(n: int) -> Any:
    def apply(value: dict[str, int] | None) -> tuple[dict[str, int], int]:
        total = (value or {"total": 0})["total"] + n
        return {"total": total}, total

    return apply


async def test_concurrent_mutations_of_one_key_are_all_applied_in_fewer_writes(buckets: tuple[Bucket, Bucket]) -> None:
    one, _ = buckets
    results = await asyncio.wait_for(asyncio.gather(*(one.mutate("hot", add(1)) for _ in range(50))), 10)
    assert sorted(results) == list(range(1, 51)), "each caller sees the value its own mutation made"
    value, revision = await one.get("hot")
    assert value == {"total": 50}
    assert revision < 50, "queued mutations of a key are committed together"


async def test_two_processes_writing_one_key_lose_nothing(buckets: tuple[Bucket, Bucket]) -> None:
    one, two = buckets
    await one.create("shared", {"total": 0})
    rounds = [asyncio.gather(one.mutate("shared", add(1)), two.mutate("shared", add(10))) for _ in range(20)]
    await asyncio.wait_for(asyncio.gather(*rounds), 20)
    assert (await two.get("shared"))[0] == {"total": 220}
    # Each process's cache went stale under the other's writes: its next mutation re-reads and still adds up.
    assert await one.mutate("shared", add(1)) == 221
    assert await two.mutate("shared", add(1)) == 222


async def test_a_mutation_that_raises_fails_alone(buckets: tuple[Bucket, Bucket]) -> None:
    one, two = buckets
    await one.create("k", {"total": 5})

    def broken(value: Any) -> Any:
        if not one.decoded:  # a handler's bucket even survives a mutation that scribbles on its argument
            value["total"] = -1
        raise ValueError("refused")

    outcomes = await asyncio.gather(
        one.mutate("k", add(1)), one.mutate("k", broken), one.mutate("k", add(1)), return_exceptions=True
    )
    assert outcomes[0] == 6 and isinstance(outcomes[1], ValueError) and outcomes[2] == 7
    assert (await two.get("k"))[0] == {"total": 7}
    assert await one.mutate("k", add(0)) == 7


async def test_create_refuses_an_existing_key_and_a_delete_needs_the_current_revision(
    buckets: tuple[Bucket, Bucket],
) -> None:
    one, two = buckets
    revision = await one.create("once", {"total": 1})
    with pytest.raises(Conflict):
        await two.create("once", {"total": 2})
    await one.mutate("once", add(1))
    with pytest.raises(Conflict):
        await two.delete("once", revision)  # stale: the key moved on
    _, current = await two.get("once")
    await two.delete("once", current)
    assert await one.get("once") == (None, current + 1)
    assert await one.mutate("once", add(3)) == 3, "a deleted key is absent again for a mutation"


async def test_stored_keys_lists_every_key_written_at_once(buckets: tuple[Bucket, Bucket], nats_server: Any) -> None:
    one, _ = buckets
    await asyncio.gather(*(one.create(f"k{i:03d}", {"total": i}) for i in range(150)))
    nc = await nats.connect(nats_server.url)
    try:
        keys = await stored_keys(nc.jetstream(), NAME)
    finally:
        await nc.close()
    assert keys == [f"k{i:03d}" for i in range(150)]
