"""Typed service settings: each declares its type, so `PAYMENT_LIMIT=.nan` or `yes` is a config error.

Untyped, a YAML value is whatever the resolver makes of it: `.nan` is a float NaN (every comparison
false: every payment approved), `yes` a boolean (`float(True)` is 1.0). Here a setting says what it is:

    decline_over: {type: decimal, minimum: 0, value: "${PAYMENT_LIMIT:-5000.00}"}

and the handler receives a value of that type, within its bounds. Money is `decimal` (a Python
Decimal with 2 places, never a float); numbers are finite; booleans are only true/false.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from runner.config.units import seconds

CENT = Decimal("0.01")
_INTEGER = re.compile(r"^[+-]?\d+$")


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a string (quote it)")
    return value


def _integer(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INTEGER.match(value.strip()):
        return int(value)
    raise ValueError(f"{value!r} is not an integer")


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{value!r} is not a number")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return number


def _decimal(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{value!r} is not a decimal amount")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a decimal amount") from None
    if not amount.is_finite():
        raise ValueError(f"{value!r} is not a finite decimal amount")
    if amount != amount.quantize(CENT):
        raise ValueError(f"{value!r} has more than 2 decimal places")
    return amount.quantize(CENT)


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"{value!r} is not a boolean (use true or false)")


def _duration(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    duration = seconds(value)  # ValueError names the value
    if not math.isfinite(duration):
        raise ValueError(f"{value!r} is not a finite duration")
    return duration


PARSERS: dict[str, Callable[[Any], Any]] = {
    "string": _string,
    "integer": _integer,
    "number": _number,
    "decimal": _decimal,
    "boolean": _boolean,
    "duration": _duration,
}
ORDERED = {"integer", "number", "decimal", "duration"}


def parse(spec: dict[str, Any]) -> tuple[Any, list[tuple[str, str]]]:
    """The typed value of one setting, and its problems as (key in the spec, message)."""
    kind = spec.get("type")
    parser = PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None or "value" not in spec:
        return None, []  # the schema reported it
    problems: list[tuple[str, str]] = []
    try:
        value = parser(spec["value"])
    except (ValueError, TypeError) as exc:
        return None, [("value", f"{exc}: expected type {kind}")]
    for key in ("minimum", "maximum"):
        if key not in spec:
            continue
        if kind not in ORDERED:
            problems.append((key, f"{key} applies to {', '.join(sorted(ORDERED))} settings, not {kind}"))
            continue
        try:
            bound = parser(spec[key])
        except (ValueError, TypeError) as exc:
            problems.append((key, f"{exc}: expected type {kind}"))
            continue
        if (value < bound) if key == "minimum" else (value > bound):
            side = "below the minimum" if key == "minimum" else "above the maximum"
            problems.append(("value", f"{spec['value']!r} is {side} {spec[key]!r}"))
    return value, problems
