"""Connecting to NATS with a `ConnectionSpec` (runner/config/connection.py): nats-py's options, the TLS context,
a first connect that fails fast and says why, and clear lines for permission violations. No secret reaches an
error message or a log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import nats.errors
from nats.aio.client import DEFAULT_MAX_RECONNECT_ATTEMPTS, Client

from runner.config.connection import ConnectionOptionError, ConnectionSpec, named
from runner.logs import event

log = logging.getLogger("flowrun.nats")

FIRST_CONNECT_RETRIES = 1  # the first connect tries each server twice, then says why it failed
_PERMISSION = re.compile(r'permissions violation for (publish|subscription) to "([^"]+)"', re.IGNORECASE)


class ConnectionFailed(ConnectionError):
    """No server accepted us; the message names the servers tried and why, never a secret."""


def tls_context(spec: ConnectionSpec) -> ssl.SSLContext | None:
    """A context trusting `tls_ca` and presenting the client certificate; None when TLS is not asked for
    (a server that requires TLS then gets nats-py's default: the system's CAs)."""
    if not (spec.tls_ca or spec.tls_cert or spec.tls_handshake_first):
        return None
    try:
        context = ssl.create_default_context(cafile=spec.tls_ca)
    except (ssl.SSLError, OSError) as exc:
        raise ConnectionOptionError(f"{named('tls_ca')}: cannot load {spec.tls_ca}: {_ssl_reason(exc)}") from None
    if spec.tls_cert:
        try:
            context.load_cert_chain(spec.tls_cert, spec.tls_key)
        except (ssl.SSLError, OSError) as exc:
            raise ConnectionOptionError(
                f"{named('tls_cert')} / {named('tls_key')}: cannot load {spec.tls_cert} with {spec.tls_key}: "
                f"{_ssl_reason(exc)}"
            ) from None
    return context


def client_options(spec: ConnectionSpec) -> dict[str, Any]:
    """nats-py's connect() arguments for the spec."""
    options: dict[str, Any] = {
        "servers": list(spec.servers),
        "connect_timeout": spec.connect_timeout,
        "tls_handshake_first": spec.tls_handshake_first,
    }
    if spec.user is not None:
        options.update(user=spec.user, password=spec.password)
    if spec.token:
        options["token"] = spec.token
    if spec.creds:
        options["user_credentials"] = spec.creds
    if spec.nkey:
        options["nkeys_seed"] = spec.nkey
    if spec.inbox_prefix:
        options["inbox_prefix"] = spec.inbox_prefix
    tls = tls_context(spec)
    if tls is not None:
        options["tls"] = tls
    return options


async def connect(spec: ConnectionSpec, **client_kwargs: Any) -> Client:
    """Connect, or raise ConnectionFailed naming the servers and why.

    The first connect fails fast even when the caller wants endless reconnects afterwards (nats-py reads
    max_reconnect_attempts <= 0 as "forever", and applies it to the first connect too); errors during it
    are summed up in the exception instead of reaching `error_cb`. Later errors go to `error_cb` (default:
    `log_nats_error`).
    """
    spec.check()
    options = {**client_options(spec), **client_kwargs}
    later_attempts = options.get("max_reconnect_attempts", DEFAULT_MAX_RECONNECT_ATTEMPTS)
    options["max_reconnect_attempts"] = (
        min(later_attempts, FIRST_CONNECT_RETRIES) if later_attempts > 0 else FIRST_CONNECT_RETRIES
    )
    callback: Callable[[Exception], Awaitable[None]] = options.pop("error_cb", None) or _log_error
    seen: list[BaseException] = []
    connected = False
    nc = Client()

    async def on_error(exc: Exception) -> None:
        if connected:
            await callback(exc)
        else:
            seen.append(exc)

    try:
        await nc.connect(error_cb=on_error, **options)
    except Exception as exc:  # nats-py raises OSError, ssl and nats errors, timeouts
        seen.append(exc)
        # close() shuts the socket, then waits for the stream to confirm; after a failed TLS upgrade no
        # confirmation ever comes, so that wait is bounded.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), 0.5)
        raise ConnectionFailed(f"cannot connect to NATS at {', '.join(spec.servers)}: {_reason(spec, seen)}") from exc
    # `options` is nats-py's public settings dict, read at every reconnect: from now on, the caller's limit.
    nc.options["max_reconnect_attempts"] = later_attempts
    connected = True
    return nc


def _reason(spec: ConnectionSpec, errors: Sequence[BaseException]) -> str:
    """The most telling of the errors seen (auth beats TLS beats a timeout beats a refusal)."""
    ranked = sorted((_classify(exc) for exc in errors), key=lambda pair: pair[0])
    reason = ranked[0][1] if ranked else "unknown error"
    if reason.startswith("authorization"):
        reason += f" (auth {'+'.join(spec.auth_modes()) or 'none'})"
    elif reason.startswith(("timed out", "the server closed")) and not spec.tls_handshake_first:
        # a server waiting for our TLS handshake looks exactly like a silent one
        reason += f"; a server that wants the TLS handshake first needs {named('tls_handshake_first')}"
    elif not reason.startswith("TLS failed") and _over_tls(spec) and not spec.tls_cert and _reset(errors):
        # With TLS 1.3 the server checks the client certificate after the handshake: its refusal may
        # reach us as the alert (classified above) or, just as often, as a bare reset.
        reason = (
            "TLS failed: the server reset the connection after the handshake; most likely "
            f"the server wants a client certificate ({named('tls_cert')}, {named('tls_key')})"
        )
    return _redact(reason, (spec.password, spec.token))


def _reset(errors: Sequence[BaseException]) -> bool:
    return any(isinstance(e, ConnectionResetError) for e in errors)


def _over_tls(spec: ConnectionSpec) -> bool:
    return bool(spec.tls_ca or spec.tls_handshake_first or any(url.startswith("tls://") for url in spec.servers))


def _classify(exc: BaseException) -> tuple[int, str]:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, nats.errors.AuthorizationError) or "authorization" in text.lower():
        return 0, "authorization failed: the server refused the credentials"
    if "authentication" in text.lower():  # expired or revoked JWTs
        return 0, f"authorization failed: {text.removeprefix('nats: ').strip(chr(39))}"
    if isinstance(exc, ssl.SSLError):
        reason = _ssl_reason(exc)
        if "CERTIFICATE_REQUIRED" in reason.upper():
            return 1, f"TLS failed: the server wants a client certificate ({named('tls_cert')}, {named('tls_key')})"
        if isinstance(exc, ssl.SSLCertVerificationError):
            return 1, f"TLS failed: the server's certificate is not trusted ({reason}; {named('tls_ca')})"
        return 1, f"TLS failed: {reason}"
    if isinstance(exc, nats.errors.UnexpectedEOF) or "expecting info" in text.lower():
        return 2, "the server closed the connection without greeting"
    if isinstance(exc, TimeoutError):  # asyncio's and nats-py's timeouts alike
        return 2, "timed out waiting for the server"
    if isinstance(exc, ConnectionRefusedError):
        return 3, "connection refused"
    if isinstance(exc, nats.errors.NoServersError):
        return 5, "no server could be reached"
    return 4, text


def _ssl_reason(exc: BaseException) -> str:
    return getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or str(exc) or type(exc).__name__


def _redact(text: str, secrets: Iterable[str | None]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


@dataclass(frozen=True)
class PermissionDenied:
    """The server refused a publish or subscription (nats-py lower-cases the subject it reports)."""

    operation: str  # publish | subscribe
    subject: str

    def __str__(self) -> str:
        return f'permission denied: this NATS user may not {self.operation} to "{self.subject}"'


def permission_violation(exc: BaseException) -> PermissionDenied | None:
    """The violation a server error reports, if it is one (they reach error_cb, not the caller)."""
    match = _PERMISSION.search(str(exc))
    if match is None:
        return None
    return PermissionDenied("publish" if match.group(1).lower() == "publish" else "subscribe", match.group(2))


def log_nats_error(logger: logging.Logger, exc: BaseException) -> None:
    """One clear line per asynchronous NATS error; a permission violation names the operation and subject."""
    denied = permission_violation(exc)
    if denied is not None:
        event(logger, logging.ERROR, "nats permission denied", operation=denied.operation, subject=denied.subject)
    else:
        event(logger, logging.WARNING, "nats error", error=repr(exc))


async def _log_error(exc: Exception) -> None:
    log_nats_error(log, exc)
