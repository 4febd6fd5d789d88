"""Where and how flowrun connects to NATS: servers, credentials and TLS from flags, env, a nats CLI context or
the YAML.

Every command and the Runtime connect through one `ConnectionSpec`, so a secured NATS works the same
everywhere. Sources are layered — flags > env (the nats CLI's names) > context > the YAML's `connection:`
block > defaults. A source that authenticates another way replaces a lower source's credentials as a
whole (a `--token` drops a context's user and password; a `--password` alone keeps its user). Secrets stay
out of repr, logs and error messages: `describe()` names the auth mode, never a value. Connecting with a spec
is runner/jetstream/connection.py's job.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from runner.config.units import seconds

DEFAULT_SERVERS = ("nats://127.0.0.1:4222",)
AUTH_FIELDS = ("user", "password", "token", "creds", "nkey")
_AUTH_MODE = {"user": "user/password", "password": "user/password", "token": "token", "creds": "creds", "nkey": "nkey"}
FILE_FIELDS = ("creds", "nkey", "tls_ca", "tls_cert", "tls_key")
# The nats CLI's environment variables (plus two it reads from contexts only).
ENV_NAMES = {
    "servers": "NATS_URL",
    "user": "NATS_USER",
    "password": "NATS_PASSWORD",
    "token": "NATS_TOKEN",
    "creds": "NATS_CREDS",
    "nkey": "NATS_NKEY",
    "tls_ca": "NATS_CA",
    "tls_cert": "NATS_CERT",
    "tls_key": "NATS_KEY",
    "tls_handshake_first": "NATS_TLS_FIRST",
    "inbox_prefix": "NATS_INBOX_PREFIX",
}
FLAGS = {
    "servers": "--nats",
    "user": "--user",
    "password": "--password",
    "token": "--token",
    "creds": "--creds",
    "nkey": "--nkey",
    "tls_ca": "--tls-ca",
    "tls_cert": "--tls-cert",
    "tls_key": "--tls-key",
    "tls_handshake_first": "--tls-first",
    "inbox_prefix": "--inbox-prefix",
}
# Keys of a nats CLI context file (~/.config/nats/context/NAME.json) → our fields.
CONTEXT_KEYS = {
    "url": "servers",
    "user": "user",
    "password": "password",
    "token": "token",
    "creds": "creds",
    "nkey": "nkey",
    "cert": "tls_cert",
    "key": "tls_key",
    "ca": "tls_ca",
    "inbox_prefix": "inbox_prefix",
    "tls_first": "tls_handshake_first",
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConnectionOptionError(ValueError):
    """Options that cannot work (a missing file, two auth modes): found before any network I/O."""


def named(name: str) -> str:
    """How a user spells an option: its flag and env var (the YAML key is the field name)."""
    return f"{FLAGS[name]} / {ENV_NAMES[name]}" if name in FLAGS else name


@dataclass(frozen=True)
class ConnectionSpec:
    """Where and how to connect. Paths name files read at connect time; None means not set."""

    servers: tuple[str, ...] = DEFAULT_SERVERS
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    creds: str | None = None  # a .creds file: user JWT + NKEY seed
    nkey: str | None = None  # a file holding an NKEY seed
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_handshake_first: bool = False
    inbox_prefix: str | None = None
    connect_timeout: float = 3.0

    def __post_init__(self) -> None:
        if any("@" in urlsplit(url).netloc for url in self.servers):  # would leak through repr and logs
            raise ConnectionOptionError("server URLs carry credentials: build the spec with from_url()")

    # --- sources ---

    @classmethod
    def from_url(cls, servers: str | Sequence[str]) -> ConnectionSpec:
        """A plain URL or list of URLs (credentials in them move to user/password/token)."""
        return cls().overridden_by({"servers": servers})

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ConnectionSpec:
        return cls().overridden_by(env_options(env))

    @classmethod
    def from_context(cls, name: str, env: Mapping[str, str] | None = None) -> ConnectionSpec:
        return cls().overridden_by(context_options(name, os.environ if env is None else env))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], base_dir: Path | None = None) -> ConnectionSpec:
        """The YAML `connection:` block; relative paths are taken from `base_dir` (the config directory)."""
        return cls().overridden_by(mapping_options(data, base_dir))

    def overridden_by(self, options: Mapping[str, Any]) -> ConnectionSpec:
        """This spec under a higher-precedence source: what it gives wins, None or "" means not given."""
        given = {name: value for name, value in options.items() if value is not None and value != ""}
        unknown = sorted(set(given) - set(self.__dataclass_fields__))
        if unknown:
            raise ConnectionOptionError(f"unknown connection option(s): {', '.join(unknown)}")
        if "servers" in given:
            servers, url_auth = _split_servers(given["servers"])
            given["servers"] = servers
            for name, value in url_auth.items():
                given.setdefault(name, value)
        modes = {_AUTH_MODE[name] for name in AUTH_FIELDS if name in given}
        if modes and set(self.auth_modes()) - modes:  # another way to authenticate replaces ours as a whole
            given = {**dict.fromkeys(AUTH_FIELDS), **given}
        return replace(self, **given)

    # --- what it says about itself ---

    def auth_modes(self) -> list[str]:
        modes = []
        if self.user is not None or self.password is not None:
            modes.append("user/password")
        modes += [name for name in ("token", "creds", "nkey") if getattr(self, name)]
        return modes

    def describe(self) -> str:
        """One safe line for banners and logs: servers and the kinds of auth and TLS, no secret."""
        parts = [f"auth {'+'.join(self.auth_modes()) or 'none'}"]
        tls = [name for name, on in (("ca", self.tls_ca), ("client cert", self.tls_cert)) if on]
        if self.tls_handshake_first:
            tls.append("handshake first")
        if tls or any(url.startswith("tls://") for url in self.servers):
            parts.append(f"tls ({', '.join(tls)})" if tls else "tls")
        return f"{', '.join(self.servers)} ({'; '.join(parts)})"

    def check(self, files: bool = True) -> None:
        """Raise ConnectionOptionError naming every option that cannot work, before any network I/O.
        `files=False` skips the file checks (validating YAML meant for another machine)."""
        problems = []
        if not self.servers:
            problems.append("no server URL given (--nats / NATS_URL)")
        modes = self.auth_modes()
        if len(modes) > 1:
            problems.append(f"give one way to authenticate, not {' and '.join(modes)}")
        if self.password is not None and self.user is None:
            problems.append(f"a password needs a user ({named('user')})")
        if self.user is not None and self.password is None:
            problems.append(f"user {self.user!r} needs a password ({named('password')})")
        if bool(self.tls_cert) != bool(self.tls_key):
            problems.append(f"{named('tls_cert')} and {named('tls_key')} go together")
        for name in FILE_FIELDS if files else ():
            path = getattr(self, name)
            if path is None:
                continue
            if not Path(path).is_file():
                problems.append(f"{named(name)}: no such file {path}")
            elif not os.access(path, os.R_OK):
                problems.append(f"{named(name)}: cannot read {path}")
        if problems:
            raise ConnectionOptionError("; ".join(problems))


def _split_servers(value: str | Sequence[str]) -> tuple[tuple[str, ...], dict[str, str]]:
    """Servers from a comma-separated string or a list; credentials written into URLs are moved out, so
    that no URL we keep (and print) carries a secret."""
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    servers: list[str] = []
    auth: dict[str, str] = {}
    for item in (i.strip() for i in items):
        if not item:
            continue
        parts = urlsplit(item if "://" in item else f"nats://{item}")
        if parts.username is not None:
            found = (
                {"user": unquote(parts.username), "password": unquote(parts.password)}
                if parts.password is not None
                else {"token": unquote(parts.username)}
            )
            if auth and found != auth:
                raise ConnectionOptionError("server URLs carry different credentials: give them once (--user, --token)")
            auth = found
            parts = parts._replace(netloc=parts.netloc.rpartition("@")[2])
        servers.append(urlunsplit(parts))
    return tuple(servers), auth


def _boolean(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise ConnectionOptionError(f"{where}: expected true or false, got {value!r}")


def env_options(env: Mapping[str, str]) -> dict[str, Any]:
    """The nats CLI's environment variables; an empty one counts as unset."""
    options: dict[str, Any] = {name: env.get(var) or None for name, var in ENV_NAMES.items()}
    if options["tls_handshake_first"] is not None:
        options["tls_handshake_first"] = _boolean(options["tls_handshake_first"], "NATS_TLS_FIRST")
    return options


def context_path(name: str, env: Mapping[str, str]) -> Path:
    """Where the nats CLI keeps context NAME (it honours XDG_CONFIG_HOME)."""
    if not name or "/" in name or name.startswith("."):
        raise ConnectionOptionError(f"--context: {name!r} is not a context name")
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "nats" / "context" / f"{name}.json"


def context_options(name: str, env: Mapping[str, str]) -> dict[str, Any]:
    """A nats CLI context's settings (keys we do not use, like jetstream_domain, are ignored)."""
    path = context_path(name, env)
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ConnectionOptionError(f"--context {name}: no such nats context ({path} does not exist)") from None
    except (OSError, ValueError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) else "not valid JSON"
        raise ConnectionOptionError(f"--context {name}: cannot read {path}: {detail}") from None
    if not isinstance(data, dict):
        raise ConnectionOptionError(f"--context {name}: {path} is not a JSON object")
    options: dict[str, Any] = {ours: data.get(theirs) for theirs, ours in CONTEXT_KEYS.items()}
    for key in FILE_FIELDS:
        if options[key]:
            options[key] = str(Path(options[key]).expanduser())
    if options["tls_handshake_first"] is not None:
        options["tls_handshake_first"] = _boolean(options["tls_handshake_first"], f"{path}: tls_first")
    return options


def mapping_options(data: Mapping[str, Any], base_dir: Path | None = None) -> dict[str, Any]:
    """The YAML `connection:` block (same names as ConnectionSpec; `servers` a list or comma-separated)."""
    options = dict(data)
    for name in ("user", "password", "token", "inbox_prefix"):  # `${PW}` may have resolved to a number
        if options.get(name) is not None:
            options[name] = str(options[name])
    for name in FILE_FIELDS:
        if options.get(name):
            path = Path(str(options[name])).expanduser()
            options[name] = str(base_dir / path if base_dir is not None and not path.is_absolute() else path)
    if options.get("tls_handshake_first") is not None:
        options["tls_handshake_first"] = _boolean(options["tls_handshake_first"], "connection.tls_handshake_first")
    if options.get("connect_timeout") is not None:
        options["connect_timeout"] = seconds(options["connect_timeout"])
    return options


def layers(flags: Mapping[str, Any], env: Mapping[str, str], context: str | None = None) -> list[dict[str, Any]]:
    """The sources above the YAML, lowest precedence first: context (or NATS_CONTEXT), env, flags."""
    name = context or env.get("NATS_CONTEXT")
    return [context_options(name, env) if name else {}, env_options(env), dict(flags)]


def resolve(
    flags: Mapping[str, Any],
    env: Mapping[str, str],
    context: str | None = None,
    yaml: ConnectionSpec | None = None,
) -> ConnectionSpec:
    """flags > env > nats context > the YAML's `connection:` block > defaults; None means "not given"."""
    spec = yaml or ConnectionSpec()
    for layer in layers(flags, env, context):
        spec = spec.overridden_by(layer)
    return spec


def names_servers(
    flags: Mapping[str, Any], env: Mapping[str, str], context: str | None = None, yaml: ConnectionSpec | None = None
) -> bool:
    """Did any source name a server? (`flowrun up` starts its own nats-server only when none did.)"""
    if yaml is not None and yaml.servers != DEFAULT_SERVERS:
        return True
    return any(layer.get("servers") for layer in layers(flags, env, context))


def as_env(spec: ConnectionSpec, env: Mapping[str, str]) -> dict[str, str]:
    """`env` with the spec in the nats CLI's variables (and no NATS_CONTEXT): how `flowrun up` hands its resolved
    connection, credentials included, to the processes it starts. A command line is visible to every local user
    (`ps`); an environment only to the same user. The child resolves it over the same YAML to the same spec."""
    given = {name: getattr(spec, name) for name in ENV_NAMES}
    given["servers"] = ",".join(spec.servers)
    given["tls_handshake_first"] = "true" if spec.tls_handshake_first else "false"
    inherited = {key: value for key, value in env.items() if key not in ENV_NAMES.values() and key != "NATS_CONTEXT"}
    return inherited | {ENV_NAMES[name]: str(value) for name, value in given.items() if value is not None}
