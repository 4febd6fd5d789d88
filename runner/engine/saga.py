"""The saga interpreter: a pure function from (instance, event) to (new instance, what to publish).

Pure so it can run inside a KV compare-and-set: on a conflict the runner re-reads the instance and
simply applies the event again. Instance state is one JSON object per key:

    version (of the definition it started on), state, data (the start event's payload), gathered
    (step outputs kept by `keep:`), reason, steps (completed, in order), compensated (steps whose
    undo is sent or queued), pending (compensations sent, awaiting confirmation), queued
    (compensations not sent yet, next first), target (state after compensation), entered (a counter
    bumped on every state change), deadline (the current state's timeout), alarm (when the instance's
    one timer fires), history (every event in and out, oldest first; consumed ones carry their
    message id).

Compensation runs newest step first. Sequentially by default: a step's undo is sent only once the
undo of the step after it is confirmed, since a later step may stand on an earlier one (a shipment on
reserved stock). `compensation: {order: parallel}` sends them all at once, for independent steps.

Timers: each instance has one alarm, armed at `now + the shortest timeout in the saga`. Every later
deadline is at least that far away, so a transition never needs to re-arm. Alarms set together share
one JetStream message schedule (runner/engine/alarms.py). When the alarm fires, a deadline that has
passed fires its timeout; one still ahead re-arms the alarm for it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from runner.config import saga_json
from runner.config.model import REJECTED_STATE, Emit, SagaSpec, Transition
from runner.engine import alarms, picks
from runner.engine.outputs import Publish
from runner.engine.timestamps import iso
from runner.errors import OutOfOrder

COMPENSATING = "compensating"
PARALLEL = "parallel"
TIMEOUT_SUBJECT = "timeout"
REJECTED_SUBJECT = "rejected"
REASON_LIMIT = 500  # a rejection's reason quotes a validator's message: kept readable and bounded


@dataclass
class Decision:
    record: dict[str, Any]
    publishes: list[Publish] = field(default_factory=list)
    changed: bool = True
    note: str = ""


class SagaMachine:
    """Interprets one `SagaSpec`."""

    def __init__(self, spec: SagaSpec):
        self.spec = spec
        self.version = saga_json.version(spec)  # recorded in each instance it starts (runner/engine/versions.py)
        self.terminal = {s.name for s in spec.states.values() if s.terminal} | {
            spec.compensation_failed_state,
            REJECTED_STATE,
        }
        self.confirmations = {s.confirmed_by: s.name for s in spec.steps.values() if s.confirmed_by}
        timeouts = [s.timeout.after for s in spec.states.values() if s.timeout]
        if spec.steps:
            timeouts.append(spec.compensation_timeout)
        self.shortest = min(timeouts, default=0.0)

    # --- public entry points ---

    def start(self, key: str, data: dict[str, Any], event_id: str) -> dict[str, Any]:
        """A new instance for a start event. Its timer deadline is fixed now and its start commands are
        in its history: `apply` publishes both (so does a redelivery of the start event)."""
        record = {
            "key": key,
            "saga": self.spec.name,
            "version": self.version,
            "state": self.spec.start_state,
            "data": data,
            "gathered": {},
            "reason": None,
            "steps": [],
            "compensated": [],
            "pending": [],
            "queued": [],
            "target": None,
            "entered": 1,
            "created": time.time(),
            "updated": time.time(),
            "history": [self._entry(self.spec.start_on, data, event_id)],
        }
        for emit in self.spec.start_emit:
            self._publish(record, emit, event_id)
        self._arm(record)
        return record

    def apply(self, record: dict[str, Any] | None, subject: str, data: dict[str, Any], event_id: str) -> Decision:
        """The effect of one consumed event."""
        key = data[self.spec.key]
        if record is None:
            if subject != self.spec.start_on:
                raise OutOfOrder(
                    f"unknown {self.spec.name} instance {key!r}: {subject} arrived before {self.spec.start_on}"
                )
            record = self.start(key, data, event_id)
            return Decision(record, self._replay(record, event_id), note="started")
        if any(e.get("id") == event_id for e in record["history"]):
            # Seen before (a redelivery, possibly after a crash before publishing): publish again.
            return Decision(record, self._replay(record, event_id), changed=False, note="duplicate")
        record = self._copy(record)
        record["history"].append(self._entry(subject, data, event_id))
        if record["state"] == COMPENSATING:
            return self._while_compensating(record, subject, data, event_id)
        transition = self._on(record["state"], subject)
        if transition is None:
            record["history"][-1]["ignored"] = f"no transition on {subject} in state {record['state']}"
            return Decision(record, note="ignored")
        return self._transition(record, transition, data, event_id)

    def on_start_rejected(self, record: dict[str, Any] | None, event_id: str, reason: str) -> Decision | None:
        """The saga's consumer dead-lettered the start event `event_id` of an instance the API already
        created: end it in `failed` with the reason, rather than leave it waiting for nothing. Like a
        timeout, the step the start state awaits is undone first (another consumer of the event may
        have acted on it). None when the instance is not that start's, or has moved on."""
        if record is None or record["state"] != self.spec.start_state or record["entered"] != 1:
            return None
        if record["history"][0].get("id") != event_id:
            return None
        record = self._copy(record)
        # Its start commands were never sent (that happens when the start event is consumed): drop them.
        record["history"] = [e for e in record["history"] if e.get("cause") != event_id]
        reason = f"start rejected: {reason}"[:REASON_LIMIT]
        rejection = f"{record['key']}.{REJECTED_SUBJECT}"
        record["history"].append(self._entry(REJECTED_SUBJECT, {"state": record["state"], "reason": reason}, rejection))
        awaits = self.spec.states[record["state"]].awaits
        if awaits and awaits not in record["steps"]:
            record["steps"].append(awaits)
        return self._transition(record, Transition(goto=REJECTED_STATE, compensate=True, reason=reason), {}, rejection)

    def on_alarm(self, record: dict[str, Any] | None, now: float | None = None) -> Decision | None:
        """The instance's alarm fired. None when there is nothing to do (no deadline, or gone)."""
        if record is None:
            return None
        now = time.time() if now is None else now
        deadline = record.get("deadline")
        again = self._timeout_outputs(record)
        if not deadline or deadline["entered"] != record["entered"]:
            # The current state has no timeout: the alarm is spent.
            return Decision(record, again, changed=False, note="timeout outputs again") if again else None
        if deadline["due"] > now:  # not yet: fire again when it is due
            record = {**record, "alarm": deadline["due"]}
            return Decision(record, again + self.alarm(record), note="re-armed")
        # This alarm is spent: whatever state comes next arms a fresh one.
        return self.on_timeout({**record, "alarm": None}, deadline["state"], deadline["entered"])

    def on_timeout(self, record: dict[str, Any], state: str, entered: int) -> Decision | None:
        """The timeout of `state` has passed. None when the instance already left that state."""
        if record["state"] != state or record["entered"] != entered:
            return None
        record = self._copy(record)
        event_id = f"{record['key']}.timeout.{entered}"
        if state == COMPENSATING:
            reason = f"compensation not confirmed in time: {', '.join(record['pending'])}"
            if record["queued"]:
                reason += f" (so never sent: {', '.join(record['queued'])})"
            record["history"].append(self._entry(TIMEOUT_SUBJECT, {"state": state, "reason": reason}, event_id))
            record["reason"] = reason
            self._enter(record, self.spec.compensation_failed_state)
            return Decision(record, note="compensation failed")
        state_spec = self.spec.states[state]
        timeout = state_spec.timeout
        assert timeout is not None
        reason = timeout.reason or f"timed out in state {state}"
        record["history"].append(self._entry(TIMEOUT_SUBJECT, {"state": state, "reason": reason}, event_id))
        # The step this state waits on may have taken effect with its answer lost or late: undo it too
        # (compensations are idempotent, and one that finds nothing to undo leaves a tombstone).
        if timeout.compensate and state_spec.awaits and state_spec.awaits not in record["steps"]:
            record["steps"].append(state_spec.awaits)
        transition = Transition(goto=timeout.goto, compensate=timeout.compensate, reason=reason)
        return self._transition(record, transition, {}, event_id)

    def timer_for(self, record: dict[str, Any]) -> tuple[float, str, int] | None:
        """(seconds, state, entered) of the timeout armed in the instance's current state."""
        state = record["state"]
        if state == COMPENSATING:
            return self.spec.compensation_timeout, state, record["entered"]
        spec = self.spec.states.get(state)
        if spec and spec.timeout:
            return spec.timeout.after, state, record["entered"]
        return None

    # --- internals ---

    def _on(self, state: str, subject: str) -> Transition | None:
        spec = self.spec.states.get(state)  # the built-in states (failed) have no transitions
        return spec.on.get(subject) if spec else None

    def _transition(self, record: dict[str, Any], t: Transition, data: dict[str, Any], event_id: str) -> Decision:
        if t.reason or data.get("reason"):
            record["reason"] = t.reason or data.get("reason")
        if t.keep:
            record["gathered"] = {**record["gathered"], **picks.gathered(t.keep, data)}
        if t.completes and t.completes not in record["steps"]:
            record["steps"].append(t.completes)
        publishes = [self._publish(record, emit, event_id) for emit in t.emit]
        target = t.goto or record["state"]
        if t.compensate:
            todo = [s for s in reversed(record["steps"]) if s not in record["compensated"]]
            if todo:
                record["compensated"].extend(todo)
                record["target"] = target
                parallel = self.spec.compensation_order == PARALLEL
                record["pending"], record["queued"] = (todo, []) if parallel else (todo[:1], todo[1:])
                publishes += [self._undo(record, step, event_id) for step in record["pending"]]
                self._enter(record, COMPENSATING)
                return Decision(record, publishes + self._arm(record), note="compensating")
        if target != record["state"]:
            self._enter(record, target)
            publishes += self._arm(record)
        return Decision(record, publishes, note=f"-> {target}")

    def _while_compensating(
        self, record: dict[str, Any], subject: str, data: dict[str, Any], event_id: str
    ) -> Decision:
        step = self.confirmations.get(subject)
        if step in record["pending"]:
            record["pending"].remove(step)
            if record["pending"]:
                return Decision(record, note=f"{step} compensated")
            if record["queued"]:  # sequential: the next older step's turn, with its own time to confirm
                record["pending"] = [record["queued"].pop(0)]
                publishes = [self._undo(record, record["pending"][0], event_id)]
                self._enter(record, COMPENSATING)
                return Decision(record, publishes + self._arm(record), note=f"{step} compensated")
            target = record["target"]
            record["target"] = None
            self._enter(record, target)
            return Decision(record, self._arm(record), note=f"compensated -> {target}")
        # A late success while undoing (e.g. a charge after a timeout): undo it as the target would.
        later = self._on(record["target"], subject)
        if later and later.completes and later.compensate and later.completes not in record["compensated"]:
            step = later.completes
            if later.keep:  # its output (a payment id) may be what its undo needs
                record["gathered"] = {**record["gathered"], **picks.gathered(later.keep, data)}
            record["steps"].append(step)
            record["compensated"].append(step)
            if self.spec.compensation_order == PARALLEL:
                record["pending"].append(step)
                return Decision(record, [self._undo(record, step, event_id)], note="compensating late step")
            record["queued"].insert(0, step)  # the newest step: undone next, once the one in flight is confirmed
            return Decision(record, note="late step queued for compensation")
        record["history"][-1]["ignored"] = f"no transition on {subject} while compensating"
        return Decision(record, note="ignored")

    def _undo(self, record: dict[str, Any], step: str, cause: str) -> Publish:
        return self._publish(record, self.spec.steps[step].compensate, cause)

    def _enter(self, record: dict[str, Any], state: str) -> None:
        record["state"] = state
        record["entered"] += 1
        record["updated"] = time.time()

    def _arm(self, record: dict[str, Any]) -> list[Publish]:
        """Set the current state's deadline; publish an alarm only if none is pending before it."""
        timer = self.timer_for(record)
        if timer is None or not self.spec.timer_subject:
            record["deadline"] = None
            return []
        after, state, entered = timer
        now = time.time()
        due = now + after
        record["deadline"] = {"state": state, "entered": entered, "due": due}
        alarm = record.get("alarm")
        if alarm is not None and now < alarm <= due:
            return []  # the pending alarm fires first and re-arms for this deadline
        record["alarm"] = now + self.shortest
        return self.alarm(record)

    def alarm(self, record: dict[str, Any]) -> list[Publish]:
        """The schedule message of the instance's alarm (re-publishing it is harmless). The API publishes
        it with the instance it creates, so the instance times out even if its start is never consumed."""
        alarm = record.get("alarm")
        if alarm is None or not self.spec.timer_subject:
            return []
        return [alarms.schedule(self.spec.timer_subject, [record["key"]], alarm)]

    def _timeout_outputs(self, record: dict[str, Any]) -> list[Publish]:
        """What the timeout that last moved the instance published, to publish again (deduplicated by id):
        the alarm that applied it is redelivered if publishing failed after the instance was saved."""
        last = next((e for e in reversed(record["history"]) if "id" in e), None)
        if last is None or last["subject"] != TIMEOUT_SUBJECT:
            return []
        return self._outputs_of(record, last["id"])

    def _replay(self, record: dict[str, Any], event_id: str) -> list[Publish]:
        """A redelivered event's outputs again, with the alarm (its publish may not have happened)."""
        out = self._outputs_of(record, event_id)
        if record.get("startEvent") == event_id:
            return out  # the API's start event: published only once the API had stored the alarm
        return out + self.alarm(record)

    @staticmethod
    def _outputs_of(record: dict[str, Any], event_id: str) -> list[Publish]:
        return [
            Publish(e["subject"], e["data"], e["msg_id"])
            for e in record["history"]
            if e.get("cause") == event_id and "msg_id" in e
        ]

    def _publish(self, record: dict[str, Any], emit: Emit, cause: str) -> Publish:
        data = picks.payload(emit, record, self.spec.key)
        msg_id = f"{record['key']}.{emit.subject}"
        record["history"].append(
            {"subject": emit.subject, "time": time.time(), "data": data, "cause": cause, "msg_id": msg_id}
        )
        return Publish(emit.subject, data, msg_id)

    @staticmethod
    def _entry(subject: str, data: dict[str, Any], event_id: str) -> dict[str, Any]:
        return {"subject": subject, "time": time.time(), "data": data, "id": event_id}

    @staticmethod
    def _copy(record: dict[str, Any]) -> dict[str, Any]:
        out = dict(record)
        for k in ("steps", "compensated", "pending", "queued", "history"):
            out[k] = list(record.get(k, ()))  # instances stored before `queued` existed have none
        out["gathered"] = dict(record.get("gathered") or {})
        return out


def public_view(record: dict[str, Any], key_field: str) -> dict[str, Any]:
    """What GET of an instance returns: its key, the start payload, then what it gathered."""
    data = {**record["data"], **(record.get("gathered") or {})}
    view = {key_field: record["key"], **{k: v for k, v in data.items() if k != key_field}}
    view["status"] = record["state"]
    if record.get("reason"):
        view["reason"] = record["reason"]
    view["createdAt"] = iso(record["created"])
    view["updatedAt"] = iso(record["updated"])
    return view
