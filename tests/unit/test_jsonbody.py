"""Duplicate keys are refused wherever they hide; valid bodies parse exactly as orjson parses them."""

from __future__ import annotations

import pytest

from runner import codec
from runner.serve import jsonbody

VALID = [
    b'{"customerId":"C1","items":[{"productId":"A","quantity":1,"price":9.99}]}',
    b'{"note":"10:30, gate: B","k":{"a":"x\\":y","b":[1,{"c":":"}]}}',  # colons and escaped quotes in strings
    b'[{"a":1},{"a":2}]',  # the same key in two objects is fine
    b'{"":1," ":2}',
    b"[]",
    b'"just:a:string"',
]
DUPLICATED = [
    (b'{"customerId":"a","customerId":"b"}', "customerId"),
    (b'{"items":[{"q":1,"q":2}]}', "q"),
    (b'{"a":1,"\\u0061":2}', "a"),  # equal once unescaped
    (b'{"a":1,"a":2,"b":"x:y"}', "a"),  # a colon in a string must not mask the repeat
    (b"[" * 1020 + b'{"a":1,"a":2}' + b"]" * 1020, None),  # deeper than the standard parser goes
]


@pytest.mark.parametrize("raw", VALID)
def test_valid_bodies_parse_as_orjson_does(raw: bytes) -> None:
    assert jsonbody.loads(raw) == codec.loads(raw)


@pytest.mark.parametrize(("raw", "key"), DUPLICATED)
def test_duplicate_keys_are_refused_and_named(raw: bytes, key: str | None) -> None:
    with pytest.raises(jsonbody.DuplicateKeyError) as caught:
        jsonbody.loads(raw)
    assert caught.value.key == key


def test_invalid_json_is_a_decode_error() -> None:
    with pytest.raises(jsonbody.DecodeError):
        jsonbody.loads(b'{"a":1,}')
