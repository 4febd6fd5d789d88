"""Per-consumer dispatch: decode → validate → handler or saga → publish outputs → ack.

Messages are processed a batch at a time with every handler running concurrently; a batch's outputs
are published pipelined (runner/jetstream/publish.py) and each message is acked only once its own outputs are
stored. Failures follow the retry policy: `nak(delay)` from the policy, or after the last attempt
(or at once for a fatal error) a dead-letter entry and `term()`. A dead-letter publish that fails
leaves the message un-acked, so nothing is lost.

Two kinds of failure are not the message's fault and never count as attempts nor dead-letter it:
JetStream being unavailable (an election, a restart, a stall: retried quickly within the policy's
`outage_budget`, then at `max_delay` while the consumer reports the outage), and an event that
arrived before the one it depends on (`OutOfOrder`: held back for `out_of_order_for`, measured from
when the event was stored).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from nats.aio.msg import Msg

from runner import codec
from runner.config.model import ConsumerSpec, RetryPolicy, ServiceSpec
from runner.config.subjects import is_identifier
from runner.engine import alarms, deadletter, faults, headers
from runner.engine.metrics import ConsumerMetrics, SagaMetrics
from runner.engine.retry import EARLY, FATAL, OUTAGE, Failure, OutageClock, UncountedDeliveries, classify
from runner.engine.routes import Route, event_id_of
from runner.engine.saga import Publish
from runner.engine.versions import SagaVersions
from runner.jetstream.kv import Bucket
from runner.jetstream.publish import Publisher
from runner.jetstream.pull import ACK, TERM, PullStream
from runner.logs import event

log = logging.getLogger("flowrun.dispatch")

# What `_process` returns for a message it acks without running anything: told apart by identity, for metrics.
SKIPPED_DUPLICATE: list[Publish] = []
SKIPPED_EXPIRED: list[Publish] = []


class ConsumerWorker:
    """Runs one durable consumer of one service until stopped."""

    def __init__(
        self,
        publisher: Publisher,
        service: ServiceSpec,
        spec: ConsumerSpec,
        routes: dict[str, Route],
        correlation_key: str,
    ):
        self.publisher = publisher
        self.service = service
        self.spec = spec
        self.routes = routes
        self.key = correlation_key
        self.pull: PullStream | None = None
        self.ready = False
        self._stopping = False
        self.processed = 0
        self.dead_lettered = 0
        self.retried = 0
        self.expired = 0
        self.uncounted = UncountedDeliveries()
        self.outage = OutageClock(self.name)
        self.metrics = ConsumerMetrics.of(service.name, spec.durable)

    @property
    def name(self) -> str:
        return f"{self.service.name}/{self.spec.durable}"

    async def run(self) -> None:
        """Pull and process until `stop()`; raises if the consumer becomes unusable."""
        self.pull = PullStream(
            self.publisher.nc, self.spec.stream, self.spec.durable, self.spec.batch, self.spec.concurrency
        )
        await self.pull.start()
        self.ready = True
        workers = max(1, self.spec.concurrency // self.spec.batch)
        try:
            await asyncio.gather(*(self._work() for _ in range(workers)))
        finally:
            self.ready = False
            await self.pull.close()

    async def _work(self) -> None:
        assert self.pull is not None
        while not self._stopping:
            msgs = await self.pull.take(self.spec.batch, 0.5)
            if not msgs:
                continue
            try:
                await self.handle_batch(msgs)
            finally:
                await self.pull.release(len(msgs))

    async def stop(self) -> None:
        """Stop pulling; in-flight batches finish and ack; queued messages are handed back."""
        self._stopping = True
        if self.pull is not None:
            await self.pull.stop()

    def adopt(self, newer: ConsumerWorker) -> None:
        """Take the routes and policies of a worker built from a reloaded config with this same consumer spec:
        the pull goes on; a message already being handled finishes in the handler it started in."""
        self.service, self.routes = newer.service, newer.routes

    async def handle_batch(self, msgs: list[Msg]) -> None:
        keepalive = asyncio.create_task(self._keep_alive(msgs)) if self.spec.keepalive else None
        self.metrics.received.inc(len(msgs))
        self.metrics.in_flight.inc(len(msgs))
        try:
            results = await self._run_all(msgs)
            pending: list[tuple[Msg, list[asyncio.Future[Any]], list[Publish]]] = []
            dead: list[tuple[Msg, Failure, asyncio.Future[Any] | None]] = []
            batch_alarms: list[Publish] = []
            alarmed: list[list[asyncio.Future[Any]]] = []  # the outputs of the messages that set an alarm
            for msg, result in zip(msgs, results, strict=True):
                if isinstance(result, BaseException):
                    failure = classify(result, self._policy(msg))
                    if await self._should_dead_letter(msg, failure):
                        dead.append((msg, failure, await self._dead_letter(msg, failure)))
                    continue
                if faults.ARMED and result:
                    faults.reached("before-publish")
                own, alarm = alarms.split(result)
                futures = [await self._publish(p, msg) for p in own]
                if alarm:
                    batch_alarms += alarm
                    alarmed.append(futures)
                pending.append((msg, futures, result))
            if batch_alarms:  # one schedule for the batch's instances: each message waits for it
                shared = [await self._publish(p) for p in alarms.merge(batch_alarms)]
                for futures in alarmed:
                    futures += shared
            await self._settle_outputs(pending)
            acked = 0
            for msg, futures, result in pending:
                failed = next((f for f in futures if f.cancelled() or f.exception() is not None), None)
                if failed is not None:
                    error = None if failed.cancelled() else failed.exception()
                    failure = classify(error, self._policy(msg)) if error else Failure("timed out", "PublishError")
                    failure = Failure(f"publishing outputs failed: {failure}", failure.error_type, failure.kind)
                    if failure.kind == OUTAGE:
                        await self._wait_out_outage(msg, failure)
                    else:
                        await self._retry(msg, failure)
                    continue
                if faults.ARMED and futures:
                    faults.reached("before-ack")
                await self._ack(msg)
                self.processed += 1
                if result is SKIPPED_DUPLICATE:
                    self.metrics.outcome["skipped_duplicate"].inc()
                elif result is SKIPPED_EXPIRED:
                    self.metrics.outcome["skipped_expired"].inc()
                else:
                    acked += 1
            self.metrics.acked.inc(acked)
            for msg, failure, future in dead:
                await self._finish_dead_letter(msg, failure, future)
        finally:
            self.metrics.in_flight.dec(len(msgs))
            if keepalive is not None:
                keepalive.cancel()

    async def _should_dead_letter(self, msg: Msg, failure: Failure) -> bool:
        """Retry (nak) what may succeed later; True when the message is to be dead-lettered."""
        policy = self._policy(msg)
        if failure.kind == OUTAGE:
            await self._wait_out_outage(msg, failure)
            return False
        if failure.kind == EARLY:
            age = time.time() - msg.metadata.timestamp.timestamp()
            if age < policy.out_of_order_for:
                self.uncounted.add(msg)
                self.metrics.outcome["held_back"].inc()
                delay = min(policy.delay(msg.metadata.num_delivered), max(policy.out_of_order_for - age, 0.05))
                event(
                    log,
                    logging.INFO,
                    "held back: arrived out of order",
                    **self._about(msg),
                    delay=f"{delay:.3f}s",
                    reason=str(failure),
                )
                await msg.nak(delay=delay)
                return False
            failure.kind = FATAL  # still out of order after the window: no longer weather
        if failure.fatal or self.uncounted.attempts(msg) >= policy.max_attempts:
            return True
        await self._retry(msg, failure)
        return False

    async def _wait_out_outage(self, msg: Msg, failure: Failure) -> None:
        """JetStream is unavailable: try again soon, without using up an attempt."""
        policy = self._policy(msg)
        count = self.uncounted.add(msg)
        self.metrics.outcome["outage"].inc()
        lasted = self.outage.failed(failure, policy.outage_budget)
        delay = policy.max_delay if lasted > policy.outage_budget else min(0.25 * 2 ** (count - 1), 2.0)
        await msg.nak(delay=delay)

    async def _ack(self, msg: Msg) -> None:
        await msg.ack()
        self.uncounted.settled(msg)
        if self.outage.since is not None:
            self.outage.recovered()
        if self.pull is not None:
            self.pull.settled(msg.reply, ACK)

    async def _run_all(self, msgs: list[Msg]) -> list[list[Publish] | BaseException]:
        """Run every message's handler concurrently; one that overruns its timeout is cancelled.

        One wait per batch instead of a timer per message: the batch is checked at the earliest
        deadline still open, which in the common case (everything done in time) is a single wait.
        """
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(self._process(m)) for m in msgs]
        started = loop.time()
        deadlines = {task: started + self._timeout(msg) for task, msg in zip(tasks, msgs, strict=True)}
        pending = set(tasks)
        while pending:
            _, pending = await asyncio.wait(pending, timeout=min(deadlines[t] for t in pending) - loop.time())
            now = loop.time()
            for task in [t for t in pending if deadlines[t] <= now]:
                task.cancel()
        results: list[list[Publish] | BaseException] = []
        for task, msg in zip(tasks, msgs, strict=True):
            if task.cancelled():
                timeout = self._timeout(msg)
                results.append(Failure(f"handler timed out after {timeout:g}s", "HandlerTimeout"))
            elif task.exception() is not None:
                results.append(task.exception())  # type: ignore[arg-type]
            else:
                results.append(task.result())
        return results

    def _timeout(self, msg: Msg) -> float:
        route = self.routes.get(msg.subject)
        return route.timeout if route else self.spec.handler_timeout

    async def _settle_outputs(self, pending: list[tuple[Msg, list[asyncio.Future[Any]], list[Publish]]]) -> None:
        """Wait (bounded by the ack wait) for every output's PubAck; the unanswered are cancelled."""
        futures = [f for _, fs, _ in pending for f in fs]
        if not futures:
            return
        _, late = await asyncio.wait(futures, timeout=self.spec.ack_wait)
        for future in late:
            future.cancel()

    async def _keep_alive(self, msgs: list[Msg]) -> None:
        """Long handlers keep their messages: in_progress() before the ack wait runs out."""
        period = max(self.spec.ack_wait * 0.4, 0.05)
        while True:
            await asyncio.sleep(period)
            for msg in msgs:
                if not msg.is_acked:
                    await msg.in_progress()

    def _about(self, msg: Msg) -> dict[str, Any]:
        """The fields of every log line about a message: where it came from and which instance it concerns."""
        correlation = (msg.headers or {}).get(deadletter.H_CORRELATION)
        if correlation is None:
            try:
                correlation = codec.loads(msg.data).get(self.key)
            except Exception:  # the payload may be exactly what was wrong
                pass
        return {
            "service": self.service.name,
            "consumer": self.spec.durable,
            "subject": msg.subject,
            "seq": msg.metadata.sequence.stream,
            "correlation_id": correlation,
        }

    def _policy(self, msg: Msg) -> RetryPolicy:
        route = self.routes.get(msg.subject)
        return route.retry if route else self.service.retry

    async def _process(self, msg: Msg) -> list[Publish]:
        if msg.headers:
            if deadletter.replayed_for_another(msg.headers, self.spec.durable):
                return SKIPPED_DUPLICATE  # another consumer's dead letter, replayed to the shared subject: no effect
            if deadletter.H_REPLAYED in msg.headers:
                self.metrics.replayed.inc()
        route = self.routes.get(msg.subject)
        if route is None:
            raise Failure(f"no handler bound to subject {msg.subject!r} on {self.name}", "NoHandler", FATAL)
        hdrs = msg.headers or {}
        if headers.ACCEPT_BY in hdrs and headers.stored_too_late(msg, hdrs[headers.ACCEPT_BY]):
            self.expired += 1
            event(
                log,
                logging.WARNING,
                "ignored: stored after its producer gave up on it",
                **self._about(msg),
                msg_id=hdrs.get("Nats-Msg-Id"),
            )
            return SKIPPED_EXPIRED
        try:
            data = codec.loads(msg.data)
        except codec.DecodeError as exc:
            raise Failure(f"payload is not valid JSON: {exc}", "DecodeError", FATAL) from None
        if not isinstance(data, dict):
            raise Failure(f"payload must be a JSON object, got {type(data).__name__}", "DecodeError", FATAL)
        correlation = data.get(self.key)
        if correlation is None:
            raise Failure(f"payload lacks its correlation id {self.key!r}", "ValidationError", FATAL)
        if not is_identifier(correlation):
            raise Failure(f"{self.key} {correlation!r} is not a valid identifier", "ValidationError", FATAL)
        if route.schema is not None:
            error = route.schema.first_error(data)
            if error is not None:
                where = "/".join(map(str, error.absolute_path)) or "payload"
                raise Failure(f"schema violation at {where}: {error.message}", "ValidationError", FATAL)
        event_id = event_id_of(msg)
        started = time.perf_counter()
        try:
            return await route.run(data, msg.subject, event_id)
        finally:
            self.metrics.duration(msg.subject).observe(time.perf_counter() - started)

    async def _publish(self, p: Publish, cause: Msg | None = None) -> asyncio.Future[Any]:
        headers = {"Nats-Msg-Id": p.msg_id, deadletter.H_CORRELATION: str(p.data.get(self.key, ""))}
        if p.headers:
            headers.update(p.headers)
        trace = cause.headers.get("traceparent") if cause is not None and cause.headers else None
        if trace:
            headers["traceparent"] = trace
        future = await self.publisher.publish(p.subject, codec.dumps(p.data), headers)
        # A schedule's subject names its instance: counted under the subject it fires on, to keep labels bounded.
        label = p.headers.get(alarms.SCHEDULE_TARGET, p.subject) if p.headers else p.subject
        future.add_done_callback(self.metrics.on_published(label))
        return future

    async def _retry(self, msg: Msg, failure: Failure) -> None:
        attempt = msg.metadata.num_delivered
        delay = self._policy(msg).delay(attempt)
        self.retried += 1
        self.metrics.outcome["retried"].inc()
        event(
            log,
            logging.WARNING,
            "retrying",
            **self._about(msg),
            attempt=attempt,
            delay=f"{delay:.3f}s",
            error=failure.error_type,
            reason=str(failure),
        )
        await msg.nak(delay=delay)

    async def _dead_letter(self, msg: Msg, failure: Failure) -> asyncio.Future[Any] | None:
        dl = self.service.dead_letter
        correlation = None
        try:
            correlation = codec.loads(msg.data).get(self.key)
        except Exception:  # the payload may be exactly what was wrong
            pass
        headers = deadletter.dead_letter_headers(
            msg,
            self.service.name,
            self.spec.durable,
            failure.error_type,
            str(failure),
            correlation if isinstance(correlation, str) else None,
        )
        subject = deadletter.dead_letter_subject(dl.subject_prefix, self.service.name, msg.subject)
        try:
            return await self.publisher.publish(subject, msg.data, headers)
        except Exception as exc:
            event(log, logging.ERROR, "dead-letter publish failed", **self._about(msg), error=repr(exc))
            return None

    async def _apply_rejection(self, msg: Msg, failure: Failure) -> None:
        """Let the route act on its dead letter: a saga ends the instance of a start event it rejected."""
        route = self.routes.get(msg.subject)
        if route is None or route.rejected is None:
            return
        try:
            data = codec.loads(msg.data)
        except codec.DecodeError:
            return  # not JSON: it names no instance
        if not isinstance(data, dict):
            return
        publishes = await route.rejected(data, event_id_of(msg), str(failure))
        futures = [await self._publish(p, msg) for p in publishes]
        if futures:
            async with asyncio.timeout(self.spec.ack_wait):
                await asyncio.gather(*futures)

    async def _finish_dead_letter(self, msg: Msg, failure: Failure, future: asyncio.Future[Any] | None) -> None:
        try:
            if future is None:
                raise RuntimeError("not published")
            await future
        except Exception as exc:
            # Never lost: leave it to come back and try dead-lettering again (not an attempt of its own).
            event(log, logging.ERROR, "dead-letter not stored; message kept", **self._about(msg), error=repr(exc))
            self.uncounted.add(msg)
            await msg.nak(delay=1.0)
            return
        try:
            await self._apply_rejection(msg, failure)
        except Exception as exc:
            # Stored, not yet applied: it comes back, its dead letter is deduplicated, and this is retried.
            event(log, logging.ERROR, "dead letter not applied yet; message kept", **self._about(msg), error=repr(exc))
            self.uncounted.add(msg)
            await msg.nak(delay=1.0)
            return
        self.dead_lettered += 1
        self.metrics.outcome["dead_lettered"].inc()
        self.metrics.dead_letters.inc()
        event(
            log,
            logging.WARNING,
            "dead-lettered",
            **self._about(msg),
            attempts=msg.metadata.num_delivered,
            error=failure.error_type,
            reason=str(failure),
        )
        await msg.term()
        self.uncounted.settled(msg)
        if self.pull is not None:
            self.pull.settled(msg.reply, TERM)


class TimerWorker(ConsumerWorker):
    """Saga timers: JetStream delivers each schedule when due; we apply the timeout if still current.
    A timer that arrives early (clock skew between servers) is held back with nak(delay)."""

    def __init__(
        self,
        publisher: Publisher,
        service: ServiceSpec,
        spec: ConsumerSpec,
        versions: SagaVersions,
        bucket: Bucket,
    ):
        super().__init__(publisher, service, spec, {}, versions.current.spec.key)
        self.versions = versions  # each instance's timeouts are its own version's
        self.bucket = bucket
        self.saga_metrics = SagaMetrics.of(versions.current.spec.name, versions.current.spec.compensation_failed_state)

    def adopt(self, newer: ConsumerWorker) -> None:
        assert isinstance(newer, TimerWorker)
        super().adopt(newer)
        self.versions, self.bucket = newer.versions, newer.bucket

    async def handle_batch(self, msgs: list[Msg]) -> None:
        self.metrics.received.inc(len(msgs))
        await asyncio.gather(*(self._fire(m) for m in msgs))

    async def _fire(self, msg: Msg) -> None:
        try:
            keys, alarm = alarms.keys_of(codec.loads(msg.data), self.key)
        except Exception as exc:
            failure = Failure(f"malformed timer: {exc!r}", "DecodeError", FATAL)
            await self._finish_dead_letter(msg, failure, await self._dead_letter(msg, failure))
            return
        early = alarm - time.time()
        if early > 0:  # the scheduler's clock ran ahead of ours
            await msg.nak(delay=early)
            return
        try:
            outcomes = await asyncio.gather(*(self._wake(key) for key in keys), return_exceptions=True)
            others, alarmed = alarms.split([p for o in outcomes if not isinstance(o, BaseException) for p in o])
            futures = [await self._publish(p, msg) for p in others + alarms.merge(alarmed)]
            async with asyncio.timeout(self.spec.ack_wait):
                await asyncio.gather(*futures)
            failed = next((o for o in outcomes if isinstance(o, BaseException)), None)
            if failed is not None:
                raise failed
        except Exception as exc:
            # When it comes back, an instance already woken finds its timeout applied and publishes its
            # outputs again (deduplicated): none is lost if a publish failed after the instance was saved.
            event(log, logging.WARNING, "timer retry", **self._about(msg), error=repr(exc))
            self.metrics.outcome["retried"].inc()
            await msg.nak(delay=1.0)
            return
        await self._ack(msg)
        self.processed += 1
        self.metrics.acked.inc()

    async def _wake(self, key: str) -> list[Publish]:
        """Apply one instance's alarm: its timeout if due, else re-arm for its deadline."""
        publishes, before, after = await self.versions.run(lambda: self.bucket.mutate(key, self._step))
        if before is not None and after is not None and before != after:
            self.saga_metrics.timed_out(before)
            self.saga_metrics.moved(before, after)
        return publishes

    def _step(self, record: Any) -> tuple[Any, tuple[list[Publish], str | None, str | None]]:
        before = record["state"] if record else None
        decision = self.versions.machine_for(record).on_alarm(record)
        if decision is None:
            return record, ([], before, before)
        return decision.record, (decision.publishes, before, decision.record["state"])
