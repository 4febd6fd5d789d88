"""Processes under test: a private nats-server and the service processes on top of it.

Everything binds to 127.0.0.1, lives in a temporary directory and is killed in `finally` blocks.
Children also get PR_SET_PDEATHSIG, so even a SIGKILLed bench leaves no orphans behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from runner.jetstream.cluster import EmbeddedCluster
from runner.jetstream.embedded import free_port, server_binary, sync_interval

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it when the bench process dies."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the resident set's high-water mark."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def tail(log_path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Proc:
    """One child process with its log file; `stop()` is idempotent and always ends it."""

    def __init__(self, name: str, args: list[str], log_path: Path, env: dict[str, str] | None = None):
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "ab")  # closed in stop()
        self.popen = subprocess.Popen(
            args,
            stdout=self._log,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # Ctrl-C reaches only the bench, which then stops us in order
            preexec_fn=die_with_parent,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait_log(self, marker: bytes, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")
            if marker in self.log_path.read_bytes():
                return
            time.sleep(0.02)
        raise TimeoutError(f"{self.name} not ready after {timeout}s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        return tail(self.log_path, lines)

    def stop(self, grace: float = 5.0) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self._log.close()


def start_server(run_dir: Path, sync: str | None = None) -> tuple[Proc, str]:
    """A fresh nats-server: JetStream with file storage in run_dir, loopback only, a free port.
    `sync`: its fsync policy (`always` or an interval, as `flowrun up --sync`); None keeps the server's."""
    run_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = [server_binary(), "-a", "127.0.0.1", "-p", str(port), "-js"]
    if sync is None:
        args += ["-sd", str(run_dir / "js")]
    else:  # the store directory goes in the config file too: the server refuses it in both places
        conf = run_dir / "nats-server.conf"
        conf.write_text(f'jetstream {{ store_dir: "{run_dir / "js"}", sync_interval: {sync_interval(sync)} }}\n')
        args += ["-c", str(conf)]
    proc = Proc("nats-server", args, run_dir / "nats-server.log")
    proc.wait_log(b"Server is ready", 15)
    return proc, f"nats://127.0.0.1:{port}"


@dataclass
class Deployment:
    """A running system: its nats-server(s), their URL(s), the service processes, the order API's base URL."""

    kind: str
    url: str  # comma-separated on a cluster: every node
    server_pids: list[int]  # one nats-server, or every node of the cluster
    server_logs: dict[str, Path]
    services: list[Proc] = field(default_factory=list)
    http_url: str | None = None

    def pids(self) -> dict[str, int]:
        """Every service process by name; under `flowrun up`, its children too (named by --process-name)."""
        out = {}
        for proc in self.services:
            out[proc.name] = proc.pid
            out |= {_process_name(argv, pid): pid for pid, argv in child_processes(proc.pid).items()}
        return out

    def tails(self, lines: int = 15) -> dict[str, str]:
        """The last log lines of every server and service (shown when the books do not balance)."""
        return {name: tail(path, lines) for name, path in self.server_logs.items()} | {
            p.name: p.tail(lines) for p in self.services
        }


def _flowrun_env(replicas: int) -> dict[str, str]:
    """streams.yaml takes its streams' and buckets' replicas from FLOWRUN_REPLICAS."""
    return {"FLOWRUN_REPLICAS": str(replicas)}


def _flowrun_service(name: str, url: str, run_dir: Path, replicas: int, http_port: int | None = None) -> Proc:
    args = [sys.executable, "-m", "runner.cli", "start", "--service", name.split("#")[0], "--nats", url]
    args += ["--config", str(ROOT), "--provision", "off"]
    if http_port is not None:
        args += ["--http-port", str(http_port)]
    return Proc(name, args, run_dir / f"{name.replace('#', '-')}.log", _flowrun_env(replicas))


def _baseline_service(name: str, url: str, run_dir: Path, http_port: int | None = None) -> Proc:
    args = [sys.executable, "-m", "bench.baseline", name, "--nats", url]
    if http_port is not None:
        args += ["--http-port", str(http_port)]
    return Proc(name, args, run_dir / f"baseline-{name}.log")


def _faststream_service(name: str, url: str, run_dir: Path) -> Proc:
    args = [sys.executable, "-m", "bench.peer_faststream", name, "--nats", url]
    return Proc(name, args, run_dir / f"faststream-{name}.log")


def _flowrun_up(url: str, run_dir: Path, replicas: int, http_port: int) -> Proc:
    """`flowrun up` with its defaults (processes per service, provisioning) on the run's server."""
    args = [
        sys.executable,
        "-m",
        "runner.cli",
        "up",
        "--nats",
        url,
        "--config",
        str(ROOT),
        "--http-port",
        str(http_port),
    ]
    return Proc("up", args, run_dir / "flowrun-up.log", _flowrun_env(replicas))


def _wait_up_ready(up: Proc, timeout: float) -> None:
    """Until every process `flowrun up` started says it is running (each prints one "running on" line)."""
    up.wait_log(b"Ctrl-C to stop", timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = up.log_path.read_bytes()
        started = sum(int(n) for n in re.findall(rb"(\d+) process\(es\)", log))
        if log.count(b" running on ") >= started:
            return
        time.sleep(0.05)
    raise TimeoutError(f"flowrun up: its processes not ready after {timeout}s:\n{up.tail()}")


def child_processes(pid: int) -> dict[int, list[str]]:
    """The direct children of `pid` and their argv, from /proc (empty once it is gone)."""
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return {}
    out = {}
    for kid in map(int, kids):
        try:
            out[kid] = Path(f"/proc/{kid}/cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
    return out


def _process_name(argv: list[str], pid: int) -> str:
    return argv[argv.index("--process-name") + 1] if "--process-name" in argv else f"child-{pid}"


def _flowrun_provision(url: str, timeout: float, replicas: int) -> None:
    prov = subprocess.run(
        [sys.executable, "-m", "runner.cli", "provision", "--nats", url, "--config", str(ROOT)],
        cwd=ROOT,
        env={**os.environ, **_flowrun_env(replicas)},
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if prov.returncode != 0:
        raise RuntimeError(f"flowrun provision failed ({prov.returncode}): {prov.stderr.decode()[-2000:]}")


@contextlib.asynccontextmanager
async def system(
    kind: str,
    run_dir: Path,
    prepare: Callable[[str], Awaitable[None]],
    inventory_instances: int = 1,
    ready_within: float = 30.0,
    sync: str | None = None,
    replicas: int = 1,
) -> AsyncIterator[Deployment]:
    """A fresh server (replicas > 1: a loopback cluster of that many nodes) and one system on it, stopped on
    the way out whatever happens.

    flowrun: the shipped YAML provisioned by `flowrun provision` (FLOWRUN_REPLICAS=replicas), then one
    `flowrun start` process per service (inventory x N). baseline and faststream: `prepare` provisions, then
    three `bench.baseline` / `bench.peer_faststream` processes. The flowrun and baseline order processes serve
    the order API. `prepare(url)` runs after provisioning and before any service starts (it writes the bench
    stock); a cluster's url lists every node, comma-separated.
    """
    if replicas > 1:
        cluster = EmbeddedCluster(replicas, data_dir=run_dir / "cluster", sync=sync)
        await asyncio.to_thread(cluster.start, ready_within)
        logs = {f"nats-server {n.server_name}": n.log_file for n in cluster.nodes}
        dep = Deployment(kind, cluster.urls, [n.pid for n in cluster.nodes if n.pid], logs)
        stop_servers = cluster.stop
    else:
        server, url = await asyncio.to_thread(start_server, run_dir, sync)
        dep = Deployment(kind, url, [server.pid], {"nats-server": server.log_path})
        stop_servers = server.stop
    url = dep.url
    try:
        if kind == "flowrun":
            await asyncio.to_thread(_flowrun_provision, url, ready_within, replicas)
            await prepare(url)
            http_port = free_port()
            dep.http_url = f"http://127.0.0.1:{http_port}"
            dep.services.append(_flowrun_service("order", url, run_dir, replicas, http_port))
            dep.services += [
                _flowrun_service(f"inventory#{i}", url, run_dir, replicas) for i in range(inventory_instances)
            ]
            dep.services.append(_flowrun_service("payment", url, run_dir, replicas))
        elif kind == "flowrun-up":  # it provisions itself; the stock is written once its processes run
            http_port = free_port()
            dep.http_url = f"http://127.0.0.1:{http_port}"
            up = _flowrun_up(url, run_dir, replicas, http_port)
            dep.services.append(up)
            await asyncio.to_thread(_wait_up_ready, up, ready_within)
            await prepare(url)
        elif kind == "faststream":
            await prepare(url)
            dep.services += [_faststream_service(n, url, run_dir) for n in ("order", "inventory", "payment")]
        else:
            await prepare(url)
            http_port = free_port()
            dep.http_url = f"http://127.0.0.1:{http_port}"
            dep.services.append(_baseline_service("order", url, run_dir, http_port))
            dep.services += [_baseline_service(n, url, run_dir) for n in ("inventory", "payment")]
        for proc in dep.services:
            if proc.name != "up":
                await asyncio.to_thread(proc.wait_log, b"running on", ready_within)
        yield dep
    finally:
        for proc in dep.services:
            proc.stop()
        stop_servers()
