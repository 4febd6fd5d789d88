"""`flowrun test`: run the YAML flow scenarios (runner/testing/); what passed, and a diff for what did not."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from runner import logs
from runner.cli.options import config_option, load_config, log_format_option, verbose_option
from runner.testing import ScenarioResult, run_files
from runner.testing.results import summary

SCENARIOS = Path("tests") / "flows"  # under the config directory


def scenario_files(config_dir: Path, given: tuple[Path, ...]) -> list[Path]:
    """The files named (a directory stands for its *.yaml), else every tests/flows/*.yaml of the config."""
    out: list[Path] = []
    for path in given or (config_dir / SCENARIOS,):
        out += sorted([*path.glob("*.yaml"), *path.glob("*.yml")]) if path.is_dir() else [path]
    return out


@click.command("test")
@config_option
@click.argument("files", nargs=-1, type=click.Path(exists=True, path_type=Path))
@verbose_option
@log_format_option
def test(config_dir: Path, files: tuple[Path, ...], verbose: int, log_format: str) -> None:
    """Run flow scenarios (default: tests/flows/*.yaml of --config) against an embedded nats-server.

    Each scenario gets fresh streams and buckets and every service of the config in this process.
    Exit 1 if any fails."""
    logs.setup(verbose, log_format)
    if not verbose:  # the services' own warnings (a dead letter a scenario expects) would drown the report
        logging.getLogger("flowrun").setLevel(logging.ERROR)
    cfg = load_config(config_dir)
    paths = scenario_files(config_dir, files)
    if not paths:
        click.echo(f"no scenario files in {config_dir / SCENARIOS}", err=True)
        sys.exit(1)

    def report(result: ScenarioResult) -> None:
        click.echo("\n".join(result.render()))

    results = run_files(paths, cfg, report=report)
    click.echo(summary(results))
    sys.exit(0 if all(r.passed for r in results) else 1)


COMMANDS = [test]
