"""`flowrun validate` and `flowrun schema`, as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from runner.cli import main


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def replace_once(file: Path, old: str, new: str) -> None:
    text = file.read_text()
    assert text.count(old) == 1, f"{old!r} should occur once in {file}"
    file.write_text(text.replace(old, new))


def line_of(file: Path, needle: str) -> int:
    hits = [i for i, line in enumerate(file.read_text().splitlines(), 1) if needle in line]
    assert len(hits) == 1, f"{needle!r} on lines {hits} of {file}"
    return hits[0]


def problem_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if not line.endswith("problem(s) found")]


def test_valid_config_exits_0_and_says_ok(config_copy: Path) -> None:
    result = run("validate", "--config", str(config_copy))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok")
    assert "5 streams, 3 services, 3 consumers, 1 sagas" in result.stdout
    assert result.stderr == ""


def test_yaml_syntax_error(config_copy: Path) -> None:
    payment = (config_copy / "flows" / "payment.yaml").resolve()
    replace_once(payment, "        batch: 128\n", "        batch: 128: oops\n")
    result = run("validate", "--config", str(config_copy))
    assert result.exit_code == 1
    [line] = problem_lines(result)
    assert line.startswith(f"{payment}:{line_of(payment, 'batch: 128: oops')}:")
    assert "YAML syntax error" in line
    assert "1 problem(s) found" in result.stderr
    assert "ok" not in result.stdout


def test_schema_error(config_copy: Path) -> None:
    streams = (config_copy / "streams.yaml").resolve()
    replace_once(streams, "    storage: file\n", "    storage: disk\n")
    result = run("validate", "--config", str(config_copy))
    assert result.exit_code == 1
    [line] = problem_lines(result)
    assert line.startswith(f"{streams}:{line_of(streams, 'storage: disk')}:")
    assert line.endswith("(at streams.ORDERS.storage)")
    assert "'disk'" in line


def test_dangling_handler_path(config_copy: Path) -> None:
    inventory = (config_copy / "flows" / "inventory.yaml").resolve()
    replace_once(inventory, "handler: handlers.inventory.release", "handler: handlers.inventory.release_all")
    result = run("validate", "--config", str(config_copy))
    assert result.exit_code == 1
    [line] = problem_lines(result)
    assert line.startswith(f"{inventory}:{line_of(inventory, 'release_all')}:")
    assert "release_all" in line
    assert line.endswith("(at services.inventory.handlers[1].handler)")


def test_every_problem_is_printed_at_once(config_copy: Path) -> None:
    streams = (config_copy / "streams.yaml").resolve()
    inventory = (config_copy / "flows" / "inventory.yaml").resolve()
    payment = (config_copy / "flows" / "payment.yaml").resolve()
    replace_once(streams, "    storage: file\n", "    storage: disk\n")
    replace_once(inventory, "        batch: 128\n", "        batch: many\n")
    replace_once(payment, "ack_wait: 30s", "ack_wait: soon")

    result = run("validate", "--config", str(config_copy))

    assert result.exit_code == 1
    lines = problem_lines(result)
    assert len(lines) == 3, result.stderr
    starts = {
        f"{streams}:{line_of(streams, 'storage: disk')}:",
        f"{inventory}:{line_of(inventory, 'batch: many')}:",
        f"{payment}:{line_of(payment, 'ack_wait: soon')}:",
    }
    assert {next(s for s in starts if line.startswith(s)) for line in lines} == starts
    assert result.stderr.rstrip().endswith("3 problem(s) found")


def test_missing_flows_directory(tmp_path: Path, config_copy: Path) -> None:
    project = tmp_path / "bare"
    project.mkdir()
    (project / "streams.yaml").write_text((config_copy / "streams.yaml").read_text())
    result = run("validate", "--config", str(project))
    assert result.exit_code == 1
    assert "flows/ directory is missing" in result.stderr


def test_schema_prints_both_json_schemas() -> None:
    result = run("schema")
    assert result.exit_code == 0
    schemas = json.loads(result.stdout)
    assert set(schemas) == {"streams", "flows"}
    for schema in schemas.values():
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["type"] == "object"
    assert "streams" in schemas["streams"]["properties"]
    assert {"services", "sagas", "kv"} <= set(schemas["flows"]["properties"])


def test_schema_of_one_file_kind() -> None:
    result = run("schema", "streams")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "flowrun streams.yaml"
