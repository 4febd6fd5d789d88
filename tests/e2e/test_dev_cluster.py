"""`flowrun dev-cluster`: three nodes a user can point --nats at; `stream info` shows replicas, crashes and
a lost quorum as plain words; SIGTERM stops every node."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import nats
import pytest
from nats.js.api import StreamConfig

from runner.jetstream.embedded import free_port, port_free
from tests.conftest import ROOT
from tests.e2e.processes import eventually, gone

pytestmark = pytest.mark.timeout(120)


def consecutive_free_ports(n: int) -> int:
    for _ in range(50):
        base = free_port()
        if base + n < 65536 and all(port_free(base + k) for k in range(n)):
            return base
    raise AssertionError(f"no {n} consecutive free ports")


def stream_info(url: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "runner.cli", "stream", "info", "R3", "--nats", url]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=30)


def replica_line(output: str, name: str) -> str:
    return next(line for line in output.splitlines() if line.strip().startswith(f"name: {name},"))


async def create_r3(urls: list[str]) -> None:
    nc = await nats.connect(urls)
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="R3", subjects=["r3.>"], num_replicas=3))
        for n in range(5):
            await js.publish("r3.x", str(n).encode())
    finally:
        await nc.close()


def test_dev_cluster_replicas_crash_and_shutdown(tmp_path: Path) -> None:
    port = consecutive_free_ports(3)
    out = tmp_path / "dev-cluster.out"
    data = tmp_path / "cluster"
    cmd = [sys.executable, "-m", "runner.cli", "dev-cluster", "--nodes", "3", "--data-dir", str(data)]
    with open(out, "wb") as sink:
        proc = subprocess.Popen([*cmd, "--port", str(port)], cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
    try:
        assert eventually(lambda: "--nats " in out.read_text(), 30), out.read_text()
        urls = next(line for line in out.read_text().splitlines() if line.startswith("--nats ")).split()[1]
        assert urls == ",".join(f"nats://127.0.0.1:{port + k}" for k in range(3))
        pids = {f"n{k}": int((data / f"n{k}" / "nats-server.pid").read_text()) for k in (1, 2, 3)}

        asyncio.run(create_r3(urls.split(",")))

        info = stream_info(urls.split(",")[0])
        assert info.returncode == 0, info.stderr
        lines = info.stdout.splitlines()
        assert "replicas: 3" in lines
        leader = next(line.split(": ")[1] for line in lines if line.startswith("  leader: "))
        followers = sorted({"n1", "n2", "n3"} - {leader})
        for name in followers:
            assert "offline: False" in replica_line(info.stdout, name)

        victim, survivor = followers
        ask = f"nats://127.0.0.1:{port + int(survivor[1]) - 1}"
        os.kill(pids[victim], signal.SIGKILL)

        def shows_victim_offline() -> bool:
            now = stream_info(ask)
            if now.returncode == 0:
                return "offline: True" in replica_line(now.stdout, victim)
            assert "has no leader right now" in now.stderr and "Traceback" not in now.stderr, now.stderr
            return False

        assert eventually(shows_victim_offline, 30)

        os.kill(pids[leader], signal.SIGKILL)  # two of three gone: no quorum, no leader
        lost = stream_info(ask)
        assert lost.returncode == 1
        assert lost.stderr.strip().splitlines() == [lost.stderr.strip()]  # one line, no traceback
        assert "stream R3 has no leader right now" in lost.stderr

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert all(gone(pid) for pid in pids.values())
        assert all(port_free(port + k) for k in range(3))
    finally:
        if proc.poll() is None:
            proc.kill()  # its nodes die with it
            proc.wait()
