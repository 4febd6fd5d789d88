"""The processes `flowrun up` runs: how many per service (`--workers`) and each one's `flowrun start` command.

Processes of one service share its durable consumers (JetStream spreads the messages over them) and, for a
service with an HTTP API, its port (SO_REUSEPORT: the kernel spreads the connections).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import click

from runner.config.model import Config

AUTO = "auto"
MAX_AUTO = 4  # past this, a service's processes mostly wait for nats-server on a small machine

WORKERS_HELP = (
    "processes per service: 'auto' (a service with HTTP gets one per two cores, at most 4; others 1), N for "
    "every service, or SERVICE=N for one (repeatable; later values win)"
)


def usable_cpus() -> int:
    """The cores this process may run on (a container's cpuset can be fewer than the machine has)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def auto_count(cfg: Config, service: str, cpus: int | None = None) -> int:
    """`auto`: the HTTP API takes the requests, so it scales with the cores; a consumer-only service gets one.

    One per two cores, not per core: the other services and nats-server need cores too, and a second process
    of a service costs more per message than the first (an instance's events land on either process, so
    each misses the other's cache of hot instances). Measured on 2 cores (`make bench`): one order process
    completed more orders over HTTP than two."""
    if cfg.services[service].http is None:
        return 1
    return max(1, min(MAX_AUTO, (cpus if cpus is not None else usable_cpus()) // 2))


def worker_counts(cfg: Config, values: Sequence[str], cpus: int | None = None) -> dict[str, int]:
    """Each service's process count from the `--workers` values; a bad value is a usage error naming it."""
    counts = {name: auto_count(cfg, name, cpus) for name in cfg.services}
    for value in values:
        name, _, number = value.rpartition("=")
        if not name and number == AUTO:
            counts = {name: auto_count(cfg, name, cpus) for name in cfg.services}
            continue
        if name and name not in cfg.services:
            raise click.BadParameter(
                f"unknown service {name!r} in {value!r}; declared: {', '.join(cfg.services)}", param_hint="--workers"
            )
        if not number.isdigit() or int(number) < 1:
            raise click.BadParameter(
                f"{value!r}: expected auto, a count of at least 1, or SERVICE=COUNT", param_hint="--workers"
            )
        for service in [name] if name else list(cfg.services):
            counts[service] = int(number)
    return counts


@dataclass(frozen=True)
class ProcessPlan:
    """Each process's command line. It carries no credential: `ps` shows a command line to every local user, so
    the connection goes by environment (runner/config/connection.py: as_env)."""

    config_dir: Path
    counts: dict[str, int]
    http_ports: dict[str, int]  # each HTTP service's one port, shared by its processes
    verbose: int
    log_format: str
    metrics_port: int | None  # process i gets metrics_port + i (0: each picks a free one)
    metrics_host: str

    def slots(self) -> list[tuple[str, int]]:
        """(service, k) for the k-th process of each service, in the config's order of services."""
        return [(name, k) for name, count in self.counts.items() for k in range(1, count + 1)]

    def metrics_ports(self) -> list[int | None]:
        if self.metrics_port is None:
            return [None] * len(self.slots())
        return [self.metrics_port + i if self.metrics_port else 0 for i in range(len(self.slots()))]

    def commands(self) -> list[tuple[str, int, list[str]]]:
        return [
            (service, k, self.argv(service, k, metrics))
            for (service, k), metrics in zip(self.slots(), self.metrics_ports(), strict=True)
        ]

    def argv(self, service: str, k: int, metrics_port: int | None) -> list[str]:
        argv = [sys.executable, "-m", "runner.cli", "start", "--service", service, "--process-name", f"{service}#{k}"]
        argv += ["--provision", "off"]
        argv += ["--config", str(self.config_dir.resolve()), "--log-format", self.log_format]
        if service in self.http_ports:
            argv += ["--http-port", str(self.http_ports[service]), "--reuse-port"]
        if self.verbose:
            argv.append("-" + "v" * self.verbose)
        if metrics_port is not None:
            argv += ["--metrics-port", str(metrics_port), "--metrics-host", self.metrics_host]
        return argv
