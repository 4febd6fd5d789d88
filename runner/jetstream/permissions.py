"""Least-privilege NATS permissions per service, derived from the flows.

On an open account any client can publish any subject: a forged `orders.payment.completed` completes
an unpaid order, a forged `Nats-Msg-Id` makes JetStream drop the real event as a duplicate. The YAML
already says what each service emits and consumes, so its NATS user is computed from it: publish what
it emits, its dead letters, timers, KV writes and the few JetStream API calls its runtime makes; read
only its own inbox. Every right carries the reason it exists, so the generated config explains itself.
Creating streams, consumers and buckets is left to a separate `provisioner` user.
"""

from __future__ import annotations

from dataclasses import dataclass

from runner.config.model import Config, ConsumerSpec, ServiceSpec
from runner.config.subjects import within
from runner.jetstream import saga_store
from runner.jetstream.provision import desired_consumers, timer_consumer

PROVISIONER = "provisioner"
SERVICE_MODES = ("verify", "off")  # the --provision modes a service may run with under these permissions


@dataclass(frozen=True)
class Grant:
    subject: str
    why: str


@dataclass(frozen=True)
class UserPermissions:
    user: str
    inbox_prefix: str
    publish: tuple[Grant, ...]
    subscribe: tuple[Grant, ...]


class _Grants:
    """Subjects in first-granted order; one already covered by an earlier grant is not repeated."""

    def __init__(self) -> None:
        self._grants: dict[str, Grant] = {}

    def add(self, subject: str, why: str) -> None:
        if not any(within(subject, granted) for granted in self._grants):
            self._grants[subject] = Grant(subject, why)

    def all(self) -> tuple[Grant, ...]:
        return tuple(self._grants.values())


def inbox_prefix(service: str) -> str:
    """A per-service inbox (run it with NATS_INBOX_PREFIX), so no service can read another's replies."""
    return f"_INBOX_{service}"


def users(config: Config, service: str | None = None, provision: str = "verify") -> list[UserPermissions]:
    """One user per service (or just `service`), and the provisioner when all are asked for."""
    if provision not in SERVICE_MODES:
        raise ValueError(f"services run with --provision {' or '.join(SERVICE_MODES)} under these permissions")
    if service is not None:
        if service not in config.services:
            raise ValueError(f"unknown service {service!r}; declared: {', '.join(config.services)}")
        return [service_permissions(config, service, provision)]
    if PROVISIONER in config.services:
        raise ValueError(f"a service named {PROVISIONER!r} would share the provisioner's NATS user: rename it")
    return [service_permissions(config, name, provision) for name in config.services] + [
        provisioner_permissions(config)
    ]


def service_permissions(config: Config, name: str, provision: str = "verify") -> UserPermissions:
    service = config.services[name]
    pub = _Grants()
    _emitted(config, service, pub)
    _key_value(config, service, pub)
    for consumer in _consumers_of(config, service):
        _pull(consumer, pub)
    pub.add("$JS.API.INFO", "JetStream account info")
    if provision == "verify":
        _verify(config, pub)
    sub = _Grants()
    sub.add(f"{inbox_prefix(name)}.>", f"its replies and pulled messages (NATS_INBOX_PREFIX={inbox_prefix(name)})")
    return UserPermissions(name, inbox_prefix(name), pub.all(), sub.all())


def provisioner_permissions(config: Config) -> UserPermissions:
    """The admin: every JetStream API call (create, update, inspect, dead letters) and demo-data seeding,
    but no saga subject, so even it cannot forge an event."""
    pub = _Grants()
    pub.add("$JS.API.>", "create, update and inspect streams, consumers and buckets")
    for bucket in config.data:
        pub.add(f"$KV.{bucket}.>", f"seed demo data into {bucket}")
    for saga in config.sagas.values():
        pub.add(f"$KV.{saga_store.BUCKET}.{saga.name}.>", f"store the definition of saga {saga.name} by version")
    sub = _Grants()
    sub.add("_INBOX.>", "replies (the default inbox prefix of the flowrun CLI)")
    return UserPermissions(PROVISIONER, "_INBOX", pub.all(), sub.all())


def _emitted(config: Config, service: ServiceSpec, pub: _Grants) -> None:
    """Event subjects: handler outcomes, saga emits and compensations, timers, the HTTP start event,
    dead letters. Nothing else: that is what stops a service forging another's events."""
    for binding in service.bindings:
        for subject in binding.emits.values():
            pub.add(subject, f"emitted by {binding.handler}")
    for saga in config.sagas_of(service.name):
        for subject in sorted(saga.emitted()):
            pub.add(subject, f"emitted by saga {saga.name}")
        if saga.timer_subject:
            pub.add(f"{saga.timer_subject}.at.*", f"timeouts of saga {saga.name} (message schedules)")
    for resource in service.http.saga_resources() if service.http else ():
        saga = config.sagas[resource.saga or ""]
        pub.add(saga.start_on, f"POST {resource.path} starts saga {saga.name}")
        if saga.timer_subject:
            pub.add(f"{saga.timer_subject}.at.*", f"POST {resource.path} arms the instance's timeout")
        for command, subject in resource.commands.items():
            pub.add(subject, f"POST {resource.path}/{{{saga.key}}}/{command}")
    pub.add(f"{service.dead_letter.subject_prefix}.{service.name}.>", "its dead letters")


def _key_value(config: Config, service: ServiceSpec, pub: _Grants) -> None:
    written = [*service.kv, *(saga.bucket for saga in config.sagas_of(service.name))]
    listed = [config.sagas[r.saga or ""].bucket for r in service.http.saga_resources()] if service.http else []
    written += listed  # POST creates the instance
    viewed = [r.bucket or "" for r in service.http.view_resources()] if service.http else []
    for bucket in written:
        pub.add(f"$KV.{bucket}.>", f"KV writes to {bucket}")
    for bucket in written + viewed:
        pub.add(f"$JS.API.DIRECT.GET.KV_{bucket}.>", f"KV reads from {bucket}")
    for bucket in listed:
        pub.add(f"$JS.API.DIRECT.GET.KV_{bucket}", f"lists {bucket} (batched direct gets)")
    for bucket in config.buckets:  # the runtime opens every declared bucket at start (a stream info each)
        pub.add(f"$JS.API.STREAM.INFO.KV_{bucket}", "opens the bucket at start")
    definitions = f"KV_{saga_store.BUCKET}"
    for saga in config.sagas_of(service.name):
        pub.add(f"$JS.API.STREAM.INFO.{definitions}", "opens the saga definitions bucket")
        pub.add(f"$KV.{saga_store.BUCKET}.{saga.name}.>", f"stores its definition of saga {saga.name} at start")
        pub.add(
            f"$JS.API.DIRECT.GET.{definitions}.$KV.{saga_store.BUCKET}.{saga.name}.>",
            f"reads the versions of saga {saga.name} its instances started on",
        )


def _consumers_of(config: Config, service: ServiceSpec) -> list[ConsumerSpec]:
    timers = [timer_consumer(s, service) for s in config.sagas_of(service.name) if s.timer_stream and s.timer_subject]
    return [*service.consumers.values(), *timers]


def _pull(consumer: ConsumerSpec, pub: _Grants) -> None:
    stream, durable = consumer.stream, consumer.durable
    what = f"consumer {stream}/{durable}"
    pub.add(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}", f"pulls from {what}")
    pub.add(f"$JS.ACK.{stream}.{durable}.>", f"acks, naks and progress on {what}")
    pub.add(f"$JS.API.CONSUMER.INFO.{stream}.{durable}", f"info of {what}")
    pub.add(f"$JS.API.STREAM.INFO.{stream}", f"info of stream {stream}")


def _verify(config: Config, pub: _Grants) -> None:
    """Exactly what `--provision verify` reads (runner/jetstream/provision.py): the info of every declared stream,
    bucket and consumer, and each demo-data key. Read-only; with `--provision off` none of it is granted."""
    why = "--provision verify"
    for stream in [*config.streams, *(f"KV_{b}" for b in config.buckets)]:
        pub.add(f"$JS.API.STREAM.INFO.{stream}", why)
    for consumer in desired_consumers(config):
        pub.add(f"$JS.API.CONSUMER.INFO.{consumer.stream}.{consumer.durable}", why)
    for bucket, entries in config.data.items():
        for key in entries:
            pub.add(f"$JS.API.DIRECT.GET.KV_{bucket}.$KV.{bucket}.{key}", why)
    if config.sagas:
        pub.add(f"$JS.API.STREAM.INFO.KV_{saga_store.BUCKET}", why)
