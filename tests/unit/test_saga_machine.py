"""The saga interpreter on the shipped order saga: states, what it publishes, compensation, timers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from runner.config.loader import load_or_raise
from runner.engine.saga import Decision, Publish, SagaMachine, public_view
from runner.handler import OutOfOrder
from tests.conftest import ROOT

ORDER = "ORD-1"
CREATED = {"orderId": ORDER, "customerId": "CUST123", "total": "1059.97", "items": [{"productId": "LAPTOP-001"}]}
TIMERS = "flowrun.timers.order"


@pytest.fixture(scope="module")
def machine() -> SagaMachine:
    config = load_or_raise(ROOT, {})
    return SagaMachine(config.sagas["order"])


class Order:
    """Drives one instance through the machine, keeping the record like the KV bucket would."""

    def __init__(self, machine: SagaMachine):
        self.m = machine
        self.record: dict[str, Any] | None = None
        self.n = 0

    def event(self, subject: str, event_id: str | None = None, **data: Any) -> Decision:
        self.n += 1
        payload = CREATED if subject == "orders.created" else {"orderId": ORDER, **data}
        decision = self.m.apply(self.record, subject, payload, event_id or f"ev-{self.n}")
        if decision.changed:
            self.record = decision.record
        return decision

    def timeout(self, state: str | None = None, entered: int | None = None) -> Decision | None:
        assert self.record is not None
        decision = self.m.on_timeout(
            self.record, state or self.record["state"], self.record["entered"] if entered is None else entered
        )
        if decision is not None:
            self.record = decision.record
        return decision

    @property
    def state(self) -> str:
        assert self.record is not None
        return self.record["state"]


def is_timer(p: Publish) -> bool:
    return p.subject == TIMERS or p.subject.startswith(TIMERS + ".")


def non_timers(publishes: list[Publish]) -> list[tuple[str, str]]:
    return [(p.subject, p.msg_id) for p in publishes if not is_timer(p)]


def timers(publishes: list[Publish]) -> list[Publish]:
    return [p for p in publishes if is_timer(p)]


def at_awaiting_payment(machine: SagaMachine) -> Order:
    order = Order(machine)
    order.event("orders.created")
    order.event("orders.inventory.reserved")
    assert order.state == "awaiting_payment"
    return order


# --- the happy path ---


def test_created_starts_pending_and_arms_the_one_alarm(machine: SagaMachine) -> None:
    order = Order(machine)
    before = time.time()
    decision = order.event("orders.created")
    assert order.state == "pending"
    assert order.record is not None and order.record["data"] == CREATED
    assert decision.changed
    assert non_timers(decision.publishes) == []
    [alarm] = timers(decision.publishes)
    assert alarm.subject == f"{TIMERS}.at.{ORDER}"
    assert alarm.headers is not None and alarm.headers["Nats-Schedule-Target"] == f"{TIMERS}.fire"
    assert alarm.headers["Nats-Schedule"].startswith("@at 20")
    assert alarm.data["keys"] == [ORDER]
    # armed at the shortest timeout of the saga (PAYMENT_TIMEOUT, 30s), so no later state re-arms it
    assert before + 30 <= alarm.data["alarm"] <= time.time() + 30
    deadline = order.record["deadline"]
    assert (deadline["state"], deadline["entered"]) == ("pending", 1)
    assert before + 60 <= deadline["due"] <= time.time() + 60  # INVENTORY_TIMEOUT default 60s
    assert machine.timer_for(order.record) == (60.0, "pending", 1)


def test_happy_path_states_and_publishes(machine: SagaMachine) -> None:
    order = Order(machine)
    order.event("orders.created")

    reserved = order.event("orders.inventory.reserved")
    assert order.state == "awaiting_payment"
    assert non_timers(reserved.publishes) == [("orders.payment.requested", f"{ORDER}.orders.payment.requested")]
    requested = reserved.publishes[0]
    # shaped by its `with:` picks: the key, and what payment needs from the start payload (no items)
    assert requested.data == {"orderId": ORDER, "customerId": "CUST123", "total": "1059.97"}
    assert timers(reserved.publishes) == []  # the pending alarm fires before the new deadline: no re-arm
    assert order.record is not None and order.record["deadline"]["state"] == "awaiting_payment"
    assert order.record["steps"] == ["inventory"]

    completed = order.event("orders.payment.completed")
    assert order.state == "completed"
    assert completed.publishes == []  # terminal: nothing to do, no timer
    assert order.record["steps"] == ["inventory", "payment"]
    assert order.record["entered"] == 3
    assert order.record["reason"] is None
    assert machine.timer_for(order.record) is None
    assert machine.on_alarm(order.record) is None  # the alarm, when it fires, finds nothing to do


def test_history_is_ordered_and_links_outputs_to_their_cause(machine: SagaMachine) -> None:
    order = Order(machine)
    order.event("orders.created", "e-created")
    order.event("orders.inventory.reserved", "e-reserved")
    order.event("orders.payment.completed", "e-paid")
    assert order.record is not None
    history = order.record["history"]
    assert [h["subject"] for h in history] == [
        "orders.created",
        "orders.inventory.reserved",
        "orders.payment.requested",
        "orders.payment.completed",
    ]
    assert [h.get("id") for h in history] == ["e-created", "e-reserved", None, "e-paid"]
    assert history[2]["cause"] == "e-reserved"
    assert history[2]["msg_id"] == f"{ORDER}.orders.payment.requested"
    times = [h["time"] for h in history]
    assert times == sorted(times)


def test_apply_does_not_modify_the_record_it_is_given(machine: SagaMachine) -> None:
    order = Order(machine)
    order.event("orders.created")
    assert order.record is not None
    snapshot = {k: (list(v) if isinstance(v, list) else v) for k, v in order.record.items()}
    machine.apply(order.record, "orders.inventory.reserved", {"orderId": ORDER}, "ev-x")
    assert order.record == snapshot  # a KV compare-and-set retry re-applies to the stored value


# --- duplicates and unknown instances ---


def test_duplicate_event_changes_nothing_and_republishes_what_it_caused(machine: SagaMachine) -> None:
    order = Order(machine)
    order.event("orders.created", "e-created")
    first = order.event("orders.inventory.reserved", "e-reserved")
    stored = order.record

    again = order.event("orders.inventory.reserved", "e-reserved")

    assert again.changed is False
    assert again.note == "duplicate"
    assert order.record is stored
    assert non_timers(again.publishes) == non_timers(first.publishes)
    # a redelivery re-publishes the instance's alarm, unchanged: the original deadline stands
    [alarm_again] = timers(again.publishes)
    assert alarm_again.subject == f"{TIMERS}.at.{ORDER}"
    assert alarm_again.data["alarm"] == stored["alarm"]


def test_duplicate_start_event_changes_nothing(machine: SagaMachine) -> None:
    order = Order(machine)
    first = order.event("orders.created", "e-created")
    again = order.event("orders.created", "e-created")
    assert again.changed is False
    assert order.state == "pending"
    assert non_timers(again.publishes) == []
    [alarm], [alarm_again] = timers(first.publishes), timers(again.publishes)
    assert alarm_again.msg_id == alarm.msg_id
    assert alarm_again.data["alarm"] == alarm.data["alarm"]


def test_unknown_instance_for_a_non_start_event_is_held_back_not_poison(machine: SagaMachine) -> None:
    # Its own start event may still be on its way (retrying through an election): out of order, not fatal.
    with pytest.raises(OutOfOrder, match="ORD-404"):
        machine.apply(None, "orders.inventory.reserved", {"orderId": "ORD-404"}, "ev-1")


def test_event_ignored_in_a_state_is_recorded(machine: SagaMachine) -> None:
    order = Order(machine)
    order.event("orders.created")
    decision = order.event("orders.payment.completed", "e-early")
    assert order.state == "pending"
    assert decision.publishes == []
    assert decision.note == "ignored"
    assert order.record is not None
    last = order.record["history"][-1]
    assert last["id"] == "e-early"
    assert "ignored" in last
    assert "orders.payment.completed" in last["ignored"] and "pending" in last["ignored"]


# --- failures and compensation ---


def test_inventory_failed_cancels_with_the_events_reason(machine: SagaMachine) -> None:
    order = Order(machine)
    order.event("orders.created")
    decision = order.event("orders.inventory.failed", reason="insufficient stock for LAPTOP-001")
    assert order.state == "cancelled"
    assert order.record is not None and order.record["reason"] == "insufficient stock for LAPTOP-001"
    assert decision.publishes == []  # nothing was reserved, nothing to undo


def test_payment_failed_releases_inventory_then_cancels(machine: SagaMachine) -> None:
    order = at_awaiting_payment(machine)

    failed = order.event("orders.payment.failed", reason="declined")
    assert order.state == "compensating"
    assert non_timers(failed.publishes) == [("orders.inventory.release", f"{ORDER}.orders.inventory.release")]
    assert failed.publishes[0].data["reason"] == "declined"
    assert timers(failed.publishes) == []  # the pending alarm fires first and re-arms if needed
    assert order.record is not None and order.record["pending"] == ["inventory"]
    assert machine.timer_for(order.record) == (120.0, "compensating", order.record["entered"])

    released = order.event("orders.inventory.released")
    assert order.state == "cancelled"
    assert released.publishes == []
    assert order.record["reason"] == "declined"
    assert order.record["pending"] == []
    assert order.record["compensated"] == ["inventory"]


def test_timeout_awaiting_payment_compensates_the_charge_in_flight_first(machine: SagaMachine) -> None:
    # The charge may have happened with its answer lost: refund it (idempotent; a tombstone if not
    # charged). The step in flight counts as the newest, so it is undone first; the stock waits.
    order = at_awaiting_payment(machine)
    decision = order.timeout()
    assert decision is not None
    assert order.state == "compensating"
    assert non_timers(decision.publishes) == [("orders.payment.refund", f"{ORDER}.orders.payment.refund")]
    assert order.record is not None and order.record["pending"] == ["payment"]
    assert order.record["queued"] == ["inventory"]
    assert order.record["reason"] == "payment timed out"
    assert order.record["history"][-2]["subject"] == "timeout"


def test_sequential_compensation_sends_each_undo_after_the_newer_one_is_confirmed(machine: SagaMachine) -> None:
    order = at_awaiting_payment(machine)
    order.timeout()
    assert order.record is not None
    entered = order.record["entered"]

    stray = order.event("orders.inventory.released")  # not asked for yet: changes nothing
    assert stray.note == "ignored" and non_timers(stray.publishes) == []
    assert order.record["pending"] == ["payment"]

    refunded = order.event("orders.payment.refunded")
    assert order.state == "compensating"
    assert non_timers(refunded.publishes) == [("orders.inventory.release", f"{ORDER}.orders.inventory.release")]
    assert order.record["pending"] == ["inventory"] and order.record["queued"] == []
    # the release gets its own compensation timeout, counted from when it is sent
    assert machine.timer_for(order.record) == (120.0, "compensating", entered + 1)

    order.event("orders.inventory.released")
    assert order.state == "cancelled"
    assert order.record["reason"] == "payment timed out"
    sent = [h["subject"] for h in order.record["history"] if "msg_id" in h]
    assert sent == ["orders.payment.requested", "orders.payment.refund", "orders.inventory.release"]


def test_compensation_timeout_names_the_undo_never_sent(machine: SagaMachine) -> None:
    order = at_awaiting_payment(machine)
    order.timeout()  # refund sent, release queued behind it
    decision = order.timeout()  # the refund is never confirmed
    assert decision is not None and order.state == "compensation_failed"
    assert order.record is not None
    assert order.record["reason"] == "compensation not confirmed in time: payment (so never sent: inventory)"


def test_timeout_in_pending_releases_a_reservation_whose_answer_may_be_lost(machine: SagaMachine) -> None:
    order = Order(machine)
    order.event("orders.created")
    decision = order.timeout()
    assert decision is not None
    assert order.state == "compensating"
    assert non_timers(decision.publishes) == [("orders.inventory.release", f"{ORDER}.orders.inventory.release")]
    order.event("orders.inventory.released")
    assert order.state == "cancelled"
    assert order.record is not None and order.record["reason"] == "inventory did not answer"


def test_stale_timer_is_ignored(machine: SagaMachine) -> None:
    order = at_awaiting_payment(machine)
    assert order.record is not None
    assert machine.on_timeout(order.record, "pending", 1) is None  # the pending timer fired too late
    assert machine.on_timeout(order.record, "awaiting_payment", 1) is None  # right state, old entry
    assert machine.on_alarm(None) is None
    assert order.state == "awaiting_payment"


def test_alarm_before_the_deadline_re_arms_for_it(machine: SagaMachine) -> None:
    order = at_awaiting_payment(machine)
    assert order.record is not None
    due = order.record["deadline"]["due"]
    decision = machine.on_alarm(order.record, now=due - 5)
    assert decision is not None and decision.record["state"] == "awaiting_payment"
    assert decision.record["alarm"] == due
    [alarm] = decision.publishes
    assert alarm.subject == f"{TIMERS}.at.{ORDER}" and alarm.data["alarm"] == due


def test_alarm_after_the_deadline_fires_the_timeout(machine: SagaMachine) -> None:
    order = at_awaiting_payment(machine)
    assert order.record is not None
    decision = machine.on_alarm(order.record, now=order.record["deadline"]["due"] + 0.1)
    assert decision is not None and decision.record["state"] == "compensating"
    assert decision.record["reason"] == "payment timed out"
    assert non_timers(decision.publishes) == [("orders.payment.refund", f"{ORDER}.orders.payment.refund")]
    # the spent alarm is replaced by one for the compensation deadline
    [alarm] = timers(decision.publishes)
    assert alarm.data["alarm"] > time.time()


def test_an_alarm_after_the_timeout_publishes_its_compensation_again(machine: SagaMachine) -> None:
    """The timeout was saved but publishing its refund failed: the redelivered alarm sends it again (same id)."""
    order = at_awaiting_payment(machine)
    assert order.record is not None
    timed_out = machine.on_alarm(order.record, now=order.record["deadline"]["due"] + 0.1)
    assert timed_out is not None
    again = machine.on_alarm(timed_out.record, now=order.record["deadline"]["due"] + 0.2)
    assert again is not None and again.record["state"] == "compensating"
    assert non_timers(again.publishes) == non_timers(timed_out.publishes)
    assert machine.on_alarm(order.record, now=order.record["deadline"]["due"] - 5) is not None  # not after others


def test_compensation_timeout_ends_in_compensation_failed(machine: SagaMachine) -> None:
    order = at_awaiting_payment(machine)
    order.event("orders.payment.failed")
    assert order.state == "compensating"
    decision = order.timeout()
    assert decision is not None
    assert order.state == "compensation_failed"
    assert decision.publishes == []
    assert order.record is not None and "inventory" in order.record["reason"]
    assert machine.timer_for(order.record) is None


def test_late_payment_after_cancel_needs_no_second_refund(machine: SagaMachine) -> None:
    order = at_awaiting_payment(machine)
    order.timeout()
    order.event("orders.payment.refunded")
    order.event("orders.inventory.released")
    assert order.state == "cancelled"

    late = order.event("orders.payment.completed")  # the refund already covers it (idempotent by order)
    assert order.state == "cancelled"
    assert non_timers(late.publishes) == []
    assert order.record is not None and order.record["compensated"] == ["payment", "inventory"]
    assert order.record["reason"] == "payment timed out"


def test_late_reservation_after_pending_timeout_moves_nothing_forward(machine: SagaMachine) -> None:
    order = Order(machine)
    order.event("orders.created")
    order.timeout()  # releasing: the release leaves a tombstone, so a late reserve undoes itself
    late = order.event("orders.inventory.reserved")
    assert order.state == "compensating"
    assert non_timers(late.publishes) == []
    assert "orders.payment.requested" not in {p.subject for p in late.publishes}
    order.event("orders.inventory.released")
    assert order.state == "cancelled"
    assert order.record is not None and order.record["reason"] == "inventory did not answer"


def test_late_payment_while_compensating_waits_for_the_refund(machine: SagaMachine) -> None:
    order = at_awaiting_payment(machine)
    order.timeout()  # compensating: refunding, the release queued
    late = order.event("orders.payment.completed", paymentId="PAY-late")
    assert order.state == "compensating"
    assert non_timers(late.publishes) == []  # the refund is already on its way
    order.event("orders.payment.refunded")
    assert order.state == "compensating"  # now the release
    order.event("orders.inventory.released")
    assert order.state == "cancelled"


def test_late_reservation_after_a_plain_cancel_is_released(machine: SagaMachine) -> None:
    # Without a timeout (inventory failed, say) a later success is still undone by the cancelled state.
    order = Order(machine)
    order.event("orders.created")
    order.event("orders.inventory.failed")
    assert order.state == "cancelled"
    late = order.event("orders.inventory.reserved", "e-late")
    assert order.state == "compensating"
    assert non_timers(late.publishes) == [("orders.inventory.release", f"{ORDER}.orders.inventory.release")]


def test_event_after_compensation_failed_is_ignored(machine: SagaMachine) -> None:
    order = at_awaiting_payment(machine)
    order.event("orders.payment.failed")
    order.timeout()
    decision = order.event("orders.inventory.released")
    assert order.state == "compensation_failed"
    assert decision.note == "ignored"


def test_undeclared_compensation_failed_state_is_a_validation_error(config_copy) -> None:
    from runner.config.loader import load

    saga = config_copy / "flows" / "saga.yaml"
    saga.write_text(saga.read_text().replace("      compensation_failed:\n        terminal: true\n", ""))
    config, problems = load(config_copy, {})
    assert config is None
    assert any("failed_state 'compensation_failed' must be declared as a terminal state" in str(p) for p in problems)


# --- data flow: what instances gather, what they emit ---


def edited_machine(project: Path, *edits: tuple[str, str]) -> SagaMachine:
    """The order saga of a config copy with text replacements in flows/saga.yaml."""
    saga = project / "flows" / "saga.yaml"
    text = saga.read_text()
    for old, new in edits:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    saga.write_text(text)
    return SagaMachine(load_or_raise(project, {}).sagas["order"])


def test_a_steps_output_is_gathered_and_shown(machine: SagaMachine) -> None:
    order = at_awaiting_payment(machine)
    order.event("orders.payment.completed", amount="1059.97", paymentId="PAY-42")
    assert order.state == "completed"
    assert order.record is not None and order.record["gathered"] == {"paymentId": "PAY-42"}  # keep: picks only it
    view = public_view(order.record, "orderId")
    assert view["paymentId"] == "PAY-42" and view["total"] == "1059.97" and view["status"] == "completed"


def test_a_field_the_event_lacks_is_not_gathered(machine: SagaMachine) -> None:
    order = at_awaiting_payment(machine)
    order.event("orders.payment.completed", amount="1059.97")
    assert order.record is not None and order.record["gathered"] == {}


def test_a_compensation_picks_the_output_of_the_step_it_undoes(config_copy: Path) -> None:
    m = edited_machine(
        config_copy,
        (
            "payment: {compensate: orders.payment.refund,",
            "payment: {compensate: {subject: orders.payment.refund, with: {paymentId: gathered.paymentId,"
            " why: reason, customer: data.customerId}},",
        ),
    )
    order = at_awaiting_payment(m)
    order.event("orders.payment.failed", reason="card expired")  # compensating: releasing the stock
    # a charge that succeeds after all (a gateway retry) arrives while the stock is being released: undone
    # next, with the payment id it carries
    late = order.event("orders.payment.completed", paymentId="PAY-7")
    assert non_timers(late.publishes) == [] and order.state == "compensating"
    released = order.event("orders.inventory.released")
    [refund] = [p for p in released.publishes if not is_timer(p)]
    assert refund.subject == "orders.payment.refund"
    assert refund.data == {"orderId": ORDER, "paymentId": "PAY-7", "why": "card expired", "customer": "CUST123"}
    order.event("orders.payment.refunded")
    assert order.state == "cancelled"


def test_a_pick_of_something_never_gathered_is_left_out(config_copy: Path) -> None:
    m = edited_machine(
        config_copy,
        (
            "payment: {compensate: orders.payment.refund,",
            "payment: {compensate: {subject: orders.payment.refund, with: {paymentId: gathered.paymentId}},",
        ),
    )
    order = at_awaiting_payment(m)
    decision = order.timeout()  # the charge's answer was lost: no payment id to send with the refund
    assert decision is not None
    [refund] = [p for p in decision.publishes if not is_timer(p)]
    assert refund.data == {"orderId": ORDER}


def test_start_emits_a_command_with_the_new_instance(config_copy: Path) -> None:
    m = edited_machine(
        config_copy,
        (
            "start: {on: orders.created, state: pending}",
            "start: {on: orders.created, state: pending,"
            " emit: [{subject: orders.fraud.check, with: {customerId: data.customerId, total: data.total}}]}",
        ),
    )
    order = Order(m)
    first = order.event("orders.created", "e-created")
    assert non_timers(first.publishes) == [("orders.fraud.check", f"{ORDER}.orders.fraud.check")]
    [check] = [p for p in first.publishes if not is_timer(p)]
    assert check.data == {"orderId": ORDER, "customerId": "CUST123", "total": "1059.97"}
    assert len(timers(first.publishes)) == 1
    again = order.event("orders.created", "e-created")  # a redelivery publishes it again (deduplicated by id)
    assert non_timers(again.publishes) == non_timers(first.publishes)

    # An instance the API created holds its start command until the start event is consumed.
    record = m.start("ORD-2", {**CREATED, "orderId": "ORD-2"}, "e-api")
    consumed = m.apply(record, "orders.created", {**CREATED, "orderId": "ORD-2"}, "e-api")
    assert [p.subject for p in consumed.publishes if not is_timer(p)] == ["orders.fraud.check"]


def test_parallel_compensation_sends_every_undo_at_once(config_copy: Path) -> None:
    m = edited_machine(config_copy, ("      failed_state: compensation_failed\n", "      order: parallel\n"))
    order = at_awaiting_payment(m)
    decision = order.timeout()
    assert decision is not None
    assert non_timers(decision.publishes) == [
        ("orders.payment.refund", f"{ORDER}.orders.payment.refund"),
        ("orders.inventory.release", f"{ORDER}.orders.inventory.release"),
    ]
    assert order.record is not None and order.record["pending"] == ["payment", "inventory"]
    order.event("orders.inventory.released")  # confirmations in any order
    assert order.state == "compensating"
    order.event("orders.payment.refunded")
    assert order.state == "cancelled"


# --- a start event the saga's consumer rejected ---


def api_instance(machine: SagaMachine, key: str = ORDER) -> dict[str, Any]:
    """The record the API writes before it publishes the start event `e-start`."""
    return machine.start(key, {**CREATED, "orderId": key}, "e-start")


def test_a_rejected_start_ends_the_instance_failed_with_the_reason(machine: SagaMachine) -> None:
    record = api_instance(machine)
    decision = machine.on_start_rejected(record, "e-start", "schema violation at total: '1.234' does not match")
    assert decision is not None
    # the reservation it awaited may have been made by a consumer that accepted the event: released first
    assert decision.record["state"] == "compensating"
    assert non_timers(decision.publishes) == [("orders.inventory.release", f"{ORDER}.orders.inventory.release")]
    released = machine.apply(decision.record, "orders.inventory.released", {"orderId": ORDER}, "e-released")
    assert released.record["state"] == "failed"
    assert released.record["reason"] == "start rejected: schema violation at total: '1.234' does not match"
    assert "failed" in machine.terminal and machine.timer_for(released.record) is None
    assert [h["subject"] for h in released.record["history"]] == [
        "orders.created",
        "rejected",
        "orders.inventory.release",
        "orders.inventory.released",
    ]


def test_a_rejection_leaves_other_starts_and_running_instances_alone(machine: SagaMachine) -> None:
    record = api_instance(machine)
    assert machine.on_start_rejected(record, "e-other-attempt", "bad") is None
    assert machine.on_start_rejected(None, "e-start", "bad") is None
    moved_on = machine.apply(record, "orders.inventory.reserved", {"orderId": ORDER}, "e-reserved").record
    assert machine.on_start_rejected(moved_on, "e-start", "bad") is None
