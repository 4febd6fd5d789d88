"""Handler stubs: a scenario replaces a handler with a fixed answer, to reach a branch on demand.

The stub runs where the handler would (the runtime's `handlers` option), so everything around it is real: the
binding's `emits:` turns its outcome into a subject, the correlation key is added, failures follow the policy.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from runner.handler import Context, FatalError, Outcome
from runner.testing.scenario import Stub

Handler = Callable[[dict[str, Any], Context], Awaitable[Outcome | None]]


def stub_handler(stub: Stub) -> Handler:
    async def answer(msg: dict[str, Any], ctx: Context) -> Outcome | None:
        if stub.fail is not None:
            raise FatalError(stub.fail)
        if stub.silent:
            return None  # acked, nothing published: whoever waits for an answer waits until its timeout
        assert stub.outcome is not None
        return Outcome(stub.outcome, dict(stub.payload))

    return answer


def stub_handlers(stubs: dict[str, Stub]) -> dict[str, Handler]:
    return {handler: stub_handler(stub) for handler, stub in stubs.items()}
