"""Options several command groups share, and loading the YAML that `--config` points at."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

import click

from runner.config import loader
from runner.config.model import Config
from runner.logs import FORMATS

config_option = click.option(
    "--config",
    "config_dir",
    default=".",
    show_default=True,
    metavar="DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="directory holding streams.yaml and flows/",
)
verbose_option = click.option("-v", "--verbose", count=True, help="more logging (-v info, -vv debug)")
replica_decrease_option = click.option(
    "--allow-replica-decrease",
    is_flag=True,
    help="let provisioning lower replicas below what the server has (else reported as drift, not applied)",
)
json_option = click.option("--json", "as_json", is_flag=True)
log_format_option = click.option(
    "--log-format",
    type=click.Choice(FORMATS),
    default="text",
    show_default=True,
    help="log lines as key=value text or one JSON object each (for log collectors)",
)


def load_config(config_dir: Path) -> Config:
    """The YAML's model; with problems, every one of them is reported and the command exits 1."""
    cfg, problems = loader.load(config_dir)
    if problems or cfg is None:
        for problem in problems:
            click.echo(str(problem), err=True)
        click.echo(f"{len(problems)} problem(s) found", err=True)
        sys.exit(1)
    return cfg


def check_services(cfg: Config, names: Iterable[str]) -> None:
    """Every --service names a declared service (a usage error, exit 2, otherwise)."""
    unknown = [name for name in names if name not in cfg.services]
    if unknown:
        raise click.BadParameter(
            f"unknown service {unknown[0]!r}; declared: {', '.join(cfg.services)}", param_hint="--service"
        )
