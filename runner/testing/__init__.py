"""`flowrun test`: flow scenarios in YAML, run against a real embedded nats-server with every service in-process.

The format is in scenario.py, how one scenario runs in session.py, the test clock in clock.py. Nothing in the
engine imports this package; `run_file` / `run_files` are for pytest too.
"""

from __future__ import annotations

from runner.testing.results import Mismatch, ScenarioResult
from runner.testing.session import run_file, run_files

__all__ = ["Mismatch", "ScenarioResult", "run_file", "run_files"]
