"""`flowrun up` as a user runs it: embedded nats-server, all services, HTTP; SIGTERM stops it cleanly."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from runner.jetstream.embedded import free_port
from tests.conftest import ROOT, SEED_ORDER


def up(tmp_path: Path, nats_port: int, http_port: int) -> subprocess.Popen[str]:
    args = [
        sys.executable,
        "-m",
        "runner.cli",
        "up",
        "--config",
        str(ROOT),
        "--data-dir",
        str(tmp_path / "nats"),
        "--nats-port",
        str(nats_port),
        "--http-port",
        str(http_port),
    ]
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def http(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, json.loads(response.read())


def test_up_serves_the_seed_order_and_stops_on_sigterm(tmp_path: Path) -> None:
    nats_port, http_port = free_port(), free_port()
    proc = up(tmp_path, nats_port, http_port)
    base = f"http://127.0.0.1:{http_port}"
    try:
        for _ in range(200):
            try:
                if http("GET", f"{base}/healthz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        status, body = http("POST", f"{base}/api/orders", SEED_ORDER)
        assert status == 202
        for _ in range(100):
            order = http("GET", f"{base}/api/orders/{body['orderId']}")[1]
            if order["status"] == "completed":
                break
            time.sleep(0.05)
        assert order["status"] == "completed" and order["total"] == "1059.97"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0  # clean exit within the ack wait
        output = proc.stdout.read() if proc.stdout else ""
        assert "Traceback" not in output
        with socket.socket() as s:  # the embedded nats-server went with it
            assert s.connect_ex(("127.0.0.1", nats_port)) != 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_up_refuses_a_busy_nats_port(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        proc = up(tmp_path, busy.getsockname()[1], free_port())
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "is in use" in output and "Traceback" not in output
