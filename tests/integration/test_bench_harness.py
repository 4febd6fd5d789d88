"""bench/harness.py: the bench's own nats-server starts with any fsync policy `--sync` names."""

from __future__ import annotations

from pathlib import Path

import nats
import pytest
from nats.js.api import StreamConfig

from bench.harness import start_server

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.parametrize("sync", [None, "always", "1s"])
async def test_the_bench_server_starts_with_each_fsync_policy_and_stores_in_its_run_dir(
    tmp_path: Path, sync: str | None
) -> None:
    server, url = start_server(tmp_path, sync)
    try:
        nc = await nats.connect(url)
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="S", subjects=["s.>"]))
        ack = await js.publish("s.x", b"x")
        assert ack.seq == 1
        await nc.close()
        assert (tmp_path / "js" / "jetstream").is_dir(), "the store is in the run's directory"
    finally:
        server.stop()
