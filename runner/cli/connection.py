"""The connection flags every NATS-facing `flowrun` command shares, and the CLI's way of connecting.

`@connection_options` adds --nats, credentials, TLS and --context to a command and hands it one
`ConnectionFlags`; `.spec(cfg)` layers them over env, the nats context and the YAML. `with_nats` fails fast
(a CLI must not retry forever) and turns a permission violation into an immediate, clear error instead of
the JetStream timeout it would otherwise become. `run_on_nats` is a command's whole session: every command
that talks to NATS connects through it.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click
from nats.aio.client import Client

from runner.cli import loop
from runner.config.connection import DEFAULT_SERVERS, ConnectionOptionError, ConnectionSpec, names_servers, resolve
from runner.config.model import Config
from runner.jetstream.connection import ConnectionFailed, PermissionDenied, connect, permission_violation, tls_context

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

_OPTIONS = [
    click.option(
        "--nats",
        "servers",
        metavar="URL[,URL…]",
        help=f"NATS server URL(s), comma-separated (env NATS_URL; default {DEFAULT_SERVERS[0]})",
    ),
    click.option("--user", metavar="NAME", help="user name (env NATS_USER)"),
    click.option(
        "--password",
        metavar="SECRET",
        help="password; prefer env NATS_PASSWORD, a command line is visible to other local users",
    ),
    click.option("--token", metavar="SECRET", help="auth token; prefer env NATS_TOKEN"),
    click.option("--creds", metavar="FILE", help="user JWT + NKEY seed (.creds) file (env NATS_CREDS)"),
    click.option("--nkey", metavar="FILE", help="NKEY seed file (env NATS_NKEY)"),
    click.option("--tls-ca", metavar="FILE", help="CA certificate(s) to trust (env NATS_CA)"),
    click.option("--tls-cert", metavar="FILE", help="client certificate (env NATS_CERT)"),
    click.option("--tls-key", metavar="FILE", help="client certificate's key (env NATS_KEY)"),
    click.option(
        "--tls-first",
        "tls_handshake_first",
        is_flag=True,
        default=None,
        help="TLS handshake before the server's INFO (env NATS_TLS_FIRST)",
    ),
    click.option(
        "--inbox-prefix", metavar="PREFIX", help="reply subject prefix, e.g. for users limited to their own inboxes"
    ),
    click.option("--context", metavar="NAME", help="a nats CLI context (env NATS_CONTEXT); flags and env win over it"),
]
_NAMES = (
    "servers",
    "user",
    "password",
    "token",
    "creds",
    "nkey",
    "tls_ca",
    "tls_cert",
    "tls_key",
    "tls_handshake_first",
    "inbox_prefix",
)


@dataclass(frozen=True)
class ConnectionFlags:
    """What one command was given on its command line; env, context and YAML come in `spec()`."""

    flags: dict[str, Any]
    context: str | None

    @property
    def explicit(self) -> bool:
        """--nats or --context on the command line (env alone does not make `validate` go online)."""
        return bool(self.flags.get("servers") or self.context)

    def spec(self, cfg: Config | None = None) -> ConnectionSpec:
        """Flags > env > context > the YAML's `connection:`; options that cannot work end the command."""
        try:
            spec = resolve(self.flags, os.environ, self.context, cfg.connection if cfg else None)
            spec.check()
            tls_context(spec)  # unreadable PEM files are reported now, not mid-start
        except ConnectionOptionError as exc:
            raise click.ClickException(str(exc)) from None
        return spec

    def external(self, cfg: Config | None = None) -> bool:
        """Does any source name a server (else `flowrun up` starts its own)?"""
        try:
            return names_servers(self.flags, os.environ, self.context, cfg.connection if cfg else None)
        except ConnectionOptionError as exc:
            raise click.ClickException(str(exc)) from None


def connection_options(command: F) -> F:
    """Add the connection flags to a command; it receives them as one `connection: ConnectionFlags`."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        flags = {name: kwargs.pop(name) for name in _NAMES}
        return command(*args, connection=ConnectionFlags(flags, kwargs.pop("context")), **kwargs)

    for option in reversed(_OPTIONS):
        wrapper = option(wrapper)
    return wrapper  # type: ignore[return-value]


async def with_nats(spec: ConnectionSpec, body: Callable[[Client], Awaitable[T]]) -> T:
    """Connect (fail fast), run `body`, close. A permission violation ends the command at once, naming the
    subject; without this it would surface seconds later as a JetStream timeout."""
    denied: asyncio.Future[PermissionDenied] = asyncio.get_running_loop().create_future()

    async def on_error(exc: Exception) -> None:
        violation = permission_violation(exc)
        if violation is not None and not denied.done():
            denied.set_result(violation)

    try:
        # allow_reconnect=False: a CLI command gives up when its connection drops.
        nc = await connect(
            spec, max_reconnect_attempts=1, reconnect_time_wait=0.2, allow_reconnect=False, error_cb=on_error
        )
    except (ConnectionFailed, ConnectionOptionError) as exc:
        raise click.ClickException(str(exc)) from None
    work = asyncio.ensure_future(body(nc))
    try:
        await asyncio.wait({work, denied}, return_when=asyncio.FIRST_COMPLETED)
        if denied.done():
            raise click.ClickException(str(denied.result()))
        return work.result()
    finally:
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
        await nc.close()


def run_on_nats(connection: ConnectionFlags, cfg: Config | None, body: Callable[[Client], Awaitable[T]]) -> T:
    """Resolve the connection (flags > env > context > `cfg`), connect, run `body`, close: one event loop."""
    spec = connection.spec(cfg)
    return loop.run(lambda: with_nats(spec, body))
