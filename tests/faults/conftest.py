"""Fault tests run real service processes on a private config copy with short windows."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def edit(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text()
    assert text.count(old) >= count, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


@pytest.fixture
def fast_config(config_copy: Path) -> Path:
    """The shipped config with a 2 s ack wait, so a killed process's messages come back quickly."""
    for name in ("order", "inventory", "payment"):
        edit(config_copy / "flows" / f"{name}.yaml", "ack_wait: 30s", "ack_wait: 2s")
    return config_copy


@pytest.fixture
def chaos_config(fast_config: Path) -> Path:
    """fast_config plus the `chaos` handler package (tests/faults/chaos.py) to bind misbehaving handlers."""
    package = fast_config / "chaos"
    package.mkdir()
    (package / "__init__.py").write_text("")
    shutil.copy(HERE / "chaos.py", package / "handlers.py")
    return fast_config


def chaos_calls(config: Path, name: str) -> list[tuple[float, str]]:
    log = config / "chaos" / "calls.log"
    if not log.exists():
        return []
    rows = [line.split() for line in log.read_text().splitlines()]
    return [(float(at), order_id) for at, handler, order_id in rows if handler == name]
