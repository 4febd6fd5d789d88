"""NATS subject matching, and the identifier rule for anything that reaches a subject or KV key."""

from __future__ import annotations

import re

IDENTIFIER = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def is_identifier(value: object) -> bool:
    """True for ids safe to embed in a subject or KV key: no '.', '*', '>', whitespace."""
    return isinstance(value, str) and IDENTIFIER.fullmatch(value) is not None


def matches(pattern: str, subject: str) -> bool:
    """Does a concrete subject match a pattern with `*` and trailing `>`?"""
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


def overlap(a: str, b: str) -> bool:
    """Could some subject match both patterns?"""
    x, y = a.split("."), b.split(".")
    for i in range(max(len(x), len(y))):
        tx = x[i] if i < len(x) else None
        ty = y[i] if i < len(y) else None
        if tx == ">" or ty == ">":
            return tx is not None and ty is not None
        if tx is None or ty is None:
            return False
        if tx != ty and "*" not in (tx, ty):
            return False
    return True


def within(inner: str, outer: str) -> bool:
    """Is every subject matching `inner` also matched by `outer`?"""
    x, y = inner.split("."), outer.split(".")
    for i, token in enumerate(y):
        if token == ">":
            return len(x) > i
        if i >= len(x) or x[i] == ">":
            return False
        if token != "*" and (token != x[i]):
            return False
    return len(x) == len(y)
