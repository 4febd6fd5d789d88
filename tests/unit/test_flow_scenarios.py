"""The flow-test format without a server: matchers, the test clock's arithmetic, problems at their line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from runner.config.loader import load_or_raise
from runner.testing.clock import brought_forward
from runner.testing.matchers import matches
from runner.testing.scenario import Advance, Check, Request, ScenarioFileError, load_file

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def config():
    return load_or_raise(ROOT)


def test_json_contains_is_a_subset_match_and_json_equals_is_exact() -> None:
    stock = {"available": 49, "reserved": 1, "applied": {"o1": {"r": True}}}
    assert matches(stock, {"json_contains": {"available": 49}})
    assert matches(stock, {"json_contains": {"applied": {"o1": {}}}})
    assert not matches(stock, {"json_contains": {"available": 50}})
    assert not matches(stock, {"json_equals": {"available": 49, "reserved": 1}})
    assert matches([1, {"a": 2, "b": 3}], {"json_contains": [1, {"a": 2}]})
    assert not matches([1, 2], {"json_contains": [1]})  # lists match element by element, same length
    assert not matches({"paid": 1}, {"json_equals": {"paid": True}})  # JSON true is not 1
    assert matches({"error": "insufficient stock for X"}, {"contains": "insufficient stock"})


def test_advancing_the_clock_brings_the_deadline_and_the_alarm_closer() -> None:
    waiting = {"state": "pending", "deadline": {"state": "pending", "entered": 1, "due": 1000.0}, "alarm": 990.0}
    later = brought_forward(waiting, 61)
    assert later["deadline"] == {"state": "pending", "entered": 1, "due": 939.0}
    assert later["alarm"] == 929.0
    assert waiting["deadline"]["due"] == 1000.0  # the stored value is not modified in place (a CAS may re-run)
    finished = {"state": "completed", "deadline": None, "alarm": None}
    assert brought_forward(finished, 61) is finished  # unchanged: nothing to write


def test_a_scenario_file_reads_into_steps(tmp_path: Path, config) -> None:
    file = tmp_path / "s.yaml"
    file.write_text(
        "scenarios:\n"
        "  - name: n\n"
        "    steps:\n"
        "      - request: {path: /api/orders, body: {customerId: C}}\n"
        "        expect: {status: 202}\n"
        "      - advance: 1m\n"
        "      - check: {sagas: {order: {state: pending}}}\n"
    )
    [scenario] = load_file(file, config)
    request, advance, check = scenario.steps
    assert isinstance(request, Request) and request.method == "POST" and request.expect_status == 202
    assert advance == Advance(60.0)
    assert isinstance(check, Check) and check.expect.sagas[0].state == "pending"


@pytest.mark.parametrize(
    ("steps", "stubs", "line", "message"),
    [
        ("      - {advance: 1s, publish: {subject: a, payload: {}}}\n", "", 4, "exactly one of request:, publish:"),
        ("      - advance: 1s\n", "    stubs: {handlers.nope.run: {silent: true}}\n", 3, "no handler 'handlers.nope"),
        ("      - check: {kv: {NOPE: {k: {json_equals: 1}}}}\n", "", 4, "no KV bucket 'NOPE'"),
        ("      - check: {kv: {INVENTORY: {k: {json_equals: 1, contains: x}}}}\n", "", 4, "a matcher is exactly one"),
    ],
)
def test_problems_are_reported_at_their_line(
    tmp_path: Path, config, steps: str, stubs: str, line: int, message: str
) -> None:
    file = tmp_path / "s.yaml"
    file.write_text(f"scenarios:\n  - name: n\n{stubs}    steps:\n{steps}")
    with pytest.raises(ScenarioFileError) as caught:
        load_file(file, config)
    [problem] = caught.value.problems
    assert message in problem.message
    assert problem.line == line


def test_nothing_in_the_engine_imports_the_test_runner() -> None:
    for layer in ("config", "jetstream", "engine", "serve"):
        for path in (ROOT / "runner" / layer).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text("utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.module:
                    assert not node.module.startswith(("runner.testing", "runner.scaffold")), path
