"""`format` in message and body schemas is asserted, by both the fast and the explaining validator."""

from __future__ import annotations

import pytest

from runner.engine.validation import PayloadValidator

SCHEMA = {
    "type": "object",
    "properties": {
        "day": {"type": "string", "format": "date"},
        "email": {"type": "string", "format": "email"},
        "id": {"type": "string", "format": "uuid"},
        "at": {"type": "string", "format": "date-time"},
    },
}


@pytest.mark.parametrize(
    ("field", "bad", "good"),
    [
        ("day", "2026-13-45", "2026-12-24"),
        ("email", "not-an-address", "a@example.com"),
        ("id", "1234", "0b7f3c1e-8a52-4f7e-9d7a-3f2b1c0d9e8f"),
        ("at", "yesterday", "2026-12-24T10:00:00Z"),
    ],
)
def test_format_is_enforced_with_a_precise_error(field: str, bad: str, good: str) -> None:
    validator = PayloadValidator(SCHEMA)
    assert validator.first_error({field: good}) is None
    error = validator.first_error({field: bad})
    assert error is not None
    assert (error.validator, list(error.absolute_path)) == ("format", [field])
    assert bad in error.message
