"""Subject matching (`*`, `>`), overlap and containment of patterns, and the identifier rule."""

from __future__ import annotations

import pytest

from runner.config.subjects import is_identifier, matches, overlap, within


@pytest.mark.parametrize(
    ("pattern", "subject"),
    [
        ("orders.created", "orders.created"),
        ("orders.*", "orders.created"),
        ("*.created", "orders.created"),
        ("orders.>", "orders.created"),
        ("orders.>", "orders.payment.completed"),
        ("orders.*.completed", "orders.payment.completed"),
        (">", "orders"),
        (">", "a.b.c"),
        ("*", "orders"),
        ("dlq.>", "dlq.payment.x"),
    ],
)
def test_matches(pattern: str, subject: str) -> None:
    assert matches(pattern, subject)


@pytest.mark.parametrize(
    ("pattern", "subject"),
    [
        ("orders.created", "orders.creat"),
        ("orders.created", "orders.created.v2"),
        ("orders.*", "orders.payment.completed"),  # * is one token
        ("orders.*", "orders"),
        ("orders.>", "orders"),  # > needs at least one token
        ("*.created", "orders.payment.created"),
        ("orders.*.completed", "orders.payment.failed"),
        ("payment.>", "orders.payment.completed"),
        ("*", "a.b"),
    ],
)
def test_does_not_match(pattern: str, subject: str) -> None:
    assert not matches(pattern, subject)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("orders.>", "orders.created"),
        ("orders.>", "orders.*"),
        ("orders.*", "orders.created"),
        ("orders.*", "*.created"),
        ("orders.>", "orders.payment.>"),
        ("a.*.c", "a.b.>"),
        (">", "anything.at.all"),
        ("x.y", "x.y"),
        ("*.*", "a.b"),
    ],
)
def test_overlap(a: str, b: str) -> None:
    assert overlap(a, b)
    assert overlap(b, a)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("orders.>", "payment.>"),
        ("orders.>", "orders"),  # orders.> never matches the bare token
        ("orders.*", "orders.a.b"),
        ("orders.*", "orders"),
        ("a.b", "a.b.c"),
        ("a.*.c", "a.b.d"),
        ("*.x", "*.y"),
        ("flowrun.timers.>", "orders.>"),
    ],
)
def test_no_overlap(a: str, b: str) -> None:
    assert not overlap(a, b)
    assert not overlap(b, a)


@pytest.mark.parametrize(
    ("inner", "outer"),
    [
        ("orders.created", "orders.>"),
        ("orders.*", "orders.>"),
        ("orders.>", "orders.>"),
        ("orders.payment.>", "orders.>"),
        ("orders.*.completed", "orders.>"),
        ("orders.created", "orders.*"),
        ("orders.*", "orders.*"),
        ("a.*", "*.*"),
        ("orders.created", "orders.created"),
        ("anything", ">"),
        (">", ">"),
    ],
)
def test_within(inner: str, outer: str) -> None:
    assert within(inner, outer)


@pytest.mark.parametrize(
    ("inner", "outer"),
    [
        ("orders.>", "orders.*"),  # orders.a.b is not in orders.*
        ("orders.*", "orders.created"),
        ("orders", "orders.>"),
        ("orders.>", "orders.created"),
        (">", "orders.>"),
        ("payment.completed", "orders.>"),
        ("orders.a.b", "orders.*"),
        ("*.created", "orders.*"),
    ],
)
def test_not_within(inner: str, outer: str) -> None:
    assert not within(inner, outer)


@pytest.mark.parametrize("value", ["ORD-1", "a", "order_42", "0f8a-XYZ", "x" * 128])
def test_identifier(value: str) -> None:
    assert is_identifier(value)


@pytest.mark.parametrize(
    "value",
    ["", "a.b", "a*", "a>", "a b", " a", "a\tb", "x" * 129, "é", "a/b", None, 42, ["a"]],
)
def test_not_identifier(value: object) -> None:
    assert not is_identifier(value)


def test_identifier_rejects_a_trailing_newline() -> None:
    assert not is_identifier("ORD-1\n")
