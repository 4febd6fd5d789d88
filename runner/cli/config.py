"""Commands about the YAML itself: `validate` it, print its `schema`, `provision` a server to match it."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import click
from nats.aio.client import Client

from runner.cli.connection import ConnectionFlags, connection_options, run_on_nats
from runner.cli.options import config_option, json_option, load_config, replica_decrease_option
from runner.cli.progress import progress_bar
from runner.config import loader
from runner.config.schemas.editor import editor_schema
from runner.config.yamlsrc import Problem
from runner.jetstream import replicas
from runner.jetstream.provision import Plan, plan_and_apply


@click.command()
@config_option
@connection_options
@json_option
def validate(config_dir: Path, connection: ConnectionFlags, as_json: bool) -> None:
    """Check streams.yaml and flows/: every problem at once, as file:line:col: message.

    With --nats or --context, also check against that server (replicas vs. cluster size).
    With --json, a JSON list of problems (file, line, col, message, path) on stdout; [] when valid."""
    if as_json:
        problems = _problems(config_dir, connection)
        click.echo(json.dumps([asdict(p) for p in problems], indent=2))
        sys.exit(1 if problems else 0)
    cfg = load_config(config_dir)
    if connection.explicit:
        problems = run_on_nats(connection, cfg, lambda nc: replicas.problems(nc, cfg))
        if problems:
            for p in problems:
                click.echo(str(p), err=True)
            click.echo(f"{len(problems)} problem(s) found", err=True)
            sys.exit(1)
    click.echo(
        f"ok: {len(cfg.streams)} streams, {len(cfg.services)} services, "
        f"{sum(len(s.consumers) for s in cfg.services.values())} consumers, {len(cfg.sagas)} sagas"
    )


def _problems(config_dir: Path, connection: ConnectionFlags) -> list[Problem]:
    """The YAML's problems; when it has none and a server is named, the server's (replicas vs. cluster size)."""
    cfg, problems = loader.load(config_dir)
    if cfg is None or problems or not connection.explicit:
        return list(problems)
    return list(run_on_nats(connection, cfg, lambda nc: replicas.problems(nc, cfg)))


@click.command()
@click.argument("which", type=click.Choice(["streams", "flows", "all"]), default="all")
@click.option(
    "--write",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="write streams.schema.json and flows.schema.json into this directory instead of printing",
)
def schema(which: str, directory: Path | None) -> None:
    """Print the JSON Schemas (draft 2020-12) of streams.yaml and flows/*.yaml, for editors.

    They accept ${VAR} and ${VAR:-default} wherever a scalar goes; `validate` checks the substituted values."""
    names = ["streams", "flows"] if which == "all" else [which]
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        for name in names:
            target = directory / f"{name}.schema.json"
            target.write_text(json.dumps(editor_schema(name), indent=2) + "\n", encoding="utf-8")
            click.echo(f"wrote {target}")
    elif which == "all":
        click.echo(json.dumps({name: editor_schema(name) for name in names}, indent=2))
    else:
        click.echo(json.dumps(editor_schema(which), indent=2))


@click.command()
@connection_options
@config_option
@click.option("--dry-run", is_flag=True, help="show the plan, change nothing")
@click.option(
    "--mode",
    type=click.Choice(["create", "verify"]),
    default="create",
    show_default=True,
    help="verify: only report differences (exit 1 if any)",
)
@replica_decrease_option
@json_option
def provision(
    connection: ConnectionFlags, config_dir: Path, dry_run: bool, mode: str, allow_replica_decrease: bool, as_json: bool
) -> None:
    """Create or update streams, consumers and KV buckets to match the YAML (never deletes data).

    With --json, the plan as JSON: every change (kind, what, detail) and whether it was applied."""
    cfg = load_config(config_dir)

    with progress_bar("provisioning") as progress:

        async def go(nc: Client) -> Plan:
            return await plan_and_apply(
                nc.jetstream(),
                cfg,
                mode,
                dry_run=dry_run,
                allow_replica_decrease=allow_replica_decrease,
                progress=progress,
            )

        plan = run_on_nats(connection, cfg, go)
    if as_json:
        applied = not dry_run and mode == "create"
        click.echo(json.dumps({"applied": applied, "changes": [asdict(c) for c in plan.changes]}, indent=2))
    else:
        _print_plan(plan, dry_run, mode)
    if mode == "verify" and (plan.pending or plan.drift):
        sys.exit(1)
    if plan.drift:
        sys.exit(2)


def _print_plan(plan: Plan, dry_run: bool, mode: str) -> None:
    for change in plan.changes:
        click.echo(str(change))
    if dry_run or mode == "verify":
        click.echo(
            f"{len(plan.pending)} change(s) to apply, {len(plan.drift)} drift(s)" + (" (dry run)" if dry_run else "")
        )
    else:
        click.echo(f"applied {len(plan.pending)} change(s); {len(plan.drift)} drift(s) left for you to decide")


COMMANDS = [validate, schema, provision]
