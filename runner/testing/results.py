"""What a scenario run found, and how it reads: one line per expectation met or not, a diff for each miss."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MISSING = object()  # "got" for something that does not exist (a KV key never written, no saga instance)


@dataclass(frozen=True)
class Mismatch:
    """One expectation the run did not meet."""

    what: str  # e.g. "kv INVENTORY/LAPTOP-001 (json_contains)"
    expected: Any
    got: Any

    def at(self, where: str) -> Mismatch:
        return Mismatch(f"{where}: {self.what}", self.expected, self.got)

    def render(self) -> list[str]:
        got = "(missing)" if self.got is MISSING else _pretty(self.got)
        expected = _pretty(self.expected)
        if "\n" not in expected + got:
            return [f"{self.what}: expected {expected}, got {got}"]
        diff = difflib.unified_diff(expected.splitlines(), got.splitlines(), "expected", "got", lineterm="", n=2)
        return [f"{self.what}:", *(f"  {line}" for line in diff)]


@dataclass
class ScenarioResult:
    file: Path
    name: str
    mismatches: list[Mismatch] = field(default_factory=list)
    error: str | None = None  # the scenario could not run to the end (a bad file, a step that failed)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.mismatches and self.error is None

    def render(self) -> list[str]:
        head = f"{'PASS' if self.passed else 'FAIL'} {self.file}: {self.name} ({self.seconds:.2f}s)"
        lines = [head]
        if self.error:
            first, *rest = self.error.splitlines() or [""]
            lines += [f"    error: {first}", *(f"      {line}" for line in rest)]
        for mismatch in self.mismatches:
            lines += [f"    {line}" for line in mismatch.render()]
        return lines


def summary(results: list[ScenarioResult]) -> str:
    failed = sum(not r.passed for r in results)
    return f"{len(results) - failed} passed, {failed} failed"


def _pretty(value: Any) -> str:
    if isinstance(value, dict | list) and value:
        return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)
    return json.dumps(value, ensure_ascii=False, default=str)
