"""The `flowrun` command line, one module per command group; commands parse options and call the layers below."""

from __future__ import annotations

import click

from runner.cli import config, dlq, graph, permissions, run, saga, scaffold, streams, testing

main = click.Group(
    help="flowrun: declarative workflows and sagas on NATS JetStream.",
    context_settings={"help_option_names": ["-h", "--help"]},
    commands=[
        *run.COMMANDS,
        *config.COMMANDS,
        *streams.COMMANDS,
        *dlq.COMMANDS,
        *permissions.COMMANDS,
        *saga.COMMANDS,
        *graph.COMMANDS,
        *testing.COMMANDS,
        *scaffold.COMMANDS,
    ],
)

__all__ = ["main"]
