"""Saga versions without a server: a definition's JSON round trip, its content hash, picking an instance's machine."""

from __future__ import annotations

import dataclasses
import os

import pytest

from runner import codec
from runner.config import saga_json
from runner.config.loader import load_or_raise
from runner.config.model import SagaSpec
from runner.engine.saga import SagaMachine
from runner.engine.version_census import stranded_subjects
from runner.engine.versions import SagaVersions, UnknownVersion, VersionNotLoaded
from runner.errors import FatalError
from tests.conftest import ROOT

ORDER = load_or_raise(ROOT, dict(os.environ)).sagas["order"]
TRIP = load_or_raise(ROOT / "examples" / "travel", dict(os.environ)).sagas["trip"]


@pytest.mark.parametrize("spec", [ORDER, TRIP], ids=["order", "trip"])
def test_a_definition_survives_json_exactly(spec: SagaSpec) -> None:
    stored = codec.dumps(saga_json.to_json(spec))  # what the definitions bucket holds
    back = saga_json.from_json(codec.loads(stored))
    assert back == spec
    assert saga_json.version(back) == saga_json.version(spec)


def test_nested_values_come_back_as_the_model_types() -> None:
    back = saga_json.from_json(codec.loads(codec.dumps(saga_json.to_json(ORDER))))
    transition = back.states["pending"].on["orders.inventory.reserved"]
    assert isinstance(transition.emit, tuple)  # not a JSON list
    assert transition.emit[0].fields == {
        "orderId": ("key",),
        "customerId": ("data", "customerId"),
        "total": ("data", "total"),
    }
    assert isinstance(back.states["pending"].timeout.after, float)


def test_the_version_is_the_content_not_the_layout() -> None:
    reordered = dataclasses.replace(ORDER, states=dict(reversed(list(ORDER.states.items()))))
    assert saga_json.version(reordered) == saga_json.version(ORDER)
    assert len(saga_json.version(ORDER)) == saga_json.VERSION_LENGTH

    renamed = rename_state(ORDER, "awaiting_payment", "charging")
    assert saga_json.version(renamed) != saga_json.version(ORDER)
    slower = dataclasses.replace(ORDER, compensation_timeout=ORDER.compensation_timeout + 1)
    assert saga_json.version(slower) != saga_json.version(ORDER)


def test_a_value_that_is_no_definition_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown field"):
        saga_json.from_json({**saga_json.to_json(ORDER), "surprise": 1})
    with pytest.raises(ValueError):
        saga_json.from_json({"name": "order"})  # required fields missing


async def test_each_instance_is_applied_by_the_machine_of_its_version() -> None:
    old, new = SagaMachine(ORDER), SagaMachine(rename_state(ORDER, "awaiting_payment", "charging"))
    loads: list[tuple[str, str]] = []

    async def load(saga: str, version: str) -> SagaSpec | None:
        loads.append((saga, version))
        return ORDER if version == old.version else None

    versions = SagaVersions(new, load)
    fresh = new.start("o1", {"orderId": "o1"}, "e1")
    assert fresh["version"] == new.version and versions.machine_for(fresh) is new
    assert versions.machine_for(None) is new  # a start
    unversioned = {k: v for k, v in fresh.items() if k != "version"}  # stored before versions existed
    assert versions.machine_for(unversioned) is new

    waiting = {**old.start("o2", {"orderId": "o2"}, "e2"), "state": "awaiting_payment"}
    with pytest.raises(VersionNotLoaded):
        versions.machine_for(waiting)

    def complete() -> str:
        decision = versions.machine_for(waiting).apply(waiting, "orders.payment.completed", {"orderId": "o2"}, "e3")
        return decision.record["state"]

    async def mutate() -> str:
        return complete()

    assert await versions.run(mutate) == "completed"  # the new definition has no awaiting_payment: it would ignore it
    assert await versions.run(mutate) == "completed"
    assert loads == [("order", old.version)]  # read once, then kept

    lost = {**waiting, "version": "0123456789ab"}
    with pytest.raises(UnknownVersion, match="not stored") as raised:
        await versions.run(lambda: _pick(versions, lost))
    assert isinstance(raised.value, FatalError)  # dead-lettered, not retried forever


async def _pick(versions: SagaVersions, record: dict) -> SagaMachine:
    return versions.machine_for(record)


def test_events_an_older_version_waits_for_and_the_current_one_dropped_are_named() -> None:
    waiting = ORDER.states["awaiting_payment"]
    on = {s: t for s, t in waiting.on.items() if s != "orders.payment.failed"}
    current = dataclasses.replace(
        ORDER, states={**ORDER.states, "awaiting_payment": dataclasses.replace(waiting, on=on)}
    )
    assert stranded_subjects(ORDER, current) == ["orders.payment.failed"]
    assert stranded_subjects(current, ORDER) == []  # the newer one consumes everything the older did
    assert stranded_subjects(ORDER, rename_state(ORDER, "awaiting_payment", "charging")) == []


def rename_state(spec: SagaSpec, old: str, new: str) -> SagaSpec:
    """The saga with state `old` called `new`, every goto included."""

    def goto(name: str | None) -> str | None:
        return new if name == old else name

    states = {}
    for name, state in spec.states.items():
        on = {subject: dataclasses.replace(t, goto=goto(t.goto)) for subject, t in state.on.items()}
        timeout = state.timeout and dataclasses.replace(state.timeout, goto=goto(state.timeout.goto))
        states[goto(name)] = dataclasses.replace(state, name=goto(name), on=on, timeout=timeout)
    return dataclasses.replace(spec, states=states, start_state=goto(spec.start_state))
