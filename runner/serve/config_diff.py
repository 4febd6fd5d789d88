"""What differs between the running configuration and a reloaded one, in words a log line can carry.

Pure comparisons of the typed model (frozen dataclasses compare by value), so `Runtime.reload` only acts.
"""

from __future__ import annotations

from dataclasses import fields

from runner.config.model import Config, ServiceSpec


def changed_fields(old: object, new: object) -> list[str]:
    """Names of the dataclass fields that differ, e.g. ['settings', 'retry']."""
    return [f.name for f in fields(old) if getattr(old, f.name) != getattr(new, f.name)]  # type: ignore[arg-type]


def service_changes(old: Config, new: Config, services: list[str]) -> list[str]:
    """One phrase per running service or saga whose declaration changed."""
    out = [
        f"service {name}: {', '.join(changed_fields(old.services[name], new.services[name]))}"
        for name in services
        if old.services[name] != new.services[name]
    ]
    sagas = sorted(n for n in new.sagas if n in old.sagas and old.sagas[n] != new.sagas[n])
    out += [f"saga {name}" for name in sagas]
    out += [
        f"messages schema {subject}"
        for subject in sorted(set(old.messages) | set(new.messages))
        if old.messages.get(subject) != new.messages.get(subject)
    ]
    return out


def http_changed(old: Config, new: Config, service: ServiceSpec, code_changed: bool) -> bool:
    """Whether a service's HTTP app must be rebuilt: its resources, a saga or schema they serve, or the code
    their accept/view functions live in changed."""
    before = old.services[service.name].http
    if before != service.http:
        return True
    assert service.http is not None
    sagas = {r.saga for r in service.http.saga_resources()}
    return code_changed or any(old.sagas.get(s) != new.sagas.get(s) for s in sagas)
