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

from runner import config as config_mod
from runner import dlq as dlq_mod
from runner import logs
from runner.inspect import consumer_info, render, stream_info
from runner.provision import MODES, desired_consumers, plan_and_apply
from runner.service import ProvisionError, Runtime, RuntimeOptions
from runner.units import seconds

T = TypeVar("T")
DEFAULT_NATS = "nats://127.0.0.1:4222"

nats_option = click.option(
    "--nats",
    "nats_url",
    envvar="NATS_URL",
    default=None,
    metavar="URL",
    help=f"NATS server URL (env NATS_URL; default {DEFAULT_NATS})",
)
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


async def _quiet(exc: Exception) -> None:
    """Connection errors become one clear message below, not a traceback per retry."""


async def _connect(url: str | None) -> nats.NATS:
    try:
        # nats-py reads max_reconnect_attempts=0 as "no limit": allow one retry, then give up.
        return await nats.connect(
            url or DEFAULT_NATS,
            connect_timeout=3,
            max_reconnect_attempts=1,
            reconnect_time_wait=0.2,
            allow_reconnect=False,
            error_cb=_quiet,
        )
    except Exception as exc:
        raise click.ClickException(f"cannot connect to NATS at {url or DEFAULT_NATS}: {exc!r}") from exc


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """flowrun: declarative workflows and sagas on NATS JetStream."""


async def _serve(runtime: Runtime, banner: Callable[[], None]) -> None:
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
    await stop.wait()
    click.echo("shutting down: finishing in-flight messages …", err=True)
    await runtime.stop()


@main.command()
@nats_option
@config_option
@click.option("--http-port", type=int, default=None, help="HTTP port (default: the YAML's, 5100)")
@click.option("--nats-port", type=int, default=4222, show_default=True, help="port of the embedded nats-server")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default="data/nats",
    show_default=True,
    help="JetStream store of the embedded nats-server",
)
@click.option("--provision", "mode", type=click.Choice(MODES), default="create", show_default=True)
@verbose_option
def up(
    nats_url: str | None,
    config_dir: Path,
    http_port: int | None,
    nats_port: int,
    data_dir: str,
    mode: str,
    verbose: int,
) -> None:
    """Run every service (and an embedded nats-server unless --nats/NATS_URL is given)."""
    from runner.embedded import EmbeddedServer

    logs.setup(verbose)
    cfg = _load(config_dir)
    server = None
    if not nats_url:
        server = EmbeddedServer(
            port=nats_port, data_dir=data_dir, log_file=str(Path(data_dir).parent / "nats-server.log")
        )
        try:
            server.start()
        except (RuntimeError, TimeoutError, FileNotFoundError) as exc:
            raise click.ClickException(f"cannot start the embedded nats-server: {exc}") from exc
        nats_url = server.url
    runtime = Runtime(cfg, list(cfg.services), nats_url, RuntimeOptions(provision=mode, http_port=http_port))

    def banner() -> None:
        click.echo(
            f"flowrun up: services {', '.join(cfg.services)} on {nats_url}"
            + (" (embedded nats-server)" if server else ""),
            err=True,
        )
        for url in runtime.http_urls:
            click.echo(f"  HTTP  {url}/api/orders   health {url}/healthz", err=True)
        click.echo("  Ctrl-C to stop", err=True)

    try:
        _run(lambda: _serve(runtime, banner))
    finally:
        if server:
            server.stop()


@main.command()
@click.option("--service", "services", multiple=True, required=True, help="service to run (repeatable)")
@nats_option
@config_option
@click.option("--http-port", type=int, default=None, help="HTTP port for a service with an API")
@click.option("--provision", "mode", type=click.Choice(MODES), default="create", show_default=True)
@verbose_option
def start(
    services: tuple[str, ...], nats_url: str | None, config_dir: Path, http_port: int | None, mode: str, verbose: int
) -> None:
    """Run one service (start it N times to scale out: instances share its durable consumers)."""
    logs.setup(verbose)
    cfg = _load(config_dir)
    unknown = [s for s in services if s not in cfg.services]
    if unknown:
        raise click.BadParameter(
            f"unknown service {unknown[0]!r}; declared: {', '.join(cfg.services)}", param_hint="--service"
        )
    runtime = Runtime(
        cfg, list(services), nats_url or DEFAULT_NATS, RuntimeOptions(provision=mode, http_port=http_port)
    )

    def banner() -> None:
        click.echo(
            f"flowrun: {', '.join(services)} running on {nats_url or DEFAULT_NATS} (pid {os.getpid()})", err=True
        )
        for url in runtime.http_urls:
            click.echo(f"  HTTP  {url}", err=True)

    _run(lambda: _serve(runtime, banner))


@main.command()
@config_option
@click.option(
    "--nats", "nats_url", default=None, metavar="URL", help="also check against this server (replicas vs. cluster size)"
)
def validate(config_dir: Path, nats_url: str | None) -> None:
    """Check streams.yaml and flows/: every problem at once, as file:line:col: message."""
    cfg = _load(config_dir)
    if nats_url:
        problems = _run(lambda: _cluster_problems(cfg, nats_url))
        if problems:
            for p in problems:
                click.echo(p, err=True)
            sys.exit(1)
    click.echo(
        f"ok: {len(cfg.streams)} streams, {len(cfg.services)} services, "
        f"{sum(len(s.consumers) for s in cfg.services.values())} consumers, {len(cfg.sagas)} sagas"
    )


async def _cluster_problems(cfg: config_mod.Config, url: str) -> list[str]:
    nc = await _connect(url)
    try:
        info = nc._server_info
        size = (len(info.get("connect_urls") or []) + 1) if info.get("cluster") else 1
    finally:
        await nc.close()
    streams_file = cfg.root / "streams.yaml"
    return [
        f"{streams_file}: stream {s.name} wants {s.replicas} replicas but the cluster at {url} has {size} server(s)"
        for s in cfg.streams.values()
        if s.replicas > size
    ]


@main.command()
@nats_option
@config_option
@click.option("--dry-run", is_flag=True, help="show the plan, change nothing")
@click.option(
    "--mode",
    type=click.Choice(["create", "verify"]),
    default="create",
    show_default=True,
    help="verify: only report differences (exit 1 if any)",
)
def provision(nats_url: str | None, config_dir: Path, dry_run: bool, mode: str) -> None:
    """Create or update streams, consumers and KV buckets to match the YAML (never deletes data)."""
    cfg = _load(config_dir)

    async def go() -> Any:
        nc = await _connect(nats_url)
        try:
            return await plan_and_apply(nc.jetstream(), cfg, mode, dry_run=dry_run)
        finally:
            await nc.close()

    plan = _run(go)
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


def _declared(config_dir: Path) -> tuple[set[str], set[tuple[str, str]]] | None:
    """Streams and (stream, consumer) pairs the YAML declares, to flag what the server has besides."""
    if not (config_dir / "streams.yaml").exists():
        return None
    cfg, _ = config_mod.load(config_dir)
    if cfg is None:
        return None
    streams = set(cfg.streams) | {f"KV_{b}" for b in cfg.buckets}
    return streams, {(c.stream, c.durable) for c in desired_consumers(cfg)}


def _yes_no(known: set[Any] | None, item: Any) -> str:
    return "-" if known is None else ("yes" if item in known else "no")


@stream.command("ls")
@nats_option
@config_option
@click.option("--json", "as_json", is_flag=True)
def stream_ls(nats_url: str | None, config_dir: Path, as_json: bool) -> None:
    """Streams on the server; DECLARED says whether the YAML in --config knows them."""

    async def go() -> list[dict[str, Any]]:
        nc = await _connect(nats_url)
        try:
            js = nc.jetstream()
            return [await stream_info(js, s.config.name) for s in await js.streams_info()]
        finally:
            await nc.close()

    infos = _run(go)
    if as_json:
        click.echo(json.dumps(infos, indent=2, default=str))
        return
    declared = _declared(config_dir)
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
@nats_option
@config_option
@click.option("--json", "as_json", is_flag=True)
def stream_info_cmd(name: str, nats_url: str | None, config_dir: Path, as_json: bool) -> None:
    """A stream's config and state (what `nats stream info` shows)."""

    async def go() -> dict[str, Any]:
        nc = await _connect(nats_url)
        try:
            return await stream_info(nc.jetstream(), name)
        except nats.js.errors.NotFoundError:
            raise click.ClickException(f"stream {name} not found") from None
        finally:
            await nc.close()

    info = _run(go)
    declared = _declared(config_dir)
    info["declared"] = _yes_no(declared[0] if declared else None, name)
    _print(info, as_json)


@main.group()
def consumer() -> None:
    """Inspect consumers."""


@consumer.command("ls")
@click.argument("stream_name")
@nats_option
@config_option
@click.option("--json", "as_json", is_flag=True)
def consumer_ls(stream_name: str, nats_url: str | None, config_dir: Path, as_json: bool) -> None:
    """Consumers of a stream; DECLARED says whether the YAML in --config knows them."""

    async def go() -> list[dict[str, Any]]:
        nc = await _connect(nats_url)
        try:
            js = nc.jetstream()
            return [await consumer_info(js, stream_name, c.name) for c in await js.consumers_info(stream_name)]
        except nats.js.errors.NotFoundError:
            raise click.ClickException(f"stream {stream_name} not found") from None
        finally:
            await nc.close()

    infos = _run(go)
    if as_json:
        click.echo(json.dumps(infos, indent=2, default=str))
        return
    declared = _declared(config_dir)
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
@nats_option
@config_option
@click.option("--json", "as_json", is_flag=True)
def consumer_info_cmd(stream_name: str, name: str, nats_url: str | None, config_dir: Path, as_json: bool) -> None:
    """A consumer's config and state: pending, ack pending, redelivered, ack floor."""

    async def go() -> dict[str, Any]:
        nc = await _connect(nats_url)
        try:
            return await consumer_info(nc.jetstream(), stream_name, name)
        except nats.js.errors.NotFoundError:
            raise click.ClickException(f"consumer {stream_name}/{name} not found") from None
        finally:
            await nc.close()

    info = _run(go)
    declared = _declared(config_dir)
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
    nats_url: str | None, config_dir: Path, service: str | None, body: Callable[[Any, str, str], Awaitable[T]]
) -> T:
    cfg = _load(config_dir)
    stream_name, prefix = _dead_letter_target(cfg, service)

    async def go() -> T:
        nc = await _connect(nats_url)
        try:
            return await body(nc.jetstream(), stream_name, prefix)
        finally:
            await nc.close()

    return _run(go)


@main.group()
def dlq() -> None:
    """Dead letters: list, show, replay, purge."""


service_filter = click.option("--service", default=None, help="only this service's dead letters")


@dlq.command("ls")
@nats_option
@config_option
@service_filter
@click.option("--json", "as_json", is_flag=True)
def dlq_ls(nats_url: str | None, config_dir: Path, service: str | None, as_json: bool) -> None:
    """List dead letters, oldest first."""
    found = _dlq_session(nats_url, config_dir, service, lambda js, st, pre: dlq_mod.entries(js, st, pre, service))
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
@nats_option
@config_option
def dlq_show(entry_id: int, nats_url: str | None, config_dir: Path) -> None:
    """Show one dead letter: headers, payload, why it failed."""
    found = _dlq_session(nats_url, config_dir, None, lambda js, st, pre: dlq_mod.entries(js, st, pre))
    entry = next((e for e in found if e.id == entry_id), None)
    if entry is None:
        raise click.ClickException(f"no dead letter with id {entry_id}")
    click.echo(json.dumps(entry.detail(), indent=2, default=str))


@dlq.command("replay")
@click.argument("entry_id", type=int, required=False)
@click.option("--all", "replay_all", is_flag=True, help="replay every entry not yet replayed")
@nats_option
@config_option
@service_filter
def dlq_replay(
    entry_id: int | None, replay_all: bool, nats_url: str | None, config_dir: Path, service: str | None
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

    done = _dlq_session(nats_url, config_dir, service, body)
    for old, new in done:
        click.echo(f"replayed {old} → stream seq {new}")
    click.echo(f"{len(done)} replayed")


@dlq.command("purge")
@click.option("--older-than", "older_than", required=True, metavar="DURATION", help="e.g. 7d, 12h, 30m")
@nats_option
@config_option
def dlq_purge(older_than: str, nats_url: str | None, config_dir: Path) -> None:
    """Delete dead letters older than a duration."""
    try:
        age = seconds(older_than)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from exc
    removed = _dlq_session(nats_url, config_dir, None, lambda js, st, pre: dlq_mod.purge_older_than(js, st, pre, age))
    click.echo(f"purged {removed} message(s) older than {older_than}")


@main.command()
@click.argument("which", type=click.Choice(["streams", "flows", "all"]), default="all")
def schema(which: str) -> None:
    """Print the JSON Schemas (draft 2020-12) of streams.yaml and flows/*.yaml, for editors."""
    if which == "all":
        click.echo(json.dumps({"streams": config_mod.schema("streams"), "flows": config_mod.schema("flows")}, indent=2))
    else:
        click.echo(json.dumps(config_mod.schema(which), indent=2))


if __name__ == "__main__":
    main()
