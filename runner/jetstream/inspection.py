"""Human-readable stream and consumer info: what `nats stream info` / `nats consumer info` show.

On a cluster it adds each replica's health. nats-server flags a replica `offline` only once it knows the server is
gone (a clean shutdown); a crashed one just stops answering, so a replica not heard from for UNSEEN_AFTER seconds
(three missed raft heartbeats, which nats-server sends every second) is shown offline too.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import ClusterInfo, PeerInfo
from nats.js.errors import ServiceUnavailableError

from runner.config.units import human_seconds

T = TypeVar("T")
UNSEEN_AFTER = 3.0


class Leaderless(Exception):
    """Nobody leads the stream or consumer right now, so nothing can answer for it (one line for the CLI)."""


def _size(n: int | None) -> str:
    if n is None or n < 0:
        return "unlimited"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:g} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _age(seconds: float | None) -> str:
    return "unlimited" if not seconds else human_seconds(seconds)


def _val(v: Any) -> Any:
    return v.value if hasattr(v, "value") else v


def _leaderless(what: str, why: str) -> Leaderless:
    return Leaderless(
        f"{what} has no leader right now ({why}): an election is in progress or too few of its servers are up; "
        "try again in a few seconds"
    )


async def _ask(what: str, request: Awaitable[T]) -> T:
    """A JetStream API request that a leaderless stream leaves unanswered (timeout) or refuses (503)."""
    try:
        return await request
    except (NatsTimeoutError, TimeoutError, NoRespondersError):
        raise _leaderless(what, "no answer") from None
    except ServiceUnavailableError as exc:
        raise _leaderless(what, exc.description or "JetStream unavailable") from None


def _replica(peer: PeerInfo) -> dict[str, Any]:
    unseen = (peer.active or 0) / 1e9
    return {
        "name": peer.name,
        "current": bool(peer.current),
        "offline": bool(peer.offline) or unseen > UNSEEN_AFTER,
        "lag": peer.lag or 0,
        "seen": f"{unseen:.1f}s ago",
    }


def _cluster(what: str, info: ClusterInfo | None) -> dict[str, Any] | None:
    if info is None:
        return None
    if not info.leader:
        raise _leaderless(what, "no leader elected")
    replicas = info.replicas or []
    return {
        "leader": info.leader,
        "replicas": [r.name for r in replicas],
        "replica_state": [_replica(r) for r in replicas],
    }


async def stream_info(js: JetStreamContext, name: str) -> dict[str, Any]:
    info = await _ask(f"stream {name}", js.stream_info(name))
    c, s = info.config, info.state
    return {
        "name": c.name,
        "description": c.description,
        "subjects": c.subjects,
        "retention": _val(c.retention),
        "storage": _val(c.storage),
        "replicas": c.num_replicas,
        "max_msgs": c.max_msgs,
        "max_bytes": _size(c.max_bytes),
        "max_age": _age(c.max_age),
        "max_msg_size": _size(c.max_msg_size),
        "discard": _val(c.discard),
        "duplicate_window": _age(c.duplicate_window),
        "deny_delete": c.deny_delete,
        "deny_purge": c.deny_purge,
        "state": {
            "messages": s.messages,
            "bytes": _size(s.bytes),
            "first_seq": s.first_seq,
            "last_seq": s.last_seq,
            "consumers": s.consumer_count,
            "deleted": s.deleted if isinstance(s.deleted, int) else len(s.deleted or []),
        },
        "cluster": _cluster(f"stream {name}", info.cluster),
    }


async def consumer_info(js: JetStreamContext, stream: str, name: str) -> dict[str, Any]:
    info = await _ask(f"consumer {stream}/{name}", js.consumer_info(stream, name))
    c = info.config
    return {
        "stream": info.stream_name,
        "name": info.name,
        "description": c.description,
        "ack_policy": _val(c.ack_policy),
        "ack_wait": _age(c.ack_wait),
        "max_deliver": c.max_deliver,
        "max_ack_pending": c.max_ack_pending,
        "filter_subjects": c.filter_subjects or ([c.filter_subject] if c.filter_subject else []),
        "deliver_policy": _val(c.deliver_policy),
        "state": {
            "pending": info.num_pending,
            "ack_pending": info.num_ack_pending,
            "redelivered": info.num_redelivered,
            "waiting_pulls": info.num_waiting,
            "delivered": {"consumer_seq": info.delivered.consumer_seq, "stream_seq": info.delivered.stream_seq},
            "ack_floor": {"consumer_seq": info.ack_floor.consumer_seq, "stream_seq": info.ack_floor.stream_seq},
        },
        "cluster": _cluster(f"consumer {stream}/{name}", info.cluster),
    }


def render(info: dict[str, Any], indent: int = 0) -> str:
    lines = []
    pad = "  " * indent
    for key, value in info.items():
        label = key.replace("_", " ")
        if isinstance(value, dict):
            lines.append(f"{pad}{label}:")
            lines.append(render(value, indent + 1))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines.append(f"{pad}{label}:")  # records, one line each
            lines += [f"{pad}  " + ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in row.items()) for row in value]
        elif isinstance(value, list):
            lines.append(f"{pad}{label}: {', '.join(map(str, value)) or '-'}")
        elif value is not None:
            lines.append(f"{pad}{label}: {value}")
    return "\n".join(lines)
