"""Each JetStream consumer's pending / ack pending / redelivered as Prometheus gauges.

Read from consumer info on an interval, not on every scrape: a scrape stays cheap, and many scrapers do not
multiply the requests to the server. Every process of a service reports the same consumer, so aggregate these
gauges with max, not sum.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from nats.js import JetStreamContext
from prometheus_client import Gauge

from runner.engine.metrics import ENABLED
from runner.logs import event

log = logging.getLogger("flowrun.metrics")

POLL_SECONDS = 5.0

PENDING = Gauge("flowrun_consumer_pending", "Messages not yet delivered to the consumer", ["stream", "consumer"])
ACK_PENDING = Gauge("flowrun_consumer_ack_pending", "Messages delivered, not yet acked", ["stream", "consumer"])
REDELIVERED = Gauge(
    "flowrun_consumer_redelivered", "Messages delivered more than once, not yet acked", ["stream", "consumer"]
)


class ConsumerStatsPoller:
    """Every `period` seconds, reads the info of each (stream, durable) that `consumers()` names."""

    def __init__(
        self, js: JetStreamContext, consumers: Callable[[], list[tuple[str, str]]], period: float = POLL_SECONDS
    ):
        self.js, self.consumers, self.period = js, consumers, period
        self.task: asyncio.Task[None] | None = None

    def start(self) -> ConsumerStatsPoller:
        if ENABLED:
            self.task = asyncio.create_task(self._run(), name="metrics:consumer-info")
        return self

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def poll(self) -> None:
        for stream, durable in dict.fromkeys(self.consumers()):
            try:
                info = await self.js.consumer_info(stream, durable, timeout=2.0)
            except Exception as exc:  # an outage, or a consumer not there yet: the gauges keep their last value
                event(log, logging.DEBUG, "consumer info not read", stream=stream, consumer=durable, error=repr(exc))
                continue
            PENDING.labels(stream, durable).set(info.num_pending or 0)
            ACK_PENDING.labels(stream, durable).set(info.num_ack_pending or 0)
            REDELIVERED.labels(stream, durable).set(info.num_redelivered or 0)

    async def _run(self) -> None:
        while True:
            await self.poll()
            await asyncio.sleep(self.period)
