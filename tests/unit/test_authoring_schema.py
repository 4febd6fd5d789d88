"""The schemas editors get (`flowrun schema`): every shipped YAML file passes them, checked by an independent
validator (check-jsonschema), while wrong values still fail them and the loader stays strict after substitution."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from jsonschema import Draft202012Validator

from runner.cli import main
from runner.config.loader import load
from runner.config.schemas import schema
from runner.config.schemas.editor import editor_schema

ROOT = Path(__file__).resolve().parents[2]


def config_roots() -> list[Path]:
    """Every config root shipped: the project, the examples, and test fixtures laid out as a project."""
    candidates = [ROOT, *ROOT.glob("examples/*"), *(p.parent for p in (ROOT / "tests").rglob("streams.yaml"))]
    return sorted({root for root in candidates if (root / "streams.yaml").is_file()})


def shipped_files() -> dict[str, list[Path]]:
    roots = config_roots()
    flows = [f for root in roots for f in sorted((root / "flows").glob("*.yaml"))]
    flows += sorted((ROOT / "examples" / "shipping" / "flows").glob("*.yaml"))
    return {"streams": [root / "streams.yaml" for root in roots], "flows": flows}


@pytest.fixture(scope="module")
def schema_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("schemas")
    result = CliRunner().invoke(main, ["schema", "--write", str(target)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return target


def check_jsonschema(schema_file: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "check_jsonschema", "--schemafile", str(schema_file), *map(str, files)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_schema_write_creates_both_files(schema_dir: Path) -> None:
    assert sorted(p.name for p in schema_dir.iterdir()) == ["flows.schema.json", "streams.schema.json"]
    for name in ("streams", "flows"):
        written = json.loads((schema_dir / f"{name}.schema.json").read_text())
        assert written["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert "interpolation" in written["$defs"]


def test_the_shipped_files_are_the_ones_meant() -> None:
    files = shipped_files()
    assert ROOT / "streams.yaml" in files["streams"]
    assert ROOT / "examples" / "travel" / "streams.yaml" in files["streams"]
    assert ROOT / "flows" / "saga.yaml" in files["flows"]
    assert ROOT / "examples" / "shipping" / "flows" / "shipping.yaml" in files["flows"]


@pytest.mark.parametrize("kind", ["streams", "flows"])
def test_every_shipped_file_passes_the_editor_schema(schema_dir: Path, kind: str) -> None:
    result = check_jsonschema(schema_dir / f"{kind}.schema.json", *shipped_files()[kind])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_strict_schema_refuses_what_the_editor_schema_allows(tmp_path: Path) -> None:
    """Without the derived alternative, the shipped streams.yaml fails on `replicas: ${FLOWRUN_REPLICAS:-1}`."""
    strict = tmp_path / "strict.json"
    strict.write_text(json.dumps(schema("streams")))
    result = check_jsonschema(strict, ROOT / "streams.yaml")
    assert result.returncode == 1
    assert "FLOWRUN_REPLICAS" in result.stdout


def editor_errors(kind: str, text: str) -> list[str]:
    """The editor schema's errors for a YAML text, as an editor would show them (before substitution)."""
    return [e.message for e in Draft202012Validator(editor_schema(kind)).iter_errors(yaml.safe_load(text))]


@pytest.mark.parametrize(
    ("replicas", "valid"),
    [("${R}", True), ("${R:-3}", True), ("r${R}", True), ("3", True), ("many", False), ("$R", False), ("9", False)],
)
def test_editor_schema_still_checks_scalars(replicas: str, valid: bool) -> None:
    errors = editor_errors("streams", f"defaults:\n  replicas: {replicas}\nstreams:\n  A: {{subjects: [a.>]}}\n")
    assert (errors == []) is valid, errors


def test_editor_schema_still_refuses_unknown_keys_and_interpolated_names() -> None:
    errors = editor_errors("streams", "streams:\n  A:\n    subjects: [a.>]\n    replicas: ${R:-1}\n    max_msg: 5\n")
    assert len(errors) == 1 and "'max_msg' was unexpected" in errors[0], errors
    assert editor_errors("streams", "streams:\n  ${NAME}: {subjects: [a.>]}\n")  # keys are never interpolated


def test_editor_schema_accepts_interpolation_in_durations_and_enums() -> None:
    flows = "services:\n  s:\n    retry: {initial_delay: '${D:-1s}', backoff: '${B:-fixed}', max_attempts: '${N}'}\n"
    assert editor_errors("flows", flows) == []
    assert editor_errors("flows", "services:\n  s:\n    retry: {initial_delay: soon, backoff: sometimes}\n")


def test_loader_checks_the_substituted_value(config_copy: Path) -> None:
    """The editor accepts `${FLOWRUN_REPLICAS:-1}`; the loader checks what it becomes."""
    config, problems = load(config_copy, {"FLOWRUN_REPLICAS": "many"})
    assert config is None
    assert any("'many' is not of type 'integer'" in p.message and p.path == "defaults.replicas" for p in problems)
    config, problems = load(config_copy, {"FLOWRUN_REPLICAS": "3"})
    assert problems == [] and config is not None
