"""A stalled or answerless JetStream is weather: nothing dead-lettered, nothing half-done, no phantom.

The server is frozen with SIGSTOP (the TCP connection stays open, nothing answers), or a bucket's
stream is missing (every write answers 503 "no responders", as during a leader election).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import aiohttp
import nats
import pytest

from runner.engine.intake import key_for
from runner.jetstream.embedded import EmbeddedServer
from tests.conftest import SEED_ORDER, freeze, start_system
from tests.faults.conftest import edit

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
def short_deadline(config_copy: Path) -> Path:
    """The API gives up after 2 s (plus a 1 s grace for a late acknowledgement)."""
    port = "      port: ${HTTP_PORT:-5100}\n"
    edit(config_copy / "flows" / "order.yaml", port, port + "      deadline: 2s\n")
    return config_copy


async def _messages_on(js: nats.js.JetStreamContext, subject: str) -> int:
    state = (await js.stream_info("ORDERS", subjects_filter=subject)).state
    return (state.subjects or {}).get(subject, 0)


async def test_post_during_a_stall_is_refused_and_never_takes_effect(
    nats_server: EmbeddedServer, short_deadline: Path
) -> None:
    system = await start_system(nats_server, short_deadline)
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    try:
        status, first = await system.post_order(SEED_ORDER)
        assert status == 202
        assert (await system.wait_terminal(first["orderId"]))["status"] == "completed"
        stock_before = await system.stock("LAPTOP-001")

        assert nats_server.proc is not None
        freeze(nats_server.proc.pid)
        stalled_at = time.monotonic()
        try:
            async with system.http.post(
                f"{system.base}/api/orders",
                json=SEED_ORDER,
                headers={"Idempotency-Key": "stalled-1"},
                timeout=aiohttp.ClientTimeout(total=20),
            ) as resp:
                answered_in = time.monotonic() - stalled_at
                body = await resp.json()
            assert resp.status == 503, body
            assert resp.headers["Retry-After"] == "1"
            assert answered_in < 8, f"the API took {answered_in:.1f}s to answer during a stall"
            await asyncio.sleep(max(0.0, 6 - (time.monotonic() - stalled_at)))  # the writes stay queued
        finally:
            os.kill(nats_server.proc.pid, signal.SIGCONT)

        # The queued writes reach JetStream now. Whatever of them lands takes no effect: a start event
        # stored after the API's deadline is ignored by every consumer (see test_write_path), and the
        # instance record is retired again.
        stalled_key = key_for("stalled-1", "order")
        await asyncio.sleep(3)  # give any (wrong) reservation time to happen
        status, _ = await system.get(f"/api/orders/{stalled_key}")
        assert status == 404
        assert await system.stock("LAPTOP-001") == stock_before
        assert await _messages_on(js, "orders.inventory.reserved") == 1  # the first order's only
        assert (await js.stream_info("DLQ")).state.messages == 0

        # The client's retry with the same key starts the order once, now that the server answers.
        async with system.http.post(
            f"{system.base}/api/orders", json=SEED_ORDER, headers={"Idempotency-Key": "stalled-1"}
        ) as resp:
            assert resp.status == 202
            retried = await resp.json()
        assert retried["orderId"] == stalled_key
        assert (await system.wait_terminal(stalled_key))["status"] == "completed"
        payments = await js.key_value("PAYMENTS")
        assert len(await payments.keys()) == 2
    finally:
        await nc.close()
        await system.http.close()
        await system.runtime.stop()


async def test_an_answerless_stream_is_retried_not_dead_lettered(
    nats_server: EmbeddedServer, config_copy: Path
) -> None:
    # Five quick attempts would be spent in well under a second: an outage must not use them up.
    edit(config_copy / "flows" / "inventory.yaml", "      initial_delay: 500ms\n", "      initial_delay: 50ms\n")
    edit(config_copy / "flows" / "inventory.yaml", "      max_delay: 10s\n", "      max_delay: 100ms\n")
    system = await start_system(nats_server, config_copy)
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    try:
        await js.delete_stream("KV_RESERVATIONS")  # every read and write of the bucket: 503
        ids = []
        for _ in range(5):
            status, body = await system.post_order(SEED_ORDER)
            assert status == 202
            ids.append(body["orderId"])
        await asyncio.sleep(3)
        assert (await js.stream_info("DLQ")).state.messages == 0
        _, health = await system.get("/readyz")
        assert "consumer inventory/inventory-service: JetStream unavailable" in health.get("problems", []), health

        await js.create_key_value(bucket="RESERVATIONS", history=1, direct=True)  # the stream is back
        for order_id in ids:
            assert (await system.wait_terminal(order_id, within=30))["status"] == "completed"
        assert (await js.stream_info("DLQ")).state.messages == 0
        status, ready = await system.get("/readyz")
        assert status == 200, ready
    finally:
        await nc.close()
        await system.http.close()
        await system.runtime.stop()
