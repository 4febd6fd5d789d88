"""The metrics' exposition (no server): histogram buckets, saga counts, and the shipped Grafana dashboard."""

from __future__ import annotations

import json
import logging
import re

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import runner.serve.consumer_stats
import runner.serve.metrics_http  # noqa: F401 (registers the HTTP families)
from runner.engine.metrics import ConsumerMetrics, SagaMetrics
from runner.logs import JsonFormatter
from tests.conftest import ROOT

SUFFIXES = ("_total", "_bucket", "_sum", "_count")


def samples() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = generate_latest(REGISTRY).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_handler_histogram_is_cumulative() -> None:
    metrics = ConsumerMetrics.of("unit-svc", "unit-consumer")
    for seconds in (0.0001, 0.003, 0.003, 42.0):
        metrics.duration("unit.subject").observe(seconds)
    found = samples()
    labels = {"service": "unit-svc", "consumer": "unit-consumer", "subject": "unit.subject"}

    def bucket(le: str) -> float:
        return found[("flowrun_handler_duration_seconds_bucket", frozenset({**labels, "le": le}.items()))]

    assert bucket("0.0005") == 1
    assert bucket("0.005") == 3
    assert bucket("30.0") == 3
    assert bucket("+Inf") == 4
    assert found[("flowrun_handler_duration_seconds_count", frozenset(labels.items()))] == 4


def test_saga_counts_add_up() -> None:
    saga = SagaMetrics.of("unit-saga", "compensation_failed")
    saga.moved(None, "pending")
    saga.moved(None, "pending")
    saga.moved("pending", "compensating")
    saga.moved("compensating", "cancelled")
    saga.moved("pending", "pending")  # no change: not a transition
    found = samples()

    def value(name: str, **labels: str) -> float:
        return found[(name, frozenset({"saga": "unit-saga", **labels}.items()))]

    assert value("flowrun_saga_instances", state="pending") == 1
    assert value("flowrun_saga_instances", state="compensating") == 0
    assert value("flowrun_saga_instances", state="cancelled") == 1
    assert value("flowrun_saga_transitions_total", from_state="none", to_state="pending") == 2
    assert value("flowrun_saga_compensations_total", result="started") == 1
    assert value("flowrun_saga_compensations_total", result="completed") == 1


def test_grafana_dashboard_queries_exported_metrics() -> None:
    exported = set(re.findall(r"^# TYPE (flowrun_\w+) ", generate_latest(REGISTRY).decode(), re.M))
    dashboard = json.loads((ROOT / "ops" / "grafana" / "flowrun.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"flowrun_\w+", target["expr"])
    }
    assert queried
    unknown = sorted(name for name in queried if not any(name.removesuffix(s) in exported for s in SUFFIXES))
    assert not unknown, f"the dashboard queries metrics flowrun does not export: {unknown}"


def test_json_log_line_carries_fields() -> None:
    record = logging.LogRecord("flowrun.dispatch", logging.WARNING, __file__, 1, "dead-lettered", None, None)
    record.fields = {"service": "payment", "seq": 7, "correlation_id": "o-1"}
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "dead-lettered"
    assert line["level"] == "warning"
    assert (line["service"], line["seq"], line["correlation_id"]) == ("payment", 7, "o-1")
