"""`--json` on the read commands that had only text (validate, provision's plan), and progress bars that appear
on a terminal only: a script piping stderr sees no bar redraws."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner, Result

from runner.cli import main
from runner.jetstream.embedded import EmbeddedServer
from tests.conftest import ROOT


def flowrun(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_validate_json_lists_every_problem(config_copy: Path) -> None:
    ok = flowrun("validate", "--config", str(config_copy), "--json")
    assert ok.exit_code == 0 and json.loads(ok.stdout) == []
    saga = config_copy / "flows" / "saga.yaml"
    text = saga.read_text()
    assert "goto: completed," in text
    saga.write_text(text.replace("goto: completed,", "goto: complete,", 1))
    bad = flowrun("validate", "--config", str(config_copy), "--json")
    assert bad.exit_code == 1
    problems = json.loads(bad.stdout)
    assert len(problems) == 1
    problem = problems[0]
    assert problem["file"].endswith("flows/saga.yaml") and problem["line"] > 1 and problem["col"] > 1
    assert "'complete' is not declared; did you mean 'completed'?" in problem["message"]
    assert problem["path"].startswith("sagas.order.states.awaiting_payment")


def test_provision_dry_run_json_is_the_plan(nats_server: EmbeddedServer) -> None:
    args = ("provision", "--config", str(ROOT), "--nats", nats_server.url, "--json")
    planned = flowrun(*args, "--dry-run")
    assert planned.exit_code == 0, planned.output
    plan = json.loads(planned.stdout)
    assert plan["applied"] is False
    assert any(c["what"] == "stream ORDERS" and c["kind"] == "create" for c in plan["changes"])
    assert any(c["what"] == "consumer ORDERS/order-service" and c["kind"] == "create" for c in plan["changes"])
    applied = json.loads(flowrun(*args).stdout)
    assert applied["applied"] is True
    again = json.loads(flowrun(*args, "--dry-run").stdout)
    assert {c["kind"] for c in again["changes"]} == {"ok"}, again


def run_with_stderr_on_a_terminal(*args: str) -> tuple[int, str, str]:
    """Run flowrun with stderr on a pseudo-terminal (stdout piped), as in an interactive shell."""
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "runner.cli", *args], stdout=subprocess.PIPE, stderr=terminal, timeout=60
        )
        os.close(terminal)
        terminal = -1
        seen = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if terminal != -1:
            os.close(terminal)
        os.close(controller)
    return proc.returncode, proc.stdout.decode(), seen.decode(errors="replace")


def test_provision_draws_a_progress_bar_on_a_terminal_only(nats_server: EmbeddedServer) -> None:
    args = ("provision", "--config", str(ROOT), "--nats", nats_server.url)
    code, out, terminal = run_with_stderr_on_a_terminal(*args, "--dry-run")
    assert code == 0
    assert "provisioning" in terminal and "100%" in terminal
    assert "provisioning" not in out and "change(s) to apply" in out
    piped = subprocess.run([sys.executable, "-m", "runner.cli", *args], capture_output=True, text=True, timeout=60)
    assert piped.returncode == 0, piped.stderr
    assert "provisioning" not in piped.stderr and "%" not in piped.stderr
    assert "applied" in piped.stdout


def test_permissions_json_is_the_json_format() -> None:
    users = json.loads(flowrun("permissions", "--config", str(ROOT), "--json").stdout)["users"]
    assert {u["user"] for u in users} >= {"order", "inventory", "payment"}
    assert (
        flowrun("permissions", "--config", str(ROOT), "--json").stdout
        == flowrun("permissions", "--config", str(ROOT), "--format", "json").stdout
    )
