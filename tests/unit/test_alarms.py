"""Grouped alarm schedules: one message wakes many instances, never before any instance's own alarm."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from runner.engine import alarms
from runner.engine.outputs import Publish

TIMERS = "flowrun.timers.order"


def test_one_instance_keeps_its_own_subject_so_re_arming_replaces_it() -> None:
    p = alarms.schedule(TIMERS, ["A"], 1000.5)
    assert p.subject == f"{TIMERS}.at.A" and p.data == {"alarm": 1000.5, "keys": ["A"]}
    assert p.headers == {"Nats-Schedule": "@at 1970-01-01T00:16:40.500Z", "Nats-Schedule-Target": f"{TIMERS}.fire"}


def test_merge_wakes_every_key_at_the_latest_of_their_alarms() -> None:
    merged = alarms.merge([alarms.schedule(TIMERS, [k], 1000.0 + i) for i, k in enumerate("CAB")])
    [group] = merged
    assert group.data == {"alarm": 1002.0, "keys": ["A", "B", "C"]}
    assert group.subject.startswith(f"{TIMERS}.at.g") and group.headers is not None
    assert group.headers["Nats-Schedule-Target"] == f"{TIMERS}.fire"


def test_the_same_group_has_the_same_id_so_a_republish_is_deduplicated() -> None:
    first = alarms.merge([alarms.schedule(TIMERS, [k], 5.0) for k in ("A", "B")])
    second = alarms.merge([alarms.schedule(TIMERS, [k], 5.0) for k in ("B", "A")])
    assert [(p.subject, p.msg_id) for p in first] == [(p.subject, p.msg_id) for p in second]
    other = alarms.merge([alarms.schedule(TIMERS, [k], 6.0) for k in ("A", "B")])
    assert other[0].msg_id != first[0].msg_id


def test_merge_keeps_sagas_apart_and_bounds_a_group() -> None:
    many = [alarms.schedule(TIMERS, [f"k{i:04d}"], 1.0) for i in range(alarms.MAX_KEYS + 10)]
    other = alarms.schedule("flowrun.timers.trip", ["T"], 2.0)
    merged = alarms.merge([*many, other])
    sizes = sorted(len(p.data["keys"]) for p in merged)
    assert sizes == [1, 10, alarms.MAX_KEYS]
    assert {p.headers["Nats-Schedule-Target"] for p in merged if p.headers} == {
        f"{TIMERS}.fire",
        "flowrun.timers.trip.fire",
    }


def test_a_schedule_stored_before_grouping_still_names_its_instance() -> None:
    assert alarms.keys_of({"orderId": "A", "alarm": 3}, "orderId") == (["A"], 3.0)
    assert alarms.keys_of({"keys": ["A", "B"], "alarm": 3.5}, "orderId") == (["A", "B"], 3.5)
    with pytest.raises(ValueError):
        alarms.keys_of({"keys": "A", "alarm": 1}, "orderId")


@pytest.mark.parametrize(
    "body",
    [
        {"keys": ["ok", "a.b"], "alarm": 1},  # a subject token: would reach another key's subject
        {"keys": ["*"], "alarm": 1},
        {"keys": [], "alarm": 1},
        {"keys": [f"k{i}" for i in range(alarms.MAX_KEYS + 1)], "alarm": 1},  # more than any group holds
        {"orderId": "a b", "alarm": 1},
    ],
)
def test_a_forged_or_malformed_schedule_names_no_instance(body: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        alarms.keys_of(body, "orderId")


async def test_alarms_set_in_one_round_share_a_schedule_and_no_group_waits_for_another() -> None:
    sent: list[Publish] = []
    release = asyncio.Event()

    async def send(p: Publish) -> asyncio.Future[Any]:
        sent.append(p)
        return asyncio.ensure_future(release.wait())  # acknowledged once released

    groups = alarms.AlarmGroups(send)
    first = [asyncio.create_task(groups.arm([alarms.schedule(TIMERS, [k], 1.0)])) for k in "AB"]  # one round
    await asyncio.sleep(0.01)
    later = [asyncio.create_task(groups.arm([alarms.schedule(TIMERS, [k], 1.0)])) for k in "CDE"]
    await asyncio.sleep(0.01)
    assert [p.data["keys"] for p in sent] == [["A", "B"], ["C", "D", "E"]], "sent before the first is acknowledged"
    assert not any(t.done() for t in first + later), "each caller waits for its schedule's acknowledgement"
    release.set()
    await asyncio.wait_for(asyncio.gather(*first, *later), 2)


async def test_a_failed_group_fails_every_caller_in_it() -> None:
    async def send(p: Publish) -> asyncio.Future[Any]:
        raise ConnectionError("no JetStream")

    groups = alarms.AlarmGroups(send)
    calls = [groups.arm([alarms.schedule(TIMERS, [k], 1.0)]) for k in "AB"]
    results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 2)
    assert all(isinstance(r, ConnectionError) for r in results)
