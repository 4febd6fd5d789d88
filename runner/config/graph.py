"""The flow as a picture: a saga as a state diagram, the system as a flowchart, in Mermaid or Graphviz DOT.

Built from the typed model only, so what is drawn is what the runner interprets. Both pictures are first a
small `Graph` (nodes, edges, notes); `mermaid()` and `dot()` render it. The built-in states are drawn too:
`compensating` (while completed steps are undone, newest first), the compensation's failed state, and
`failed` (a start event the saga's consumer rejected).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from runner.config.model import REJECTED_STATE, Config, SagaSpec, Transition
from runner.config.subjects import matches, within
from runner.config.units import human_seconds

COMPENSATING = "compensating"  # the interpreter's built-in state (runner/engine/saga.py), named here for the picture
FORMATS = ("mermaid", "dot")
START = "[*]"  # the state diagram's start and end pseudo-state
STATE_DIAGRAM, FLOWCHART = "states", "flow"
_SAFE_ID = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_MERMAID_KEYWORDS = {"state", "note", "end", "direction", "class", "classDef", "click", "style", "graph", "subgraph"}


@dataclass(frozen=True)
class Node:
    id: str
    label: str
    kind: str  # state, terminal, builtin | http, subject, stream, consumer, service


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    label: str = ""
    dashed: bool = False


@dataclass
class Graph:
    kind: str  # STATE_DIAGRAM or FLOWCHART
    title: str
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)  # node id → lines
    _ids: dict[str, str] = field(default_factory=dict)  # key → node id

    def node(self, key: str, label: str, kind: str) -> str:
        """The id of the node for `key`, added the first time; ids are safe in both formats and distinct."""
        if key in self._ids:
            return self._ids[key]
        base = re.sub(r"\W", "_", key)
        if not _SAFE_ID.fullmatch(base) or base in _MERMAID_KEYWORDS:
            base = "n_" + base
        node_id, n = base, 1
        while node_id in self.nodes:
            n += 1
            node_id = f"{base}_{n}"
        self.nodes[node_id] = Node(node_id, label, kind)
        self._ids[key] = node_id
        return node_id

    def edge(self, src: str, dst: str, label: str = "", dashed: bool = False) -> None:
        e = Edge(src, dst, label, dashed)
        if e not in self.edges:
            self.edges.append(e)


def saga_graph(spec: SagaSpec) -> Graph:
    """The saga's states, its transitions labelled with their events and timeouts, and where compensation leads."""
    g = Graph(STATE_DIAGRAM, f"saga {spec.name}")
    terminal = {s.name for s in spec.states.values() if s.terminal}
    for state in spec.states.values():
        g.node(state.name, state.name, "terminal" if state.terminal else "state")
    compensating = None
    if spec.steps:
        compensating = g.node(COMPENSATING, COMPENSATING, "builtin")
        g.node(spec.compensation_failed_state, spec.compensation_failed_state, "builtin")
        terminal.add(spec.compensation_failed_state)
        order = "all at once" if spec.compensation_order == "parallel" else "newest first, one at a time"
        g.notes[compensating] = [f"undo completed steps, {order}"] + [
            f"{step.name} undone by {step.compensate.subject}"
            + (f", confirmed by {step.confirmed_by}" if step.confirmed_by else "")
            for step in reversed(spec.steps.values())
        ]
    rejected = g.node(REJECTED_STATE, REJECTED_STATE, "builtin")
    terminal.add(REJECTED_STATE)
    start_label = _with_emits(spec.start_on, [e.subject for e in spec.start_emit])
    g.edge(START, g.node(spec.start_state, spec.start_state, "state"), start_label)
    g.edge(START, rejected, f"{spec.start_on} rejected")

    def lead(src: str, label: str, goto: str, compensate: bool) -> None:
        if compensate and compensating is not None:
            g.edge(src, compensating, f"{label}, undo")
            g.edge(compensating, g.node(goto, goto, "state"), "all undone")
        else:
            g.edge(src, g.node(goto, goto, "state"), label)

    for state in spec.states.values():
        for subject, t in state.on.items():
            lead(state.name, _transition_label(subject, t), t.goto or state.name, t.compensate)
        if state.timeout is not None:
            to = state.timeout
            lead(state.name, f"timeout {human_seconds(to.after)}", to.goto, to.compensate)
    if compensating is not None:
        failed_undo = g.node(spec.compensation_failed_state, spec.compensation_failed_state, "builtin")
        g.edge(compensating, failed_undo, f"undo unconfirmed after {human_seconds(spec.compensation_timeout)}")
    for name in sorted(terminal):
        g.edge(g.node(name, name, "terminal"), START)
    return g


def system_graph(cfg: Config) -> Graph:
    """HTTP resources → subjects → streams → consumers → services → the subjects they emit (and dead letters)."""
    g = Graph(FLOWCHART, "system")

    def subject(name: str) -> str:
        node = g.node("subj_" + name, name, "subject")
        for stream in cfg.streams.values():
            if any(matches(p, name) or within(name, p) for p in stream.subjects):
                g.edge(node, g.node("stream_" + stream.name, stream.name, "stream"))
        return node

    for service in cfg.services.values():
        for resource in service.http.saga_resources() if service.http else ():
            spec = cfg.sagas[resource.saga or ""]
            g.edge(g.node("http_" + resource.path, f"POST {resource.path}", "http"), subject(spec.start_on))
            for command, event in resource.commands.items():
                path = f"POST {resource.path}/{{{spec.key}}}/{command}"
                g.edge(g.node(f"http_{resource.path}_{command}", path, "http"), subject(event))
    for service in cfg.services.values():
        svc = g.node("svc_" + service.name, service.name, "service")
        for consumer in service.consumers.values():
            stream = g.node("stream_" + consumer.stream, consumer.stream, "stream")
            durable = g.node("con_" + consumer.durable, consumer.durable, "consumer")
            g.edge(stream, durable)
            g.edge(durable, svc)
        emitted = {s for b in service.bindings for s in b.emits.values()}
        for saga in cfg.sagas_of(service.name):
            emitted |= saga.emitted()
        for name in sorted(emitted):
            g.edge(svc, subject(name))
        if service.dead_letter.stream in cfg.streams:
            dlq = g.node("stream_" + service.dead_letter.stream, service.dead_letter.stream, "stream")
            g.edge(svc, dlq, "dead letters", dashed=True)
    return g


def render(graph: Graph, fmt: str) -> str:
    if fmt == "mermaid":
        return mermaid(graph)
    if fmt == "dot":
        return dot(graph)
    raise ValueError(f"unknown format {fmt!r} (use {', '.join(FORMATS)})")


def saga_mermaid(spec: SagaSpec) -> str:
    """Mermaid text of a saga's state diagram (the README, the dashboard)."""
    return mermaid(saga_graph(spec))


def system_mermaid(cfg: Config) -> str:
    """Mermaid text of the system's flowchart (the README, the dashboard)."""
    return mermaid(system_graph(cfg))


def mermaid(graph: Graph) -> str:
    if graph.kind == STATE_DIAGRAM:
        return _mermaid_states(graph)
    return _mermaid_flow(graph)


_FLOW_SHAPES = {
    "http": ('["', '"]'),
    "subject": ('(["', '"])'),
    "stream": ('[("', '")]'),
    "consumer": ('{{"', '"}}'),
    "service": ('[["', '"]]'),
}


def _mermaid_flow(graph: Graph) -> str:
    lines = ["flowchart LR"]
    for node in graph.nodes.values():
        left, right = _FLOW_SHAPES[node.kind]
        lines.append(f"    {node.id}{left}{_mermaid_text(node.label)}{right}")
    for e in graph.edges:
        arrow = "-.->" if e.dashed else "-->"
        label = f"|{_mermaid_text(e.label)}|" if e.label else ""
        lines.append(f"    {e.src} {arrow}{label} {e.dst}")
    return "\n".join(lines) + "\n"


def _mermaid_states(graph: Graph) -> str:
    lines = ["stateDiagram-v2"]
    for node in graph.nodes.values():
        if node.id != node.label:
            lines.append(f'    state "{_mermaid_text(node.label)}" as {node.id}')
    for e in graph.edges:
        label = f" : {_mermaid_text(e.label)}" if e.label else ""
        lines.append(f"    {e.src} --> {e.dst}{label}")
    for node_id, text in graph.notes.items():
        lines.append(f"    note right of {node_id}")
        lines.extend(f"        {_mermaid_text(line)}" for line in text)
        lines.append("    end note")
    builtin = [n.id for n in graph.nodes.values() if n.kind == "builtin"]
    if builtin:
        lines.append("    classDef builtin stroke-dasharray: 5 5")
        lines.append(f"    class {','.join(builtin)} builtin")
    return "\n".join(lines) + "\n"


_MERMAID_ENTITIES = str.maketrans({'"': "#quot;", ":": "#58;", ";": "#59;", "|": "#124;"})


def _mermaid_text(text: str) -> str:
    """Characters Mermaid would read as syntax, as its entity codes."""
    return text.translate(_MERMAID_ENTITIES)


_DOT_SHAPES = {
    "state": 'shape=box, style="rounded"',
    "terminal": 'shape=box, style="rounded,bold"',
    "builtin": 'shape=box, style="rounded,dashed"',
    "http": "shape=box",
    "subject": "shape=ellipse",
    "stream": "shape=cylinder",
    "consumer": "shape=hexagon",
    "service": "shape=component",
}


def dot(graph: Graph) -> str:
    lines = [f"digraph {_dot_text(graph.title)} {{", "    rankdir=LR;"]
    ends = graph.kind == STATE_DIAGRAM
    if ends:
        lines.append('    "__start" [shape=point, width=0.2];')
        lines.append('    "__end" [shape=doublecircle, label="", width=0.15];')
    for node in graph.nodes.values():
        lines.append(f"    {_dot_text(node.id)} [label={_dot_text(node.label)}, {_DOT_SHAPES[node.kind]}];")
    for e in graph.edges:
        src = '"__start"' if e.src == START else _dot_text(e.src)
        dst = '"__end"' if e.dst == START else _dot_text(e.dst)
        attrs = [f"label={_dot_text(e.label)}"] if e.label else []
        if e.dashed:
            attrs.append("style=dashed")
        lines.append(f"    {src} -> {dst}" + (f" [{', '.join(attrs)}]" if attrs else "") + ";")
    for node_id, text in graph.notes.items():
        note = _dot_text(node_id + "__note")
        lines.append(f"    {note} [shape=note, label={_dot_text(chr(10).join(text))}];")
        lines.append(f"    {note} -> {_dot_text(node_id)} [style=dotted, arrowhead=none];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_text(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _transition_label(subject: str, t: Transition) -> str:
    return _with_emits(subject, [e.subject for e in t.emit])


def _with_emits(subject: str, emitted: list[str]) -> str:
    return f"{subject} / emit {', '.join(emitted)}" if emitted else subject
