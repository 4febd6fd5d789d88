"""A stream's or bucket's declared options against the config the server has: what differs, and whether
JetStream takes the change in place or it is drift.

Everything here is read from the option declarations (runner/config/options.py), so a new option is compared
the moment it is declared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nats.js import api

from runner.config.options import ENABLE_ONLY, FIXED, UPDATABLE, Option, declared

# Why a change is left alone, by the option's declared rule.
NOT_APPLIED = {
    FIXED: "cannot change in place; not applied, data kept",
    ENABLE_ONLY: "JetStream cannot switch it off again; not applied",
}


def norm(value: Any) -> Any:
    """A value as the server reports it, comparable and printable: enums as their value, lists in order,
    whole-number floats (seconds from nanoseconds) as ints."""
    value = getattr(value, "value", value)
    if isinstance(value, list | tuple):
        return sorted(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


@dataclass(frozen=True)
class Difference:
    option: Option
    have: Any  # normalized, as the server reports it
    want: Any  # normalized
    value: Any  # what to set on the server's config to apply it

    @property
    def in_place(self) -> bool:
        return self.option.change == UPDATABLE or (self.option.change == ENABLE_ONLY and bool(self.want))

    @property
    def reason(self) -> str:
        """Why it is not applied (empty when it is)."""
        return "" if self.in_place else NOT_APPLIED[self.option.change]

    def __str__(self) -> str:
        return f"{self.option.key} {self.have!r} → {self.want!r}"


def _same(want: Any, have: Any) -> bool:
    # The server leaves out what is off, zero or empty, and nats-py reads that as None.
    return want == have or (have is None and not want)


def differences(spec: Any, server: api.StreamConfig) -> list[Difference]:
    """The declared options whose value the server does not have; an option left unset (None) is not compared."""
    options = {o.key: o for o in declared(type(spec))}
    out = []
    for option in options.values():
        if option.server_attr is None or getattr(spec, option.key) is None:
            continue
        if option.implied_by and getattr(server, options[option.implied_by].server_attr or ""):
            continue  # on because the server has the option implying it on (if we say off, that one's drift says so)
        value = option.nats_value(spec)
        if value is None:  # left out of a new stream's config (a feature older servers do not know): it is off
            value = getattr(spec, option.key)
        want, have = norm(value), norm(getattr(server, option.server_attr))
        if have is None and isinstance(want, bool):  # the server leaves out a flag that is off
            have = False
        if not _same(want, have):
            out.append(Difference(option, have, want, value))
    return out


def applied(server: api.StreamConfig, changes: list[Difference]) -> api.StreamConfig:
    """The server's config with `changes` made: what it has and we do not declare stays as it is."""
    for change in changes:
        setattr(server, change.option.server_attr, change.value)
    return server


def describe(changes: list[Difference]) -> str:
    return ", ".join(str(c) for c in changes)
