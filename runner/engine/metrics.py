"""Prometheus metrics of message handling and sagas (the `/metrics` endpoint is in runner/serve/metrics_http.py).

The hot path only adds to plain numbers: each consumer and saga has one `ConsumerMetrics` / `SagaMetrics`
(shared by every worker, route and intake that serves it, and kept across reloads so counters never reset),
whose counts a collector turns into Prometheus families at scrape time. That costs a fraction of a microsecond
per message where prometheus-client's labelled children take a lock per update. Scrapes and updates run on
the event loop's thread, so no lock is needed. Labels are service, consumer, subject, saga and state names
only: bounded, never an instance id.

`FLOWRUN_METRICS=off` makes every hook a no-op (the bench's `--no-metrics` compares the two).

Saga instances by state is a gauge kept from the transitions this process applied (+1 into a state, -1 out of
it): reading the instances at scrape time would cost a KV scan, unbounded in the number of instances. So it
counts instances that moved while the process ran; `sum by (saga, state)` over a service's processes adds up.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

ENABLED = os.environ.get("FLOWRUN_METRICS", "on").lower() not in ("off", "0", "false", "no")

NEW = "none"  # the `from` of a transition that created the instance
COMPENSATING = "compensating"
OUTCOMES = ("acked", "retried", "dead_lettered", "skipped_duplicate", "skipped_expired", "outage", "held_back")
HANDLER_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Count:
    """A number the hot path adds to; the collector reads `value`."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount

    def dec(self, amount: int = 1) -> None:
        self.value -= amount


class Timing:
    """A histogram's bucket counts (not cumulative: summed at scrape) and sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(HANDLER_BUCKETS) + 1)  # the last one: above every bound (+Inf)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(HANDLER_BUCKETS, seconds)] += 1
        self.total += seconds


class _Noop:
    """Stands in for a Count or Timing when metrics are off."""

    def inc(self, amount: int = 1) -> None:
        pass

    def dec(self, amount: int = 1) -> None:
        pass

    def observe(self, seconds: float) -> None:
        pass


NOOP: Any = _Noop()


def _noop_callback(future: Any) -> None:
    pass


class ConsumerMetrics:
    """One consumer's counts; attributes are named after what they count. `of` gives the shared one."""

    _all: dict[tuple[str, str], ConsumerMetrics] = {}

    @classmethod
    def of(cls, service: str, consumer: str) -> ConsumerMetrics:
        found = cls._all.get((service, consumer))
        if found is None:
            found = cls._all[(service, consumer)] = cls(service, consumer)
        return found

    def __init__(self, service: str, consumer: str):
        self.service, self.consumer = service, consumer
        self.received = Count() if ENABLED else NOOP
        self.in_flight = Count() if ENABLED else NOOP
        self.outcome = {name: Count() if ENABLED else NOOP for name in OUTCOMES}
        self.acked = self.outcome["acked"]
        self.dead_letters = Count() if ENABLED else NOOP
        self.replayed = Count() if ENABLED else NOOP
        self.durations: dict[str, Timing] = {}
        self.published: dict[str, tuple[Count, Count]] = {}  # subject → (stored, failed)
        self._callbacks: dict[str, Callable[[Any], None]] = {}

    def duration(self, subject: str) -> Timing:
        timing = self.durations.get(subject)
        if timing is None:  # subjects are the consumer's routes: few, bound on first use
            timing = self.durations[subject] = Timing() if ENABLED else NOOP
        return timing

    def on_published(self, subject: str) -> Callable[[Any], None]:
        """A done-callback for a publish's PubAck future: counts it stored or failed."""
        callback = self._callbacks.get(subject)
        if callback is None:
            if not ENABLED:
                callback = _noop_callback
            else:
                stored, failed = self.published[subject] = (Count(), Count())

                def callback(future: Any) -> None:
                    (failed if future.cancelled() or future.exception() is not None else stored).value += 1

            self._callbacks[subject] = callback
        return callback


class SagaMetrics:
    """One saga's transitions, instances by state, timeouts and compensations. `of` gives the shared one."""

    _all: dict[str, SagaMetrics] = {}

    @classmethod
    def of(cls, saga: str, compensation_failed_state: str) -> SagaMetrics:
        found = cls._all.get(saga)
        if found is None:
            found = cls._all[saga] = cls(saga, compensation_failed_state)
        return found

    def __init__(self, saga: str, compensation_failed_state: str):
        self.saga = saga
        self.failed_state = compensation_failed_state
        self.transitions: dict[tuple[str, str], int] = {}
        self.instances: dict[str, int] = {}
        self.timeouts: dict[str, int] = {}
        self.compensations = {"started": 0, "completed": 0, "failed": 0}

    def moved(self, before: str | None, after: str) -> None:
        """Count an applied event that changed (or created) an instance's state."""
        if before == after or not ENABLED:
            return
        origin = before or NEW
        move = (origin, after)
        self.transitions[move] = self.transitions.get(move, 0) + 1
        self.instances[after] = self.instances.get(after, 0) + 1
        if before is not None:
            self.instances[before] = self.instances.get(before, 0) - 1
        if after == COMPENSATING:
            self.compensations["started"] += 1
        elif before == COMPENSATING:
            self.compensations["failed" if after == self.failed_state else "completed"] += 1

    def removed(self, state: str) -> None:
        """An instance given up before it started (the API's write did not land in time) is gone."""
        if ENABLED:
            self.instances[state] = self.instances.get(state, 0) - 1

    def timed_out(self, state: str) -> None:
        if ENABLED:
            self.timeouts[state] = self.timeouts.get(state, 0) + 1


# One value per consumer: (family, name, help, ConsumerMetrics attribute).
PER_CONSUMER = (
    (CounterMetricFamily, "flowrun_messages_received", "Messages delivered to a consumer", "received"),
    (GaugeMetricFamily, "flowrun_messages_in_flight", "Messages being handled now", "in_flight"),
    (CounterMetricFamily, "flowrun_dead_letters_written", "Dead letters stored", "dead_letters"),
    (
        CounterMetricFamily,
        "flowrun_dead_letters_replayed",
        "Replayed dead letters delivered to their consumer",
        "replayed",
    ),
)


class _Collector(Collector):
    """Turns the counts into Prometheus families at scrape time."""

    def collect(self) -> Iterator[Any]:
        consumers = list(ConsumerMetrics._all.values())
        sagas = list(SagaMetrics._all.values())
        by_consumer = ["service", "consumer"]

        def family(kind: Any, name: str, doc: str, labels: list[str], rows: Iterator[tuple[list[str], float]]) -> Any:
            metric = kind(name, doc, labels=labels)
            for values, value in rows:
                metric.add_metric(values, value)
            return metric

        for kind, name, doc, attr in PER_CONSUMER:
            rows = (([c.service, c.consumer], getattr(c, attr).value) for c in consumers)
            yield family(kind, name, doc, by_consumer, rows)
        yield family(
            CounterMetricFamily,
            "flowrun_messages_processed",
            "Messages settled, by outcome",
            [*by_consumer, "outcome"],
            (([c.service, c.consumer, name], n.value) for c in consumers for name, n in c.outcome.items()),
        )
        yield family(
            CounterMetricFamily,
            "flowrun_published_messages",
            "Messages published by handlers and sagas, by PubAck status",
            ["service", "subject", "status"],
            (
                ([c.service, subject, status], count.value)
                for c in consumers
                for subject, counts in list(c.published.items())
                for status, count in zip(("stored", "failed"), counts, strict=True)
            ),
        )
        durations = HistogramMetricFamily(
            "flowrun_handler_duration_seconds",
            "Time a handler or saga step took for one message",
            labels=[*by_consumer, "subject"],
        )
        for c in consumers:
            for subject, timing in list(c.durations.items()):
                cumulative, buckets = 0, []
                for bound, count in zip([*map(str, HANDLER_BUCKETS), "+Inf"], timing.counts, strict=True):
                    cumulative += count
                    buckets.append((bound, cumulative))
                durations.add_metric([c.service, c.consumer, subject], buckets, timing.total)
        yield durations
        yield family(
            CounterMetricFamily,
            "flowrun_saga_transitions",
            "Saga state changes",
            ["saga", "from_state", "to_state"],
            (([s.saga, a, b], n) for s in sagas for (a, b), n in list(s.transitions.items())),
        )
        yield family(
            GaugeMetricFamily,
            "flowrun_saga_instances",
            "Saga instances by state, from the transitions this process applied",
            ["saga", "state"],
            (([s.saga, state], n) for s in sagas for state, n in list(s.instances.items())),
        )
        yield family(
            CounterMetricFamily,
            "flowrun_saga_timeouts_fired",
            "Saga timeouts that changed an instance, by the state timed out",
            ["saga", "state"],
            (([s.saga, state], n) for s in sagas for state, n in list(s.timeouts.items())),
        )
        yield family(
            CounterMetricFamily,
            "flowrun_saga_compensations",
            "Compensations started, completed, failed",
            ["saga", "result"],
            (([s.saga, result], n) for s in sagas for result, n in s.compensations.items()),
        )


if ENABLED:
    REGISTRY.register(_Collector())
