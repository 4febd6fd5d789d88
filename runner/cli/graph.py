"""`flowrun graph`: a saga as a state diagram, or the whole system as a flowchart, in Mermaid or DOT."""

from __future__ import annotations

from pathlib import Path

import click

from runner.cli.options import config_option, load_config
from runner.config import graph as graph_mod


@click.command("graph")
@click.option("--saga", "saga_name", default=None, help="draw this saga's states (default: the system's flow)")
@click.option("--system", is_flag=True, help="draw the system: HTTP → subjects → streams → consumers → services")
@click.option("--format", "fmt", type=click.Choice(graph_mod.FORMATS), default="mermaid", show_default=True)
@config_option
def graph(saga_name: str | None, system: bool, fmt: str, config_dir: Path) -> None:
    """Print the flow as a picture: Mermaid (renders on GitHub) or Graphviz DOT (`| dot -Tsvg`)."""
    if system and saga_name is not None:
        raise click.UsageError("give --saga NAME or --system, not both")
    cfg = load_config(config_dir)
    if saga_name is None:
        click.echo(graph_mod.render(graph_mod.system_graph(cfg), fmt), nl=False)
        return
    if saga_name not in cfg.sagas:
        raise click.BadParameter(f"unknown saga {saga_name!r}; declared: {', '.join(cfg.sagas)}", param_hint="--saga")
    click.echo(graph_mod.render(graph_mod.saga_graph(cfg.sagas[saga_name]), fmt), nl=False)


COMMANDS = [graph]
