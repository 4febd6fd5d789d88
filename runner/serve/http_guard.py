"""What keeps the HTTP API safe from broken or hostile clients, apart from the resources themselves.

- Errors quote client input only clipped (a 1 MB body must not come back as a 1 MB error).
- Only `application/json` bodies are accepted: a web page can send text/plain or form posts to a local
  API without a CORS preflight (a cross-site request forgery); it cannot send application/json.
- Failures caused by the client's bytes (bad Content-Encoding, broken chunked framing) are 400s, and a
  broker that does not answer is a 503 with Retry-After, never a 500.
- Responses carry headers that keep browsers from sniffing, framing, caching or referring them.
- aiohttp's parser rejects malformed requests before any middleware sees them and logs each at ERROR
  with a traceback: anyone could flood the log. Its supported hook is the `logger` it is given
  (PROTOCOL_LOG); a filter turns those records into one short debug line. Its answer (a text/plain
  400 quoting the bad line, at most max_field_size = 8190 bytes) has no supported hook (aiohttp#3287).
"""

from __future__ import annotations

import logging

import nats.errors
from aiohttp import web
from aiohttp.http import HttpProcessingError
from aiohttp.http_exceptions import ContentEncodingError

from runner.errors import RetryableError
from runner.jetstream.publish import Unavailable

MAX_QUOTE = 80
RETRY_AFTER_SECONDS = 2
READ_DEADLINE = 3.0  # seconds; reads are safe to give up on at any point
WRITE_BACKSTOP = 5.0  # beyond body timeout + configured deadline: the intake's grace (<= 3 s) fits in it
# A body not received by then is a 408. aiohttp does not fail a body whose chunked framing breaks in a
# later packet: the read just waits, as it does for a client that stops sending.
BODY_TIMEOUT = 5.0

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'",
    "Server": "flowrun",  # instead of aiohttp's "Python/3.x aiohttp/3.y"
}

# Raised while reading a request body whose bytes are wrong: the client's fault.
CLIENT_ERRORS = (web.RequestPayloadError, HttpProcessingError)
# NATS did not answer in time or is unreachable: worth retrying later.
BROKER_UNAVAILABLE = (TimeoutError, nats.errors.Error, Unavailable, RetryableError)

PROTOCOL_LOG = logging.getLogger("flowrun.http.protocol")


def clip(text: object, limit: int = MAX_QUOTE) -> str:
    """Client input as it may appear in an error: at most `limit` characters."""
    value = str(text)
    return value if len(value) <= limit else value[: limit - 1] + "…"


def is_json(request: web.Request) -> bool:
    """`application/json`, optionally with a UTF-8 charset (JSON is UTF-8, RFC 8259)."""
    if request.content_type != "application/json":
        return False
    charset = request.charset
    return charset is None or charset.lower() in ("utf-8", "utf8")


def unreadable_body_message(exc: BaseException) -> str:
    """Why a body could not be read, in fixed words: parser messages quote the offending bytes."""
    causes = (exc, exc.__cause__)
    if any(isinstance(c, ContentEncodingError) for c in causes):
        return "request body does not match its Content-Encoding"
    return "request body is malformed (chunked framing or length)"


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """A response keeps a Content-Security-Policy it set itself (the /docs page allows its inline style)."""
    own_policy = response.headers.get("Content-Security-Policy")
    response.headers.update(SECURITY_HEADERS)
    if own_policy is not None:
        response.headers["Content-Security-Policy"] = own_policy


class QuietClientErrors(logging.Filter):
    """aiohttp's records about malformed requests: one short debug line, no traceback, no echo."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, CLIENT_ERRORS):
            return True  # anything else is ours to look at, traceback and all
        if not PROTOCOL_LOG.isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        record.msg, record.args = "malformed request refused", ()
        record.exc_info, record.exc_text = None, None
        record.fields = {"error": type(exc).__name__, "status": getattr(exc, "code", 400)}
        return True


PROTOCOL_LOG.addFilter(QuietClientErrors())
