"""`python -m bench --quick` end to end: both systems run, every order finishes, nothing twice.

Correctness only: speed depends on the machine, so no threshold is asserted here.
"""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_bench_quick_runs_and_balances_the_books(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    check = next(line for line in proc.stdout.splitlines() if line.startswith("CHECK"))
    assert "all orders terminal: yes" in check, check
    assert "duplicate effects: 0;" in check, check
    assert (tmp_path / "latest.md").exists()
