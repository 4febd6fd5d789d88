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
from runner.cli.connection import ConnectionFlags, connection_options, with_nats
from runner.cli.options import (
    check_services,
    config_option,
    load_config,
    log_format_option,
    replica_decrease_option,
    verbose_option,
)
from runner.cli.up_processes import WORKERS_HELP, ProcessPlan, worker_counts
from runner.config.connection import ConnectionSpec, as_env
from runner.config.model import Config, HttpSpec
from runner.jetstream.cluster import EmbeddedCluster
from runner.jetstream.embedded import EmbeddedServer, free_port, port_free, sync_interval
from runner.jetstream.provision import MODES
from runner.jetstream.server_guard import ServerGuard
from runner.serve.foreground import ServeFailed, serve_until_stopped, supervise_until_stopped
from runner.serve.service import ProvisionError, Runtime, RuntimeOptions, provision
from runner.serve.supervisor import Supervisor


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
    mode: str,
    http_port: int | None,
    allow_replica_decrease: bool,
    metrics_port: int | None,
    metrics_host: str,
    reuse_port: bool = False,
) -> RuntimeOptions:
    return RuntimeOptions(
        provision=mode,
        http_port=http_port,
        allow_replica_decrease=allow_replica_decrease,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
        reuse_port=reuse_port,
    )


def _serve(runtime: Runtime, banner: Callable[[], None], guard: ServerGuard | None = None, watch: bool = False) -> None:
    def stopping() -> None:
        who = ", ".join(runtime.services)
        click.echo(f"shutting down {who} (pid {os.getpid()}): finishing in-flight messages …", err=True)

    reloader = None
    if watch:
        from runner.serve.watch import Reloader  # watchfiles only with --watch

        reloader = Reloader(runtime)
        logging.getLogger("flowrun.reload").setLevel(logging.INFO)  # what each reload did, even without -v
    try:
        loop.run(lambda: serve_until_stopped(runtime, banner, stopping, guard, reloader))
    except ServeFailed as exc:
        raise click.ClickException(str(exc)) from exc


workers_option = click.option("--workers", "workers", multiple=True, metavar="auto|N|SERVICE=N", help=WORKERS_HELP)
in_process_option = click.option(
    "--in-process",
    is_flag=True,
    help="run every service in this one process (one core; for a debugger's breakpoints). --watch implies it: "
    "a reload is provisioned once and switches every service at the same moment",
)


@click.command()
@connection_options
@config_option
@click.option("--http-port", type=int, default=None, help="HTTP port (default: the YAML's, 5100; 0 picks a free one)")
@click.option("--nats-port", type=int, default=4222, show_default=True, help="port of the embedded nats-server")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default="data/nats",
    show_default=True,
    help="JetStream store of the embedded nats-server (its config, pid file and log are written there too)",
)
@sync_option
@workers_option
@in_process_option
@running_options
def up(
    connection: ConnectionFlags,
    config_dir: Path,
    http_port: int | None,
    nats_port: int,
    data_dir: str,
    sync: str,
    workers: tuple[str, ...],
    in_process: bool,
    mode: str,
    allow_replica_decrease: bool,
    watch: bool,
    metrics_port: int | None,
    metrics_host: str,
    verbose: int,
    log_format: str,
) -> None:
    """Run every service, each in its own supervised processes (and an embedded nats-server unless --nats,
    NATS_URL, a context or the YAML names one). With --metrics-port P, process i (in the banner's order)
    serves /metrics on P+i."""
    logs.setup(verbose, log_format)
    cfg = load_config(config_dir)
    if (in_process or watch) and workers:
        raise click.UsageError("--workers needs a process per service: drop --in-process and --watch")
    counts = worker_counts(cfg, workers)
    ports = {} if in_process or watch else _http_ports(cfg, http_port)
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
    try:
        if in_process or watch:
            _up_in_process(cfg, spec, options, server, guard, watch)
        else:
            plan = ProcessPlan(config_dir, counts, ports, verbose, log_format, metrics_port, metrics_host)
            _up_processes(cfg, spec, options, plan, server, guard)
    finally:
        if server:
            server.stop()


def _http_ports(cfg: Config, http_port: int | None) -> dict[str, int]:
    """The port of each service with HTTP, chosen before its processes start: they all bind it (SO_REUSEPORT),
    so a 0 must become one real port, and a port someone else holds must be refused here, not shared."""
    served = {name: service.http for name, service in cfg.services.items() if service.http is not None}
    if http_port is not None and len(served) > 1:
        raise click.UsageError(f"--http-port applies to one HTTP service; {', '.join(served)} serve HTTP")
    ports = {}
    for name, http in served.items():
        port = http.port if http_port is None else http_port
        if port == 0:
            port = free_port()
        elif not port_free(port):
            raise click.ClickException(f"HTTP port {port} of service {name} is in use (another flowrun up?)")
        ports[name] = port
    return ports


def _banner_header(cfg: Config, spec: ConnectionSpec, server: EmbeddedServer | None) -> None:
    click.echo(f"flowrun up: services {', '.join(cfg.services)} on {spec.describe()}", err=True)
    if server:
        click.echo(
            f"  embedded nats-server pid {server.pid}, store {server.data_dir} (sync {server.sync}), "
            f"log {server.log_file}",
            err=True,
        )


def _http_line(url: str, http: HttpSpec) -> str:
    resources = "  ".join(url + resource.path for resource in http.resources.values())
    return f"  HTTP  {resources}   health {url}/healthz   metrics {url}/metrics"


def _up_in_process(
    cfg: Config,
    spec: ConnectionSpec,
    options: RuntimeOptions,
    server: EmbeddedServer | None,
    guard: ServerGuard | None,
    watch: bool,
) -> None:
    runtime = Runtime(cfg, list(cfg.services), spec, options)

    def banner() -> None:
        _banner_header(cfg, spec, server)
        click.echo(f"  every service in this process (pid {os.getpid()})", err=True)
        for url, http in zip(runtime.http_urls, [s.http for s in cfg.services.values() if s.http], strict=True):
            click.echo(_http_line(url, http), err=True)
        if runtime.metrics_url:
            click.echo(f"  metrics  {runtime.metrics_url}", err=True)
        click.echo("  Ctrl-C to stop", err=True)

    _serve(runtime, banner, guard, watch)


def _up_processes(
    cfg: Config,
    spec: ConnectionSpec,
    options: RuntimeOptions,
    plan: ProcessPlan,
    server: EmbeddedServer | None,
    guard: ServerGuard | None,
) -> None:
    """Provision once, here; then every service's processes run `flowrun start --provision off`."""
    try:
        loop.run(lambda: with_nats(spec, lambda nc: provision(nc.jetstream(), cfg, options)))
    except ProvisionError as exc:
        raise click.ClickException(str(exc)) from exc
    supervisor = Supervisor(plan.commands(), as_env(spec, os.environ))

    def banner() -> None:
        _banner_header(cfg, spec, server)
        for name in cfg.services:
            children = [child for child in supervisor.children if child.service == name]
            pids = ", ".join(str(child.pid) for child in children)
            click.echo(f"  {name:<12} {len(children)} process(es), pid {pids}", err=True)
        for name, port in plan.http_ports.items():
            http = cfg.services[name].http
            assert http is not None
            click.echo(_http_line(f"http://{http.host}:{port}", http), err=True)
        for child, port in zip(supervisor.children, plan.metrics_ports(), strict=True):
            if port:
                click.echo(f"  metrics  {child.name}  http://{plan.metrics_host}:{port}/metrics", err=True)
        click.echo("  Ctrl-C to stop", err=True)

    def stopping() -> None:
        click.echo(f"shutting down {len(supervisor.children)} service process(es) …", err=True)

    try:
        loop.run(lambda: supervise_until_stopped(supervisor, banner, stopping, guard))
    except ServeFailed as exc:
        raise click.ClickException(str(exc)) from exc


@click.command()
@click.option("--service", "services", multiple=True, required=True, help="service to run (repeatable)")
@connection_options
@config_option
@click.option("--http-port", type=int, default=None, help="HTTP port for a service with an API")
@click.option(
    "--reuse-port",
    is_flag=True,
    help="share the HTTP port with other processes of the service (SO_REUSEPORT; `flowrun up` uses it). "
    "Off by default: a second start on a taken port fails instead of quietly taking half the requests",
)
@click.option(
    "--process-name",
    metavar="NAME",
    help="add process=NAME to every log line (`flowrun up` names its processes order#1, order#2 …)",
)
@running_options
def start(
    services: tuple[str, ...],
    connection: ConnectionFlags,
    config_dir: Path,
    http_port: int | None,
    reuse_port: bool,
    process_name: str | None,
    mode: str,
    allow_replica_decrease: bool,
    watch: bool,
    metrics_port: int | None,
    metrics_host: str,
    verbose: int,
    log_format: str,
) -> None:
    """Run one service (start it N times to scale out: instances share its durable consumers)."""
    logs.setup(verbose, log_format, process_name)
    cfg = load_config(config_dir)
    check_services(cfg, services)
    options = _options(mode, http_port, allow_replica_decrease, metrics_port, metrics_host, reuse_port)
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
