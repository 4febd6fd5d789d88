"""Commands that inspect the server: `stream ls|info` and `consumer ls|info`, as `nats stream info` shows them."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from runner.cli.connection import ConnectionFlags, connection_options, run_on_nats
from runner.cli.options import config_option, json_option
from runner.config import loader
from runner.config.model import Config
from runner.jetstream.inspection import Leaderless, consumer_info, render, stream_info
from runner.jetstream.provision import declared

T = TypeVar("T")


def _optional_config(config_dir: Path) -> Config | None:
    """The YAML, when --config holds a valid one: inspecting a server needs none."""
    if not (config_dir / "streams.yaml").exists():
        return None
    cfg, _ = loader.load(config_dir)
    return cfg


def _inspect(
    connection: ConnectionFlags, cfg: Config | None, read: Callable[[JetStreamContext], Awaitable[T]], missing: str
) -> T:
    """Run `read` on the server; a missing stream or consumer, or one without a leader, ends the command."""

    async def go(nc: Client) -> T:
        try:
            return await read(nc.jetstream())
        except NotFoundError:
            raise click.ClickException(f"{missing} not found") from None
        except Leaderless as exc:
            raise click.ClickException(str(exc)) from None

    return run_on_nats(connection, cfg, go)


def _yes_no(known: set[Any] | None, item: Any) -> str:
    return "-" if known is None else ("yes" if item in known else "no")


def _print(data: Any, as_json: bool) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if as_json else render(data))


@click.group()
def stream() -> None:
    """Inspect streams."""


@stream.command("ls")
@connection_options
@config_option
@json_option
def stream_ls(connection: ConnectionFlags, config_dir: Path, as_json: bool) -> None:
    """Streams on the server; DECLARED says whether the YAML in --config knows them."""
    cfg = _optional_config(config_dir)

    async def read(js: JetStreamContext) -> list[dict[str, Any]]:
        return [await stream_info(js, s.config.name) for s in await js.streams_info()]

    infos = _inspect(connection, cfg, read, "stream")
    if as_json:
        click.echo(json.dumps(infos, indent=2, default=str))
        return
    known = declared(cfg)[0] if cfg else None
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
@json_option
def stream_info_cmd(name: str, connection: ConnectionFlags, config_dir: Path, as_json: bool) -> None:
    """A stream's config and state (what `nats stream info` shows)."""
    cfg = _optional_config(config_dir)
    info = _inspect(connection, cfg, lambda js: stream_info(js, name), f"stream {name}")
    info["declared"] = _yes_no(declared(cfg)[0] if cfg else None, name)
    _print(info, as_json)


@click.group()
def consumer() -> None:
    """Inspect consumers."""


@consumer.command("ls")
@click.argument("stream_name")
@connection_options
@config_option
@json_option
def consumer_ls(stream_name: str, connection: ConnectionFlags, config_dir: Path, as_json: bool) -> None:
    """Consumers of a stream; DECLARED says whether the YAML in --config knows them."""
    cfg = _optional_config(config_dir)

    async def read(js: JetStreamContext) -> list[dict[str, Any]]:
        return [await consumer_info(js, stream_name, c.name) for c in await js.consumers_info(stream_name)]

    infos = _inspect(connection, cfg, read, f"stream {stream_name}")
    if as_json:
        click.echo(json.dumps(infos, indent=2, default=str))
        return
    known = declared(cfg)[1] if cfg else None
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
@json_option
def consumer_info_cmd(
    stream_name: str, name: str, connection: ConnectionFlags, config_dir: Path, as_json: bool
) -> None:
    """A consumer's config and state: pending, ack pending, redelivered, ack floor."""
    cfg = _optional_config(config_dir)
    info = _inspect(connection, cfg, lambda js: consumer_info(js, stream_name, name), f"consumer {stream_name}/{name}")
    info["declared"] = _yes_no(declared(cfg)[1] if cfg else None, (stream_name, name))
    _print(info, as_json)


COMMANDS = [stream, consumer]
