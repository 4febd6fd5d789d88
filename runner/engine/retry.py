"""Why a message failed, and what that means for its retries.

The policy itself (attempts, backoff, delays) is declared per service and handler in YAML and lives in
`runner.config.model.RetryPolicy`; here a failure is classified against it: FATAL (dead-letter now),
RETRY (an attempt), OUTAGE (JetStream unavailable: weather, not an attempt) or EARLY (an event before
the one it depends on: held back, not an attempt). Deliveries that are not attempts are counted, and
an outage is timed, per consumer.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict

from nats.aio.msg import Msg

from runner.config.model import RetryPolicy
from runner.errors import FatalError, OutOfOrder, RetryableError
from runner.jetstream.publish import Unavailable
from runner.logs import event

log = logging.getLogger("flowrun.dispatch")

FATAL, RETRY, OUTAGE, EARLY = "fatal", "retry", "outage", "early"


class Failure(Exception):
    """Why a message could not be processed, already classified as one of FATAL (dead-letter now),
    RETRY (counts as an attempt), OUTAGE (JetStream unavailable) or EARLY (out of order)."""

    def __init__(self, message: str, error_type: str, kind: str = RETRY):
        super().__init__(message)
        self.error_type = error_type
        self.kind = kind

    @property
    def fatal(self) -> bool:
        return self.kind == FATAL


def classify(exc: BaseException, policy: RetryPolicy) -> Failure:
    if isinstance(exc, Failure):
        return exc
    names = {cls.__name__ for cls in type(exc).__mro__}
    name = type(exc).__name__
    message = str(exc) or name
    if isinstance(exc, Unavailable):
        return Failure(message, name, OUTAGE)
    if isinstance(exc, OutOfOrder):
        return Failure(message, name, EARLY)
    if isinstance(exc, FatalError) or names & set(policy.fatal_on):
        return Failure(message, name, FATAL)
    if isinstance(exc, RetryableError):
        return Failure(message, name, RETRY)
    if policy.retry_on and not names & set(policy.retry_on):
        return Failure(message, name, FATAL)
    return Failure(message, name, RETRY)


class UncountedDeliveries:
    """Deliveries of a message that failed through no fault of its own (outages, out-of-order
    arrivals), so they do not use up its attempts. Kept per process and bounded: a message that moves
    to another instance starts its count again there, which errs on the side of more retries."""

    def __init__(self, limit: int = 10_000):
        self.limit = limit
        self._counts: OrderedDict[int, int] = OrderedDict()

    def add(self, msg: Msg) -> int:
        seq = msg.metadata.sequence.stream
        count = self._counts.pop(seq, 0) + 1
        self._counts[seq] = count
        if len(self._counts) > self.limit:
            self._counts.popitem(last=False)
        return count

    def attempts(self, msg: Msg) -> int:
        """Deliveries that count against max_attempts."""
        meta = msg.metadata
        return meta.num_delivered - self._counts.get(meta.sequence.stream, 0)

    def settled(self, msg: Msg) -> None:
        if self._counts:
            self._counts.pop(msg.metadata.sequence.stream, None)


class OutageClock:
    """When JetStream became unavailable for this consumer (None while it answers), so the delay
    of outage retries grows from quick to `max_delay` and the outage is logged once, not per message."""

    RECENT = 5.0  # an outage failure this recent still counts as an ongoing outage

    def __init__(self, name: str):
        self.name = name
        self.since: float | None = None
        self.last_failure = 0.0
        self._reported_long = False

    def failed(self, failure: Failure, budget: float) -> float:
        """Record an outage failure; the seconds it has lasted."""
        now = time.monotonic()
        self.last_failure = now
        if self.since is None:
            self.since = now
            event(log, logging.WARNING, "JetStream unavailable; retrying", consumer=self.name, reason=str(failure))
        lasted = now - self.since
        if lasted > budget and not self._reported_long:
            self._reported_long = True
            event(
                log,
                logging.ERROR,
                "JetStream unavailable beyond the outage budget; still retrying, nothing is dead-lettered",
                consumer=self.name,
                seconds=f"{lasted:.1f}",
                reason=str(failure),
            )
        return lasted

    def recovered(self) -> None:
        if self.since is not None:
            event(
                log,
                logging.WARNING,
                "JetStream available again",
                consumer=self.name,
                seconds=f"{time.monotonic() - self.since:.1f}",
            )
            self.since = None
            self._reported_long = False

    def lasted(self) -> float:
        return 0.0 if self.since is None else time.monotonic() - self.since

    def active(self) -> bool:
        """In an outage now: the last failure is recent (a quiet consumer may see no success for a while)."""
        return self.since is not None and time.monotonic() - self.last_failure < self.RECENT
