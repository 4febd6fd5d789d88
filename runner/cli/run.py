"""Commands that run things in the foreground: `up` (everything), `start` (one service), `dev-cluster`."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from runner import logs
from runner.cli import loop
from runner.cli.connection import ConnectionFlags, connection_options
from runner.cli.options import (
    check_services,
    config_option,
    load_config,
    log_format_option,
    replica_decrease_option,
    verbose_option,
)
from runner.config.connection import ConnectionSpec
from runner.jetstream.cluster import EmbeddedCluster
from runner.jetstream.embedded import EmbeddedServer, sync_interval
from runner.jetstream.provision import MODES
from runner.jetstream.server_guard import ServerGuard
from runner.serve.foreground import ServeFailed, serve_until_stopped
from runner.serve.service import Runtime, RuntimeOptions


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
provision_option = click.option("--provision", "mode", type=click.Choice(MODES), default="create", show_default=True)
metrics_port_option = click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="serve Prometheus /metrics on this port too (for services without HTTP; those with HTTP have it there)",
)
metrics_host_option = click.option(
    "--metrics-host", default="127.0.0.1", show_default=True, help="address --metrics-port listens on"
)
watch_option = click.option(
    "--watch",
    is_flag=True,
    help="reload streams.yaml, flows/ and handler code when they change: a valid edit is applied live, "
    "an invalid one is reported (file:line) and the running configuration stays",
)


def running_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options `up` and `start` share, after their own: provisioning, reload, metrics, logging."""
    for option in reversed(
        (
            provision_option,
            replica_decrease_option,
            watch_option,
            metrics_port_option,
            metrics_host_option,
            verbose_option,
            log_format_option,
        )
    ):
        command = option(command)
    return command


def _options(
    mode: str, http_port: int | None, allow_replica_decrease: bool, metrics_port: int | None, metrics_host: str
) -> RuntimeOptions:
    return RuntimeOptions(
        provision=mode,
        http_port=http_port,
        allow_replica_decrease=allow_replica_decrease,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
    )


def _serve(runtime: Runtime, banner: Callable[[], None], guard: ServerGuard | None = None, watch: bool = False) -> None:
    def stopping() -> None:
        click.echo("shutting down: finishing in-flight messages …", err=True)

    reloader = None
    if watch:
        from runner.serve.watch import Reloader  # watchfiles only with --watch

        reloader = Reloader(runtime)
        logging.getLogger("flowrun.reload").setLevel(logging.INFO)  # what each reload did, even without -v
    try:
        loop.run(lambda: serve_until_stopped(runtime, banner, stopping, guard, reloader))
    except ServeFailed as exc:
        raise click.ClickException(str(exc)) from exc


@click.command()
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
@running_options
def up(
    connection: ConnectionFlags,
    config_dir: Path,
    http_port: int | None,
    nats_port: int,
    data_dir: str,
    sync: str,
    mode: str,
    allow_replica_decrease: bool,
    watch: bool,
    metrics_port: int | None,
    metrics_host: str,
    verbose: int,
    log_format: str,
) -> None:
    """Run every service (and an embedded nats-server unless --nats, NATS_URL, a context or the YAML names one)."""
    logs.setup(verbose, log_format)
    cfg = load_config(config_dir)
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
    options = _options(mode, http_port, allow_replica_decrease, metrics_port, metrics_host)
    runtime = Runtime(cfg, list(cfg.services), spec, options)

    def banner() -> None:
        click.echo(f"flowrun up: services {', '.join(cfg.services)} on {spec.describe()}", err=True)
        if server:
            click.echo(
                f"  embedded nats-server pid {server.pid}, store {server.data_dir} (sync {server.sync}), "
                f"log {server.log_file}",
                err=True,
            )
        for url, http in zip(runtime.http_urls, [s.http for s in cfg.services.values() if s.http], strict=True):
            resources = "  ".join(url + resource.path for resource in http.resources.values())
            click.echo(f"  HTTP  {resources}   health {url}/healthz   metrics {url}/metrics", err=True)
        if runtime.metrics_url:
            click.echo(f"  metrics  {runtime.metrics_url}", err=True)
        click.echo("  Ctrl-C to stop", err=True)

    try:
        _serve(runtime, banner, guard, watch)
    finally:
        if server:
            server.stop()


@click.command()
@click.option("--service", "services", multiple=True, required=True, help="service to run (repeatable)")
@connection_options
@config_option
@click.option("--http-port", type=int, default=None, help="HTTP port for a service with an API")
@running_options
def start(
    services: tuple[str, ...],
    connection: ConnectionFlags,
    config_dir: Path,
    http_port: int | None,
    mode: str,
    allow_replica_decrease: bool,
    watch: bool,
    metrics_port: int | None,
    metrics_host: str,
    verbose: int,
    log_format: str,
) -> None:
    """Run one service (start it N times to scale out: instances share its durable consumers)."""
    logs.setup(verbose, log_format)
    cfg = load_config(config_dir)
    check_services(cfg, services)
    options = _options(mode, http_port, allow_replica_decrease, metrics_port, metrics_host)
    spec = connection.spec(cfg)
    runtime = Runtime(cfg, list(services), spec, options)

    def banner() -> None:
        click.echo(f"flowrun: {', '.join(services)} running on {spec.describe()} (pid {os.getpid()})", err=True)
        for url in runtime.http_urls:
            click.echo(f"  HTTP  {url}", err=True)
        if runtime.metrics_url:
            click.echo(f"  metrics  {runtime.metrics_url}", err=True)

    _serve(runtime, banner, watch=watch)


@click.command("dev-cluster")
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


COMMANDS = [up, start, dev_cluster]
