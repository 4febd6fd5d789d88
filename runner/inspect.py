"""Human-readable stream and consumer info: what `nats stream info` / `nats consumer info` show."""

from __future__ import annotations

from typing import Any

from nats.js import JetStreamContext

from runner.units import human_seconds


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


async def stream_info(js: JetStreamContext, name: str) -> dict[str, Any]:
    info = await js.stream_info(name)
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
        "cluster": {"leader": info.cluster.leader, "replicas": [r.name for r in info.cluster.replicas or []]}
        if info.cluster
        else None,
    }


async def consumer_info(js: JetStreamContext, stream: str, name: str) -> dict[str, Any]:
    info = await js.consumer_info(stream, name)
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
    }


def render(info: dict[str, Any], indent: int = 0) -> str:
    lines = []
    pad = "  " * indent
    for key, value in info.items():
        label = key.replace("_", " ")
        if isinstance(value, dict):
            lines.append(f"{pad}{label}:")
            lines.append(render(value, indent + 1))
        elif isinstance(value, list):
            lines.append(f"{pad}{label}: {', '.join(map(str, value)) or '-'}")
        elif value is not None:
            lines.append(f"{pad}{label}: {value}")
    return "\n".join(lines)
