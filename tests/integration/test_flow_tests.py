"""`flowrun test` and `flowrun init` as a user meets them: the shipped order-saga scenarios pass, a broken
expectation fails with a diff and exit 1, and a fresh `flowrun init` project validates and passes its test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from runner.testing import run_file, run_files

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "tests" / "flows").glob("*.yaml"))


def flowrun(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """The CLI in its own process, as a user runs it (its own event loop, its own `handlers` package)."""
    command = [sys.executable, "-m", "runner.cli", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_the_shipped_order_saga_scenarios_pass() -> None:
    results = run_files(SHIPPED, ROOT)
    failures = "\n".join(line for r in results if not r.passed for line in r.render())
    assert failures == ""
    names = {r.name for r in results}
    assert len(names) >= 6
    assert any("compensation_failed" in name for name in names)


def test_stubs_answer_with_an_outcome_or_fail_into_the_dead_letters(tmp_path: Path) -> None:
    order = "{path: /api/orders, body: {customerId: C1, items: [{productId: MOUSE-001, quantity: 1, price: 29.99}]}}"
    scenarios = tmp_path / "stubs.yaml"
    scenarios.write_text(
        "scenarios:\n"
        "  - name: declined by the gateway\n"
        "    stubs: {handlers.payment.charge: {outcome: failed, payload: {reason: card declined}}}\n"
        f"    steps: [{{request: {order}}}]\n"
        "    expect:\n"
        "      sagas: {order: {state: cancelled, reason: card declined}}\n"
        "      kv: {INVENTORY: {MOUSE-001: {json_contains: {available: 200, reserved: 0}}}}\n"
        "  - name: a refund that raises\n"
        "    stubs: {handlers.payment.charge: {silent: true}, handlers.payment.refund: {fail: gateway down}}\n"
        f"    steps: [{{request: {order}}}, {{advance: 31s}}]\n"
        "    expect:\n"
        "      sagas: {order: {state: compensating}}\n"
        "      dead_letters: [{subject: orders.payment.refund, service: payment, error_contains: gateway down}]\n"
    )

    results = run_file(scenarios, ROOT)

    assert [(r.name, r.passed, r.render()[1:]) for r in results] == [
        ("declined by the gateway", True, []),
        ("a refund that raises", True, []),
    ]


def test_a_broken_expectation_fails_with_a_diff_and_exit_1(tmp_path: Path) -> None:
    declined = (ROOT / "tests" / "flows" / "order_payment_declined.yaml").read_text()
    assert declined.count("order: {state: cancelled,") == 1
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        declined.replace("order: {state: cancelled,", "order: {state: completed,").replace(
            "- orders.payment.failed", "- orders.payment.completed"
        )
    )

    done = flowrun("test", "--config", str(ROOT), str(broken))

    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    assert f"FAIL {broken}: a total over the payment limit is declined" in out
    assert 'state: expected "completed", got "cancelled"' in out
    assert '-  "orders.payment.completed",' in out and '+  "orders.payment.failed",' in out  # the diff
    assert out.rstrip().endswith("0 passed, 1 failed")


def test_scenario_files_with_problems_name_them_at_their_line_and_exit_1(tmp_path: Path) -> None:
    shape = tmp_path / "shape.yaml"
    shape.write_text("scenarios:\n  - name: when\n    steps:\n      - advance: soon\n")
    names = tmp_path / "names.yaml"
    names.write_text(
        "scenarios:\n"
        "  - name: typo\n"
        "    stubs:\n"
        "      handlers.payment.charge: {outcome: declined}\n"
        "    steps:\n"
        "      - advance: 1s\n"
    )

    done = flowrun("test", "--config", str(ROOT), str(shape), str(names))

    assert done.returncode == 1
    assert f"{shape}:4:9: 'soon' is not a duration" in done.stdout
    assert f"{names}:4:33: handlers.payment.charge has no outcome 'declined' (its emits: completed" in done.stdout
    assert done.stdout.rstrip().endswith("0 passed, 2 failed")


def test_init_scaffolds_a_project_that_validates_and_passes_its_flow_test(tmp_path: Path) -> None:
    project = tmp_path / "hello"

    created = flowrun("init", str(project))
    assert created.returncode == 0, created.stderr
    assert (project / "tests" / "flows" / "greeting.yaml").is_file()
    validated = flowrun("validate", "--config", str(project))
    assert validated.returncode == 0, validated.stderr
    tested = flowrun("test", "--config", str(project), cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert tested.stdout.rstrip().endswith("2 passed, 0 failed")

    again = flowrun("init", str(project))
    assert again.returncode == 1
    assert "not overwriting existing files" in again.stderr
