"""Assemble and run services: connect, provision, open buckets, start consumers and HTTP, stop cleanly.

One `Runtime` runs one or more services of the config in one process on one NATS connection.
`flowrun up` runs all of them; `flowrun start --service X` runs one, for scaling out: every process
of a service binds the same durable consumers, so JetStream spreads messages across them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from functools import partial
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
from runner.engine.versions import SagaVersions
from runner.handler import Context
from runner.jetstream import saga_store
from runner.jetstream.connection import connect, log_nats_error
from runner.jetstream.kv import Bucket
from runner.jetstream.provision import Plan, desired_consumers, plan_and_apply, timer_consumer
from runner.jetstream.publish import JetStreamProbe, Publisher
from runner.logs import event
from runner.serve.config_diff import http_changed, service_changes
from runner.serve.consumer_stats import ConsumerStatsPoller

log = logging.getLogger("flowrun.service")


HOT_INSTANCES = 1024  # saga records per bucket kept decoded (~5.5 KB each for an order): no decode per event


class ProvisionError(Exception):
    pass


class ReloadRefused(Exception):
    """A valid configuration this process cannot switch to while running (it keeps the one it has)."""


@dataclass
class RuntimeOptions:
    provision: str = "create"  # create | verify | off
    allow_replica_decrease: bool = False  # else fewer replicas than the server has is drift, not applied
    http_port: int | None = None  # overrides the YAML port of the (single) HTTP service
    metrics_port: int | None = None  # `/metrics` on its own port (for services without HTTP); 0 picks a free one
    metrics_host: str = "127.0.0.1"
    # SO_REUSEPORT on the HTTP site: the processes `flowrun up` starts for one service share its port. Off for a
    # lone `flowrun start`, so a second start on a taken port fails loudly instead of splitting the traffic.
    reuse_port: bool = False
    restart_delay: float = 1.0
    # dotted handler path → function run instead (`flowrun test` stubs: runner/testing/stubs.py)
    handlers: dict[str, Callable[..., Awaitable[Any]]] = field(default_factory=dict)


async def provision(js: JetStreamContext, config: Config, options: RuntimeOptions) -> Plan:
    """Make the server match the YAML as `options.provision` says (a mismatch under `verify` is a ProvisionError).
    `Runtime.start` calls it; `flowrun up` calls it once for all the service processes it starts."""
    plan = await plan_and_apply(js, config, options.provision, allow_replica_decrease=options.allow_replica_decrease)
    if options.provision == "verify" and (plan.pending or plan.drift):
        raise ProvisionError("server does not match the YAML:\n" + "\n".join(str(c) for c in plan.pending + plan.drift))
    for change in plan.drift:
        event(log, logging.WARNING, "provision drift", change=str(change))
    return plan


@dataclass
class _Supervised:
    worker: ConsumerWorker
    task: asyncio.Task[None] | None = None
    restarts: int = 0
    last_error: str | None = None
    retired: bool = False  # replaced by a reload: its loop ends instead of being restarted


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
    versions: dict[str, SagaVersions] = field(default_factory=dict)  # each saga's machines by definition version
    supervised: list[_Supervised] = field(default_factory=list)
    http_runners: list[Any] = field(default_factory=list)
    http_urls: list[str] = field(default_factory=list)
    jetstream_probe: JetStreamProbe | None = None
    consumer_stats: ConsumerStatsPoller | None = None
    metrics_runner: Any = None  # `/metrics` on its own port (an aiohttp AppRunner)
    metrics_url: str | None = None
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
        await provision(self.js, self.config, self.options)
        for name, bucket in self.config.buckets.items():
            self.buckets[name] = await self._open_bucket(self.config, name, bucket.cache)
        self._build_sagas()
        await self._store_definitions()
        self.supervised = list(self._desired_workers().values())
        for sup in self.supervised:
            sup.task = asyncio.create_task(self._supervise(sup), name=f"consumer:{sup.worker.name}")
        await self._start_metrics()
        for name in self.services:
            spec = self.config.services[name]
            if spec.http is not None:
                from runner.serve.http_api import start_http  # aiohttp only where a service serves HTTP

                runner, url = await start_http(self, spec, self.options.http_port, self.options.reuse_port)
                self.http_runners.append(runner)
                self.http_urls.append(url)

    async def _start_metrics(self) -> None:
        """Poll the consumers' info for the metrics; serve `/metrics` on its own port when asked to."""
        assert self.js is not None
        self.consumer_stats = ConsumerStatsPoller(
            self.js, lambda: [(sup.worker.spec.stream, sup.worker.spec.durable) for sup in self.supervised]
        ).start()
        if self.options.metrics_port is not None:
            from runner.serve.metrics_http import start_metrics_server  # aiohttp only where something serves HTTP

            host, port = self.options.metrics_host, self.options.metrics_port
            self.metrics_runner, self.metrics_url = await start_metrics_server(host, port)

    def _build_sagas(self) -> None:
        """The config's saga machines; a reload builds them anew (instances in flight keep their version)."""
        self.machines = {saga.name: SagaMachine(saga) for saga in self.config.sagas.values()}
        self.versions = {
            name: SagaVersions(machine, partial(saga_store.load, self.js)) for name, machine in self.machines.items()
        }

    async def _store_definitions(self) -> None:
        """The versions new instances record must stay readable after the next change of their saga."""
        assert self.js is not None
        own = [saga for saga in self.config.sagas.values() if saga.service in self.services]
        if not await saga_store.store_all(self.js, own):
            event(log, logging.WARNING, "saga definitions not stored: no bucket", bucket=saga_store.BUCKET)

    def _context(self, service: ServiceSpec) -> Context:
        return Context(
            service.name, service.settings, self.buckets, logging.getLogger(f"flowrun.handler.{service.name}")
        )

    def _schema(self, subject: str) -> PayloadValidator | None:
        schema = self.config.messages.get(subject)
        return PayloadValidator(schema) if schema else None

    def _build_workers(self, service: ServiceSpec) -> list[_Supervised]:
        """The service's consumers (and saga timers) as the current config wants them, not started."""
        assert self.js is not None
        built: list[_Supervised] = []
        ctx = self._context(service)
        for consumer in service.consumers.values():
            key = consumer.key  # resolved by the loader: what it consumes says which field correlates
            assert key is not None
            routes: dict[str, Route] = {}
            for binding in service.bindings:
                if any(matches(f, binding.subject) for f in consumer.filter_subjects):
                    fn = self.options.handlers.get(binding.handler) or resolve(self.config.root, binding.handler)
                    routes[binding.subject] = Route(
                        handler_route(binding, fn, ctx, key),
                        binding.retry,
                        binding.timeout or consumer.handler_timeout,
                        self._schema(binding.subject),
                    )
            for saga in self.config.sagas_of(service.name):
                if saga.consumer != consumer.durable:
                    continue
                versions, bucket = self.versions[saga.name], self.buckets[saga.bucket]
                run = saga_route(versions, bucket)
                for subject in saga.subjects():
                    routes[subject] = Route(run, service.retry, consumer.handler_timeout, self._schema(subject))
                routes[saga.start_on] = replace(routes[saga.start_on], rejected=start_rejected(versions, bucket))
            built.append(_Supervised(ConsumerWorker(self.publisher, service, consumer, routes, key)))
        for saga in self.config.sagas_of(service.name):
            if saga.timer_subject:
                spec = timer_consumer(saga, service)
                worker = TimerWorker(self.publisher, service, spec, self.versions[saga.name], self.buckets[saga.bucket])
                built.append(_Supervised(worker))
        return built

    async def _supervise(self, sup: _Supervised) -> None:
        """A consumer loop must never die silently: log, mark unhealthy, restart."""
        while not self._stopping and not sup.retired:
            try:
                await sup.worker.run()
                if self._stopping or sup.retired:
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
        body = {"status": "ok" if alive else "failing", "pid": os.getpid(), "connected": connected}
        return alive, {**body, "consumers": consumers}

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

    async def reload(self, new: Config, code_changed: bool = False) -> list[str]:
        """Switch to a reloaded, valid configuration without stopping; returns what changed, in words.

        A consumer whose spec is unchanged keeps pulling and takes the new routes (handlers, retry policies,
        settings) between messages. A changed one is re-bound: it stops pulling, finishes and acks what it is
        handling and hands back what it had queued — before provisioning changes it on the server, so a new
        filter subject never reaches a worker without its route — then a worker with the new spec takes over.
        A consumer dropped from the YAML stops (provisioning never deletes it). If provisioning fails, the
        stopped consumers start again as they were and the running configuration stays.
        """
        missing = [name for name in self.services if name not in new.services]
        if missing:
            raise ReloadRefused(f"service(s) {', '.join(missing)} no longer declared: restart to stop them")
        wanted = {f"{c.service}/{c.durable}": c for c in desired_consumers(new) if c.service in self.services}
        retiring = [sup for sup in self.supervised if wanted.get(sup.worker.name) != sup.worker.spec]
        await self._retire(retiring)
        try:
            plan = await self._provision(new)
        except BaseException:
            again = self._desired_workers()
            restarted = [again[sup.worker.name] for sup in retiring]
            self.supervised = [sup for sup in self.supervised if sup not in retiring] + restarted
            self._start(restarted)
            raise
        old, self.config = self.config, new
        self._build_sagas()
        await self._store_definitions()
        changes = [str(c) for c in plan.pending] + service_changes(old, new, self.services)
        if code_changed:
            changes.append("handler code reloaded")
        changes += self._replace_workers(retiring)
        changes += await self._rebuild_http(old, code_changed)
        return changes

    async def _provision(self, new: Config) -> Plan:
        """Make the server match the new YAML (or refuse, with --provision verify) and open new buckets."""
        assert self.js is not None and self.publisher is not None
        plan = await plan_and_apply(
            self.js, new, self.options.provision, allow_replica_decrease=self.options.allow_replica_decrease
        )
        if self.options.provision == "verify" and plan.pending:
            raise ReloadRefused("server does not match the new YAML: " + "; ".join(map(str, plan.pending)))
        for change in plan.drift:
            event(log, logging.WARNING, "provision drift", change=str(change))
        for name, bucket in new.buckets.items():
            if name not in self.buckets:
                self.buckets[name] = await self._open_bucket(new, name, bucket.cache)
        return plan

    async def _open_bucket(self, config: Config, name: str, cache_size: int) -> Bucket:
        """Saga instance buckets keep their hottest records decoded too: only the engine's own (pure) mutations
        touch them. Bounded apart from `cache:`, as a decoded record takes about four times its bytes."""
        sagas = any(saga.bucket == name for saga in config.sagas.values())
        kv = await self.js.key_value(name)
        return Bucket(
            kv, name, self.publisher, cache_size=cache_size, decoded=min(cache_size, HOT_INSTANCES) if sagas else 0
        )

    def _desired_workers(self) -> dict[str, _Supervised]:
        """The consumers the current config wants, built (not started), keyed by name."""
        return {
            sup.worker.name: sup for name in self.services for sup in self._build_workers(self.config.services[name])
        }

    def _replace_workers(self, retired: list[_Supervised]) -> list[str]:
        """Unchanged consumers adopt the new routes; re-bound and new ones start with the new spec."""
        desired = self._desired_workers()
        kept = [sup for sup in self.supervised if sup not in retired]
        for sup in kept:
            sup.worker.adopt(desired.pop(sup.worker.name).worker)
        names = {sup.worker.name for sup in retired}
        changes = [f"consumer {name} {'re-bound' if name in desired else 'stopped'}" for name in sorted(names)]
        changes += [f"consumer {name} started" for name in desired if name not in names]
        self._start(list(desired.values()))
        self.supervised = kept + list(desired.values())
        return changes

    def _start(self, workers: list[_Supervised]) -> None:
        for sup in workers:
            sup.task = asyncio.create_task(self._supervise(sup), name=f"consumer:{sup.worker.name}")

    async def _retire(self, retiring: list[_Supervised]) -> None:
        """Stop pulling, let in-flight batches finish and ack (bounded by the ack wait), as `stop` does."""
        for sup in retiring:
            sup.retired = True
            await sup.worker.stop()
        tasks = [sup.task for sup in retiring if sup.task]
        if tasks:
            _, still = await asyncio.wait(tasks, timeout=max(sup.worker.spec.ack_wait for sup in retiring))
            for task in still:
                task.cancel()

    async def _rebuild_http(self, old: Config, code_changed: bool) -> list[str]:
        """Restart a service's HTTP site on the port it has when its resources (or what they call) changed."""
        from runner.serve.http_api import start_http  # aiohttp only where a service serves HTTP

        served = [name for name in self.services if old.services[name].http is not None]
        changes = [
            f"HTTP of {name} added or removed: restart to apply"
            for name in self.services
            if (old.services[name].http is None) != (self.config.services[name].http is None)
        ]
        for i, name in enumerate(served):
            spec = self.config.services[name]
            if spec.http is None or not http_changed(old, self.config, spec, code_changed):
                continue
            port = int(self.http_urls[i].rsplit(":", 1)[1])
            await self.http_runners[i].cleanup()
            self.http_runners[i], self.http_urls[i] = await start_http(self, spec, port, self.options.reuse_port)
            changes.append(f"HTTP of {name} restarted on {self.http_urls[i]}")
        return changes

    async def stop(self) -> None:
        """Stop fetching, finish in-flight work and its acks, then drain the connection."""
        self._stopping = True
        for runner in [*self.http_runners, *([self.metrics_runner] if self.metrics_runner else [])]:
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
        if self.consumer_stats is not None:
            self.consumer_stats.stop()
        if self.publisher is not None:
            await self.publisher.close()
        if self.nc is not None and not self.nc.is_closed:
            try:
                await self.nc.drain()
            except Exception:  # reconnecting, or the server is gone: close without the drain
                with contextlib.suppress(Exception):  # a connection already lost cannot fail a stop
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
