"""Streams and KV buckets: each option declared once, with its default, schema, parser and server mapping.

`runner/config/options.py` derives the rest from these declarations: the schema properties of `streams.yaml`'s
streams and `flows/`' buckets, the loader's parsing, `to_nats()`, and what provisioning updates or reports as drift.
A new JetStream option is one field here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nats.js import api

from runner.config.options import (
    DURATION,
    ENABLE_ONLY,
    FEATURE,
    FIXED,
    FLAG,
    LIMIT,
    REPLICAS,
    SIZE,
    TEXT,
    Kind,
    choice,
    nats_fields,
    option,
)

# A preset only fills defaults; anything the stream sets itself wins. Values are model values (seconds, bytes).
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "work_queue": {"retention": "workqueue"},
    "log": {"retention": "limits", "max_age": 90 * 86400.0, "deny_delete": True, "discard": "old"},
    "replicated": {"replicas": 3},
}

SUBJECTS = Kind(
    {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/subject"}, "uniqueItems": True},
    parse=tuple,
    to_nats=list,
)


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...] = option(SUBJECTS, (), nats="subjects", required=True)
    preset: str = option(
        choice(tuple(PRESETS)),
        "default",
        nats=None,
        doc="default: limits retention; work_queue: removed once acked; log: append-only with time retention; "
        "replicated: 3 replicas",
    )
    description: str | None = option(TEXT, None, nats="description")
    # Retention is fixed here although JetStream can switch limits ↔ interest: interest would drop every
    # message no consumer is interested in, and that is the operator's call.
    retention: str = option(choice(api.RetentionPolicy), "limits", nats="retention", change=FIXED)
    storage: str = option(choice(api.StorageType), "file", nats="storage", change=FIXED)
    replicas: int = option(REPLICAS, 1, nats="num_replicas")  # provisioning never lowers them unasked
    max_msgs: int = option(LIMIT, -1, nats="max_msgs")
    max_bytes: int = option(SIZE, -1, nats="max_bytes")
    max_age: float = option(DURATION, 0.0, nats="max_age")
    max_msg_size: int = option(SIZE, -1, nats="max_msg_size")
    max_msgs_per_subject: int = option(LIMIT, -1, nats="max_msgs_per_subject")
    max_consumers: int = option(LIMIT, -1, nats="max_consumers")
    discard: str = option(choice(api.DiscardPolicy), "old", nats="discard")
    duplicate_window: float = option(DURATION, 120.0, nats="duplicate_window")
    deny_delete: bool = option(FLAG, False, nats="deny_delete", change=ENABLE_ONLY)
    deny_purge: bool = option(FLAG, False, nats="deny_purge", change=ENABLE_ONLY)
    # nats-server turns rollups on for a stream that holds message schedules.
    allow_rollup: bool = option(FLAG, False, nats="allow_rollup_hdrs", implied_by="allow_msg_schedules")
    allow_direct: bool = option(FLAG, False, nats="allow_direct")
    allow_msg_schedules: bool = option(
        FEATURE,
        False,
        nats="allow_msg_schedules",
        change=ENABLE_ONLY,
        doc="hold messages with a Nats-Schedule header until due (nats-server 2.12+); saga timers need it",
    )
    allow_msg_ttl: bool = option(
        FEATURE,
        False,
        nats="allow_msg_ttl",
        change=ENABLE_ONLY,
        doc="a message's Nats-TTL header (e.g. 30s) removes it after that long (nats-server 2.11+)",
    )
    compression: str = option(choice(api.StoreCompression), "none", nats="compression")
    no_ack: bool = option(FLAG, False, nats="no_ack")

    def to_nats(self) -> api.StreamConfig:
        return api.StreamConfig(name=self.name, **nats_fields(self))


@dataclass(frozen=True)
class BucketSpec:
    """A KV bucket. JetStream keeps it in the stream KV_<name>: `server` names that stream's attribute."""

    name: str
    description: str | None = option(TEXT, None, nats="description")
    history: int = option(
        Kind({"type": "integer", "minimum": 1, "maximum": 64}), 1, nats="history", server="max_msgs_per_subject"
    )
    storage: str = option(choice(api.StorageType), "file", nats="storage", change=FIXED)
    replicas: int = option(REPLICAS, 1, nats="replicas", server="num_replicas")
    ttl: float = option(
        DURATION, 0.0, nats="ttl", server="max_age", doc="values expire this long after written; 0: never"
    )
    cache: int = option(
        Kind({"type": "integer", "minimum": 0}),
        1024,
        nats=None,
        doc="values each process keeps in memory so a compare-and-set needs no read (default 1024); "
        "size it to the keys in flight",
    )

    def to_nats(self) -> api.KeyValueConfig:
        # direct gets: reads on the shared inbox, no stream-API round trip
        return api.KeyValueConfig(bucket=self.name, direct=True, **nats_fields(self))
