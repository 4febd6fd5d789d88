"""Each consumer's correlation key: the payload field naming the instance a message belongs to.

It follows from what the consumer consumes. A consumer that delivers a saga's events uses that saga's
key. A consumer of handlers uses the key of the saga whose subjects those handlers take (its start event,
its commands); where that is ambiguous (sagas with different keys) or unknown (no saga's subject), the
consumer must say so itself with `key:`. There is no default field name.
"""

from __future__ import annotations

from dataclasses import replace

from runner.config.model import ConsumerSpec, SagaSpec, ServiceSpec
from runner.config.subjects import matches

Problem = tuple[str, tuple[str, ...], str]  # (service, where in it, message)


def resolve(
    services: dict[str, ServiceSpec], sagas: dict[str, SagaSpec]
) -> tuple[dict[str, ServiceSpec], list[Problem]]:
    """The services with every consumer's `key` set, and the consumers whose key cannot be known."""
    problems: list[Problem] = []
    out = {}
    for service in services.values():
        consumers = {}
        for durable, consumer in service.consumers.items():
            key, problem = _key(service, consumer, sagas)
            if problem is not None:
                problems.append((service.name, problem[0], problem[1]))
            consumers[durable] = replace(consumer, key=key)
        out[service.name] = replace(service, consumers=consumers)
    return out, problems


def _key(
    service: ServiceSpec, consumer: ConsumerSpec, sagas: dict[str, SagaSpec]
) -> tuple[str | None, tuple[tuple[str, ...], str] | None]:
    where = ("consumers", consumer.durable)
    driven = [s for s in sagas.values() if s.service == service.name and s.consumer == consumer.durable]
    if driven:
        keys = sorted({s.key for s in driven})
        if len(keys) > 1:
            names = ", ".join(f"{s.name} (key {s.key})" for s in driven)
            return None, (where, f"consumer {consumer.durable!r} delivers sagas {names}: give each its own consumer")
        if consumer.key not in (None, keys[0]):
            message = f"consumer {consumer.durable!r} delivers saga {driven[0].name}'s events, keyed by {keys[0]!r}"
            return None, ((*where, "key"), f"{message}: drop 'key: {consumer.key}'")
        return keys[0], None
    if consumer.key is not None:
        return consumer.key, None
    handled = {b.subject for b in service.bindings if any(matches(f, b.subject) for f in consumer.filter_subjects)}
    owners = {s.name: s.key for s in sagas.values() if handled & (s.subjects() | s.emitted())}
    if len(set(owners.values())) == 1:
        return next(iter(owners.values())), None
    if not owners:
        message = f"consumer {consumer.durable!r} handles no saga's subjects, so nothing says which payload field"
        return None, (where, f"{message} correlates its messages: declare it (key: <field>)")
    names = ", ".join(f"{name} (key {key})" for name, key in sorted(owners.items()))
    return None, (
        where,
        f"consumer {consumer.durable!r} handles subjects of sagas {names}: declare its key (key: <field>)",
    )
