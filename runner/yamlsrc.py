"""Line-aware YAML loading with ${VAR} interpolation.

Validation errors must point at file:line:col, so we keep the position of every
node while building plain Python data. Interpolation happens per scalar, before
type resolution, so `${LIMIT:-5000.00}` still becomes a float.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Path_ = tuple[str | int, ...]

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


@dataclass(frozen=True)
class Problem:
    """One configuration problem, printed as `file:line:col: message (at key.path)`."""

    file: str
    line: int
    col: int
    message: str
    path: str = ""

    def __str__(self) -> str:
        where = f" (at {self.path})" if self.path else ""
        return f"{self.file}:{self.line}:{self.col}: {self.message}{where}"


@dataclass
class Document:
    """A parsed YAML file: its data and the position of every key and value."""

    file: str
    data: Any
    positions: dict[Path_, tuple[int, int]] = field(default_factory=dict)

    def where(self, path: Path_) -> tuple[int, int]:
        """Position of the deepest known node on `path` (a missing key points at its parent)."""
        path = tuple(path)
        while path and path not in self.positions:
            path = path[:-1]
        return self.positions.get(path, (1, 1))

    def problem(self, path: Path_, message: str) -> Problem:
        line, col = self.where(path)
        return Problem(self.file, line, col, message, dotted(path))


def dotted(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _Builder:
    def __init__(self, file: str, env: Mapping[str, str]):
        self.file = file
        self.env = env
        self.positions: dict[Path_, tuple[int, int]] = {}
        self.problems: list[Problem] = []
        self.loader: yaml.SafeLoader | None = None

    def build(self, node: yaml.Node, path: Path_) -> Any:
        self.positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                # Keys are names: `on`, `yes` and `no` stay strings (YAML 1.1 would make them booleans).
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else self.scalar(key_node, path)
                if key in out:
                    line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
                    self.problems.append(Problem(self.file, line, col, f"duplicate key {key!r}", dotted((*path, key))))
                out[key] = self.build(value_node, (*path, key))
                # A key's own position is more useful than its value's for "unknown key" errors.
                self.positions[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self.scalar(node, path)

    def scalar(self, node: yaml.Node, path: Path_) -> Any:
        assert self.loader is not None
        if isinstance(node, yaml.ScalarNode) and "${" in node.value:
            value = self.interpolate(node, path)
            if node.style is None:  # plain scalar: resolve its type after substitution
                tag = self.loader.resolve(yaml.ScalarNode, value, (True, False))
                node = yaml.ScalarNode(tag, value, node.start_mark, node.end_mark)
            else:
                return value
        return self.loader.construct_object(node, deep=True)

    def interpolate(self, node: yaml.ScalarNode, path: Path_) -> str:
        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in self.env and self.env[name] != "":
                return self.env[name]
            if default is not None:
                return default
            line, col = node.start_mark.line + 1, node.start_mark.column + 1
            self.problems.append(
                Problem(
                    self.file,
                    line,
                    col,
                    f"environment variable ${{{name}}} is not set and has no default",
                    dotted(path),
                )
            )
            return ""

        return _VAR.sub(substitute, node.value)


def load_yaml(file: Path | str, env: Mapping[str, str] | None = None) -> tuple[Document | None, list[Problem]]:
    """Parse one YAML file. Returns (document, problems); document is None on a syntax error."""
    name = str(file)
    try:
        text = Path(file).read_text(encoding="utf-8")
    except OSError as exc:
        return None, [Problem(name, 1, 1, f"cannot read file: {exc.strerror or exc}")]
    builder = _Builder(name, os.environ if env is None else env)
    loader = yaml.SafeLoader(text)
    builder.loader = loader
    try:
        node = loader.get_single_node()
        data = builder.build(node, ()) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = " ".join(p for p in (exc.context, exc.problem) if p)
        return None, [Problem(name, line, col, f"YAML syntax error: {message}")]
    finally:
        loader.dispose()
    return Document(name, data, builder.positions), builder.problems
