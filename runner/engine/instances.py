"""Saga instances for people (`flowrun saga ls|show`): the newest ones, and one instance's event timeline.

Instances are read from their saga's KV bucket, most recently changed first (runner/jetstream/kv_scan.py).
A list filtered by state stops after SCAN_LIMIT entries and says so (`complete` False): a rare state in a
big bucket would otherwise read all of it. The timeline is the instance's own history (every event it
consumed and every message it published, oldest first), with the time between events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NotFoundError

from runner import codec
from runner.config.model import SagaSpec
from runner.config.subjects import is_identifier
from runner.engine.saga import iso
from runner.jetstream.kv_scan import NewestFirst

DEFAULT_LIMIT = 20
SCAN_LIMIT = 100_000  # entries read per saga at most, for a list filtered by state


@dataclass
class Listing:
    instances: list[dict[str, Any]] = field(default_factory=list)  # summaries, most recently changed first
    complete: bool = True  # False: a bucket held more than SCAN_LIMIT entries, the rest were not read
    missing: list[str] = field(default_factory=list)  # buckets that do not exist (yet)


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """What `saga ls` shows of an instance."""
    return {
        "saga": record.get("saga"),
        "id": record["key"],
        "state": record["state"],
        "reason": record.get("reason"),
        "version": record.get("version"),
        "created": iso(record["created"]),
        "updated": iso(record["updated"]),
        "duration": round(record["updated"] - record["created"], 3),
        "events": len(record.get("history", ())),
    }


def detail(record: dict[str, Any]) -> dict[str, Any]:
    """What `saga show` shows: the summary, the data (start payload and what its steps gathered), the steps
    and their compensation, and the timeline."""
    return {
        **summary(record),
        "data": record.get("data", {}),
        "gathered": record.get("gathered") or {},
        "steps": record.get("steps", []),
        "compensated": record.get("compensated", []),
        "deadline": _deadline(record.get("deadline")),
        "timeline": timeline(record),
    }


def timeline(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The history, oldest first: `in` for an event consumed, `out` for a message published, with seconds
    since the instance started and since the event before."""
    history = record.get("history", [])
    start = history[0]["time"] if history else record["created"]
    out: list[dict[str, Any]] = []
    previous = start
    for entry in history:
        item = {
            "time": iso(entry["time"]),
            "since_start": round(entry["time"] - start, 3),
            "since_previous": round(entry["time"] - previous, 3),
            "direction": "out" if "msg_id" in entry else "in",
            "subject": entry["subject"],
            "data": entry.get("data"),
        }
        if entry.get("ignored"):
            item["ignored"] = entry["ignored"]
        out.append(item)
        previous = entry["time"]
    return out


async def newest(
    nc: Client, sagas: list[SagaSpec], state: str | None, limit: int, scan_limit: int = SCAN_LIMIT
) -> Listing:
    """Up to `limit` instances of `sagas` (in `state`, if given), most recently changed first."""
    js = nc.jetstream()
    listing = Listing()
    for spec in sagas:
        try:
            info = await js.stream_info(f"KV_{spec.bucket}")
        except NotFoundError:
            listing.missing.append(spec.bucket)
            continue
        read = 0
        found: list[dict[str, Any]] = []
        async with NewestFirst(nc, spec.bucket, info.config.max_msgs_per_subject or 1) as walk:
            while len(found) < limit and (window := await walk.next_window()) is not None:
                for entry in window.entries:
                    read += 1
                    record = codec.loads(entry.value)
                    if record.get("saga", spec.name) == spec.name and state in (None, record.get("state")):
                        found.append(summary({"saga": spec.name, **record}))
                        if len(found) == limit:
                            break
                if read >= scan_limit and len(found) < limit:
                    listing.complete = False
                    break
        listing.instances += found
    listing.instances.sort(key=lambda s: s["updated"], reverse=True)
    del listing.instances[limit:]
    return listing


async def find(nc: Client, sagas: list[SagaSpec], key: str) -> list[dict[str, Any]]:
    """The instance named `key` in each of `sagas` that has one (normally one saga)."""
    if not is_identifier(key):
        return []
    js = nc.jetstream()
    found = []
    for spec in sagas:
        try:
            entry = await (await js.key_value(spec.bucket)).get(key)
        except (BucketNotFoundError, KeyNotFoundError):
            continue
        if entry.value:
            record = codec.loads(entry.value)
            if record.get("saga", spec.name) == spec.name:
                found.append(detail({"saga": spec.name, **record}))
    return found


def _deadline(deadline: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if not deadline else {"state": deadline["state"], "due": iso(deadline["due"])}
