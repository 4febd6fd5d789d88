"""The `flowrun` command line. Commands parse options and call the engine; no logic of their own."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import nats
from nats.aio.client import Client

from runner import logs
from runner.cli.connection import ConnectionFlags, connection_options, with_nats
from runner.config import loader as config_mod
from runner.config.units import seconds
from runner.engine import dlq as dlq_mod
from runner.jetstream import permissions as permissions_mod
from runner.jetstream import permissions_render, replicas
from runner.jetstream.connection import ConnectionSpec
from runner.jetstream.embedded import EmbeddedServer, sync_interval
from runner.jetstream.inspection import Leaderless, consumer_info, render, stream_info
from runner.jetstream.provision import MODES, desired_consumers, plan_and_apply
from runner.jetstream.server_guard import ServerGuard
from runner.serve.service import ProvisionError, Runtime, RuntimeOptions

T = TypeVar("T")
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


def _load(config_dir: Path) -> config_mod.Config:
    cfg, problems = config_mod.load(config_dir)
    if problems or cfg is None:
        for problem in problems:
            click.echo(str(problem), err=True)
        click.echo(f"{len(problems)} problem(s) found", err=True)
        sys.exit(1)
    return cfg


def _run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    """Run on uvloop where available: a faster event loop for a client-bound workload."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro_fn())  # type: ignore[arg-type]
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro_fn())  # type: ignore[arg-type]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """flowrun: declarative workflows and sagas on NATS JetStream."""


async def _serve(runtime: Runtime, banner: Callable[[], None], guard: ServerGuard | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await runtime.start()
    except (ProvisionError, OSError) as exc:  # a mismatch with --provision verify, a port in use
        await runtime.stop()
        raise click.ClickException(str(exc)) from exc
    banner()
    guarding = asyncio.create_task(guard.run(stop)) if guard else None
    await stop.wait()
    if guarding:
        guarding.cancel()
    click.echo("shutting down: finishing in-flight messages …", err=True)
    await runtime.stop()
    if guard and guard.failure:
        raise click.ClickException(guard.failure)


def _sync_value(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return sync_interval(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


sync_option = click.option(
    "--sync",
    default="always",
    show_default=True,
    metavar="always|DURATION",
    callback=_sync_value,
    help="fsync of the embedded JetStream store: before every ack, or every DURATION (nats-server default: 2m)",
)


@main.command()
@connection_options
@config_option
@click.option("--http-port", type=int, default=None, help="HTTP port (default: the YAML's, 5100)")
@click.option("--nats-port", type=int, default=4222, show_default=True, help="port of the embedded nats-server")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default="data/nats",
    show_default=True,
    help="JetStream store of the embedded nats-server (its config, pid file and log are written there too)",
)
@sync_option
@click.option("--provision", "mode", type=click.Choice(MODES), default="create", show_default=True)
@replica_decrease_option
@verbose_option
def up(
    connection: ConnectionFlags,
    config_dir: Path,
    http_port: int | None,
    nats_port: int,
    data_dir: str,
    sync: str,
    mode: str,
    allow_replica_decrease: bool,
    verbose: int,
) -> None:
    """Run every service (and an embedded nats-server unless --nats, NATS_URL, a context or the YAML names one)."""
    logs.setup(verbose)
    cfg = _load(config_dir)
    server = guard = None
    if connection.external(cfg):
        spec = connection.spec(cfg)
    else:
        server = EmbeddedServer(port=nats_port, data_dir=data_dir, sync=sync)
        try:
            server.start()
        except (RuntimeError, TimeoutError, FileNotFoundError) as exc:
            raise click.ClickException(f"cannot start the embedded nats-server: {exc}") from exc
        guard = ServerGuard(server)
        spec = ConnectionSpec.from_url(server.url)
    options = RuntimeOptions(provision=mode, http_port=http_port, allow_replica_decrease=allow_replica_decrease)
    runtime = Runtime(cfg, list(cfg.services), spec, options)

    def banner() -> None:
        click.echo(f"flowrun up: services {', '.join(cfg.services)} on {spec.describe()}", err=True)
        if server:
            click.echo(
                f"  embedded nats-server pid {server.pid}, store {server.data_dir} (sync {server.sync}), "
                f"log {server.log_file}",
                err=True,
            )
        for url in runtime.http_urls:
            click.echo(f"  HTTP  {url}/api/orders   health {url}/healthz", err=True)
        click.echo("  Ctrl-C to stop", err=True)

    try:
        _run(lambda: _serve(runtime, banner, guard))
    finally:
        if server:
            server.stop()


@main.command("dev-cluster")
@click.option("--nodes", type=click.IntRange(1, 9), default=3, show_default=True, help="how many nats-servers")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default="data/cluster",
    show_default=True,
    help="one store per node: DIR/n1, DIR/n2, …",
)
@click.option("--port", type=int, default=4222, show_default=True, help="client port of n1 (node k gets PORT+k-1)")
@sync_option
def dev_cluster(nodes: int, data_dir: str, port: int, sync: str) -> None:
    """Run a local JetStream cluster in the foreground: replicas and failover on one machine (Ctrl-C stops it)."""
    from runner.jetstream.cluster import EmbeddedCluster

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops every node, as Ctrl-C does
    cluster = EmbeddedCluster(nodes, data_dir, port, sync)
    try:
        try:
            leader = cluster.start().wait_for_leader()
        except (RuntimeError, TimeoutError, FileNotFoundError) as exc:
            raise click.ClickException(f"cannot start the dev cluster: {exc}") from exc
        click.echo(f"flowrun dev-cluster {cluster.name}: {nodes} node(s), JetStream meta leader {leader}, sync {sync}")
        for node in cluster.nodes:
            click.echo(
                f"  {node.server_name}  {node.url}  monitor http://127.0.0.1:{node.monitor_port}  store {node.data_dir}"
            )
        click.echo(f"--nats {cluster.urls}")
        click.echo("Ctrl-C stops every node")
        while True:
            signal.pause()
    except KeyboardInterrupt:
        click.echo("stopping the dev cluster …", err=True)
    finally:
        cluster.stop()


@main.command()
@click.option("--service", "services", multiple=True, required=True, help="service to run (repeatable)")
@connection_options
@config_option
@click.option("--http-port", type=int, default=None, help="HTTP port for a service with an API")
@click.option("--provision", "mode", type=click.Choice(MODES), default="create", show_default=True)
@replica_decrease_option
@verbose_option
def start(
    services: tuple[str, ...],
    connection: ConnectionFlags,
    config_dir: Path,
    http_port: int | None,
    mode: str,
    allow_replica_decrease: bool,
    verbose: int,
) -> None:
    """Run one service (start it N times to scale out: instances share its durable consumers)."""
    logs.setup(verbose)
    cfg = _load(config_dir)
    unknown = [s for s in services if s not in cfg.services]
    if unknown:
        raise click.BadParameter(
            f"unknown service {unknown[0]!r}; declared: {', '.join(cfg.services)}", param_hint="--service"
        )
    options = RuntimeOptions(provision=mode, http_port=http_port, allow_replica_decrease=allow_replica_decrease)
    spec = connection.spec(cfg)
    runtime = Runtime(cfg, list(services), spec, options)

    def banner() -> None:
        click.echo(f"flowrun: {', '.join(services)} running on {spec.describe()} (pid {os.getpid()})", err=True)
        for url in runtime.http_urls:
            click.echo(f"  HTTP  {url}", err=True)

    _run(lambda: _serve(runtime, banner))


@main.command()
@config_option
@connection_options
def validate(config_dir: Path, connection: ConnectionFlags) -> None:
    """Check streams.yaml and flows/: every problem at once, as file:line:col: message.

    With --nats or --context, also check against that server (replicas vs. cluster size)."""
    cfg = _load(config_dir)
    if connection.explicit:
        spec = connection.spec(cfg)
        problems = _run(lambda: with_nats(spec, lambda nc: replicas.problems(nc, cfg)))
        if problems:
            for p in problems:
                click.echo(str(p), err=True)
            click.echo(f"{len(problems)} problem(s) found", err=True)
            sys.exit(1)
    click.echo(
        f"ok: {len(cfg.streams)} streams, {len(cfg.services)} services, "
        f"{sum(len(s.consumers) for s in cfg.services.values())} consumers, {len(cfg.sagas)} sagas"
    )


@main.command()
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
def provision(
    connection: ConnectionFlags, config_dir: Path, dry_run: bool, mode: str, allow_replica_decrease: bool
) -> None:
    """Create or update streams, consumers and KV buckets to match the YAML (never deletes data)."""
    cfg = _load(config_dir)

    async def go(nc: Client) -> Any:
        return await plan_and_apply(
            nc.jetstream(), cfg, mode, dry_run=dry_run, allow_replica_decrease=allow_replica_decrease
        )

    plan = _run(lambda: with_nats(connection.spec(cfg), go))
    for change in plan.changes:
        click.echo(str(change))
    if dry_run or mode == "verify":
        click.echo(
            f"{len(plan.pending)} change(s) to apply, {len(plan.drift)} drift(s)" + (" (dry run)" if dry_run else "")
        )
    else:
        click.echo(f"applied {len(plan.pending)} change(s); {len(plan.drift)} drift(s) left for you to decide")
    if mode == "verify" and (plan.pending or plan.drift):
        sys.exit(1)
    if plan.drift:
        sys.exit(2)


def _print(data: Any, as_json: bool) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if as_json else render(data))


@main.group()
def stream() -> None:
    """Inspect streams."""


def _optional_config(config_dir: Path) -> config_mod.Config | None:
    """The YAML, when --config holds a valid one: inspecting a server needs none."""
    if not (config_dir / "streams.yaml").exists():
        return None
    cfg, _ = config_mod.load(config_dir)
    return cfg


def _declared(cfg: config_mod.Config | None) -> tuple[set[str], set[tuple[str, str]]] | None:
    """Streams and (stream, consumer) pairs the YAML declares, to flag what the server has besides."""
    if cfg is None:
        return None
    streams = set(cfg.streams) | {f"KV_{b}" for b in cfg.buckets}
    return streams, {(c.stream, c.durable) for c in desired_consumers(cfg)}


def _yes_no(known: set[Any] | None, item: Any) -> str:
    return "-" if known is None else ("yes" if item in known else "no")


@stream.command("ls")
@connection_options
@config_option
@click.option("--json", "as_json", is_flag=True)
def stream_ls(connection: ConnectionFlags, config_dir: Path, as_json: bool) -> None:
    """Streams on the server; DECLARED says whether the YAML in --config knows them."""
    cfg = _optional_config(config_dir)

    async def go(nc: Client) -> list[dict[str, Any]]:
        try:
            js = nc.jetstream()
            return [await stream_info(js, s.config.name) for s in await js.streams_info()]
        except Leaderless as exc:
            raise click.ClickException(str(exc)) from None

    infos = _run(lambda: with_nats(connection.spec(cfg), go))
    if as_json:
        click.echo(json.dumps(infos, indent=2, default=str))
        return
    declared = _declared(cfg)
    known = declared[0] if declared else None
    click.echo(f"{'STREAM':<16} {'MESSAGES':>9} {'BYTES':>10} {'CONSUMERS':>9} {'DECLARED':>8}  SUBJECTS")
    for i in sorted(infos, key=lambda i: i["name"]):
        st = i["state"]
        click.echo(
            f"{i['name']:<16} {st['messages']:>9} {st['bytes']:>10} {st['consumers']:>9} "
            f"{_yes_no(known, i['name']):>8}  {', '.join(i['subjects'])}"
        )


@stream.command("info")
@click.argument("name")
@connection_options
@config_option
@click.option("--json", "as_json", is_flag=True)
def stream_info_cmd(name: str, connection: ConnectionFlags, config_dir: Path, as_json: bool) -> None:
    """A stream's config and state (what `nats stream info` shows)."""
    cfg = _optional_config(config_dir)

    async def go(nc: Client) -> dict[str, Any]:
        try:
            return await stream_info(nc.jetstream(), name)
        except nats.js.errors.NotFoundError:
            raise click.ClickException(f"stream {name} not found") from None
        except Leaderless as exc:
            raise click.ClickException(str(exc)) from None

    info = _run(lambda: with_nats(connection.spec(cfg), go))
    declared = _declared(cfg)
    info["declared"] = _yes_no(declared[0] if declared else None, name)
    _print(info, as_json)


@main.group()
def consumer() -> None:
    """Inspect consumers."""


@consumer.command("ls")
@click.argument("stream_name")
@connection_options
@config_option
@click.option("--json", "as_json", is_flag=True)
def consumer_ls(stream_name: str, connection: ConnectionFlags, config_dir: Path, as_json: bool) -> None:
    """Consumers of a stream; DECLARED says whether the YAML in --config knows them."""
    cfg = _optional_config(config_dir)

    async def go(nc: Client) -> list[dict[str, Any]]:
        try:
            js = nc.jetstream()
            return [await consumer_info(js, stream_name, c.name) for c in await js.consumers_info(stream_name)]
        except nats.js.errors.NotFoundError:
            raise click.ClickException(f"stream {stream_name} not found") from None
        except Leaderless as exc:
            raise click.ClickException(str(exc)) from None

    infos = _run(lambda: with_nats(connection.spec(cfg), go))
    if as_json:
        click.echo(json.dumps(infos, indent=2, default=str))
        return
    declared = _declared(cfg)
    known = declared[1] if declared else None
    click.echo(f"{'CONSUMER':<26} {'PENDING':>8} {'ACK PENDING':>11} {'REDELIVERED':>11} {'DECLARED':>8}  FILTERS")
    for i in sorted(infos, key=lambda i: i["name"]):
        st = i["state"]
        click.echo(
            f"{i['name']:<26} {st['pending']:>8} {st['ack_pending']:>11} {st['redelivered']:>11} "
            f"{_yes_no(known, (stream_name, i['name'])):>8}  {', '.join(i['filter_subjects'])}"
        )


@consumer.command("info")
@click.argument("stream_name")
@click.argument("name")
@connection_options
@config_option
@click.option("--json", "as_json", is_flag=True)
def consumer_info_cmd(
    stream_name: str, name: str, connection: ConnectionFlags, config_dir: Path, as_json: bool
) -> None:
    """A consumer's config and state: pending, ack pending, redelivered, ack floor."""
    cfg = _optional_config(config_dir)

    async def go(nc: Client) -> dict[str, Any]:
        try:
            return await consumer_info(nc.jetstream(), stream_name, name)
        except nats.js.errors.NotFoundError:
            raise click.ClickException(f"consumer {stream_name}/{name} not found") from None
        except Leaderless as exc:
            raise click.ClickException(str(exc)) from None

    info = _run(lambda: with_nats(connection.spec(cfg), go))
    declared = _declared(cfg)
    info["declared"] = _yes_no(declared[1] if declared else None, (stream_name, name))
    _print(info, as_json)


def _dead_letter_target(cfg: config_mod.Config, service: str | None) -> tuple[str, str]:
    specs = {
        (s.dead_letter.stream, s.dead_letter.subject_prefix)
        for s in cfg.services.values()
        if service is None or s.name == service
    }
    if service is not None and service not in cfg.services:
        raise click.BadParameter(f"unknown service {service!r}", param_hint="--service")
    if len(specs) != 1:
        raise click.UsageError("services use different dead-letter streams: pick one with --service")
    return specs.pop()


def _dlq_session(
    connection: ConnectionFlags,
    config_dir: Path,
    service: str | None,
    body: Callable[[Any, str, str], Awaitable[T]],
) -> T:
    cfg = _load(config_dir)
    stream_name, prefix = _dead_letter_target(cfg, service)

    return _run(lambda: with_nats(connection.spec(cfg), lambda nc: body(nc.jetstream(), stream_name, prefix)))


@main.group()
def dlq() -> None:
    """Dead letters: list, show, replay, purge."""


service_filter = click.option("--service", default=None, help="only this service's dead letters")


@dlq.command("ls")
@connection_options
@config_option
@service_filter
@click.option("--json", "as_json", is_flag=True)
def dlq_ls(connection: ConnectionFlags, config_dir: Path, service: str | None, as_json: bool) -> None:
    """List dead letters, oldest first."""
    found = _dlq_session(connection, config_dir, service, lambda js, st, pre: dlq_mod.entries(js, st, pre, service))
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


@dlq.command("show")
@click.argument("entry_id", type=int)
@connection_options
@config_option
def dlq_show(entry_id: int, connection: ConnectionFlags, config_dir: Path) -> None:
    """Show one dead letter: headers, payload, why it failed."""
    found = _dlq_session(connection, config_dir, None, lambda js, st, pre: dlq_mod.entries(js, st, pre))
    entry = next((e for e in found if e.id == entry_id), None)
    if entry is None:
        raise click.ClickException(f"no dead letter with id {entry_id}")
    click.echo(json.dumps(entry.detail(), indent=2, default=str))


@dlq.command("replay")
@click.argument("entry_id", type=int, required=False)
@click.option("--all", "replay_all", is_flag=True, help="replay every entry not yet replayed")
@connection_options
@config_option
@service_filter
def dlq_replay(
    entry_id: int | None, replay_all: bool, connection: ConnectionFlags, config_dir: Path, service: str | None
) -> None:
    """Republish dead letters to their original subject (fresh id); entries are marked, not deleted."""
    if (entry_id is None) == (not replay_all):
        raise click.UsageError("give one entry ID or --all")

    async def body(js: Any, stream_name: str, prefix: str) -> list[tuple[int, int]]:
        found = await dlq_mod.entries(js, stream_name, prefix, service)
        if entry_id is not None:
            chosen = [e for e in found if e.id == entry_id]
            if not chosen:
                raise click.ClickException(f"no dead letter with id {entry_id}")
        else:
            chosen = [e for e in found if not e.replayed]
        return [(e.id, await dlq_mod.replay(js, stream_name, prefix, e)) for e in chosen]

    done = _dlq_session(connection, config_dir, service, body)
    for old, new in done:
        click.echo(f"replayed {old} → stream seq {new}")
    click.echo(f"{len(done)} replayed")


@dlq.command("purge")
@click.option("--older-than", "older_than", required=True, metavar="DURATION", help="e.g. 7d, 12h, 30m")
@connection_options
@config_option
def dlq_purge(older_than: str, connection: ConnectionFlags, config_dir: Path) -> None:
    """Delete dead letters older than a duration."""
    try:
        age = seconds(older_than)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from exc
    removed = _dlq_session(connection, config_dir, None, lambda js, st, pre: dlq_mod.purge_older_than(js, st, pre, age))
    click.echo(f"purged {removed} message(s) older than {older_than}")


@main.command()
@click.argument("which", type=click.Choice(["streams", "flows", "all"]), default="all")
def schema(which: str) -> None:
    """Print the JSON Schemas (draft 2020-12) of streams.yaml and flows/*.yaml, for editors."""
    if which == "all":
        click.echo(json.dumps({"streams": config_mod.schema("streams"), "flows": config_mod.schema("flows")}, indent=2))
    else:
        click.echo(json.dumps(config_mod.schema(which), indent=2))


@main.command()
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
def permissions(config_dir: Path, service: str | None, fmt: str, mode: str, generate_passwords: bool) -> None:
    """Least-privilege NATS users: each service may publish only what it emits, read only its own inbox."""
    cfg = _load(config_dir)
    try:
        click.echo(permissions_render.render(permissions_mod.users(cfg, service, mode), fmt, generate_passwords))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


if __name__ == "__main__":
    main()
