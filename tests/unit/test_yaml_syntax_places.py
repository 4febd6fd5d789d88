"""A YAML syntax error names both places: where the parser noticed, and where what it was reading began."""

from __future__ import annotations

from pathlib import Path

from runner.config.yamlsrc import load_yaml


def problem_of(tmp_path: Path, text: str) -> str:
    file = tmp_path / "flows.yaml"
    file.write_text(text)
    doc, problems = load_yaml(file, {})
    assert doc is None and len(problems) == 1, problems
    return str(problems[0])


def test_unclosed_flow_sequence_names_the_line_it_opened_on(tmp_path: Path) -> None:
    text = "services:\n  a:\n    kv: [A, B,\n    retry:\n      max_attempts: 3\n  b: {}\n"
    problem = problem_of(tmp_path, text)
    assert problem.startswith(f"{tmp_path / 'flows.yaml'}:5:19: YAML syntax error: ")
    assert problem.endswith("(the flow sequence opened at line 3:9)")


def test_unclosed_quote_names_the_line_it_opened_on(tmp_path: Path) -> None:
    problem = problem_of(tmp_path, 'a: "abc\n\nb: 1\n')
    assert ":4:1: YAML syntax error: found unexpected end of stream (the quoted scalar opened at line 1:4)" in problem


def test_an_error_at_one_place_names_one(tmp_path: Path) -> None:
    problem = problem_of(tmp_path, "a: b: c\n")
    assert problem.endswith(":1:5: YAML syntax error: mapping values are not allowed here")
