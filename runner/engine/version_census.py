"""How many instances of each stored saga version are still live (not in a terminal state).

An old version's definition can be retired only once none of its instances is live. The count reads the
instances themselves, newest first (runner/jetstream/kv_scan.py), at most `limit` of them per bucket:
a bucket with more is counted in part, and says so (`complete` False), so the counts are lower bounds.
Live instances are usually the newest ones, so a partial count misses few of them.

A changed saga may no longer consume an event an older version still waits for: the saga's consumer
takes its filter subjects and routes from the current config only. Such subjects are reported for
each version with live instances (`stranded`): keep them in the new definition until those finish.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nats.aio.client import Client
from nats.js.errors import NotFoundError

from runner import codec
from runner.config.model import SagaSpec
from runner.engine.saga import SagaMachine
from runner.jetstream.kv_scan import NewestFirst
from runner.jetstream.saga_store import StoredVersion, stored_versions

DEFAULT_LIMIT = 10_000
UNVERSIONED = "(unversioned)"  # instances stored before versions were recorded: run on the current definition


@dataclass
class VersionCount:
    saga: str
    version: str
    stored: bool  # its definition is in the definitions bucket
    live: int = 0
    finished: int = 0
    stranded: list[str] = field(default_factory=list)  # events it consumes that the current definition does not


@dataclass
class Scan:
    saga: str
    bucket: str
    instances: int = 0  # read from the bucket
    complete: bool = True  # False: the bucket holds more than `limit` instances, the rest were not counted
    missing: bool = False  # the bucket does not exist (yet)


@dataclass
class Census:
    versions: list[VersionCount] = field(default_factory=list)
    scans: list[Scan] = field(default_factory=list)


def stranded_subjects(started_on: SagaSpec, current: SagaSpec) -> list[str]:
    """Events instances of `started_on` may wait for that no consumer of the `current` definition takes."""
    return sorted(started_on.subjects() - current.subjects())


async def census(
    nc: Client, current: dict[str, SagaSpec], saga: str | None = None, limit: int = DEFAULT_LIMIT
) -> Census:
    """Every stored version of every saga (or of `saga`) with its live and finished instance counts, and
    for live ones, the events `current` (the config's sagas) would leave unconsumed."""
    stored = await stored_versions(nc.jetstream(), saga)
    out = Census()
    for name in dict.fromkeys(v.saga for v in stored):
        versions = [v for v in stored if v.saga == name]
        counts, scan = await _count(nc, versions, limit)
        specs = {v.version: v.spec for v in versions}
        for count in counts:
            if count.live and name in current and count.version in specs:
                count.stranded = stranded_subjects(specs[count.version], current[name])
        out.versions += counts
        out.scans.append(scan)
    return out


async def _count(nc: Client, versions: list[StoredVersion], limit: int) -> tuple[list[VersionCount], Scan]:
    """One saga's instances, read from the bucket of its newest version, tallied by version."""
    newest = versions[-1].spec
    terminal = {v.version: SagaMachine(v.spec).terminal for v in versions}
    counts = {v.version: VersionCount(v.saga, v.version, stored=True) for v in versions}
    scan = Scan(newest.name, newest.bucket)
    try:
        info = await nc.jetstream().stream_info(f"KV_{newest.bucket}")
    except NotFoundError:
        scan.missing = True
        return list(counts.values()), scan
    async with NewestFirst(nc, newest.bucket, info.config.max_msgs_per_subject or 1) as walk:
        while (window := await walk.next_window()) is not None:
            for entry in window.entries:
                if scan.instances >= limit:
                    scan.complete = False
                    return list(counts.values()), scan
                scan.instances += 1
                record = codec.loads(entry.value)
                if record.get("saga", newest.name) != newest.name:
                    continue  # another saga sharing the bucket
                version = record.get("version") or UNVERSIONED
                count = counts.setdefault(version, VersionCount(newest.name, version, stored=False))
                if record.get("state") in terminal.get(version, terminal[versions[-1].version]):
                    count.finished += 1
                else:
                    count.live += 1
    return list(counts.values()), scan
