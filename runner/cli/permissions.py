"""`flowrun permissions`: least-privilege NATS users derived from the flows (server config, nsc commands or JSON)."""

from __future__ import annotations

from pathlib import Path

import click

from runner.cli.options import config_option, json_option, load_config
from runner.jetstream import permissions as permissions_mod
from runner.jetstream import permissions_render


@click.command()
@config_option
@click.option("--service", default=None, help="only this service's user (default: every service and the provisioner)")
@click.option("--format", "fmt", type=click.Choice(permissions_render.FORMATS), default="server", show_default=True)
@click.option(
    "--provision",
    "mode",
    type=click.Choice(permissions_mod.SERVICE_MODES),
    default="verify",
    show_default=True,
    help="the --provision mode services will run with (verify needs read-only info rights)",
)
@click.option(
    "--generate-passwords",
    is_flag=True,
    help="server format: embed fresh random passwords, shown this once (default: $FLOWRUN_<USER>_PASSWORD)",
)
@json_option
def permissions(
    config_dir: Path, service: str | None, fmt: str, mode: str, generate_passwords: bool, as_json: bool
) -> None:
    """Least-privilege NATS users: each service may publish only what it emits, read only its own inbox.

    --json is --format json."""
    if as_json:
        fmt = "json"
    cfg = load_config(config_dir)
    try:
        click.echo(permissions_render.render(permissions_mod.users(cfg, service, mode), fmt, generate_passwords))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


COMMANDS = [permissions]
