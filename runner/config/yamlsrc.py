"""Line-aware YAML loading with ${VAR} interpolation.

Validation errors must point at file:line:col, so we keep the position of every
node while building plain Python data. Interpolation happens per scalar, before
type resolution, so `${LIMIT:-5000.00}` still becomes a float.

Aliases are composed by PyYAML as shared nodes and only multiply when built into
plain data, so a few hundred bytes of nested aliases ("billion laughs") would take
gigabytes. We count what every alias adds while composing and refuse past a budget.
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
_MERGE = "tag:yaml.org,2002:merge"

# Nodes that aliases may add to a file in total: modest anchors and merge keys stay far below it.
ALIAS_BUDGET = 10_000


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


@dataclass(frozen=True)
class Location:
    """Where a value was written, kept for checks that run after loading (e.g. against a live server)."""

    file: str
    line: int
    col: int
    path: str = ""

    def problem(self, message: str) -> Problem:
        return Problem(self.file, self.line, self.col, message, self.path)


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

    def locate(self, path: Path_) -> Location:
        line, col = self.where(path)
        return Location(self.file, line, col, dotted(path))

    def problem(self, path: Path_, message: str) -> Problem:
        return self.locate(path).problem(message)


def dotted(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _AliasError(yaml.MarkedYAMLError):
    """An alias we refuse to expand (recursive, or past the budget); reported as is, not as a syntax error."""


class _GuardedLoader(yaml.SafeLoader):
    """SafeLoader that counts the nodes each alias adds and refuses recursive aliases while composing."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.open_anchors: set[str] = set()
        self.sizes: dict[int, int] = {}
        self.expanded = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self.open_anchors:
                raise _AliasError(
                    None, None, f"alias *{event.anchor} refers to a node that contains it", event.start_mark
                )
            node = super().compose_node(parent, index)
            self.expanded += self.size(node)
            if self.expanded > ALIAS_BUDGET:
                raise _AliasError(
                    None,
                    None,
                    f"aliases expand to more than {ALIAS_BUDGET} nodes (*{event.anchor} adds {self.size(node)}): "
                    "refused as an alias bomb; write the values out or use fewer, smaller anchors",
                    event.start_mark,
                )
            return node
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            self.open_anchors.add(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self.open_anchors.discard(anchor)

    def size(self, node: yaml.Node) -> int:
        """Nodes in `node` once every alias inside it is expanded (memoized: anchors are shared nodes)."""
        known = self.sizes.get(id(node))
        if known is not None:
            return known
        if isinstance(node, yaml.MappingNode):
            total = 1 + sum(self.size(k) + self.size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total = 1 + sum(self.size(item) for item in node.value)
        else:
            total = 1
        self.sizes[id(node)] = total
        return total


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _Builder:
    def __init__(self, file: str, env: Mapping[str, str]):
        self.file = file
        self.env = env
        self.positions: dict[Path_, tuple[int, int]] = {}
        self.problems: list[Problem] = []
        self.loader: yaml.SafeLoader | None = None

    def build(self, node: yaml.Node, path: Path_) -> Any:
        self.positions[path] = _mark(node)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key, key_node, value_node in self.pairs(node, path):
                out[key] = self.build(value_node, (*path, key))
                # A key's own position is more useful than its value's for "unknown key" errors.
                self.positions[(*path, key)] = _mark(key_node)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self.scalar(node, path)

    def pairs(
        self, node: yaml.MappingNode, path: Path_, merging: bool = False
    ) -> list[tuple[Any, yaml.Node, yaml.Node]]:
        """A mapping's (key, key node, value node), merge keys (`<<: *base`) applied: written keys win,
        then earlier merged mappings over later ones. A key written twice is a problem at the second."""
        written: dict[Any, tuple[yaml.Node, yaml.Node]] = {}
        first_lines: dict[Any, int] = {}
        merged: list[tuple[Any, yaml.Node, yaml.Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for source in sources:
                    if isinstance(source, yaml.MappingNode):
                        merged.extend(self.pairs(source, path, merging=True))
                    else:
                        line, col = _mark(source)
                        self.problems.append(
                            Problem(self.file, line, col, "'<<' merges mappings only", dotted((*path, "<<")))
                        )
                continue
            # Keys are names: `on`, `yes` and `no` stay strings (YAML 1.1 would make them booleans).
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else self.scalar(key_node, path)
            first = first_lines.setdefault(key, _mark(key_node)[0])
            if key in written and not merging:  # a merged mapping's duplicates are reported where it is written
                line, col = _mark(key_node)
                self.problems.append(
                    Problem(self.file, line, col, f"duplicate key {key!r}: first at line {first}", dotted((*path, key)))
                )
            written[key] = (key_node, value_node)
        out = [(key, k, v) for key, (k, v) in written.items()]
        for key, key_node, value_node in merged:
            if key not in written:
                written[key] = (key_node, value_node)
                out.append((key, key_node, value_node))
        return out

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
            line, col = _mark(node)
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


_CONTEXT = re.compile(r"^while (?:parsing|scanning|constructing) (?:an? )?(.+)$")


def syntax_message(exc: yaml.MarkedYAMLError) -> str:
    """The parser's problem, and where what it was reading began: an unclosed `[` on line 3 is only noticed
    lines later, so both places are named ("… (the flow sequence opened at line 3:9)")."""
    context, start, end = exc.context, exc.context_mark, exc.problem_mark
    what = _CONTEXT.match(context or "")
    if what and exc.problem and start and end and (start.line, start.column) != (end.line, end.column):
        return f"{exc.problem} (the {what.group(1)} opened at line {start.line + 1}:{start.column + 1})"
    return " ".join(p for p in (context, exc.problem) if p)


def load_yaml(file: Path | str, env: Mapping[str, str] | None = None) -> tuple[Document | None, list[Problem]]:
    """Parse one YAML file. Returns (document, problems); document is None on a syntax error."""
    name = str(file)
    try:
        text = Path(file).read_text(encoding="utf-8")
    except OSError as exc:
        return None, [Problem(name, 1, 1, f"cannot read file: {exc.strerror or exc}")]
    builder = _Builder(name, os.environ if env is None else env)
    loader = _GuardedLoader(text)
    builder.loader = loader
    try:
        node = loader.get_single_node()
        data = builder.build(node, ()) if node is not None else None
    except _AliasError as exc:
        mark = exc.problem_mark
        return None, [Problem(name, mark.line + 1, mark.column + 1, str(exc.problem))]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        return None, [Problem(name, line, col, f"YAML syntax error: {syntax_message(exc)}")]
    finally:
        loader.dispose()
    return Document(name, data, builder.positions), builder.problems
