"""`flowrun init`: a minimal project to start from — streams, one service with a handler and a tiny saga,
a handler package and a flow test — copied from template/ (package data), never over an existing file."""

from __future__ import annotations

from importlib import resources
from importlib.abc import Traversable
from pathlib import Path, PurePosixPath


class WouldOverwrite(Exception):
    """Some of the project's files already exist: nothing was written."""

    def __init__(self, existing: list[Path]):
        super().__init__(", ".join(map(str, existing)))
        self.existing = existing


def template_files() -> dict[PurePosixPath, Traversable]:
    """Each template file by its path inside the project."""
    out: dict[PurePosixPath, Traversable] = {}
    pending: list[tuple[PurePosixPath, Traversable]] = [(PurePosixPath(), resources.files(__package__) / "template")]
    while pending:
        at, folder = pending.pop()
        for entry in folder.iterdir():
            if entry.is_dir():
                if entry.name != "__pycache__":
                    pending.append((at / entry.name, entry))
            else:
                out[at / entry.name] = entry
    return dict(sorted(out.items()))


def create(target: Path) -> list[Path]:
    """Write the project into `target` (created if missing); the files written, in order.
    Raises WouldOverwrite, before writing anything, if any of them exists."""
    files = template_files()
    existing = [target / path for path in files if (target / path).exists()]
    if existing:
        raise WouldOverwrite(existing)
    written = []
    for path, source in files.items():
        destination = target / path
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(source.read_bytes())
        written.append(destination)
    return written
