"""Retry delays (backoff, cap, jitter) and how failures are classified into retry or dead-letter."""

from __future__ import annotations

import itertools
import json
import random

import pytest

from runner.config.loader import load_or_raise
from runner.config.model import RetryPolicy
from runner.engine.retry import FATAL, Failure, classify
from runner.handler import FatalError, RetryableError
from tests.conftest import ROOT


def plain(**kw: object) -> RetryPolicy:
    return RetryPolicy(jitter="none", **kw)  # type: ignore[arg-type]


# --- delays ---


def test_exponential_doubles_from_the_initial_delay() -> None:
    policy = plain(backoff="exponential", initial_delay=1.0, multiplier=2.0, max_delay=60.0)
    assert [policy.delay(a) for a in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 8.0, 16.0]


def test_exponential_with_another_multiplier() -> None:
    policy = plain(backoff="exponential", initial_delay=0.1, multiplier=3.0, max_delay=60.0)
    assert [policy.delay(a) for a in (1, 2, 3)] == pytest.approx([0.1, 0.3, 0.9])


def test_fixed_is_always_the_initial_delay() -> None:
    policy = plain(backoff="fixed", initial_delay=2.5, multiplier=4.0)
    assert {policy.delay(a) for a in range(1, 10)} == {2.5}


def test_linear_grows_by_a_constant_step() -> None:
    policy = plain(backoff="linear", initial_delay=1.0, multiplier=2.0, max_delay=60.0)
    delays = [policy.delay(a) for a in (1, 2, 3, 4)]
    assert delays == [1.0, 2.0, 3.0, 4.0]
    assert len({b - a for a, b in itertools.pairwise(delays)}) == 1


def test_max_delay_caps_growing_backoffs() -> None:
    for backoff in ("exponential", "linear"):
        policy = plain(backoff=backoff, initial_delay=10.0, multiplier=3.0, max_delay=15.0)
        assert [policy.delay(a) for a in (1, 2, 3, 40)] == [10.0, 15.0, 15.0, 15.0], backoff


def test_max_delay_caps_a_fixed_delay_too() -> None:
    assert plain(backoff="fixed", initial_delay=20.0, max_delay=15.0).delay(1) == 15.0


def test_exponential_backoff_survives_huge_attempt_numbers() -> None:
    assert plain(initial_delay=1.0, multiplier=2.0, max_delay=60.0).delay(500) == 60.0


def test_attempt_zero_is_treated_as_the_first() -> None:
    policy = plain(initial_delay=1.0)
    assert policy.delay(0) == policy.delay(1) == 1.0


def test_full_jitter_stays_between_half_and_the_whole_base() -> None:
    policy = RetryPolicy(backoff="exponential", initial_delay=1.0, multiplier=2.0, max_delay=10.0, jitter="full")
    rng = random.Random(7)
    for attempt in range(1, 8):
        base = plain(backoff="exponential", initial_delay=1.0, multiplier=2.0, max_delay=10.0).delay(attempt)
        samples = [policy.delay(attempt, rng) for _ in range(300)]
        assert all(base / 2 <= s <= base for s in samples), attempt
        assert len(set(samples)) > 1  # actually jittered


def test_jitter_is_reproducible_with_a_seeded_rng() -> None:
    policy = RetryPolicy(jitter="full")
    assert [policy.delay(3, random.Random(1)) for _ in range(2)] == [policy.delay(3, random.Random(1))] * 2


def test_schedule_has_one_delay_per_retry_and_no_jitter() -> None:
    policy = RetryPolicy(max_attempts=5, initial_delay=0.5, multiplier=2.0, max_delay=3.0, jitter="full")
    assert policy.schedule() == [0.5, 1.0, 2.0, 3.0]
    assert policy.schedule() == policy.schedule()
    assert RetryPolicy(max_attempts=1).schedule() == []
    assert len(RetryPolicy(max_attempts=20).schedule()) == 19


def test_describe_shows_the_schedule() -> None:
    policy = RetryPolicy(max_attempts=4, initial_delay=0.5, multiplier=2.0, max_delay=60.0)
    assert policy.describe() == "4 attempts, exponential backoff [500ms, 1s, 2s], jitter full"


def test_shipped_inventory_policy_schedule() -> None:
    inventory = load_or_raise(ROOT, {}).services["inventory"]
    assert inventory.retry.schedule() == [0.5, 1.0, 2.0, 4.0]
    release = next(b for b in inventory.bindings if b.subject == "orders.inventory.release")
    schedule = release.retry.schedule()
    assert len(schedule) == 19
    assert schedule[:5] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert set(schedule[5:]) == {30.0}


# --- classification ---


class GatewayDown(RetryableError):
    pass


class BadInput(FatalError):
    pass


def test_fatal_error_is_fatal() -> None:
    failure = classify(BadInput("no such customer"), RetryPolicy())
    assert failure.fatal is True
    assert failure.error_type == "BadInput"
    assert str(failure) == "no such customer"


def test_retryable_error_retries() -> None:
    failure = classify(GatewayDown("503"), RetryPolicy())
    assert failure.fatal is False
    assert failure.error_type == "GatewayDown"


def test_unexpected_exception_retries() -> None:
    failure = classify(KeyError("x"), RetryPolicy())
    assert failure.fatal is False
    assert failure.error_type == "KeyError"


def test_message_defaults_to_the_type_name() -> None:
    assert str(classify(RuntimeError(), RetryPolicy())) == "RuntimeError"


def test_fatal_on_matches_the_class_and_its_subclasses() -> None:
    policy = RetryPolicy(fatal_on=("ValueError",))
    assert classify(ValueError("bad"), policy).fatal is True
    try:
        json.loads("{")
    except json.JSONDecodeError as exc:  # a subclass of ValueError
        assert classify(exc, policy).fatal is True
    assert classify(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"), policy).fatal is True
    assert classify(TypeError("other"), policy).fatal is False


def test_fatal_on_wins_over_retryable() -> None:
    assert classify(GatewayDown("503"), RetryPolicy(fatal_on=("GatewayDown",))).fatal is True
    assert classify(GatewayDown("503"), RetryPolicy(fatal_on=("RetryableError",))).fatal is True


def test_retry_on_restricts_what_retries() -> None:
    policy = RetryPolicy(retry_on=("OSError",))
    assert classify(ConnectionResetError("reset"), policy).fatal is False  # OSError subclass
    assert classify(TimeoutError(), policy).fatal is False
    assert classify(KeyError("x"), policy).fatal is True
    assert classify(GatewayDown("503"), policy).fatal is False  # an explicit RetryableError still retries
    assert classify(BadInput("x"), policy).fatal is True


def test_an_already_classified_failure_passes_through() -> None:
    failure = Failure("schema", "ValidationError", FATAL)
    assert classify(failure, RetryPolicy()) is failure


def test_schema_valid_policy_with_many_attempts_has_a_schedule() -> None:
    policy = RetryPolicy(max_attempts=400, multiplier=10.0, max_delay=60.0)
    assert policy.schedule()[-1] == 60.0
