"""The embedded nats-server: generated config, files inside its data dir, the store lock, and the restart guard."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from pathlib import Path

import pytest

from runner.jetstream.embedded import EmbeddedServer
from runner.jetstream.server_guard import RestartPolicy, ServerGuard
from runner.jetstream.store_lock import StoreInUseError


def test_config_pid_and_log_live_in_the_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "nats"
    with EmbeddedServer(data_dir=data, sync="always") as server:
        config = (data / "nats-server.conf").read_text()
        assert "sync_interval: always" in config
        assert int((data / "nats-server.pid").read_text()) == server.pid
        assert "Server is ready" in (data / "nats-server.log").read_text()
    assert not (tmp_path / "nats-server.log").exists()  # no longer written beside the data dir


@pytest.mark.parametrize(("given", "written"), [("1s", "sync_interval: 1000ms"), ("250ms", "sync_interval: 250ms")])
def test_sync_interval_reaches_the_server_config(tmp_path: Path, given: str, written: str) -> None:
    assert written in EmbeddedServer(data_dir=tmp_path, sync=given).config_text()


def test_without_sync_the_server_default_applies(tmp_path: Path) -> None:
    assert "sync_interval" not in EmbeddedServer(data_dir=tmp_path).config_text()


def test_a_bad_sync_value_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="neither 'always' nor a duration"):
        EmbeddedServer(data_dir=tmp_path, sync="sometimes")


def test_a_second_server_on_a_store_in_use_is_refused_until_the_first_stops(tmp_path: Path) -> None:
    data = tmp_path / "nats"
    first = EmbeddedServer(data_dir=data).start()
    second = EmbeddedServer(data_dir=data)
    try:
        with pytest.raises(StoreInUseError, match=r"flowrun\.lock"):
            second.start()
        assert second.proc is None  # refused before a process existed
        first.stop()
        second.start()  # the lock went with the first server
        assert second.listening()
    finally:
        first.stop()
        second.stop()


def test_a_server_started_from_a_worker_thread_outlives_the_thread(tmp_path: Path) -> None:
    """Linux ties the die-with-parent signal to the forking thread: a restart from a worker must not inherit it."""
    server = EmbeddedServer(data_dir=tmp_path / "nats")
    try:
        worker = threading.Thread(target=server.start)
        worker.start()
        worker.join()
        time.sleep(0.5)  # the kernel's signal, were it set, is immediate
        assert server.exit_code() is None and server.listening()
    finally:
        server.stop()


async def _wait(predicate, within: float = 10.0) -> None:
    for _ in range(int(within / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_the_guard_restarts_a_dead_server_then_gives_up(tmp_path: Path) -> None:
    server = EmbeddedServer(data_dir=tmp_path / "nats").start()
    guard = ServerGuard(server, RestartPolicy(max_restarts=1, first_delay=0.05, poll=0.05))
    stop = asyncio.Event()
    watching = asyncio.create_task(guard.run(stop))
    try:
        first = server.pid
        server.send(signal.SIGKILL)
        await _wait(lambda: guard.restarts == 1)
        assert server.pid != first and server.listening()  # same port, a new process

        server.send(signal.SIGKILL)  # one death more than the policy allows
        await asyncio.wait_for(watching, 10)
        assert stop.is_set()
        assert guard.failure is not None and "after 1 restarts" in guard.failure
        assert str(server.log_file) in guard.failure
    finally:
        watching.cancel()
        server.stop()
