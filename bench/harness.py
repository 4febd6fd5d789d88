"""Processes under test: a private nats-server and the service processes on top of it.

Everything binds to 127.0.0.1, lives in a temporary directory and is killed in `finally` blocks.
Children also get PR_SET_PDEATHSIG, so even a SIGKILLed bench leaves no orphans behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from runner.jetstream.embedded import free_port, server_binary, sync_interval

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
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
            preexec_fn=_die_with_parent,
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
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

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
    args = [server_binary(), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(run_dir / "js")]
    if sync is not None:
        conf = run_dir / "nats-server.conf"
        conf.write_text(f'jetstream {{ store_dir: "{run_dir / "js"}", sync_interval: {sync_interval(sync)} }}\n')
        args += ["-c", str(conf)]
    proc = Proc("nats-server", args, run_dir / "nats-server.log")
    proc.wait_log(b"Server is ready", 15)
    return proc, f"nats://127.0.0.1:{port}"


@dataclass
class Deployment:
    """A running system: the server, its URL, the service processes, the order API (flowrun only)."""

    kind: str
    url: str
    server: Proc
    services: list[Proc] = field(default_factory=list)
    http_url: str | None = None

    def pids(self) -> dict[str, int]:
        return {p.name: p.pid for p in self.services}


def _flowrun_service(name: str, url: str, run_dir: Path, http_port: int | None = None) -> Proc:
    args = [sys.executable, "-m", "runner.cli", "start", "--service", name.split("#")[0], "--nats", url]
    args += ["--config", str(ROOT), "--provision", "off"]
    if http_port is not None:
        args += ["--http-port", str(http_port)]
    return Proc(name, args, run_dir / f"{name.replace('#', '-')}.log")


def _baseline_service(name: str, url: str, run_dir: Path) -> Proc:
    return Proc(name, [sys.executable, "-m", "bench.baseline", name, "--nats", url], run_dir / f"baseline-{name}.log")


def _flowrun_provision(url: str, timeout: float) -> None:
    prov = subprocess.run(
        [sys.executable, "-m", "runner.cli", "provision", "--nats", url, "--config", str(ROOT)],
        cwd=ROOT,
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
) -> AsyncIterator[Deployment]:
    """A fresh server and one system on it, stopped on the way out whatever happens.

    flowrun: the shipped YAML provisioned by `flowrun provision`, then one `flowrun start` process per
    service (inventory x N). baseline: `prepare` provisions, then three `bench.baseline` processes.
    `prepare(url)` runs after provisioning and before any service starts (it writes the bench stock).
    """
    server, url = await asyncio.to_thread(start_server, run_dir, sync)
    dep = Deployment(kind, url, server)
    try:
        if kind == "flowrun":
            await asyncio.to_thread(_flowrun_provision, url, ready_within)
            await prepare(url)
            http_port = free_port()
            dep.http_url = f"http://127.0.0.1:{http_port}"
            dep.services.append(_flowrun_service("order", url, run_dir, http_port))
            dep.services += [_flowrun_service(f"inventory#{i}", url, run_dir) for i in range(inventory_instances)]
            dep.services.append(_flowrun_service("payment", url, run_dir))
        else:
            await prepare(url)
            dep.services += [_baseline_service(n, url, run_dir) for n in ("order", "inventory", "payment")]
        for proc in dep.services:
            await asyncio.to_thread(proc.wait_log, b"running on", ready_within)
        yield dep
    finally:
        for proc in dep.services:
            proc.stop()
        server.stop()
