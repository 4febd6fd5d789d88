"""Money, exact to the cent: Decimal in code, a string with two places ("1059.97") on the wire and in KV.

A JSON number read by a JSON parser is a binary float (29.99 is 29.98999999999999843…), and sums of floats
drift; strings carry the exact amount through every hop, and every reader parses them back exactly.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")


def parse(value: object) -> Decimal:
    """An amount as a Decimal, through its text: a float's shortest repr is the number the sender wrote."""
    return Decimal(str(value))


def has_cents_only(amount: Decimal) -> bool:
    """True when the amount has at most two decimal places (12.5 and 12.50 yes, 12.505 no)."""
    return amount.is_finite() and amount == amount.quantize(CENT)


def text(amount: Decimal) -> str:
    """The wire and storage form: two decimal places, never an exponent."""
    return f"{amount.quantize(CENT, rounding=ROUND_HALF_UP):f}"
