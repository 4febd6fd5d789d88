"""`flowrun dlq ls|show|replay|purge`: dead letters, browsed and replayed through runner/engine/dlq.py."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import click
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from runner.cli.connection import ConnectionFlags, connection_options, run_on_nats
from runner.cli.options import check_services, config_option, json_option, load_config
from runner.cli.progress import progress_bar
from runner.config.units import seconds
from runner.engine import dlq

T = TypeVar("T")
service_filter = click.option("--service", default=None, help="only this service's dead letters")


def _on_dead_letters(
    connection: ConnectionFlags,
    config_dir: Path,
    service: str | None,
    body: Callable[[JetStreamContext, str, str], Awaitable[T]],
) -> T:
    """Run `body(js, stream, prefix)` on the dead-letter stream of `service` (or the one all services share)."""
    cfg = load_config(config_dir)
    if service is not None:
        check_services(cfg, [service])
    try:
        where = dlq.target(cfg, service)
    except ValueError as exc:
        raise click.UsageError(f"{exc}: pick one with --service") from None

    async def go(nc: Client) -> T:
        try:
            return await body(nc.jetstream(), where.stream, where.subject_prefix)
        except LookupError as exc:
            raise click.ClickException(str(exc)) from None
        except NotFoundError:
            raise click.ClickException(f"no dead-letter stream {where.stream} (run `flowrun provision`)") from None

    return run_on_nats(connection, cfg, go)


@click.group("dlq")
def dlq_group() -> None:
    """Dead letters: list, show, replay, purge."""


@dlq_group.command("ls")
@connection_options
@config_option
@service_filter
@json_option
def dlq_ls(connection: ConnectionFlags, config_dir: Path, service: str | None, as_json: bool) -> None:
    """List dead letters, oldest first."""
    found = _on_dead_letters(connection, config_dir, service, lambda js, st, pre: dlq.entries(js, st, pre, service))
    if as_json:
        click.echo(json.dumps([e.summary() for e in found], indent=2, default=str))
        return
    click.echo(f"{'ID':>6}  {'TIME':<19}  {'SERVICE':<10} {'SUBJECT':<26} {'TRIES':>5}  {'STATE':<8} ERROR")
    for e in found:
        state = "replayed" if e.replayed else "dead"
        click.echo(
            f"{e.id:>6}  {e.time:%Y-%m-%d %H:%M:%S}  {e.service:<10} {e.subject:<26} {e.attempts:>5}  "
            f"{state:<8} {e.error_type}: {e.error}"
        )
    click.echo(f"{len(found)} dead letter(s)")


@dlq_group.command("show")
@click.argument("entry_id", type=int)
@connection_options
@config_option
@json_option
def dlq_show(entry_id: int, connection: ConnectionFlags, config_dir: Path, as_json: bool) -> None:
    """Show one dead letter: headers, payload, why it failed."""
    entry = _on_dead_letters(connection, config_dir, None, lambda js, st, pre: dlq.find(js, st, pre, entry_id))
    detail = entry.detail()
    if as_json:
        click.echo(json.dumps(detail, indent=2, default=str))
        return
    replayed = detail["replayed"]
    facts = {
        "Id": detail["id"],
        "Time": detail["time"],
        "Service": detail["service"],
        "Consumer": detail["consumer"] or "-",
        "Subject": detail["subject"],
        "Attempts": detail["attempts"],
        "Error": detail["error"],
        "Correlation": detail["correlation_id"] or "-",
        "Original": detail["original"],
        "State": f"replayed ({json.dumps(replayed)})" if replayed else "dead",
    }
    click.echo("\n".join(f"{name:<12} {value}" for name, value in facts.items()))
    click.echo("Headers")
    click.echo("\n".join(f"  {name}: {value}" for name, value in detail["headers"].items()))
    click.echo("Payload")
    payload = detail["payload"]
    click.echo(payload if isinstance(payload, str) else json.dumps(payload, indent=2, default=str))


@dlq_group.command("replay")
@click.argument("entry_id", type=int, required=False)
@click.option("--all", "replay_all", is_flag=True, help="replay every entry not yet replayed")
@connection_options
@config_option
@service_filter
def dlq_replay(
    entry_id: int | None, replay_all: bool, connection: ConnectionFlags, config_dir: Path, service: str | None
) -> None:
    """Republish dead letters to their original subject (fresh id) for the consumer that dead-lettered them only;
    entries are marked, not deleted."""
    if (entry_id is None) == (not replay_all):
        raise click.UsageError("give one entry ID or --all")
    with progress_bar("replaying") as progress:
        done = _on_dead_letters(
            connection,
            config_dir,
            service,
            lambda js, st, pre: dlq.replay_selected(js, st, pre, entry_id, service, progress),
        )
    for old, new in done:
        click.echo(f"replayed {old} → stream seq {new}")
    click.echo(f"{len(done)} replayed")


@dlq_group.command("purge")
@click.option("--older-than", "older_than", required=True, metavar="DURATION", help="e.g. 7d, 12h, 30m")
@connection_options
@config_option
def dlq_purge(older_than: str, connection: ConnectionFlags, config_dir: Path) -> None:
    """Delete dead letters older than a duration."""
    try:
        age = seconds(older_than)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from exc
    with progress_bar("purging") as progress:
        removed = _on_dead_letters(
            connection, config_dir, None, lambda js, st, pre: dlq.purge_older_than(js, st, pre, age, progress)
        )
    click.echo(f"purged {removed} message(s) older than {older_than}")


COMMANDS = [dlq_group]
