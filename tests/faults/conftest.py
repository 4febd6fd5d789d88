"""Fault tests run real service processes on a private config copy with short windows."""

from __future__ import annotations

from pathlib import Path

import pytest


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
