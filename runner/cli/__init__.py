"""The `flowrun` command line: commands parse options and call the layers below."""

from runner.cli.commands import main

__all__ = ["main"]
