"""Config hardening: alias bombs, merge keys, duplicate keys, dotted paths, typed settings, default replicas.

Each test edits a private copy of the shipped configuration (see test_config_errors.Project).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from runner.cli import main
from runner.config.loader import load
from runner.config.model import Config
from runner.config.settings import parse
from tests.unit.test_config_errors import Project, assert_at, make, only

# 342 bytes; built into plain data it would be 9**9 strings (the shipped-config loader took 1.6 GB and 30 s+).
BILLION_LAUGHS = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def loaded(project: Project, env: dict[str, str] | None = None) -> Config:
    config, problems = load(project.root, env or {})
    assert problems == [] and config is not None, "\n".join(map(str, problems))
    return config


def problems_with(project: Project, env: dict[str, str]) -> list:
    config, problems = load(project.root, env)
    assert config is None, "a configuration with problems must not load"
    return problems


# --- YAML: aliases, merge keys, duplicate keys ---


@pytest.mark.timeout(60)
def test_alias_bomb_is_refused_at_an_alias_line_by_validate(config_copy: Path) -> None:
    p = make(config_copy)
    p.file("flows/bomb.yaml").write_text(BILLION_LAUGHS)

    result = CliRunner().invoke(main, ["validate", "--config", str(p.root)], catch_exceptions=False)

    assert result.exit_code == 1
    [line] = [x for x in result.stderr.splitlines() if "alias" in x]
    problem = only(p.problems(), "alias bomb")
    assert line == str(problem)
    assert problem.file == str(p.file("flows/bomb.yaml"))
    assert "*" in BILLION_LAUGHS.splitlines()[problem.line - 1], "points at a line that uses aliases"
    assert "use fewer, smaller anchors" in problem.message  # the hint


def test_recursive_alias_is_a_problem_not_a_crash(config_copy: Path) -> None:
    p = make(config_copy)
    p.file("flows/loop.yaml").write_text("data:\n  LOOP: &loop\n    self: *loop\n")
    problem = only(p.problems(), "alias *loop refers to a node that contains it")
    assert (problem.file, problem.line) == (str(p.file("flows/loop.yaml")), 3)


def test_modest_anchors_and_merge_keys_still_work(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace(
        "flows/inventory.yaml", "    retry:\n      max_attempts: 5\n", "    retry: &retry\n      max_attempts: 5\n"
    )
    p.replace(
        "flows/inventory.yaml",
        "        retry:                       # a compensation",
        "        retry:\n          <<: *retry\n          fatal_on: []                   # a compensation",
    )
    p.replace("flows/inventory.yaml", "    dead_letter: {stream: DLQ", "    dead_letter: &dl {stream: DLQ")
    p.replace("flows/payment.yaml", "    dead_letter: {stream: DLQ, subject_prefix: dlq}", "    dead_letter: {<<: *x}")
    p.replace("flows/payment.yaml", "    dead_letter: {<<: *x}", "    dead_letter: {stream: DLQ, subject_prefix: dlq}")

    inventory = loaded(p).services["inventory"]

    release = next(b for b in inventory.bindings if b.subject == "orders.inventory.release")
    assert release.retry.max_attempts == 20  # written beside the merge key: wins
    assert release.retry.initial_delay == 1.0
    assert release.retry.backoff == "exponential" and release.retry.max_delay == 30.0
    assert release.retry.fatal_on == ()


def test_duplicate_key_names_the_first_line(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace(
        "flows/inventory.yaml",
        "        batch: 128\n",
        "        batch: 128\n        concurrency: 4\n        batch: 64\n",
    )
    problem = only(p.problems(), "duplicate key 'batch'")
    first = p.line("flows/inventory.yaml", "batch: 128")
    assert problem.message == f"duplicate key 'batch': first at line {first}"
    assert problem.line == p.line("flows/inventory.yaml", "batch: 64")


# --- dotted paths: inside the config root, with the signature the runner calls ---


def test_accept_naming_os_system_is_refused(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace("flows/order.yaml", "accept: handlers.orders.accept", "accept: os.system")
    problem = only(p.problems(), "outside the config root")
    assert "allow_modules" in problem.message  # the hint
    assert_at(
        problem,
        p,
        "flows/order.yaml",
        p.line("flows/order.yaml", "accept: os.system"),
        "services.order.http.resources.orders.accept",
    )


def test_view_naming_builtins_eval_is_refused(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace("flows/order.yaml", "view: handlers.inventory.view", "view: builtins.eval")
    problem = only(p.problems(), "'builtins.eval' is outside the config root")
    assert_at(
        problem,
        p,
        "flows/order.yaml",
        p.line("flows/order.yaml", "builtins.eval"),
        "services.order.http.resources.inventory.view",
    )


def test_allow_modules_admits_a_package_but_not_a_wrong_signature(
    config_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = tmp_path / "site"
    (outside / "extviews").mkdir(parents=True)
    (outside / "extviews" / "__init__.py").write_text(
        "def stock(key, value):\n    return {'productId': key, **value}\n\ndef one(key):\n    return {}\n"
    )
    monkeypatch.syspath_prepend(str(outside))
    p = make(config_copy)
    p.replace("flows/order.yaml", "view: handlers.inventory.view", "view: extviews.stock")
    only(p.problems(), "'extviews.stock' is outside the config root")

    p.append("flows/order.yaml", "allow_modules: [extviews]\n")
    assert loaded(p).services["order"].http.resources["inventory"].view == "extviews.stock"

    p.replace("flows/order.yaml", "view: extviews.stock", "view: extviews.one")
    problem = only(p.problems(), "extviews.one")
    assert "takes (key); the runner calls def fn(key, value) -> dict" in problem.message


def test_handler_must_take_msg_and_ctx(config_copy: Path) -> None:
    p = make(config_copy)
    (p.root / "lonely").mkdir()  # a package of its own: `handlers` may already be imported from another root
    (p.root / "lonely" / "__init__.py").write_text("async def refund(msg):\n    return None\n")
    p.replace("flows/payment.yaml", "handler: handlers.payment.refund", "handler: lonely.refund")
    problem = only(p.problems(), "lonely.refund")
    assert problem.message == "handler 'lonely.refund' takes (msg); the runner calls async def fn(msg, ctx) -> Outcome"
    assert problem.line == p.line("flows/payment.yaml", "handler: lonely.refund")


def test_accept_must_be_a_plain_function(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace("flows/order.yaml", "accept: handlers.orders.accept", "accept: handlers.payment.charge")
    problem = only(p.problems(), "handlers.payment.charge")
    assert "must be a plain Python function: def fn(body, id) -> dict" in problem.message


# --- typed settings ---


@pytest.mark.parametrize(
    ("limit", "why"),
    [
        (".nan", "is not a decimal amount"),
        ("NaN", "is not a finite decimal amount"),
        ("Infinity", "is not a finite decimal amount"),
        ("yes", "is not a decimal amount"),
        ("12.345", "has more than 2 decimal places"),
        ("-1", "is below the minimum 0"),
    ],
)
def test_bad_payment_limit_is_a_problem_at_the_value(config_copy: Path, limit: str, why: str) -> None:
    p = make(config_copy)
    [problem] = problems_with(p, {"PAYMENT_LIMIT": limit})
    assert why in problem.message
    assert_at(
        problem,
        p,
        "flows/payment.yaml",
        p.line("flows/payment.yaml", "value: "),
        "services.payment.settings.decline_over.value",
    )


@pytest.mark.parametrize("limit", [".nan", "yes", ".inf"])
def test_unquoted_nan_and_yes_are_refused_too(config_copy: Path, limit: str) -> None:
    p = make(config_copy)
    p.replace("flows/payment.yaml", 'value: "${PAYMENT_LIMIT:-5000.00}"', "value: ${PAYMENT_LIMIT:-5000.00}")
    [problem] = problems_with(p, {"PAYMENT_LIMIT": limit})
    assert problem.path == "services.payment.settings.decline_over.value"


def test_payment_limit_is_an_exact_decimal(config_copy: Path) -> None:
    p = make(config_copy)
    limit = loaded(p, {"PAYMENT_LIMIT": "999999999999.99"}).services["payment"].settings["decline_over"]
    assert limit == Decimal("999999999999.99") and isinstance(limit, Decimal)


def test_an_untyped_setting_is_a_schema_problem(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace("flows/payment.yaml", "      decline_over:   ", "      loose: 5\n      decline_over:   ")
    problems = p.problems()
    assert any(x.path == "services.payment.settings.loose" for x in problems), "\n".join(map(str, problems))


@pytest.mark.parametrize(
    ("spec", "value"),
    [
        ({"type": "integer", "value": "42"}, 42),
        ({"type": "number", "value": 0.5, "maximum": 1}, 0.5),
        ({"type": "boolean", "value": "false"}, False),
        ({"type": "duration", "value": "5m"}, 300.0),
        ({"type": "string", "value": "EUR"}, "EUR"),
        ({"type": "decimal", "value": 7}, Decimal("7.00")),
    ],
)
def test_each_setting_type(spec: dict, value: object) -> None:
    assert parse(spec) == (value, [])


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"type": "integer", "value": True}, ("value", "True is not an integer: expected type integer")),
        ({"type": "number", "value": float("inf")}, ("value", "inf is not a finite number: expected type number")),
        ({"type": "boolean", "value": 1}, ("value", "1 is not a boolean (use true or false): expected type boolean")),
        ({"type": "string", "value": 12}, ("value", "12 is not a string (quote it): expected type string")),
        ({"type": "integer", "value": 9, "maximum": 8}, ("value", "9 is above the maximum 8")),
        ({"type": "string", "value": "a", "minimum": 1}, ("minimum", "minimum applies to")),
    ],
)
def test_each_setting_type_refuses(spec: dict, problem: tuple[str, str]) -> None:
    _, problems = parse(spec)
    assert len(problems) == 1 and problems[0][0] == problem[0] and problems[0][1].startswith(problem[1])


# --- replicas: one default for every stream and bucket, with overrides ---


def test_flowrun_replicas_sets_every_stream_and_bucket(config_copy: Path) -> None:
    config = loaded(make(config_copy), {"FLOWRUN_REPLICAS": "3"})
    assert {s.replicas for s in config.streams.values()} == {3}
    assert {b.replicas for b in config.buckets.values()} == {3}


def test_own_replicas_and_presets_win_over_the_default(config_copy: Path) -> None:
    p = make(config_copy)
    p.replace(
        "flows/payment.yaml", "    history: 1\n    cache: 256\n", "    history: 1\n    replicas: 1\n    cache: 256\n"
    )
    p.append("streams.yaml", '  CRITICAL:\n    preset: replicated\n    subjects: ["critical.>"]\n')

    config = loaded(p, {"FLOWRUN_REPLICAS": "5"})

    assert config.buckets["PAYMENTS"].replicas == 1
    assert config.buckets["INVENTORY"].replicas == 5
    assert config.streams["CRITICAL"].replicas == 3
    assert config.streams["ORDERS"].replicas == 5
    where = {key: (Path(at.file).name, at.line) for key, at in config.replicas_at.items()}
    assert where[("kv", "PAYMENTS")] == ("payment.yaml", p.line("flows/payment.yaml", "replicas: 1"))
    assert where[("kv", "INVENTORY")] == ("streams.yaml", p.line("streams.yaml", "replicas: ${FLOWRUN_REPLICAS"))
    assert where[("streams", "CRITICAL")] == (
        "streams.yaml",
        p.line("streams.yaml", "    preset: replicated", exact=True),
    )
