"""Loading the shipped configuration: streams, presets, ${VAR} interpolation, durations and sizes."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from runner.config.loader import load
from runner.config.model import Config
from runner.config.units import human_seconds, seconds, size_bytes
from tests.conftest import ROOT

DAY = 86400.0


def load_ok(root: Path = ROOT, env: dict[str, str] | None = None) -> Config:
    config, problems = load(root, env or {})
    assert problems == [], "\n".join(map(str, problems))
    assert config is not None
    return config


def replace_once(file: Path, old: str, new: str) -> None:
    text = file.read_text()
    assert text.count(old) == 1, f"{old!r} should occur once in {file}"
    file.write_text(text.replace(old, new))


@pytest.fixture(scope="module")
def shipped() -> Config:
    return load_ok()


# --- the shipped configuration ---


def test_shipped_config_declares_the_three_services(shipped: Config) -> None:
    assert set(shipped.services) == {"order", "inventory", "payment"}
    durables = {c.durable for c in shipped.consumers()}
    assert {"order-service", "inventory-service", "payment-service"} <= durables
    assert set(shipped.sagas) == {"order"}


def test_orders_stream_is_the_seeds_stream(shipped: Config) -> None:
    orders = shipped.streams["ORDERS"]
    assert orders.subjects == ("orders.>", "payment.>", "inventory.>")
    assert orders.max_msgs == 1_000_000
    assert orders.max_bytes == 1073741824
    assert orders.max_age == 30 * DAY
    assert orders.replicas == 1
    assert orders.retention == "limits"
    assert orders.storage == "file"
    assert orders.duplicate_window == 120.0


def test_work_queue_preset_gives_workqueue_retention(shipped: Config) -> None:
    tasks = shipped.streams["TASKS"]
    assert tasks.retention == "workqueue"
    assert tasks.subjects == ("tasks.>", "jobs.>")


def test_log_preset_keeps_audit_for_90_days_and_denies_deletes(shipped: Config) -> None:
    audit = shipped.streams["AUDIT"]
    assert audit.max_age == 90 * DAY
    assert audit.retention == "limits"
    assert audit.deny_delete is True


def test_shipped_retry_and_settings_are_typed(shipped: Config) -> None:
    inventory = shipped.services["inventory"]
    assert inventory.retry.initial_delay == 0.5
    assert inventory.retry.max_delay == 10.0
    assert inventory.retry.fatal_on == ("ValueError",)
    release = next(b for b in inventory.bindings if b.subject == "orders.inventory.release")
    assert release.retry.max_attempts == 20
    assert release.retry.initial_delay == 1.0
    # unspecified fields of a binding's retry come from the service's policy
    assert release.retry.backoff == "exponential"
    assert release.retry.fatal_on == ("ValueError",)
    limit = shipped.services["payment"].settings["decline_over"]
    assert limit == Decimal("5000.00") and isinstance(limit, Decimal)
    assert shipped.sagas["order"].compensation_timeout == 120.0


# --- presets and explicit overrides ---

EXTRA_STREAMS = """
  CRITICAL:
    preset: replicated
    subjects: ["critical.>"]
  CRITICAL_SOLO:
    preset: replicated
    replicas: 1
    subjects: ["solo.>"]
  JOURNAL:
    preset: log
    max_age: 7d
    deny_delete: false
    subjects: ["journal.>"]
  JOBS_LIMITS:
    preset: work_queue
    retention: limits
    subjects: ["joblimits.>"]
"""


def test_replicated_preset_and_explicit_overrides(config_copy: Path) -> None:
    (config_copy / "streams.yaml").write_text((config_copy / "streams.yaml").read_text() + EXTRA_STREAMS)
    streams = load_ok(config_copy).streams
    assert streams["CRITICAL"].replicas == 3
    assert streams["CRITICAL_SOLO"].replicas == 1
    assert streams["JOURNAL"].max_age == 7 * DAY
    assert streams["JOURNAL"].deny_delete is False
    assert streams["JOURNAL"].discard == "old"  # still from the preset
    assert streams["JOBS_LIMITS"].retention == "limits"


# --- ${VAR} and ${VAR:-default} ---


def test_default_applies_when_variable_unset_or_empty() -> None:
    assert load_ok(env={}).streams["ORDERS"].replicas == 1
    assert load_ok(env={"FLOWRUN_REPLICAS": ""}).streams["ORDERS"].replicas == 1


def test_env_var_changes_orders_replicas_as_an_integer() -> None:
    replicas = load_ok(env={"FLOWRUN_REPLICAS": "3"}).streams["ORDERS"].replicas
    assert replicas == 3 and isinstance(replicas, int)


def test_payment_limit_env_var_becomes_a_decimal_setting() -> None:
    limit = load_ok(env={"PAYMENT_LIMIT": "1234.5"}).services["payment"].settings["decline_over"]
    assert limit == Decimal("1234.50") and isinstance(limit, Decimal)


def test_interpolated_durations_are_parsed() -> None:
    saga = load_ok(env={"PAYMENT_TIMEOUT": "2m", "COMPENSATION_TIMEOUT": "90s"}).sagas["order"]
    assert saga.states["awaiting_payment"].timeout is not None
    assert saga.states["awaiting_payment"].timeout.after == 120.0
    assert saga.compensation_timeout == 90.0


def test_http_port_from_env() -> None:
    http = load_ok(env={"HTTP_PORT": "8080", "HTTP_HOST": "0.0.0.0"}).services["order"].http
    assert http is not None
    assert http.port == 8080
    assert http.host == "0.0.0.0"


def test_env_value_of_the_wrong_type_is_a_schema_problem() -> None:
    config, problems = load(ROOT, {"FLOWRUN_REPLICAS": "three"})
    assert config is None
    assert len(problems) == 1
    assert Path(problems[0].file).resolve() == ROOT / "streams.yaml"
    assert problems[0].path == "defaults.replicas"
    assert "'three' is not of type 'integer'" in problems[0].message


def test_interpolation_inside_a_longer_string(config_copy: Path) -> None:
    streams_file = config_copy / "streams.yaml"
    replace_once(
        streams_file,
        "description: Order, inventory and payment events of the order saga",
        "description: events of ${REGION:-eu}/${ZONE}",
    )
    assert load_ok(config_copy, {"ZONE": "a"}).streams["ORDERS"].description == "events of eu/a"
    assert load_ok(config_copy, {"ZONE": "b", "REGION": "us"}).streams["ORDERS"].description == "events of us/b"


def test_undefined_variable_without_default_is_a_problem_at_its_line(config_copy: Path) -> None:
    streams_file = config_copy / "streams.yaml"
    replace_once(streams_file, "    max_msgs: 1000000\n", "    max_msgs: ${FLOWRUN_TEST_UNDEFINED}\n")
    line = streams_file.read_text().splitlines().index("    max_msgs: ${FLOWRUN_TEST_UNDEFINED}") + 1

    config, problems = load(config_copy, {})

    assert config is None
    unset = [p for p in problems if "FLOWRUN_TEST_UNDEFINED" in p.message]
    assert len(unset) == 1
    problem = unset[0]
    assert problem.file == str((config_copy / "streams.yaml").resolve())
    assert problem.line == line
    assert problem.path == "streams.ORDERS.max_msgs"
    assert "not set and has no default" in problem.message
    assert str(problem).startswith(f"{problem.file}:{line}:")


def test_undefined_variable_is_fine_once_set(config_copy: Path) -> None:
    replace_once(config_copy / "streams.yaml", "    max_msgs: 1000000\n", "    max_msgs: ${FLOWRUN_TEST_UNDEFINED}\n")
    assert load_ok(config_copy, {"FLOWRUN_TEST_UNDEFINED": "42"}).streams["ORDERS"].max_msgs == 42


def test_quoted_interpolation_stays_a_string(config_copy: Path) -> None:
    replace_once(config_copy / "streams.yaml", "    max_msgs: 1000000\n", '    max_msgs: "${N:-5}"\n')
    config, problems = load(config_copy, {})
    assert config is None
    assert [p.path for p in problems] == ["streams.ORDERS.max_msgs"]
    assert "'5' is not of type 'integer'" in problems[0].message


# --- durations and sizes ---


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("250ms", 0.25),
        ("30s", 30.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("90d", 90 * DAY),
        ("1.5s", 1.5),
        ("45", 45.0),
        (" 10 s ", 10.0),
        (7, 7.0),
        (0.5, 0.5),
    ],
)
def test_seconds(text: str | float, expected: float) -> None:
    assert seconds(text) == expected


@pytest.mark.parametrize("text", ["", "ten seconds", "5 minutes", "-1s", "1w", "s", "1.s"])
def test_seconds_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        seconds(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1GiB", 1073741824),
        ("256MiB", 256 * 2**20),
        ("512KiB", 512 * 1024),
        ("1TiB", 2**40),
        ("1GB", 10**9),
        ("2KB", 2000),
        ("100B", 100),
        ("100", 100),
        ("1.5KiB", 1536),
        (-1, -1),
        (4096, 4096),
    ],
)
def test_size_bytes(text: str | int, expected: int) -> None:
    assert size_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "1 gigabyte", "1XB", "-5MB", "MB"])
def test_size_bytes_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        size_bytes(text)


@pytest.mark.parametrize(
    ("value", "text"),
    [(90 * DAY, "90d"), (7200.0, "2h"), (300.0, "5m"), (30.0, "30s"), (0.25, "250ms"), (1.5, "1.5s")],
)
def test_human_seconds(value: float, text: str) -> None:
    assert human_seconds(value) == text
