"""Assemble and run services: connect, provision, open buckets, start consumers and HTTP, stop cleanly.

One `Runtime` runs one or more services of the config in one process on one NATS connection.
`flowrun up` runs all of them; `flowrun start --service X` runs one, for scaling out: every process
of a service binds the same durable consumers, so JetStream spreads messages across them.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field, replace
from typing import Any

from nats.aio.client import Client
from nats.js import JetStreamContext

from runner.config.connection import ConnectionSpec
from runner.config.dotted import resolve
from runner.config.model import Config, ServiceSpec
from runner.config.subjects import matches
from runner.engine.dispatch import ConsumerWorker, TimerWorker
from runner.engine.routes import Route, handler_route, saga_route, start_rejected
from runner.engine.saga import SagaMachine
from runner.engine.validation import PayloadValidator
from runner.handler import Context
from runner.jetstream.connection import connect, log_nats_error
from runner.jetstream.kv import Bucket
from runner.jetstream.provision import plan_and_apply, timer_consumer
from runner.jetstream.publish import JetStreamProbe, Publisher
from runner.logs import event

log = logging.getLogger("flowrun.service")


class ProvisionError(Exception):
    pass


@dataclass
class RuntimeOptions:
    provision: str = "create"  # create | verify | off
    allow_replica_decrease: bool = False  # else fewer replicas than the server has is drift, not applied
    http_port: int | None = None  # overrides the YAML port of the (single) HTTP service
    restart_delay: float = 1.0


@dataclass
class _Supervised:
    worker: ConsumerWorker
    task: asyncio.Task[None] | None = None
    restarts: int = 0
    last_error: str | None = None


@dataclass
class Runtime:
    config: Config
    services: list[str]
    connection: ConnectionSpec | str  # a plain URL string is read as ConnectionSpec.from_url
    options: RuntimeOptions = field(default_factory=RuntimeOptions)
    nc: Client | None = None
    js: JetStreamContext | None = None
    publisher: Publisher | None = None
    buckets: dict[str, Bucket] = field(default_factory=dict)
    machines: dict[str, SagaMachine] = field(default_factory=dict)
    supervised: list[_Supervised] = field(default_factory=list)
    http_runners: list[Any] = field(default_factory=list)
    http_urls: list[str] = field(default_factory=list)
    jetstream_probe: JetStreamProbe | None = None
    _stopping: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.connection, str):
            self.connection = ConnectionSpec.from_url(self.connection)

    async def start(self) -> None:
        unknown = [s for s in self.services if s not in self.config.services]
        if unknown:
            raise ValueError(f"unknown service(s): {', '.join(unknown)}; declared: {', '.join(self.config.services)}")
        assert isinstance(self.connection, ConnectionSpec)
        self.nc = await connect(
            self.connection,
            name=f"flowrun:{','.join(self.services)}",
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            # A stalled or cut-off server is noticed in ~15 s (not nats-py's 4 min), so the client
            # fails over to another node of the cluster.
            ping_interval=5,
            max_outstanding_pings=3,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnect,
            reconnected_cb=self._on_reconnect,
        )
        self.js = self.nc.jetstream()
        self.publisher = await Publisher(self.nc).start()
        self.jetstream_probe = JetStreamProbe(self.publisher).start()
        plan = await plan_and_apply(
            self.js, self.config, self.options.provision, allow_replica_decrease=self.options.allow_replica_decrease
        )
        if self.options.provision == "verify" and (plan.pending or plan.drift):
            raise ProvisionError(
                "server does not match the YAML:\n" + "\n".join(str(c) for c in plan.pending + plan.drift)
            )
        for change in plan.drift:
            event(log, logging.WARNING, "provision drift", change=str(change))
        for name, bucket in self.config.buckets.items():
            kv = await self.js.key_value(name)
            self.buckets[name] = Bucket(kv, name, self.publisher, cache_size=bucket.cache)
        for saga in self.config.sagas.values():
            self.machines[saga.name] = SagaMachine(saga)
        for name in self.services:
            self._build_workers(self.config.services[name])
        for sup in self.supervised:
            sup.task = asyncio.create_task(self._supervise(sup), name=f"consumer:{sup.worker.name}")
        for name in self.services:
            spec = self.config.services[name]
            if spec.http is not None:
                from runner.serve.http_api import start_http  # aiohttp only where a service serves HTTP

                runner, url = await start_http(self, spec, self.options.http_port)
                self.http_runners.append(runner)
                self.http_urls.append(url)

    def _context(self, service: ServiceSpec) -> Context:
        return Context(
            service.name, service.settings, self.buckets, logging.getLogger(f"flowrun.handler.{service.name}")
        )

    def _schema(self, subject: str) -> PayloadValidator | None:
        schema = self.config.messages.get(subject)
        return PayloadValidator(schema) if schema else None

    def _build_workers(self, service: ServiceSpec) -> None:
        assert self.js is not None
        ctx = self._context(service)
        for consumer in service.consumers.values():
            key = consumer.key  # resolved by the loader: what it consumes says which field correlates
            assert key is not None
            routes: dict[str, Route] = {}
            for binding in service.bindings:
                if any(matches(f, binding.subject) for f in consumer.filter_subjects):
                    fn = resolve(self.config.root, binding.handler)
                    routes[binding.subject] = Route(
                        handler_route(binding, fn, ctx, key),
                        binding.retry,
                        binding.timeout or consumer.handler_timeout,
                        self._schema(binding.subject),
                    )
            for saga in self.config.sagas_of(service.name):
                if saga.consumer != consumer.durable:
                    continue
                machine, bucket = self.machines[saga.name], self.buckets[saga.bucket]
                run = saga_route(machine, bucket)
                for subject in saga.subjects():
                    routes[subject] = Route(run, service.retry, consumer.handler_timeout, self._schema(subject))
                routes[saga.start_on] = replace(routes[saga.start_on], rejected=start_rejected(machine, bucket))
            worker = ConsumerWorker(self.publisher, service, consumer, routes, key)
            self.supervised.append(_Supervised(worker))
        for saga in self.config.sagas_of(service.name):
            if saga.timer_subject:
                spec = timer_consumer(saga, service)
                worker = TimerWorker(self.publisher, service, spec, self.machines[saga.name], self.buckets[saga.bucket])
                self.supervised.append(_Supervised(worker))

    async def _supervise(self, sup: _Supervised) -> None:
        """A consumer loop must never die silently: log, mark unhealthy, restart."""
        while not self._stopping:
            try:
                await sup.worker.run()
                if self._stopping:
                    return
                raise RuntimeError("consumer loop returned unexpectedly")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                sup.restarts += 1
                sup.last_error = repr(exc)
                event(log, logging.ERROR, "consumer loop failed; restarting", consumer=sup.worker.name, error=repr(exc))
                await asyncio.sleep(self.options.restart_delay)
                sup.worker._stopping = False

    def _consumers(self) -> dict[str, dict[str, Any]]:
        return {
            s.worker.name: {
                "ready": s.worker.ready,
                "processed": s.worker.processed,
                "retried": s.worker.retried,
                "deadLettered": s.worker.dead_lettered,
                "restarts": s.restarts,
                **({"outageSeconds": round(s.worker.outage.lasted(), 1)} if s.worker.outage.active() else {}),
                **({"lastError": s.last_error} if s.last_error else {}),
            }
            for s in self.supervised
        }

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Liveness: the process works (its consumer loops run). A NATS outage does not make it
        unhealthy (restarting would not help); it makes it unready."""
        consumers = self._consumers()
        alive = not self._stopping and all(s.task is not None and not s.task.done() for s in self.supervised)
        connected = bool(self.nc and self.nc.is_connected)
        return alive, {"status": "ok" if alive else "failing", "connected": connected, "consumers": consumers}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Readiness: connected, JetStream answering, every consumer bound and out of any outage."""
        connected = bool(self.nc and self.nc.is_connected)
        consumers = self._consumers()
        problems = []
        if self._stopping:
            problems.append("stopping")
        if not connected:
            problems.append("not connected to NATS")
        if self.jetstream_probe is not None and not self.jetstream_probe.ok:
            problems.append(f"JetStream not answering: {self.jetstream_probe.error}")
        problems += [f"consumer {name} not bound" for name, c in consumers.items() if not c["ready"]]
        problems += [f"consumer {name}: JetStream unavailable" for name, c in consumers.items() if "outageSeconds" in c]
        body: dict[str, Any] = {"status": "ready" if not problems else "unavailable", "connected": connected}
        if problems:
            body["problems"] = problems
        body["consumers"] = consumers
        return not problems, body

    async def stop(self) -> None:
        """Stop fetching, finish in-flight work and its acks, then drain the connection."""
        self._stopping = True
        for runner in self.http_runners:
            await runner.cleanup()
        for sup in self.supervised:
            await sup.worker.stop()
        tasks = [s.task for s in self.supervised if s.task]
        if tasks:
            _, still = await asyncio.wait(
                tasks, timeout=max((s.worker.spec.ack_wait for s in self.supervised), default=5)
            )
            for task in still:
                task.cancel()
        for sup in self.supervised:
            w = sup.worker
            event(
                log,
                logging.INFO,
                "consumer stopped",
                consumer=w.name,
                processed=w.processed,
                retried=w.retried,
                dead_lettered=w.dead_lettered,
            )
        if self.jetstream_probe is not None:
            self.jetstream_probe.stop()
        if self.publisher is not None:
            await self.publisher.close()
        if self.nc is not None and not self.nc.is_closed:
            try:
                await self.nc.drain()
            except Exception:  # closing anyway
                await self.nc.close()

    async def _on_error(self, exc: Exception) -> None:
        log_nats_error(log, exc)

    async def _on_disconnect(self) -> None:
        if self.publisher is not None:
            self.publisher.connection_lost()
        for sup in self.supervised:
            if sup.worker.pull is not None:
                sup.worker.pull.disconnected()
        if not self._stopping:
            event(log, logging.WARNING, "nats disconnected")

    async def _on_reconnect(self) -> None:
        event(log, logging.WARNING, "nats reconnected")
        for sup in self.supervised:
            if sup.worker.pull is not None:
                await sup.worker.pull.reconnected()
