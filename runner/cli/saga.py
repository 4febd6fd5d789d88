"""`flowrun saga versions`: the stored definitions of each saga and how many instances still run on each."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click
from nats.aio.client import Client

from runner.cli.connection import ConnectionFlags, connection_options, run_on_nats
from runner.cli.options import config_option, json_option, load_config
from runner.cli.saga_view import human_duration, render_instance
from runner.config import saga_json
from runner.config.model import Config, SagaSpec
from runner.engine import instances
from runner.engine.version_census import DEFAULT_LIMIT, UNVERSIONED, Census, VersionCount, census


@click.group("saga")
def saga_group() -> None:
    """Saga instances (ls, show) and definitions by version."""


def _sagas(cfg: Config, saga_name: str | None) -> list[SagaSpec]:
    """The sagas a command looks at: `--saga`, or all of them."""
    if saga_name is None:
        return list(cfg.sagas.values())
    if saga_name not in cfg.sagas:
        raise click.BadParameter(f"unknown saga {saga_name!r}; declared: {', '.join(cfg.sagas)}", param_hint="--saga")
    return [cfg.sagas[saga_name]]


@saga_group.command("ls")
@click.option("--saga", "saga_name", default=None, help="only this saga")
@click.option("--state", default=None, help="only instances in this state")
@click.option("--limit", default=instances.DEFAULT_LIMIT, show_default=True, type=click.IntRange(min=1))
@connection_options
@config_option
@json_option
def saga_ls(
    saga_name: str | None, state: str | None, limit: int, connection: ConnectionFlags, config_dir: Path, as_json: bool
) -> None:
    """Instances, most recently changed first: id, state, when started, how long they took."""
    cfg = load_config(config_dir)
    sagas = _sagas(cfg, saga_name)
    listing = run_on_nats(connection, cfg, lambda nc: instances.newest(nc, sagas, state, limit))
    if as_json:
        click.echo(json.dumps(asdict(listing), indent=2))
        return
    click.echo(f"{'SAGA':<12} {'ID':<38} {'STATE':<20} {'STARTED':<24} {'DURATION':>9} {'EVENTS':>6}  REASON")
    for i in listing.instances:
        click.echo(
            f"{i['saga']:<12} {i['id']:<38} {i['state']:<20} {i['created']:<24} {human_duration(i['duration']):>9} "
            f"{i['events']:>6}  {i['reason'] or ''}".rstrip()
        )
    for bucket in listing.missing:
        click.echo(f"no bucket {bucket} (run `flowrun provision`)", err=True)
    if not listing.complete:
        click.echo(f"read the newest {instances.SCAN_LIMIT} instances per saga only", err=True)
    click.echo(f"{len(listing.instances)} instance(s)")


@saga_group.command("show")
@click.argument("instance_id")
@click.option("--saga", "saga_name", default=None, help="the instance's saga (needed only if several have the id)")
@connection_options
@config_option
@json_option
def saga_show(
    instance_id: str, saga_name: str | None, connection: ConnectionFlags, config_dir: Path, as_json: bool
) -> None:
    """One instance: state, data, and its event timeline with the time between events."""
    cfg = load_config(config_dir)
    sagas = _sagas(cfg, saga_name)
    found = run_on_nats(connection, cfg, lambda nc: instances.find(nc, sagas, instance_id))
    if not found:
        raise click.ClickException(f"no instance {instance_id!r} of {' or '.join(s.name for s in sagas)}")
    if len(found) > 1:
        raise click.UsageError(f"{instance_id!r} is an instance of {', '.join(f['saga'] for f in found)}: pick --saga")
    instance = found[0]
    if as_json:
        click.echo(json.dumps(instance, indent=2))
        return
    click.echo(render_instance(instance))


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
