"""A workflow as a graph of steps and events, and the path one run took through it.

Built from the same step specs the engine routes with and validation checks
(:meth:`Workflow._step_specs`), so the drawing cannot disagree with what runs::

    graph = workflow_graph(MyWorkflow)
    graph.to_dict()          # {"nodes": [...], "edges": [...]}, ready for JSON
    taken = await read_taken_path(graph, store, run_id)   # or taken_path(graph, rows...)
    taken.to_dict()          # {"nodes": [...], "edges": [[source, target], ...], ...}

Node ids are ``"step:<name>"`` and ``"event:<ClassName>"`` (``"event:<module.QualName>"``
when two event classes share a name). Edges go from an event to each step that accepts it
(subclasses included, as routing does) and from a step to each event it may return;
``kind="human"`` edges join an ``InputRequiredEvent`` to the ``HumanResponseEvent`` a person
answers with, ``kind="error"`` edges a step to the ``StepFailedEvent`` of the
``@catch_error`` handler that covers it. Renderers (Mermaid, SVG, offline HTML) are in
:mod:`riverbed.graph_render`; ``to_mermaid``, ``to_svg`` and ``to_html`` here call them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from riverbed.events import (
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StepFailedEvent,
    StopEvent,
)
from riverbed.serialization import type_key
from riverbed.stores.durable import DurableStore, EventRow

if TYPE_CHECKING:
    from riverbed.workflow import Workflow

__all__ = [
    "GraphEdge",
    "GraphNode",
    "TakenPath",
    "WorkflowGraph",
    "read_taken_path",
    "taken_path",
    "to_html",
    "to_mermaid",
    "to_svg",
    "workflow_graph",
]

NodeKind = Literal["step", "event"]
EdgeKind = Literal["flow", "human", "error"]


@dataclass(frozen=True)
class GraphNode:
    """A step or an event type.

    ``role`` is ``"start"``, ``"stop"``, ``"input_required"``, ``"human_response"`` or
    ``"step_failed"`` for those events, ``"catch_error"`` for ``@catch_error`` handler
    steps, None otherwise. ``type_key`` is an event's stored type name
    (``module.QualName``, as in :class:`~riverbed.stores.durable.EventRow`).
    """

    id: str
    kind: NodeKind
    label: str
    role: str | None = None
    type_key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The node as JSON-ready data."""
        return {
            "id": self.id,
            "kind": self.kind,
            "label": self.label,
            "role": self.role,
            "type_key": self.type_key,
        }


@dataclass(frozen=True)
class GraphEdge:
    """``source`` -> ``target`` (node ids). ``kind``: ``"flow"`` (routing), ``"human"``
    (a person answers a question) or ``"error"`` (a step's failure goes to a
    ``@catch_error`` handler as a ``StepFailedEvent``)."""

    source: str
    target: str
    kind: EdgeKind = "flow"

    def to_dict(self) -> dict[str, Any]:
        """The edge as JSON-ready data."""
        return {"source": self.source, "target": self.target, "kind": self.kind}


@dataclass(frozen=True)
class WorkflowGraph:
    """Every step and event of a workflow and every way they connect."""

    nodes: tuple[GraphNode, ...]
    edges: tuple[GraphEdge, ...]
    name: str = ""

    def node(self, node_id: str) -> GraphNode:
        """The node with this id; ``KeyError`` if there is none."""
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)

    def to_dict(self) -> dict[str, Any]:
        """``{"name": ..., "nodes": [...], "edges": [...]}``, ready for ``json.dumps``."""
        return {
            "name": self.name,
            "nodes": [n.to_dict() for n in self.nodes],
            "edges": [e.to_dict() for e in self.edges],
        }


@dataclass(frozen=True)
class TakenPath:
    """What one run went through: node ids, ``(source, target)`` edges, and how many
    times each step committed (``step_runs``)."""

    nodes: frozenset[str] = frozenset()
    edges: frozenset[tuple[str, str]] = frozenset()
    step_runs: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """``{"nodes": [...], "edges": [[source, target], ...], "step_runs": {...}}``,
        sorted, ready for ``json.dumps``."""
        return {
            "nodes": sorted(self.nodes),
            "edges": [list(e) for e in sorted(self.edges)],
            "step_runs": dict(sorted(self.step_runs.items())),
        }


def _event_role(cls: type[Event]) -> str | None:
    for base, role in (
        (StartEvent, "start"),
        (StopEvent, "stop"),
        (InputRequiredEvent, "input_required"),
        (HumanResponseEvent, "human_response"),
        (StepFailedEvent, "step_failed"),
    ):
        if issubclass(cls, base):
            return role
    return None


def workflow_graph(workflow: Workflow | type[Workflow]) -> WorkflowGraph:
    """The graph of ``workflow`` (an instance or a class), nodes in a stable order: the
    start event first, then steps and events as the steps declare them."""
    cls = workflow if isinstance(workflow, type) else type(workflow)
    specs = list(cls._step_specs().values())
    events: dict[type[Event], None] = {}
    for spec in sorted(specs, key=lambda s: not any(issubclass(a, StartEvent) for a in s.accepted)):
        for kind in (*spec.accepted, *spec.emitted):
            events[kind] = None
    names: dict[str, int] = {}
    for kind in events:
        names[kind.__name__] = names.get(kind.__name__, 0) + 1

    def event_id(kind: type[Event]) -> str:
        label = kind.__name__ if names[kind.__name__] == 1 else type_key(kind)
        return f"event:{label}"

    nodes: list[GraphNode] = []
    edges: list[GraphEdge] = []
    for kind in events:
        nodes.append(
            GraphNode(event_id(kind), "event", kind.__name__, _event_role(kind), type_key(kind))
        )
    for spec in specs:
        role = "catch_error" if spec.config.catch_error else None
        nodes.append(GraphNode(f"step:{spec.name}", "step", spec.name, role))
    for spec in specs:
        for kind in events:
            if spec.accepts(kind) and (spec.config.catch_error or not issubclass(kind, StopEvent)):
                edges.append(GraphEdge(event_id(kind), f"step:{spec.name}"))
        for kind in spec.emitted:
            edges.append(GraphEdge(f"step:{spec.name}", event_id(kind)))
    regular = [s.name for s in specs if not s.config.catch_error]
    for spec in specs:
        if spec.config.catch_error:
            failed = event_id(spec.accepted[0])
            for covered in spec.config.catch_for_steps or regular:
                edges.append(GraphEdge(f"step:{covered}", failed, "error"))
    asks = [k for k in events if issubclass(k, InputRequiredEvent)]
    answers = [k for k in events if issubclass(k, HumanResponseEvent)]
    for ask in asks:
        for answer in answers:
            edges.append(GraphEdge(event_id(ask), event_id(answer), "human"))
    return WorkflowGraph(tuple(nodes), tuple(dict.fromkeys(edges)), type_key(cls))


def _event_node_ids(graph: WorkflowGraph) -> tuple[dict[str, str], dict[str, str]]:
    by_key: dict[str, str] = {}
    by_name: dict[str, str] = {}
    for node in graph.nodes:
        if node.kind == "event" and node.type_key is not None:
            by_key[node.type_key] = node.id
            by_name.setdefault(node.label, node.id)
    return by_key, by_name


def taken_path(
    graph: WorkflowGraph,
    events: Sequence[EventRow],
    steps_run: Iterable[tuple[int, str]],
) -> TakenPath:
    """The part of ``graph`` one run went through.

    ``events`` are the run's events (``DurableStore.read_events``); ``steps_run`` the
    ``(event_seq, step)`` pairs of its committed deliveries (the ``commit`` rows of
    ``read_timeline``). An event is matched to its node by type key, or by class name
    when the class moved. Only nodes and edges of ``graph`` are returned: an event type
    the graph does not show (written to the stream only) is left out.
    """
    by_key, by_name = _event_node_ids(graph)
    known = {n.id for n in graph.nodes}
    graph_edges = {(e.source, e.target) for e in graph.edges}
    event_node: dict[int, str] = {}
    nodes: set[str] = set()
    edges: set[tuple[str, str]] = set()
    for row in events:
        name = row.type_key.rsplit(".", 1)[-1]
        node_id = by_key.get(row.type_key) or by_name.get(name)
        if node_id is None:
            continue
        event_node[row.seq] = node_id
        nodes.add(node_id)
        if row.source_step is not None:
            source = f"step:{row.source_step}"
            if source in known:
                nodes.add(source)
                edges.add((source, node_id))
    step_runs: dict[str, int] = {}
    for seq, step in steps_run:
        target = f"step:{step}"
        if target not in known:
            continue
        nodes.add(target)
        step_runs[step] = step_runs.get(step, 0) + 1
        from_event = event_node.get(seq)
        if from_event is not None:
            edges.add((from_event, target))
    for source, target in graph_edges:
        # The human hop has no row of its own: it was taken if both ends were.
        if source in nodes and target in nodes and graph.node(source).role == "input_required":
            edges.add((source, target))
    return TakenPath(frozenset(nodes), frozenset(edges & graph_edges), step_runs)


async def read_taken_path(graph: WorkflowGraph, store: DurableStore, run_id: str) -> TakenPath:
    """:func:`taken_path` of run ``run_id`` read from a durable store (its events and the
    ``commit`` rows of its timeline). Raises ``RunNotFoundError``."""
    events = await store.read_events(run_id)
    commits = [
        (row.event_seq, row.step)
        for row in await store.read_timeline(run_id)
        if row.kind == "commit" and row.step is not None
    ]
    return taken_path(graph, events, commits)


# The renderers live in riverbed.graph_render (layout and drawing); these are shortcuts.
def to_mermaid(graph: WorkflowGraph, taken: TakenPath | None = None) -> str:
    """See :func:`riverbed.graph_render.to_mermaid`."""
    from riverbed.graph_render import to_mermaid as render

    return render(graph, taken)


def to_svg(graph: WorkflowGraph, taken: TakenPath | None = None) -> str:
    """See :func:`riverbed.graph_render.to_svg`."""
    from riverbed.graph_render import to_svg as render

    return render(graph, taken)


def to_html(graph: WorkflowGraph, taken: TakenPath | None = None, title: str = "") -> str:
    """See :func:`riverbed.graph_render.to_html`."""
    from riverbed.graph_render import to_html as render

    return render(graph, taken, title=title)
