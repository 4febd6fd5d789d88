"""`flowrun up` and its processes — the embedded nats-server and one or more `flowrun start` per service — live and
die together; a process that dies is restarted; the store is never shared by two servers; no credential is ever on
a child's command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from runner.cli.up_processes import usable_cpus
from runner.jetstream.embedded import free_port, port_free
from tests.conftest import ROOT, SEED_ORDER
from tests.e2e.processes import children, eventually, gone
from tests.integration.secured_nats import SecuredServer

SECRET = "pw-Up-8dQz41"


class Up:
    """A `flowrun up` process with its own ports and data dir; output goes to a file the test can read."""

    def __init__(self, tmp_path: Path, data_dir: Path, nats_port: int | None = None, extra: tuple[str, ...] = ()):
        self.nats_port = nats_port or free_port()
        self.http_port = free_port()
        self.data_dir = data_dir
        self.log_path = tmp_path / f"up-{self.http_port}.log"
        args = [
            *(sys.executable, "-m", "runner.cli", "up", "--config", str(ROOT), "--data-dir", str(data_dir)),
            *("--nats-port", str(self.nats_port), "--http-port", str(self.http_port), "-v", *extra),
        ]
        self.argv = args
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    @property
    def output(self) -> str:
        return self.log_path.read_text()

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, {}

    def wait_healthy(self, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"flowrun up exited ({self.proc.returncode}):\n{self.output}"
            try:
                if self.request("GET", "/healthz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"flowrun up not healthy within {within}s:\n{self.output}")

    def server_pid(self) -> int:
        return int((self.data_dir / "nats-server.pid").read_text())

    def services(self) -> dict[int, str]:
        """pid → service of each `flowrun start` child."""
        return {
            pid: argv[argv.index("--service") + 1] for pid, argv in children(self.proc.pid).items() if "start" in argv
        }

    def pids_of(self, service: str) -> set[int]:
        return {pid for pid, name in self.services().items() if name == service}

    def completes_an_order(self) -> bool:
        status, body = self.request("POST", "/api/orders", SEED_ORDER)
        assert status == 202, self.output
        return eventually(lambda: self.request("GET", f"/api/orders/{body['orderId']}")[1].get("status") == "completed")

    def replace(self, pid: int, service: str) -> int:
        """SIGKILL one process of `service`; the pid of the process started in its place."""
        before = self.pids_of(service)
        os.kill(pid, signal.SIGKILL)
        assert eventually(lambda: len(self.pids_of(service) - before) == 1, within=20), self.output
        return (self.pids_of(service) - before).pop()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_sigkill_of_up_takes_its_server_along_and_a_second_up_on_the_store_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "nats"
    first = Up(tmp_path, data)
    try:
        first.wait_healthy()
        server = first.server_pid()

        second = Up(tmp_path, data)  # other ports, same store
        assert second.proc.wait(timeout=30) == 1
        assert f"lock {data / 'flowrun.lock'} held by pid {first.proc.pid}" in second.output
        assert "Traceback" not in second.output

        services = first.services()
        orders = max(1, min(4, usable_cpus() // 2))  # --workers auto: the service with HTTP, one per two cores
        assert sorted(services.values()) == ["inventory", *["order"] * orders, "payment"]
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait()
        assert eventually(lambda: gone(server)), "nats-server outlived its flowrun up"
        assert eventually(lambda: all(gone(pid) for pid in services), within=30), "service processes outlived up"
        assert eventually(lambda: port_free(first.nats_port))

        again = Up(tmp_path, data, first.nats_port)  # same port, same store: what the user tried
        try:
            again.wait_healthy()
        finally:
            again.close()
    finally:
        first.close()


def test_up_restarts_a_killed_server_and_still_stops_cleanly(tmp_path: Path) -> None:
    data = tmp_path / "nats"
    up = Up(tmp_path, data, extra=("--sync", "always"))
    try:
        up.wait_healthy()
        assert "sync_interval: always" in (data / "nats-server.conf").read_text()
        old = up.server_pid()
        os.kill(old, signal.SIGKILL)

        assert eventually(lambda: (data / "nats-server.pid").read_text() != str(old)), up.output
        up.wait_healthy()  # services reconnected to the restarted server
        status, body = up.request("POST", "/api/orders", SEED_ORDER)
        assert status == 202
        assert eventually(lambda: up.request("GET", f"/api/orders/{body['orderId']}")[1].get("status") == "completed")

        new = up.server_pid()
        up.proc.send_signal(signal.SIGTERM)
        assert up.proc.wait(timeout=15) == 0
        assert "nats-server restarted" in up.output and "Traceback" not in up.output
        assert gone(new) and port_free(up.nats_port)
        log = (data / "nats-server.log").read_text()
        assert f"[{old}]" in log and f"[{new}]" in log  # both lives of the server logged in the data dir
    finally:
        up.close()


def test_up_runs_each_service_in_its_own_processes_restarts_a_dead_one_and_stops_them_all(tmp_path: Path) -> None:
    up = Up(tmp_path, tmp_path / "nats", extra=("--workers", "1", "--workers", "order=2"))
    try:
        up.wait_healthy()
        assert eventually(lambda: len(up.services()) == 4), up.output
        services = up.services()
        assert sorted(services.values()) == ["inventory", "order", "order", "payment"]
        for pid in services:
            argv = children(up.proc.pid)[pid]
            assert argv[argv.index("--provision") + 1] == "off"  # provisioned once, by up
        order = up.pids_of("order")
        answered: set[int] = set()  # SO_REUSEPORT: the kernel spreads new connections over both processes
        for _ in range(200):
            answered.add(up.request("GET", "/healthz")[1]["pid"])
            if answered == order:
                break
        assert answered == order
        assert "http listening service=order" in up.output and "process=order#2" in up.output  # whose line is whose
        for line in (f"order        2 process(es), pid {min(order)}", f"http://127.0.0.1:{up.http_port}/api/orders"):
            assert line in up.output

        assert up.completes_an_order()
        new_payment = up.replace(up.pids_of("payment").pop(), "payment")  # the only one: orders wait for it
        assert up.completes_an_order()
        assert f"service process restarted process=payment#1 pid={new_payment}" in up.output

        running = [*up.services(), up.server_pid()]
        up.proc.send_signal(signal.SIGTERM)
        assert up.proc.wait(timeout=30) == 0, up.output
        assert all(gone(pid) for pid in running) and port_free(up.nats_port) and port_free(up.http_port)
        assert "shutting down 4 service process(es)" in up.output and "Traceback" not in up.output
    finally:
        up.close()


def test_a_service_process_that_keeps_dying_stops_up_with_exit_1_naming_it(tmp_path: Path) -> None:
    up = Up(tmp_path, tmp_path / "nats", extra=("--workers", "1"))
    try:
        up.wait_healthy()
        assert eventually(lambda: len(up.pids_of("payment")) == 1), up.output
        pid = up.pids_of("payment").pop()
        for _ in range(5):  # five restarts a minute are allowed …
            pid = up.replace(pid, "payment")
        others = [p for p in up.services() if p != pid] + [up.server_pid()]
        os.kill(pid, signal.SIGKILL)  # … the sixth death is one too many
        assert up.proc.wait(timeout=30) == 1, up.output
        assert "service payment (process payment#1) keeps exiting: killed by SIGKILL after 5 restarts" in up.output
        assert all(gone(p) for p in others), "up left processes behind"
        assert "Traceback" not in up.output
    finally:
        up.close()


def test_credentials_reach_the_service_processes_by_environment_never_by_command_line(tmp_path: Path) -> None:
    auth = f'authorization {{ users = [{{user: alice, password: "{SECRET}"}}] }}\n'
    with SecuredServer(auth, data_dir=tmp_path / "secured") as server:
        flags = ("--nats", server.url, "--user", "alice", "--password", SECRET, "--workers", "1")
        up = Up(tmp_path, tmp_path / "unused", extra=flags)
        try:
            up.wait_healthy()
            assert eventually(lambda: len(up.services()) == 3), up.output
            assert up.completes_an_order()  # every service authenticated: inventory, payment and the saga ran
            for pid, argv in children(up.proc.pid).items():
                assert not any(SECRET in arg for arg in argv), f"the password is on the command line of {pid}"
            assert SECRET not in up.output
        finally:
            up.close()
