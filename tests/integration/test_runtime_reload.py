"""`Runtime.reload` in-process: what a reload keeps running, and what it does when it cannot switch."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.config.loader import load_or_raise
from runner.jetstream.embedded import EmbeddedServer
from runner.serve.service import ReloadRefused
from tests.conftest import SEED_ORDER, start_system

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


async def test_unchanged_consumers_keep_pulling_and_a_changed_one_is_rebound(
    nats_server: EmbeddedServer, config_copy: Path
) -> None:
    system = await start_system(nats_server, config_copy)
    try:
        before = {sup.worker.name: sup.worker for sup in system.runtime.supervised}
        _edit(config_copy / "flows/payment.yaml", "        batch: 128", "        batch: 16")
        changes = await system.runtime.reload(load_or_raise(config_copy))
        after = {sup.worker.name: sup.worker for sup in system.runtime.supervised}
        assert set(after) == set(before)
        assert [name for name in after if after[name] is not before[name]] == ["payment/payment-service"]
        assert after["payment/payment-service"].spec.batch == 16
        assert "consumer payment/payment-service re-bound" in changes
        status, body = await system.post_order(SEED_ORDER)
        assert status == 202 and (await system.wait_terminal(body["orderId"]))["status"] == "completed"
        assert system.runtime.health()[0]
    finally:
        await system.http.close()
        await system.runtime.stop()


async def test_a_refused_reload_restarts_the_stopped_consumer_as_it_was(
    nats_server: EmbeddedServer, config_copy: Path
) -> None:
    system = await start_system(nats_server, config_copy)
    try:
        running = system.runtime.config
        system.runtime.options.provision = "verify"  # the server must already match: a changed ack wait does not
        _edit(config_copy / "flows/payment.yaml", "        ack_wait: 30s", "        ack_wait: 20s")
        with pytest.raises(ReloadRefused, match="payment-service"):
            await system.runtime.reload(load_or_raise(config_copy))
        assert system.runtime.config is running
        payment = next(s.worker for s in system.runtime.supervised if s.worker.name == "payment/payment-service")
        assert payment.spec.ack_wait == 30
        status, body = await system.post_order(SEED_ORDER)
        assert status == 202 and (await system.wait_terminal(body["orderId"]))["status"] == "completed"
        assert system.runtime.health()[0]
    finally:
        await system.http.close()
        await system.runtime.stop()
