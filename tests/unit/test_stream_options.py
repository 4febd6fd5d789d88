"""Stream and bucket options are declared once (runner/config/streams.py): the schema `flowrun schema` prints, the
model's defaults and the nats-py configs all come from that declaration. No server here."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from jsonschema import Draft202012Validator
from nats.js import api

from runner.cli import main
from runner.config.loader import load, load_or_raise
from runner.config.options import Option, declared
from runner.config.streams import PRESETS, BucketSpec, StreamSpec
from tests.conftest import ROOT

SPECS = {"streams": ("stream", StreamSpec), "flows": ("bucket", BucketSpec)}


def printed_schema(which: str) -> dict[str, Any]:
    result = CliRunner().invoke(main, ["schema", which], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("which", sorted(SPECS))
def test_the_shipped_schema_files_write_no_option_themselves(which: str) -> None:
    """Options live only in their declarations: a property in the file would be a second, stale copy."""
    shipped = json.loads(resources.files("runner.config.schemas").joinpath(f"{which}.schema.json").read_text())
    definition, _ = SPECS[which]
    assert "properties" not in shipped["$defs"][definition]
    assert "required" not in shipped["$defs"][definition]


@pytest.mark.parametrize("which", sorted(SPECS))
def test_flowrun_schema_prints_every_declared_option(which: str) -> None:
    definition, spec = SPECS[which]
    printed = printed_schema(which)["$defs"][definition]
    assert list(printed["properties"]) == [o.key for o in declared(spec)]
    assert printed["additionalProperties"] is False
    Draft202012Validator.check_schema(printed_schema(which))


def test_streams_schema_requires_subjects_and_lists_the_presets() -> None:
    stream = printed_schema("streams")["$defs"]["stream"]
    assert stream["required"] == ["subjects"]
    # editors get each scalar with a ${VAR} string as the alternative (runner/config/schemas/editor.py)
    preset, retention, max_age = (stream["properties"][key]["anyOf"] for key in ("preset", "retention", "max_age"))
    assert preset[0]["enum"] == list(PRESETS)
    assert retention[0]["enum"] == ["limits", "interest", "workqueue"]
    assert max_age == [{"$ref": "#/$defs/duration"}, {"$ref": "#/$defs/interpolation"}]


def _valid(schema: dict[str, Any], option: Option, value: Any) -> bool:
    return Draft202012Validator({"$defs": schema["$defs"], **option.schema()}).is_valid(value)


@pytest.mark.parametrize("which", sorted(SPECS))
def test_every_default_passes_its_own_schema(which: str) -> None:
    """A default the YAML could not spell would be a default nobody can write back explicitly."""
    schema = printed_schema(which)
    _, spec = SPECS[which]
    for option in declared(spec):
        if option.default is not None and not option.required:
            assert _valid(schema, option, option.default), option.key


def test_presets_set_only_declared_options_with_valid_values() -> None:
    schema = printed_schema("streams")
    options = {o.key: o for o in declared(StreamSpec)}
    for preset, values in PRESETS.items():
        for key, value in values.items():
            assert key in options, f"preset {preset} sets {key!r}, which is not a stream option"
            assert _valid(schema, options[key], value), (preset, key)


def test_yaml_values_reach_the_nats_configs_converted() -> None:
    config = load_or_raise(ROOT, {})
    orders = config.streams["ORDERS"].to_nats()
    assert orders.name == "ORDERS"
    assert orders.subjects == ["orders.>", "payment.>", "inventory.>"]
    assert (orders.max_bytes, orders.max_msg_size) == (2**30, 64 * 2**10)  # 1GiB, 64KiB
    assert (orders.max_age, orders.duplicate_window) == (30 * 86400, 120)  # 30d, 2m
    assert orders.retention == api.RetentionPolicy.LIMITS and orders.storage == api.StorageType.FILE
    assert orders.num_replicas == 1
    assert orders.allow_msg_schedules is None and orders.allow_msg_ttl is None  # off: not sent to older servers
    timers = config.streams["TIMERS"].to_nats()
    assert timers.retention == api.RetentionPolicy.WORK_QUEUE  # from preset work_queue
    assert timers.allow_msg_schedules is True
    assert timers.allow_rollup_hdrs is True  # the server forces it on with schedules; asking for it keeps us in step
    audit = config.streams["AUDIT"].to_nats()
    assert (audit.deny_delete, audit.max_age) == (True, 90 * 86400)  # preset log
    inventory = config.buckets["INVENTORY"].to_nats()
    assert (inventory.bucket, inventory.history, inventory.direct, inventory.ttl) == ("INVENTORY", 1, True, 0)
    assert config.buckets["INVENTORY"].cache == 4096  # flowrun's own option: no nats-py counterpart


def test_a_bad_value_of_a_declared_option_is_a_problem_at_its_line(config_copy: Path) -> None:
    streams = config_copy / "streams.yaml"
    streams.write_text(streams.read_text().replace("    max_age: 7d\n", "    max_age: 7d\n    allow_msg_ttl: maybe\n"))
    config, problems = load(config_copy, {})
    assert config is None
    [problem] = problems
    line = next(i for i, text in enumerate(streams.read_text().splitlines(), 1) if "allow_msg_ttl: maybe" in text)
    assert (problem.line, problem.path) == (line, "streams.TIMERS.allow_msg_ttl")
    assert "'maybe' is not of type 'boolean'" in problem.message
