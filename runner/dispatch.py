"""Per-consumer dispatch: decode → validate → handler or saga → publish outputs → ack.

Messages are processed a batch at a time with every handler running concurrently; a batch's outputs
are published pipelined (runner/jspub.py) and each message is acked only once its own outputs are
stored. Failures follow the retry policy: `nak(delay)` from the policy, or after the last attempt
(or at once for a fatal error) a dead-letter entry and `term()`. A dead-letter publish that fails
leaves the message un-acked, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nats.aio.msg import Msg

from runner import codec, deadletter, faults
from runner.handler import Context, FatalError, Outcome, RetryableError
from runner.jspub import Publisher
from runner.kv import Bucket
from runner.logs import event
from runner.model import Binding, ConsumerSpec, RetryPolicy, ServiceSpec
from runner.pull import PullStream
from runner.saga import Publish, SagaMachine
from runner.subjects import is_identifier
from runner.validation import PayloadValidator

log = logging.getLogger("flowrun.dispatch")

Run = Callable[[dict[str, Any], str, str], Awaitable[list[Publish]]]
"""(payload, subject, event id) → what to publish."""


@dataclass(frozen=True)
class Route:
    """How one subject is handled on a consumer."""

    run: Run
    retry: RetryPolicy
    timeout: float
    schema: PayloadValidator | None


def handler_route(binding: Binding, fn: Callable[..., Awaitable[Any]], ctx: Context, key: str) -> Run:
    async def run(data: dict[str, Any], subject: str, event_id: str) -> list[Publish]:
        outcome = await fn(data, ctx)
        if outcome is None:
            return []
        if not isinstance(outcome, Outcome):
            raise FatalError(f"handler {binding.handler} returned {type(outcome).__name__}, not an Outcome")
        target = binding.emits.get(outcome.name)
        if target is None:
            raise FatalError(f"handler {binding.handler} returned outcome {outcome.name!r}, not in its emits")
        payload = {key: data[key], **outcome.data}
        return [Publish(target, payload, f"{data[key]}.{target}")]

    return run


def saga_route(machine: SagaMachine, bucket: Bucket) -> Run:
    key_field = machine.spec.key
    start = machine.spec.start_on

    async def run(data: dict[str, Any], subject: str, event_id: str) -> list[Publish]:
        def step(record: Any) -> tuple[Any, tuple[list[Publish], bool]]:
            decision = machine.apply(record, subject, data, event_id)
            done = decision.record["state"] in machine.terminal
            return (decision.record if decision.changed else record), (decision.publishes, done)

        key = data[key_field]
        # A start event almost always creates its instance: skip the read.
        publishes, done = await bucket.mutate(key, step, assume_absent=subject == start)
        if done:  # a finished instance is rarely touched again: keep the cache for live ones
            bucket.forget(key)
        return publishes

    return run


class Failure(Exception):
    """Why a message could not be processed, already classified."""

    def __init__(self, message: str, error_type: str, fatal: bool):
        super().__init__(message)
        self.error_type = error_type
        self.fatal = fatal


def classify(exc: BaseException, policy: RetryPolicy) -> Failure:
    names = {cls.__name__ for cls in type(exc).__mro__}
    name = type(exc).__name__
    if isinstance(exc, Failure):
        return exc
    if isinstance(exc, FatalError) or names & set(policy.fatal_on):
        return Failure(str(exc) or name, name, fatal=True)
    if isinstance(exc, RetryableError):
        return Failure(str(exc) or name, name, fatal=False)
    if policy.retry_on and not names & set(policy.retry_on):
        return Failure(str(exc) or name, name, fatal=True)
    return Failure(str(exc) or name, name, fatal=False)


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

    async def handle_batch(self, msgs: list[Msg]) -> None:
        keepalive = asyncio.create_task(self._keep_alive(msgs)) if self.spec.keepalive else None
        try:
            results = await self._run_all(msgs)
            pending: list[tuple[Msg, list[asyncio.Future[Any]]]] = []
            dead: list[tuple[Msg, Failure, asyncio.Future[Any] | None]] = []
            for msg, result in zip(msgs, results, strict=True):
                if isinstance(result, BaseException):
                    failure = classify(result, self._policy(msg))
                    if failure.fatal or msg.metadata.num_delivered >= self._policy(msg).max_attempts:
                        dead.append((msg, failure, await self._dead_letter(msg, failure)))
                    else:
                        await self._retry(msg, failure)
                    continue
                if faults.ARMED and result:
                    faults.reached("before-publish")
                futures = [await self._publish(p, msg) for p in result]
                pending.append((msg, futures))
            await self._settle_outputs(pending)
            for msg, futures in pending:
                failed = next((f for f in futures if f.cancelled() or f.exception() is not None), None)
                if failed is not None:
                    reason = "timed out" if failed.cancelled() else repr(failed.exception())
                    await self._retry(msg, Failure(f"publishing outputs failed: {reason}", "PublishError", False))
                    continue
                if faults.ARMED and futures:
                    faults.reached("before-ack")
                await msg.ack()
                self.processed += 1
            for msg, failure, future in dead:
                await self._finish_dead_letter(msg, failure, future)
        finally:
            if keepalive is not None:
                keepalive.cancel()

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
                results.append(Failure(f"handler timed out after {timeout:g}s", "HandlerTimeout", fatal=False))
            elif task.exception() is not None:
                results.append(task.exception())  # type: ignore[arg-type]
            else:
                results.append(task.result())
        return results

    def _timeout(self, msg: Msg) -> float:
        route = self.routes.get(msg.subject)
        return route.timeout if route else self.spec.handler_timeout

    async def _settle_outputs(self, pending: list[tuple[Msg, list[asyncio.Future[Any]]]]) -> None:
        """Wait (bounded by the ack wait) for every output's PubAck; the unanswered are cancelled."""
        futures = [f for _, fs in pending for f in fs]
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
                if not msg._ackd:
                    await msg.in_progress()

    def _policy(self, msg: Msg) -> RetryPolicy:
        route = self.routes.get(msg.subject)
        return route.retry if route else self.service.retry

    async def _process(self, msg: Msg) -> list[Publish]:
        route = self.routes.get(msg.subject)
        if route is None:
            raise Failure(f"no handler bound to subject {msg.subject!r} on {self.name}", "NoHandler", fatal=True)
        try:
            data = codec.loads(msg.data)
        except codec.DecodeError as exc:
            raise Failure(f"payload is not valid JSON: {exc}", "DecodeError", fatal=True) from None
        if not isinstance(data, dict):
            raise Failure(f"payload must be a JSON object, got {type(data).__name__}", "DecodeError", fatal=True)
        correlation = data.get(self.key)
        if correlation is None:
            raise Failure(f"payload lacks its correlation id {self.key!r}", "ValidationError", fatal=True)
        if not is_identifier(correlation):
            raise Failure(f"{self.key} {correlation!r} is not a valid identifier", "ValidationError", fatal=True)
        if route.schema is not None:
            error = route.schema.first_error(data)
            if error is not None:
                where = "/".join(map(str, error.absolute_path)) or "payload"
                raise Failure(f"schema violation at {where}: {error.message}", "ValidationError", fatal=True)
        headers = msg.headers or {}
        event_id = headers.get("Nats-Msg-Id") or f"{msg.metadata.stream}.{msg.metadata.sequence.stream}"
        return await route.run(data, msg.subject, event_id)

    async def _publish(self, p: Publish, cause: Msg) -> asyncio.Future[Any]:
        headers = {"Nats-Msg-Id": p.msg_id, deadletter.H_CORRELATION: str(p.data.get(self.key, ""))}
        if p.headers:
            headers.update(p.headers)
        trace = (cause.headers or {}).get("traceparent")
        if trace:
            headers["traceparent"] = trace
        return await self.publisher.publish(p.subject, codec.dumps(p.data), headers)

    async def _retry(self, msg: Msg, failure: Failure) -> None:
        attempt = msg.metadata.num_delivered
        delay = self._policy(msg).delay(attempt)
        self.retried += 1
        event(
            log,
            logging.WARNING,
            "retrying",
            service=self.service.name,
            consumer=self.spec.durable,
            subject=msg.subject,
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
            event(log, logging.ERROR, "dead-letter publish failed", subject=msg.subject, error=repr(exc))
            return None

    async def _finish_dead_letter(self, msg: Msg, failure: Failure, future: asyncio.Future[Any] | None) -> None:
        try:
            if future is None:
                raise RuntimeError("not published")
            await future
        except Exception as exc:
            # Never lost: leave it to come back and try dead-lettering again.
            event(log, logging.ERROR, "dead-letter not stored; message kept", subject=msg.subject, error=repr(exc))
            await msg.nak(delay=1.0)
            return
        self.dead_lettered += 1
        event(
            log,
            logging.WARNING,
            "dead-lettered",
            service=self.service.name,
            consumer=self.spec.durable,
            subject=msg.subject,
            attempts=msg.metadata.num_delivered,
            error=failure.error_type,
            reason=str(failure),
        )
        await msg.term()


class TimerWorker(ConsumerWorker):
    """Saga timers: JetStream delivers each schedule when due; we apply the timeout if still current.
    A timer that arrives early (clock skew between servers) is held back with nak(delay)."""

    def __init__(
        self,
        publisher: Publisher,
        service: ServiceSpec,
        spec: ConsumerSpec,
        machine: SagaMachine,
        bucket: Bucket,
    ):
        super().__init__(publisher, service, spec, {}, machine.spec.key)
        self.machine = machine
        self.bucket = bucket

    async def handle_batch(self, msgs: list[Msg]) -> None:
        await asyncio.gather(*(self._fire(m) for m in msgs))

    async def _fire(self, msg: Msg) -> None:
        try:
            timer = codec.loads(msg.data)
            key, alarm = timer[self.key], float(timer["alarm"])
        except Exception as exc:
            failure = Failure(f"malformed timer: {exc!r}", "DecodeError", True)
            await self._finish_dead_letter(msg, failure, await self._dead_letter(msg, failure))
            return
        early = alarm - time.time()
        if early > 0:  # the scheduler's clock ran ahead of ours
            await msg.nak(delay=early)
            return
        try:
            publishes = await self.bucket.mutate(key, self._step)
            futures = [await self._publish(p, msg) for p in publishes]
            async with asyncio.timeout(self.spec.ack_wait):
                await asyncio.gather(*futures)
        except Exception as exc:
            event(log, logging.WARNING, "timer retry", key=key, error=repr(exc))
            await msg.nak(delay=1.0)
            return
        await msg.ack()
        self.processed += 1

    def _step(self, record: Any) -> tuple[Any, list[Publish]]:
        decision = self.machine.on_alarm(record)
        if decision is None:
            return record, []
        return decision.record, decision.publishes
