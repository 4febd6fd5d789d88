"""`flowrun init`: scaffold a minimal project that validates, runs and passes its flow test."""

from __future__ import annotations

from pathlib import Path

import click

from runner.scaffold import WouldOverwrite, create


@click.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=Path))
def init(directory: Path) -> None:
    """Create a minimal project in DIRECTORY (default: here): streams.yaml, flows/, handlers/, tests/flows/.

    Existing files are never overwritten: if any would be, nothing is written (exit 1)."""
    try:
        written = create(directory)
    except WouldOverwrite as exc:
        raise click.ClickException(f"not overwriting existing files: {exc} (nothing was written)") from exc
    for path in written:
        click.echo(f"created {path}")
    where = "" if directory == Path(".") else f" --config {directory}"
    click.echo(
        "\nnext:\n"
        f"  flowrun validate{where}      # check the YAML\n"
        f"  flowrun test{where}          # run tests/flows/*.yaml against an embedded nats-server\n"
        f"  flowrun up{where}            # run it; then: curl -X POST localhost:5100/api/greetings "
        "-H 'Content-Type: application/json' -d '{\"name\": \"Ada\"}'"
    )


COMMANDS = [init]
