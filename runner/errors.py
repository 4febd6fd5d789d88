"""The error kinds that steer retries, raised by handlers and by the runner's own layers alike.

Handler authors import them from `runner.handler`; they live here so the JetStream layer can raise
them without depending on the handler API.
"""

from __future__ import annotations


class RetryableError(Exception):
    """A failure worth trying again later (an outage, a conflict). Unexpected exceptions count too."""


class FatalError(Exception):
    """A failure no retry can fix (bad input, unknown entity): dead-letter at once."""


class OutOfOrder(RetryableError):
    """The message depends on one not processed yet (a saga event before its start event): held back
    and retried for the policy's `out_of_order_for` without using up attempts, then dead-lettered."""
