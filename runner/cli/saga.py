"""`flowrun saga versions`: the stored definitions of each saga and how many instances still run on each."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click
from nats.aio.client import Client

from runner.cli.connection import ConnectionFlags, connection_options, run_on_nats
from runner.cli.options import config_option, json_option, load_config
from runner.config import saga_json
from runner.engine.version_census import DEFAULT_LIMIT, UNVERSIONED, Census, VersionCount, census


@click.group("saga")
def saga_group() -> None:
    """Saga definitions by version."""


@saga_group.command("versions")
@click.option("--saga", "saga_name", default=None, help="only this saga")
@click.option(
    "--limit",
    default=DEFAULT_LIMIT,
    show_default=True,
    type=click.IntRange(min=1),
    help="instances read per saga, newest first; beyond it counts are partial (and say so)",
)
@connection_options
@config_option
@json_option
def saga_versions(
    saga_name: str | None, limit: int, connection: ConnectionFlags, config_dir: Path, as_json: bool
) -> None:
    """List each saga's stored versions, oldest first, with their live (not terminal) instance counts."""
    cfg = load_config(config_dir)
    if saga_name is not None and saga_name not in cfg.sagas:
        raise click.BadParameter(f"unknown saga {saga_name!r}; declared: {', '.join(cfg.sagas)}", param_hint="--saga")
    current = {name: saga_json.version(spec) for name, spec in cfg.sagas.items()}

    async def go(nc: Client) -> Census:
        return await census(nc, cfg.sagas, saga_name, limit)

    found = run_on_nats(connection, cfg, go)
    if as_json:
        versions = [{**asdict(v), "current": current.get(v.saga) == v.version} for v in found.versions]
        click.echo(json.dumps({"versions": versions, "scans": [asdict(s) for s in found.scans]}, indent=2))
        return
    click.echo(f"{'SAGA':<16} {'VERSION':<14} {'LIVE':>6} {'FINISHED':>9}  NOTE")
    for v in found.versions:
        click.echo(f"{v.saga:<16} {v.version:<14} {v.live:>6} {v.finished:>9}  {_note(v, current.get(v.saga))}")
    for v in found.versions:
        if v.stranded:
            click.echo(
                f"warning: {v.live} live instance(s) of {v.saga} version {v.version} may wait for "
                f"{', '.join(v.stranded)}, which the current definition no longer consumes",
                err=True,
            )
    for scan in found.scans:
        if scan.missing:
            click.echo(f"{scan.saga}: no bucket {scan.bucket}")
        elif not scan.complete:
            click.echo(f"{scan.saga}: counted the newest {scan.instances} instances of {scan.bucket} only (--limit)")
    if not found.versions:
        click.echo("no saga versions stored (run `flowrun provision`)")


def _note(count: VersionCount, current: str | None) -> str:
    if count.version == current:
        return "current"
    if count.version == UNVERSIONED:
        return "started before versions were recorded: runs on the current one"
    return "" if count.stored else "definition not stored: its instances cannot run"


COMMANDS = [saga_group]
