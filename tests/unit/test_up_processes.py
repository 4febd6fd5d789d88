"""What `flowrun up` starts, without starting it: processes per service (--workers), their command lines, and
the connection they get by environment (never by argv)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click
import pytest

from runner.cli.up_processes import ProcessPlan, worker_counts
from runner.config.connection import ConnectionSpec, as_env, resolve
from runner.config.loader import load_or_raise
from runner.config.model import Config
from runner.logs import JsonFormatter, KeyValueFormatter, ProcessName
from tests.conftest import ROOT

SECRET = "pw-up-7Rk2"


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load_or_raise(ROOT)


def test_auto_gives_the_http_service_one_process_per_two_cores_up_to_four(cfg: Config) -> None:
    assert worker_counts(cfg, [], cpus=2) == {"inventory": 1, "order": 1, "payment": 1}
    assert worker_counts(cfg, [], cpus=4) == {"inventory": 1, "order": 2, "payment": 1}
    assert worker_counts(cfg, ["auto"], cpus=16)["order"] == 4
    assert worker_counts(cfg, [], cpus=1)["order"] == 1


def test_a_count_for_all_and_overrides_per_service(cfg: Config) -> None:
    assert worker_counts(cfg, ["3"], cpus=2) == {"inventory": 3, "order": 3, "payment": 3}
    assert worker_counts(cfg, ["2", "payment=1", "order=5"], cpus=2) == {"inventory": 2, "order": 5, "payment": 1}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("shipping=2", "unknown service 'shipping' in 'shipping=2'; declared: inventory, order, payment"),
        ("order=0", "'order=0': expected auto, a count of at least 1, or SERVICE=COUNT"),
        ("many", "'many': expected auto"),
        ("order=", "'order=': expected auto"),
    ],
)
def test_a_bad_value_is_a_usage_error_naming_it(cfg: Config, value: str, message: str) -> None:
    with pytest.raises(click.BadParameter) as failed:
        worker_counts(cfg, [value], cpus=2)
    assert message in failed.value.format_message()


def test_each_process_runs_start_for_its_service_and_http_processes_share_the_port(tmp_path: Path) -> None:
    plan = ProcessPlan(tmp_path, {"order": 2, "payment": 1}, {"order": 5100}, 2, "json", 9100, "127.0.0.1")
    commands = plan.commands()
    assert [(service, k) for service, k, _ in commands] == [("order", 1), ("order", 2), ("payment", 1)]
    order, _, payment = (argv for _, _, argv in commands)
    assert order[order.index("start") :] == [
        *("start", "--service", "order", "--process-name", "order#1", "--provision", "off"),
        *("--config", str(tmp_path.resolve())),
        *("--log-format", "json", "--http-port", "5100", "--reuse-port", "-vv"),
        *("--metrics-port", "9100", "--metrics-host", "127.0.0.1"),
    ]
    assert "--http-port" not in payment and "--reuse-port" not in payment
    assert plan.metrics_ports() == [9100, 9101, 9102]  # one port each: they would clash on one
    assert ProcessPlan(tmp_path, {"order": 2}, {}, 0, "text", 0, "h").metrics_ports() == [0, 0]


def test_the_connection_goes_by_environment_and_resolves_to_the_same_spec() -> None:
    spec = ConnectionSpec.from_url(f"nats://alice:{SECRET}@127.0.0.1:4222,nats://127.0.0.1:4223").overridden_by(
        {"inbox_prefix": "_INBOX.alice", "tls_handshake_first": True}
    )
    parent_env = {"HOME": "/home/x", "NATS_CONTEXT": "prod", "NATS_TOKEN": "stale-token"}
    env = as_env(spec, parent_env)
    assert env["HOME"] == "/home/x"
    assert "NATS_CONTEXT" not in env and "NATS_TOKEN" not in env  # the parent's resolution is the child's
    assert env["NATS_PASSWORD"] == SECRET and SECRET not in env["NATS_URL"]
    assert resolve({}, env) == spec


def test_every_log_line_of_a_process_names_it_in_both_formats() -> None:
    record = logging.LogRecord("flowrun.service", logging.WARNING, __file__, 1, "nats disconnected", None, None)
    assert ProcessName("order#2").filter(record)
    assert KeyValueFormatter().format(record).endswith("warning flowrun.service nats disconnected process=order#2")
    assert json.loads(JsonFormatter().format(record))["process"] == "order#2"
