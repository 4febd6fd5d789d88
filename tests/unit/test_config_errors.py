"""Configuration problems: each one with its file, line and key path, and every one in a single run.

Tests edit a private copy of the shipped configuration with small text replacements and compute
expected line numbers from the edited text, so reformatting the YAML does not break them.
"""

from __future__ import annotations

from pathlib import Path

from runner.config.loader import load
from runner.config.yamlsrc import Problem


class Project:
    """The copied configuration, with helpers to edit it and to find lines in it."""

    def __init__(self, root: Path):
        self.root = root.resolve()

    def file(self, name: str) -> Path:
        return self.root / name

    def replace(self, name: str, old: str, new: str) -> None:
        path = self.file(name)
        text = path.read_text()
        assert text.count(old) == 1, f"{old!r} should occur once in {name}"
        path.write_text(text.replace(old, new))

    def append(self, name: str, text: str) -> None:
        path = self.file(name)
        path.write_text(path.read_text() + text)

    def line(self, name: str, needle: str, exact: bool = False) -> int:
        """1-based number of the one line of `name` containing (or, if `exact`, being) `needle`."""
        lines = self.file(name).read_text().splitlines()
        hits = [i for i, line in enumerate(lines, 1) if (line == needle if exact else needle in line)]
        assert len(hits) == 1, f"{needle!r} is on lines {hits} of {name}"
        return hits[0]

    def problems(self) -> list[Problem]:
        config, problems = load(self.root, {})
        assert config is None, "a configuration with problems must not load"
        return problems


def only(problems: list[Problem], text: str) -> Problem:
    hits = [p for p in problems if text in p.message]
    assert len(hits) == 1, f"{text!r} in {[str(p) for p in problems]}"
    return hits[0]


def assert_at(problem: Problem, project: Project, name: str, line: int, path: str) -> None:
    assert (problem.file, problem.line, problem.path) == (str(project.file(name)), line, path), str(problem)
    assert str(problem).startswith(f"{project.file(name)}:{line}:{problem.col}: ")
    assert str(problem).endswith(f" (at {path})")


def make(config_copy: Path) -> Project:
    project = Project(config_copy)
    config, problems = load(project.root, {})
    assert problems == [] and config is not None, "the copy must start valid"
    return project


# --- one problem at a time ---


def test_yaml_syntax_error_points_at_its_line(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace("flows/payment.yaml", "        batch: 128\n", "        batch: 128: oops\n")
    problems = p.problems()
    assert len(problems) == 1
    problem = problems[0]
    assert problem.file == str(p.file("flows/payment.yaml"))
    assert problem.line == p.line("flows/payment.yaml", "batch: 128: oops")
    assert problem.message.startswith("YAML syntax error")
    assert "mapping values are not allowed here" in problem.message


def test_yaml_syntax_error_in_streams_yaml(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace("streams.yaml", 'subjects: ["tasks.>", "jobs.>"]', 'subjects: ["tasks.>", "jobs.>"')
    problems = p.problems()
    assert len(problems) == 1
    assert problems[0].file == str(p.file("streams.yaml"))
    assert problems[0].message.startswith("YAML syntax error")
    # the unclosed flow sequence is detected at the next key, after the broken line
    assert problems[0].line > p.line("streams.yaml", 'subjects: ["tasks.>", "jobs.>"')


def test_unknown_key_points_at_the_key(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace("flows/inventory.yaml", "        batch: 128\n", "        batch: 128\n        prefetch: 5\n")
    problem = only(p.problems(), "unknown key 'prefetch'")
    assert_at(
        problem,
        p,
        "flows/inventory.yaml",
        p.line("flows/inventory.yaml", "prefetch: 5"),
        "services.inventory.consumers.inventory-service.prefetch",
    )
    assert problem.col == 9


def test_unknown_stream_option(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace("streams.yaml", "    max_msgs: 1000000\n", "    max_msgs: 1000000\n    max_mesages: 5\n")
    problem = only(p.problems(), "unknown key 'max_mesages'")
    assert_at(problem, p, "streams.yaml", p.line("streams.yaml", "max_mesages"), "streams.ORDERS.max_mesages")


def test_wrong_type(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace("flows/inventory.yaml", "        batch: 128\n", "        batch: many\n")
    problem = only(p.problems(), "'many' is not of type 'integer'")
    assert_at(
        problem,
        p,
        "flows/inventory.yaml",
        p.line("flows/inventory.yaml", "batch: many"),
        "services.inventory.consumers.inventory-service.batch",
    )


def test_bad_duration(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace("flows/payment.yaml", "ack_wait: 30s", "ack_wait: 30 seconds")
    problem = only(p.problems(), "'30 seconds'")
    assert_at(
        problem,
        p,
        "flows/payment.yaml",
        p.line("flows/payment.yaml", "ack_wait: 30 seconds"),
        "services.payment.consumers.payment-service.ack_wait",
    )


def test_bad_size(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace("streams.yaml", "max_bytes: 1GiB", "max_bytes: 1 gigabyte")
    problem = only(p.problems(), "'1 gigabyte'")
    assert_at(problem, p, "streams.yaml", p.line("streams.yaml", "1 gigabyte"), "streams.ORDERS.max_bytes")


def test_value_outside_an_enum(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace("streams.yaml", "    storage: file\n", "    storage: disk\n")
    problem = only(p.problems(), "'disk'")
    assert_at(problem, p, "streams.yaml", p.line("streams.yaml", "storage: disk"), "streams.ORDERS.storage")


def test_duplicate_key_points_at_the_second_occurrence(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace("flows/inventory.yaml", "        batch: 128\n", "        batch: 128\n        batch: 64\n")
    problem = only(p.problems(), "duplicate key 'batch'")
    assert_at(
        problem,
        p,
        "flows/inventory.yaml",
        p.line("flows/inventory.yaml", "batch: 64"),
        "services.inventory.consumers.inventory-service.batch",
    )


def test_handler_module_missing(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace("flows/inventory.yaml", "handler: handlers.inventory.reserve", "handler: handlers.nowhere.reserve")
    problem = only(p.problems(), "handlers.nowhere")
    assert "cannot import module" in problem.message
    assert_at(
        problem,
        p,
        "flows/inventory.yaml",
        p.line("flows/inventory.yaml", "handlers.nowhere.reserve"),
        "services.inventory.handlers[0].handler",
    )


def test_handler_attribute_missing(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace("flows/inventory.yaml", "handler: handlers.inventory.release", "handler: handlers.inventory.release_all")
    problem = only(p.problems(), "release_all")
    assert "has no attribute 'release_all'" in problem.message
    assert_at(
        problem,
        p,
        "flows/inventory.yaml",
        p.line("flows/inventory.yaml", "handlers.inventory.release_all"),
        "services.inventory.handlers[1].handler",
    )


def test_handler_not_async(config_copy: Path) -> None:
    p = make(config_copy)
    # handlers.inventory.view is a plain function (an HTTP view), not a message handler
    p.replace("flows/payment.yaml", "handler: handlers.payment.refund", "handler: handlers.inventory.view")
    problem = only(p.problems(), "must be an 'async def' function")
    assert "handlers.inventory.view" in problem.message
    assert_at(
        problem,
        p,
        "flows/payment.yaml",
        p.line("flows/payment.yaml", "handler: handlers.inventory.view"),
        "services.payment.handlers[1].handler",
    )


def test_http_view_path_missing(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace("flows/order.yaml", "view: handlers.inventory.view", "view: handlers.inventory.peek")
    problem = only(p.problems(), "peek")
    assert_at(
        problem,
        p,
        "flows/order.yaml",
        p.line("flows/order.yaml", "handlers.inventory.peek"),
        "services.order.http.resources.inventory.view",
    )


def test_consumer_on_undeclared_stream(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace("flows/payment.yaml", "        stream: ORDERS\n", "        stream: PAYMENTS\n")
    problem = only(p.problems(), "stream 'PAYMENTS' is not declared")
    assert_at(
        problem,
        p,
        "flows/payment.yaml",
        p.line("flows/payment.yaml", "stream: PAYMENTS"),
        "services.payment.consumers.payment-service.stream",
    )


def test_consumer_filter_outside_its_stream(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace("flows/payment.yaml", "orders.payment.refund]", "orders.payment.refund, dlq.payment]")
    problem = only(p.problems(), "filter 'dlq.payment' is outside stream ORDERS's subjects")
    assert problem.path == "services.payment.consumers.payment-service.filter_subjects[2]"
    assert problem.file == str(p.file("flows/payment.yaml"))
    assert problem.line == p.line("flows/payment.yaml", "dlq.payment")


def test_emitted_subject_not_covered_by_any_stream(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace(
        "flows/payment.yaml",
        "          failed: orders.payment.failed\n",
        "          failed: orders.payment.failed\n          audited: billing.audit\n",
    )
    problem = only(p.problems(), "'billing.audit' is not covered by any stream")
    assert_at(
        problem,
        p,
        "flows/payment.yaml",
        p.line("flows/payment.yaml", "billing.audit"),
        "services.payment.handlers[0].emits.audited",
    )


def test_overlapping_stream_subjects(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace("streams.yaml", 'subjects: ["tasks.>", "jobs.>"]', 'subjects: ["tasks.>", "jobs.>", "orders.*"]')
    problems = p.problems()
    problem = only(problems, "overlap")
    assert "'orders.*'" in problem.message and "ORDERS" in problem.message and "'orders.>'" in problem.message
    assert_at(problem, p, "streams.yaml", p.line("streams.yaml", '"orders.*"'), "streams.TASKS.subjects[2]")


def test_saga_goto_undeclared_state(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace(
        "flows/saga.yaml", "orders.inventory.failed: {goto: cancelled}", "orders.inventory.failed: {goto: canceled}"
    )
    problem = only(p.problems(), "state 'canceled' is not declared")
    assert problem.file == str(p.file("flows/saga.yaml"))
    assert problem.line == p.line("flows/saga.yaml", "goto: canceled")
    assert problem.path.startswith("sagas.order.states.pending.on.")
    assert problem.path.endswith(".goto")


def test_saga_timeout_goto_undeclared_state(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace("flows/saga.yaml", "goto: cancelled, compensate: true, reason: payment timed out", "goto: gone")
    problem = only(p.problems(), "state 'gone' is not declared")
    assert_at(
        problem,
        p,
        "flows/saga.yaml",
        p.line("flows/saga.yaml", "goto: gone"),
        "sagas.order.states.awaiting_payment.timeout.goto",
    )


def test_saga_state_that_never_reaches_a_terminal_state(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace(
        "flows/saga.yaml",
        "      completed:\n",
        "      limbo:\n        on:\n          orders.payment.refunded: {goto: limbo}\n      completed:\n",
    )
    problem = only(p.problems(), "can never reach a terminal state")
    assert "'limbo'" in problem.message
    assert_at(problem, p, "flows/saga.yaml", p.line("flows/saga.yaml", "limbo:"), "sagas.order.states.limbo")


def test_saga_without_terminal_state(config_copy: Path) -> None:
    p = make(config_copy)
    text = p.file("flows/saga.yaml").read_text()
    p.file("flows/saga.yaml").write_text(text.replace("        terminal: true\n", "        terminal: false\n"))
    problems = p.problems()
    only(problems, "no terminal state")
    assert {p.path for p in problems if "can never reach" in p.message} == {
        f"sagas.order.states.{s}"
        for s in ("pending", "awaiting_payment", "completed", "cancelled", "compensation_failed", "failed")
    }


def test_name_declared_in_two_flow_files(config_copy: Path) -> None:
    p = make(config_copy)
    p.append("flows/payment.yaml", "  INVENTORY:\n    history: 1\n")
    problem = only(p.problems(), "already declared")
    inventory_lines = p.file("flows/inventory.yaml").read_text().splitlines()
    first = inventory_lines.index("  INVENTORY:", inventory_lines.index("kv:")) + 1
    assert f"kv 'INVENTORY' already declared at {p.file('flows/inventory.yaml')}:{first}" in problem.message
    # reported in the later file (sorted by name), at the second declaration
    assert_at(
        problem, p, "flows/payment.yaml", p.line("flows/payment.yaml", "  INVENTORY:", exact=True), "kv.INVENTORY"
    )


def test_service_declared_in_two_flow_files(config_copy: Path) -> None:
    p = make(config_copy)
    p.file("flows/zz_extra.yaml").write_text("services:\n  payment:\n    consumers: {}\n")
    problem = only(p.problems(), "already declared")
    assert problem.message.startswith("services 'payment' already declared at ")
    assert_at(problem, p, "flows/zz_extra.yaml", 2, "services.payment")


# --- every problem at once ---


def test_schema_and_syntax_problems_of_all_files_at_once(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace("flows/order.yaml", "        batch: 128 ", "        batch: 128: oops ")
    p.replace("flows/inventory.yaml", "        batch: 128\n", "        batch: many\n        prefetch: 5\n")
    p.replace("flows/payment.yaml", "ack_wait: 30s", "ack_wait: 30 seconds")
    p.replace("streams.yaml", "    storage: file\n", "    storage: disk\n")

    problems = p.problems()

    where = {(Path(x.file).name, x.line) for x in problems}
    assert ("order.yaml", p.line("flows/order.yaml", "batch: 128: oops")) in where
    assert ("inventory.yaml", p.line("flows/inventory.yaml", "batch: many")) in where
    assert ("inventory.yaml", p.line("flows/inventory.yaml", "prefetch: 5")) in where
    assert ("payment.yaml", p.line("flows/payment.yaml", "30 seconds")) in where
    assert ("streams.yaml", p.line("streams.yaml", "storage: disk")) in where
    assert len(problems) == 5, "\n".join(map(str, problems))


def test_cross_check_problems_all_at_once(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace("flows/inventory.yaml", "handler: handlers.inventory.reserve", "handler: handlers.nowhere.reserve")
    p.replace("flows/inventory.yaml", "handler: handlers.inventory.release", "handler: handlers.inventory.release_all")
    p.replace("flows/payment.yaml", "handler: handlers.payment.refund", "handler: handlers.inventory.view")
    p.replace("flows/payment.yaml", "        stream: ORDERS\n", "        stream: PAYMENTS\n")
    p.replace("streams.yaml", 'subjects: ["tasks.>", "jobs.>"]', 'subjects: ["tasks.>", "jobs.>", "orders.*"]')
    p.replace(
        "flows/saga.yaml", "orders.inventory.failed: {goto: cancelled}", "orders.inventory.failed: {goto: canceled}"
    )
    p.append("flows/payment.yaml", "  INVENTORY:\n    history: 1\n")

    problems = p.problems()

    expected = {
        ("inventory.yaml", p.line("flows/inventory.yaml", "handlers.nowhere.reserve")),
        ("inventory.yaml", p.line("flows/inventory.yaml", "release_all")),
        ("payment.yaml", p.line("flows/payment.yaml", "handlers.inventory.view")),
        ("payment.yaml", p.line("flows/payment.yaml", "stream: PAYMENTS")),
        ("payment.yaml", p.line("flows/payment.yaml", "  INVENTORY:", exact=True)),
        ("streams.yaml", p.line("streams.yaml", '"orders.*"')),
        ("saga.yaml", p.line("flows/saga.yaml", "goto: canceled")),
    }
    assert {(Path(x.file).name, x.line) for x in problems} == expected, "\n".join(map(str, problems))
    assert len(problems) == len(expected)
