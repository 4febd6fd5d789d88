"""What `--watch` reacts to and what it re-imports: the config and its handler code, never the engine or libraries."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from watchfiles import Change

from runner.config.loader import load_or_raise
from runner.config.model import Config
from runner.serve.watch import config_files, handler_modules, watched_dirs
from tests.conftest import ROOT


def test_only_the_config_files_and_python_sources_trigger_a_reload(tmp_path: Path) -> None:
    matters = config_files(tmp_path)
    for path in ("streams.yaml", "flows/payment.yaml", "flows/extra.yml", "handlers/payment.py"):
        assert matters(Change.modified, str(tmp_path / path)), path
    for path in (
        "flows/.payment.yaml.swp",
        "flows/notes.txt",
        "handlers/__pycache__/payment.cpython-311.pyc",
        "data/nats/jetstream/ORDERS/msgs/1.blk",
        "other.yaml",
    ):
        assert not matters(Change.modified, str(tmp_path / path)), path


@pytest.fixture
def repo_config(monkeypatch: pytest.MonkeyPatch) -> Iterator[Config]:
    """The repository's config with its own handlers imported (other tests may have imported a copy's)."""
    for name in [n for n in sys.modules if n.partition(".")[0] == "handlers"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(ROOT))
    yield load_or_raise(ROOT)


def test_reloaded_modules_are_the_handler_packages_only(repo_config: Config) -> None:
    modules = handler_modules(repo_config)  # the repository root holds the engine's package and tests too
    assert {"handlers", "handlers.payment", "handlers.money"} <= set(modules)
    assert not [name for name in modules if name.partition(".")[0] in ("runner", "tests", "nats", "aiohttp")]


def test_the_watch_is_not_recursive_over_the_config_root(repo_config: Config) -> None:
    dirs = watched_dirs(repo_config)
    assert {ROOT, ROOT / "flows", ROOT / "handlers"} <= set(dirs)
    assert not [d for d in dirs if ".venv" in d.parts or "data" in d.parts or d.name == "runner"]
