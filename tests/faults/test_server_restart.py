"""nats-server itself restarts mid-load: services reconnect, resume pulling, and nothing is lost."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats
import pytest

from runner.jetstream.embedded import EmbeddedServer
from tests.faults.ledger import audit, inject, order

pytestmark = pytest.mark.asyncio(loop_scope="session")

STOCK = {"LAPTOP-001": 50, "MOUSE-001": 200}


async def test_services_resume_after_a_server_restart(tmp_path: Path, spawn, fast_config: Path) -> None:
    server = EmbeddedServer(data_dir=tmp_path / "js", log_file=str(tmp_path / "nats.log")).start()
    try:
        for service in ("order", "inventory", "payment"):
            spawn(service, server.url, fast_config)
        first = [order("MOUSE-001") for _ in range(60)]
        nc = await nats.connect(server.url)
        await inject(nc.jetstream(), first)
        await nc.close()

        server.stop()  # the data dir survives: JetStream state comes back with the server
        await asyncio.sleep(1.0)
        server.start()
        started = time.monotonic()

        nc = await nats.connect(server.url)
        js = nc.jetstream()
        second = [order("MOUSE-001") for _ in range(60)]
        await inject(js, second)
        result = await audit(js, first + second, STOCK, within=60)
        print(result.line(), f"recovered in {time.monotonic() - started:.1f}s")
        assert result.lost == [] and result.duplicate_effects == []
        assert result.completed == 120
        # Reconnected consumers pull again at once, not after a liveness timeout.
        assert time.monotonic() - started < 10
        await nc.close()
    finally:
        server.stop()
