"""EmbeddedCluster: a replicated stream keeps its data through a node crash, a pause, and the node's return."""

from __future__ import annotations

import asyncio
import time

import nats
import pytest
from nats.js.api import StreamConfig

from runner.jetstream.cluster import EmbeddedCluster
from runner.jetstream.inspection import Leaderless, stream_info


async def _publish(js: nats.js.JetStreamContext, n: int, within: float = 15.0) -> None:
    """Publish n messages; a publish during an election may time out and is retried (same Msg-Id: no duplicate)."""
    deadline = time.monotonic() + within
    for _ in range(n):
        msg_id = f"m{time.time_ns()}"
        while True:
            try:
                await js.publish("r3.x", b"x", headers={"Nats-Msg-Id": msg_id}, timeout=1)
                break
            except (nats.errors.TimeoutError, nats.js.errors.NoStreamResponseError, nats.js.errors.APIError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)


async def _until(js: nats.js.JetStreamContext, ok, within: float = 20.0) -> dict:
    deadline = time.monotonic() + within
    last: object = None
    while True:
        try:
            last = await stream_info(js, "R3")
            if ok(last):
                return last
        except Leaderless as exc:  # during an election
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"stream R3 never reached the expected state; last seen: {last}")
        await asyncio.sleep(0.2)


def _index(name: str) -> int:
    return int(name.removeprefix("n")) - 1


@pytest.mark.timeout(90)
async def test_a_replicated_stream_survives_a_crash_and_a_pause(nats_cluster: EmbeddedCluster) -> None:
    nc = await nats.connect(nats_cluster.url_list, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="R3", subjects=["r3.>"], num_replicas=3))
        await _publish(js, 10)
        leader = (await stream_info(js, "R3"))["cluster"]["leader"]

        nats_cluster.kill(_index(leader))  # the stream leader crashes
        await _publish(js, 10)  # a new leader takes the writes
        after = await _until(js, lambda i: i["cluster"]["leader"] != leader and i["state"]["messages"] == 20)
        assert leader in after["cluster"]["replicas"]

        nats_cluster.restart(_index(leader))  # same ports, same store: it catches up
        await _until(
            js,
            lambda i: any(
                r["name"] == leader and r["current"] and not r["offline"] for r in i["cluster"]["replica_state"]
            ),
        )

        # Pause a follower this client is not connected to: a paused server keeps its sockets open but silent.
        connected = f"nats://127.0.0.1:{nc.connected_url.port}"
        follower = next(
            r
            for r in (await stream_info(js, "R3"))["cluster"]["replicas"]
            if nats_cluster.url_list[_index(r)] != connected
        )
        nats_cluster.pause(_index(follower))  # two of three still make a quorum
        await _publish(js, 5)
        nats_cluster.resume(_index(follower))
        final = await _until(
            js,
            lambda i: i["state"]["messages"] == 25 and all(r["current"] for r in i["cluster"]["replica_state"]),
        )
        assert sorted([final["cluster"]["leader"], *final["cluster"]["replicas"]]) == ["n1", "n2", "n3"]
    finally:
        await nc.close()
