"""Message headers flowrun sets and reads besides the dead-letter ones (runner/engine/deadletter.py).

`Flowrun-Accept-By` fences a message whose producer may give up on it: the HTTP API answers a client
within a deadline, and a write it sent can still reach JetStream after it answered "not accepted"
(a stalled server resumes and stores what was queued). Every consumer ignores such a message when
JetStream stored it after the deadline, so a write the client was told failed never takes effect.
"""

from __future__ import annotations

from nats.aio.msg import Msg

ACCEPT_BY = "Flowrun-Accept-By"


def accept_by(deadline: float) -> dict[str, str]:
    """The header for a deadline in epoch seconds."""
    return {ACCEPT_BY: f"{deadline:.6f}"}


def stored_too_late(msg: Msg, deadline: str) -> bool:
    """Did JetStream store the message after its producer's deadline? (JetStream's own timestamp.)"""
    try:
        limit = float(deadline)
    except ValueError:
        return True  # a mangled fence cannot vouch for the message
    return msg.metadata.timestamp.timestamp() > limit
