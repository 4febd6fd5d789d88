"""Provisioning on a cluster that has just formed: "no suitable peers for placement" is waited out, for a while."""

from __future__ import annotations

import pytest
from nats.js.errors import BadRequestError

from runner.jetstream.provision import _placed

OFFLINE = "no suitable peers for placement, peer offline"


def refusing(times: int, description: str = OFFLINE):
    calls = []

    async def create() -> None:
        calls.append(1)
        if len(calls) <= times:
            raise BadRequestError(code=400, err_code=10005, description=description)

    return create, calls


async def test_a_placement_refused_while_peers_are_unknown_is_retried_until_it_succeeds() -> None:
    create, calls = refusing(2)
    await _placed(create, "stream ORDERS", within=5)
    assert len(calls) == 3


async def test_a_lasting_shortage_of_servers_still_fails_with_the_servers_reason() -> None:
    create, _ = refusing(1000)
    with pytest.raises(BadRequestError, match="no suitable peers"):
        await _placed(create, "stream ORDERS", within=0.6)


async def test_other_refusals_are_not_retried() -> None:
    create, calls = refusing(1, description="subjects overlap with an existing stream")
    with pytest.raises(BadRequestError, match="overlap"):
        await _placed(create, "stream ORDERS", within=5)
    assert len(calls) == 1
