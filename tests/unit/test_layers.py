"""Imports only run down the layers: cli → serve → engine → jetstream → config. An import running up (config
reaching for jetstream's connection, say) would tie the YAML model to the broker client."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

RUNNER = Path(__file__).resolve().parents[2] / "runner"
LAYERS = ("config", "jetstream", "engine", "serve", "cli")  # lowest first


def imported_layers(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # from runner import engine
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {parts[1] for parts in (n.split(".") for n in names) if parts[0] == "runner" and len(parts) > 1} & set(
        LAYERS
    )


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_only_the_layers_below_it(layer: str) -> None:
    above = set(LAYERS[LAYERS.index(layer) + 1 :])
    offenders = {
        str(path.relative_to(RUNNER.parent)): sorted(imported_layers(path) & above)
        for path in sorted((RUNNER / layer).rglob("*.py"))
    }
    assert {path: up for path, up in offenders.items() if up} == {}
