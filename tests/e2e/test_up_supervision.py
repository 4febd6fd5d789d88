"""`flowrun up` and its embedded nats-server live and die together; the store is never shared by two servers."""

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

from runner.jetstream.embedded import free_port, port_free
from tests.conftest import ROOT, SEED_ORDER
from tests.e2e.processes import eventually, gone


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

        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait()
        assert eventually(lambda: gone(server)), "nats-server outlived its flowrun up"
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
