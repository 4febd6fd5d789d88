"""Every declared stream and bucket option against a real nats-server: changed in the YAML, provisioning updates it
in place or reports drift, as its declaration says, and the server agrees. The cases come from the declarations
(runner/config/streams.py), so an option added there is exercised here without touching this file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats.js.errors
import pytest
import yaml
from nats.js import JetStreamContext

from runner.config.loader import load_or_raise
from runner.config.model import Config
from runner.config.options import ENABLE_ONLY, UPDATABLE, Option, declared
from runner.config.streams import BucketSpec, StreamSpec
from runner.jetstream.drift import differences, norm
from runner.jetstream.provision import Change, Plan, plan_and_apply

pytestmark = pytest.mark.asyncio(loop_scope="session")


def changed(option: Option, value: Any) -> Any:
    """Another valid YAML value for the option, read from its schema fragment."""
    schema = option.kind.schema
    if "enum" in schema:
        return next(v for v in schema["enum"] if v != value)
    ref = schema.get("$ref", "")
    if ref.endswith("/duration"):
        return "1h"
    if ref.endswith("/size"):
        return "2KiB"
    kind = schema.get("type")
    if kind == "boolean":
        return not value
    if kind == "integer":
        return max(value, schema.get("minimum", 0)) + 4
    if kind == "string":
        return "changed"
    if kind == "array":  # subjects
        return [*value, value[0].replace(".>", "_more.>")]
    raise AssertionError(f"no test value for option {option.key!r}: teach changed() its schema")


@dataclass(frozen=True)
class Case:
    section: str  # streams | kv
    name: str
    option: Option
    before: dict[str, Any]
    after: dict[str, Any]

    @property
    def what(self) -> str:
        return f"stream {self.name}" if self.section == "streams" else f"kv {self.name}"

    @property
    def expected(self) -> str:
        """update or drift, as the option's declaration says."""
        if self.option.change == UPDATABLE:
            return "update"
        if self.option.change == ENABLE_ONLY:
            return "update" if self.after[self.option.key] else "drift"
        return "drift"


def cases() -> list[Case]:
    out = []
    for section, spec in (("streams", StreamSpec), ("kv", BucketSpec)):
        for option in declared(spec):
            if option.server_attr is None or option.key == "replicas":  # flowrun's own; replicas: test_replicas.py
                continue
            starts = {"_ON": False, "_OFF": True} if option.change == ENABLE_ONLY else {"": None}
            for suffix, start in starts.items():
                name = ("" if section == "streams" else "B_") + option.key.upper() + suffix
                before: dict[str, Any] = {"subjects": [f"{name.lower()}.>"]} if section == "streams" else {}
                if start is not None:
                    before[option.key] = start
                current = before.get(option.key, option.default)
                out.append(Case(section, name, option, before, {**before, option.key: changed(option, current)}))
    return out


CASES = cases()


def write_config(root: Path, which: str) -> Config:
    """One stream or bucket per case, all as before, or each with its option changed (`after`)."""
    entries: dict[str, dict[str, Any]] = {"streams": {}, "kv": {}}
    for case in CASES:
        entries[case.section][case.name] = getattr(case, which)
    (root / "flows").mkdir(parents=True, exist_ok=True)
    (root / "streams.yaml").write_text(yaml.safe_dump({"streams": entries["streams"]}))
    (root / "flows" / "kv.yaml").write_text(yaml.safe_dump({"kv": entries["kv"]}))
    return load_or_raise(root, {})


def changes_of(plan: Plan, what: str) -> list[Change]:
    return [c for c in plan.changes if c.what == what]


def spec_of(config: Config, case: Case) -> StreamSpec | BucketSpec:
    return config.streams[case.name] if case.section == "streams" else config.buckets[case.name]


async def server_config(js: JetStreamContext, case: Case) -> Any:
    return (await js.stream_info(case.name if case.section == "streams" else f"KV_{case.name}")).config


async def test_each_option_changed_in_yaml_is_updated_or_reported_as_drift(
    js: JetStreamContext, tmp_path: Path
) -> None:
    assert {c.option.key for c in CASES} >= {"max_age", "storage", "deny_delete", "history", "ttl", "allow_msg_ttl"}
    before, after = write_config(tmp_path / "before", "before"), write_config(tmp_path / "after", "after")
    created = await plan_and_apply(js, before)
    assert {c.kind for c in created.changes} == {"create"}

    plan = await plan_and_apply(js, after)

    for case in CASES:
        [change] = changes_of(plan, case.what)
        assert change.kind == case.expected and re.search(rf"(^|, ){case.option.key} ", change.detail), str(change)
        server = await server_config(js, case)
        holds = spec_of(after if case.expected == "update" else before, case)
        assert differences(holds, server) == [], f"{case.what}: the server does not hold the {case.expected} value"
        if case.expected == "drift":
            assert "not applied" in change.detail

    again = await plan_and_apply(js, after)  # converged: updates are not repeated, drift is still reported
    assert {c.what: c.kind for c in again.changes} == {c.what: c.expected.replace("update", "ok") for c in CASES}


async def test_option_mappings_land_on_the_server_attributes(js: JetStreamContext, tmp_path: Path) -> None:
    """Spot checks written out by hand, independent of the declarations: YAML key → what the server reports."""
    await plan_and_apply(js, write_config(tmp_path / "before", "before"))
    await plan_and_apply(js, write_config(tmp_path / "after", "after"))
    by_name = {c.name: c for c in CASES}
    assert (await server_config(js, by_name["ALLOW_ROLLUP"])).allow_rollup_hdrs is True
    assert (await server_config(js, by_name["MAX_AGE"])).max_age == 3600
    assert (await server_config(js, by_name["MAX_BYTES"])).max_bytes == 2048
    assert (await server_config(js, by_name["ALLOW_MSG_TTL_ON"])).allow_msg_ttl is True
    assert (await server_config(js, by_name["DENY_DELETE_OFF"])).deny_delete is True  # never switched off
    assert sorted((await server_config(js, by_name["SUBJECTS"])).subjects) == ["subjects.>", "subjects_more.>"]
    assert (await server_config(js, by_name["B_HISTORY"])).max_msgs_per_subject == 5
    assert (await server_config(js, by_name["B_TTL"])).max_age == 3600
    assert (await server_config(js, by_name["B_DESCRIPTION"])).description == "changed"
    assert norm((await server_config(js, by_name["B_STORAGE"])).storage) == "file"  # drift: kept


async def test_allow_msg_ttl_declared_once_works_from_yaml_to_the_server(js: JetStreamContext, tmp_path: Path) -> None:
    """The option added by declaration alone: the YAML turns it on, the server then honours a message's Nats-TTL
    header, and switching it off again is drift (JetStream cannot), with TTL messages still accepted."""
    root = tmp_path / "ttl"
    (root / "flows").mkdir(parents=True)
    streams = {"PLAIN": {"subjects": ["plain.>"]}, "EXPIRING": {"subjects": ["expiring.>"], "allow_msg_ttl": True}}
    (root / "streams.yaml").write_text(yaml.safe_dump({"streams": streams}))
    config = load_or_raise(root, {})
    assert (config.streams["PLAIN"].allow_msg_ttl, config.streams["EXPIRING"].allow_msg_ttl) == (False, True)

    await plan_and_apply(js, config)

    ack = await js.publish("expiring.x", b"{}", headers={"Nats-TTL": "1h"})
    assert ack.stream == "EXPIRING"
    with pytest.raises(nats.js.errors.BadRequestError, match="TTL is disabled"):
        await js.publish("plain.x", b"{}", headers={"Nats-TTL": "1h"})

    streams["EXPIRING"]["allow_msg_ttl"] = False
    (root / "streams.yaml").write_text(yaml.safe_dump({"streams": streams}))
    plan = await plan_and_apply(js, load_or_raise(root, {}))
    [change] = changes_of(plan, "stream EXPIRING")
    assert change.kind == "drift" and change.detail.startswith("allow_msg_ttl True → False")
    assert (await js.publish("expiring.y", b"{}", headers={"Nats-TTL": "1h"})).seq == 2
