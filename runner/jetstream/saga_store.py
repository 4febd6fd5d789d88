"""Saga definitions kept in JetStream by version, so an instance can finish on the definition it started on.

One KV bucket, FLOWRUN_SAGAS, key `<saga>.<version>` (runner/config/saga_json.py), value the definition
as JSON. Provisioning writes the current definitions (a create: a version's content never changes);
nothing deletes old ones, as an instance may still need them.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError

from runner import codec
from runner.config import saga_json
from runner.config.model import Config, SagaSpec
from runner.config.streams import BucketSpec
from runner.jetstream.kv import stored_keys

BUCKET = "FLOWRUN_SAGAS"


@dataclass(frozen=True)
class StoredVersion:
    saga: str
    version: str
    spec: SagaSpec


def key(saga: str, version: str) -> str:
    return f"{saga}.{version}"


def bucket_spec(config: Config) -> BucketSpec | None:
    """The definitions bucket, as many replicas as the most replicated bucket of saga instances (they need it
    as much as their own); None without sagas."""
    if not config.sagas:
        return None
    replicas = [config.buckets[s.bucket].replicas for s in config.sagas.values() if s.bucket in config.buckets]
    return BucketSpec(BUCKET, description="flowrun saga definitions by version", replicas=max(replicas, default=1))


async def store(js: JetStreamContext, spec: SagaSpec) -> bool:
    """Write the definition under its version; False if it is there already (the same content, by construction)."""
    kv = await js.key_value(BUCKET)
    try:
        await kv.create(key(spec.name, saga_json.version(spec)), codec.dumps(saga_json.to_json(spec)))
    except KeyWrongLastSequenceError:
        return False
    return True


async def store_all(js: JetStreamContext, specs: list[SagaSpec]) -> bool:
    """Store each definition not stored yet; False when there is no definitions bucket to store them in."""
    try:
        for spec in specs:
            await store(js, spec)
    except BucketNotFoundError:
        return False
    return True


async def is_stored(js: JetStreamContext, spec: SagaSpec) -> bool:
    try:
        kv = await js.key_value(BUCKET)
        await kv.get(key(spec.name, saga_json.version(spec)))
    except (BucketNotFoundError, KeyNotFoundError):
        return False
    return True


async def load(js: JetStreamContext, saga: str, version: str) -> SagaSpec | None:
    """The stored definition, or None where there is none."""
    try:
        kv = await js.key_value(BUCKET)
        entry = await kv.get(key(saga, version))
    except (BucketNotFoundError, KeyNotFoundError):
        return None
    return saga_json.from_json(codec.loads(entry.value)) if entry.value else None


async def stored_versions(js: JetStreamContext, saga: str | None = None) -> list[StoredVersion]:
    """Every stored definition (of `saga`, if given), oldest first by when it was stored."""
    try:
        kv = await js.key_value(BUCKET)
        keys = await stored_keys(js, BUCKET)
    except (BucketNotFoundError, NotFoundError):
        return []
    found = []
    for name in keys:
        if saga is not None and not name.startswith(f"{saga}."):
            continue
        try:
            entry = await kv.get(name)
        except KeyNotFoundError:  # deleted
            continue
        if entry.value:
            spec = saga_json.from_json(codec.loads(entry.value))
            found.append((entry.revision or 0, StoredVersion(spec.name, saga_json.version(spec), spec)))
    return [v for _, v in sorted(found, key=lambda pair: pair[0])]
