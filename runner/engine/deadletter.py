"""Dead-letter entries: the original message plus headers that say where it came from and why.

Each entry's Nats-Msg-Id is `dlq.<consumer>.<stream>.<sequence>` of the original message: dead-lettering
the same delivery twice (a crash between publish and term) stores it once, while two consumers of one
message (two services) each keep their own entry.

A replay is addressed to the consumer that dead-lettered the message (`Flowrun-Replay-For: <durable>`): it
goes back to the original, shared subject, and every other consumer of that subject acks it without effect.
"""

from __future__ import annotations

import time

from nats.aio.msg import Msg

H_SUBJECT = "Flowrun-Original-Subject"
H_STREAM = "Flowrun-Original-Stream"
H_SEQ = "Flowrun-Original-Seq"
H_MSG_ID = "Flowrun-Original-Msg-Id"
H_SERVICE = "Flowrun-Service"
H_CONSUMER = "Flowrun-Consumer"
H_ATTEMPTS = "Flowrun-Attempts"
H_ERROR_TYPE = "Flowrun-Error-Type"
H_ERROR = "Flowrun-Error"
H_FAILED_AT = "Flowrun-Failed-At"
H_CORRELATION = "Flowrun-Correlation-Id"
H_REPLAYED = "Flowrun-Replayed"
H_REPLAY_FOR = "Flowrun-Replay-For"


def replayed_for_another(headers: dict[str, str], durable: str) -> bool:
    """A dead letter replayed for a different consumer of the same subject: not this consumer's to process."""
    target = headers.get(H_REPLAY_FOR)
    return target is not None and target != durable


def dead_letter_subject(prefix: str, service: str, original_subject: str) -> str:
    return f"{prefix}.{service}.{original_subject}"


def dead_letter_headers(
    msg: Msg, service: str, consumer: str, error_type: str, error: str, correlation_id: str | None
) -> dict[str, str]:
    meta = msg.metadata
    headers = {
        "Nats-Msg-Id": f"dlq.{consumer}.{meta.stream}.{meta.sequence.stream}",
        H_SUBJECT: msg.subject,
        H_STREAM: meta.stream,
        H_SEQ: str(meta.sequence.stream),
        H_SERVICE: service,
        H_CONSUMER: consumer,
        H_ATTEMPTS: str(meta.num_delivered),
        H_ERROR_TYPE: error_type,
        # Headers are single-line: keep the message readable and bounded.
        H_ERROR: " ".join(error.split())[:1000],
        H_FAILED_AT: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    original_id = (msg.headers or {}).get("Nats-Msg-Id")
    if original_id:
        headers[H_MSG_ID] = original_id
    if correlation_id:
        headers[H_CORRELATION] = correlation_id
    return headers
