"""The workflow graph (nodes, edges, roles), the path a run took, and its drawings."""

from __future__ import annotations

import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from riverbed import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StepFailedEvent,
    StopEvent,
    Workflow,
    catch_error,
    step,
)
from riverbed.graph import GraphEdge, TakenPath, WorkflowGraph, taken_path, workflow_graph
from riverbed.graph_render import layout, to_html, to_mermaid, to_svg
from riverbed.serialization import type_key
from riverbed.stores.durable import EventRow

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))

from seed_stateful_flow import SetupEvent, StatefulFlow, StepTwoEvent  # noqa: E402

SVG = "{http://www.w3.org/2000/svg}"
LINK = r"^    (n\d+) (?:-->|-\. (?:human|error) \.->) (n\d+)$"


class Base(Event):
    n: int


class Derived(Base):
    pass


class Question(InputRequiredEvent):
    pass


class Answer(HumanResponseEvent):
    response: str


class Mixed(Workflow):
    """Subclass routing, a human hop and an error handler in one graph."""

    @step
    async def begin(self, ev: StartEvent) -> Derived | Question:
        return Derived(n=1)

    @step
    async def handle(self, ev: Base) -> StopEvent:
        return StopEvent(result=ev.n)

    @step
    async def reply(self, ev: Answer) -> StopEvent:
        return StopEvent(result=ev.response)

    @catch_error
    async def rescue(self, ev: StepFailedEvent) -> StopEvent:
        return StopEvent(result="rescued")


def _edges(graph: WorkflowGraph) -> set[tuple[str, str, str]]:
    return {(e.source, e.target, e.kind) for e in graph.edges}


def test_the_seed_flow_has_every_step_and_event_and_the_loop_back_to_start() -> None:
    graph = workflow_graph(StatefulFlow)
    assert [n.id for n in graph.nodes] == [
        "event:StartEvent",
        "event:SetupEvent",
        "event:StepTwoEvent",
        "event:StopEvent",
        "step:start",
        "step:setup",
        "step:step_two",
    ]
    assert _edges(graph) == {
        ("event:StartEvent", "step:start", "flow"),
        ("step:start", "event:SetupEvent", "flow"),
        ("step:start", "event:StepTwoEvent", "flow"),
        ("event:SetupEvent", "step:setup", "flow"),
        ("step:setup", "event:StartEvent", "flow"),
        ("event:StepTwoEvent", "step:step_two", "flow"),
        ("step:step_two", "event:StopEvent", "flow"),
    }
    roles = {n.id: n.role for n in graph.nodes}
    assert roles["event:StartEvent"] == "start"
    assert roles["event:StopEvent"] == "stop"
    assert roles["step:start"] is None
    assert graph.node("event:SetupEvent").type_key == type_key(SetupEvent)
    assert graph.name == type_key(StatefulFlow)
    # An instance gives the same graph as its class.
    assert workflow_graph(StatefulFlow()) == graph


def test_subclass_routing_human_hop_and_error_handler_are_drawn() -> None:
    graph = workflow_graph(Mixed)
    edges = _edges(graph)
    # handle takes Base, so the Derived events begin returns reach it (as routing does).
    assert ("event:Derived", "step:handle", "flow") in edges
    assert ("event:Question", "event:Answer", "human") in edges
    assert ("event:StepFailedEvent", "step:rescue", "flow") in edges
    # Every other step's failure can reach the handler (it covers them all).
    assert {(s, t) for s, t, kind in edges if kind == "error"} == {
        ("step:begin", "event:StepFailedEvent"),
        ("step:handle", "event:StepFailedEvent"),
        ("step:reply", "event:StepFailedEvent"),
    }
    roles = {n.id: n.role for n in graph.nodes}
    assert roles["event:Question"] == "input_required"
    assert roles["event:Answer"] == "human_response"
    assert roles["event:StepFailedEvent"] == "step_failed"
    assert roles["step:rescue"] == "catch_error"
    # Nothing accepts the StopEvent: it ends the run.
    assert not any(e.source == "event:StopEvent" for e in graph.edges)


def test_two_event_classes_with_one_name_get_distinct_ids() -> None:
    namespace: dict[str, type[Event]] = {}
    exec("from riverbed import Event\nclass Base(Event):\n    n: int", namespace)
    other = namespace["Base"]

    class Twice(Workflow):
        @step
        async def first(self, ev: StartEvent) -> Base:
            return Base(n=1)

        @step
        async def second(self, ev: Base) -> other:  # type: ignore[valid-type]
            return other(n=2)

        @step
        async def third(self, ev: other) -> StopEvent:  # type: ignore[valid-type]
            return StopEvent()

    ids = [n.id for n in workflow_graph(Twice).nodes if n.label == "Base"]
    assert len(ids) == 2
    assert len(set(ids)) == 2


def test_to_dict_is_json_with_nodes_and_edges() -> None:
    data = json.loads(json.dumps(workflow_graph(Mixed).to_dict()))
    assert {"name", "nodes", "edges"} <= set(data)
    assert {"id": "step:handle", "kind": "step", "label": "handle", "role": None}.items() <= (
        next(n for n in data["nodes"] if n["id"] == "step:handle").items()
    )
    assert {"source": "event:Question", "target": "event:Answer", "kind": "human"} in data["edges"]


def _row(seq: int, cls: type[Event], source: str | None = None) -> EventRow:
    return EventRow(seq, type_key(cls), "{}", source)


def test_taken_path_follows_the_events_and_commits_of_one_run() -> None:
    graph = workflow_graph(StatefulFlow)
    events = [
        _row(1, StartEvent),
        _row(2, SetupEvent, "start"),
        _row(3, StartEvent, "setup"),
        _row(4, StepTwoEvent, "start"),
        _row(5, StopEvent, "step_two"),
    ]
    taken = taken_path(graph, events, [(1, "start"), (2, "setup"), (3, "start"), (4, "step_two")])
    assert taken.nodes == {n.id for n in graph.nodes}
    assert taken.edges == {(e.source, e.target) for e in graph.edges}
    assert taken.step_runs == {"start": 2, "setup": 1, "step_two": 1}


def test_a_partial_run_takes_only_its_part() -> None:
    graph = workflow_graph(StatefulFlow)
    taken = taken_path(graph, [_row(1, StartEvent), _row(2, SetupEvent, "start")], [(1, "start")])
    assert taken.nodes == {"event:StartEvent", "step:start", "event:SetupEvent"}
    assert taken.edges == {
        ("event:StartEvent", "step:start"),
        ("step:start", "event:SetupEvent"),
    }
    assert json.loads(json.dumps(taken.to_dict())) == {
        "nodes": sorted(taken.nodes),
        "edges": [list(e) for e in sorted(taken.edges)],
        "step_runs": {"start": 1},
    }


def test_taken_path_takes_the_human_hop_and_ignores_unknown_types() -> None:
    graph = workflow_graph(Mixed)
    events = [
        _row(1, StartEvent),
        _row(2, Question, "begin"),
        _row(3, Answer),
        EventRow(4, "somewhere.Unknown", "{}", "begin"),
        _row(5, StopEvent, "reply"),
    ]
    taken = taken_path(graph, events, [(1, "begin"), (3, "reply"), (9, "gone_step")])
    assert ("event:Question", "event:Answer") in taken.edges
    assert ("event:Answer", "step:reply") in taken.edges
    assert "step:handle" not in taken.nodes
    assert all(node in {n.id for n in graph.nodes} for node in taken.nodes)


def test_an_event_class_that_moved_module_is_matched_by_name() -> None:
    graph = workflow_graph(StatefulFlow)
    taken = taken_path(graph, [EventRow(1, "old_module.SetupEvent", "{}", "start")], [])
    assert taken.nodes == {"event:SetupEvent", "step:start"}


@pytest.mark.parametrize("flow", [StatefulFlow, Mixed])
def test_mermaid_has_every_node_and_edge(flow: type[Workflow]) -> None:
    graph = workflow_graph(flow)
    text = to_mermaid(graph)
    assert text.startswith("flowchart TD\n")
    ids = dict(re.findall(r"^    (n\d+)[\[\(\{]+\"([^\"]+)\"", text, re.MULTILINE))
    assert sorted(ids.values()) == sorted(n.label for n in graph.nodes)
    by_label = {label: ident for ident, label in ids.items()}
    links = set(re.findall(LINK, text, re.MULTILINE))
    expected = {
        (by_label[graph.node(e.source).label], by_label[graph.node(e.target).label])
        for e in graph.edges
    }
    assert links == expected
    assert "taken" not in text.split("classDef taken")[1].split("\n", 1)[1]


def test_mermaid_marks_the_taken_path() -> None:
    graph = workflow_graph(StatefulFlow)
    taken = TakenPath(
        frozenset({"event:StartEvent", "step:start"}),
        frozenset({("event:StartEvent", "step:start")}),
    )
    text = to_mermaid(graph, taken)
    assert "    class n0,n4 taken\n" in text
    assert "    linkStyle 0 stroke:#e4572e,stroke-width:3px\n" in text


def _svg_parts(svg: str) -> tuple[dict[str, ET.Element], list[ET.Element]]:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    nodes = {g.get("data-id", ""): g for g in root.iter(f"{SVG}g") if g.get("data-id")}
    edges = [p for p in root.iter(f"{SVG}path") if p.get("data-source")]
    return nodes, edges


@pytest.mark.parametrize("flow", [StatefulFlow, Mixed])
def test_svg_is_standalone_with_every_node_and_edge(flow: type[Workflow]) -> None:
    graph = workflow_graph(flow)
    svg = to_svg(graph)
    nodes, edges = _svg_parts(svg)
    assert set(nodes) == {n.id for n in graph.nodes}
    for node in graph.nodes:
        label = nodes[node.id].find(f"{SVG}text")
        assert label is not None
        assert label.text == node.label
    assert sorted((p.get("data-source"), p.get("data-target")) for p in edges) == sorted(
        (e.source, e.target) for e in graph.edges
    )
    assert "http" not in svg.replace("http://www.w3.org/2000/svg", "")


def test_svg_highlights_the_taken_path_only() -> None:
    graph = workflow_graph(StatefulFlow)
    taken = TakenPath(
        frozenset({"event:StartEvent", "step:start", "event:StepTwoEvent"}),
        frozenset({("event:StartEvent", "step:start"), ("step:start", "event:StepTwoEvent")}),
        {"start": 2},
    )
    nodes, edges = _svg_parts(to_svg(graph, taken))
    marked = {i for i, g in nodes.items() if "rb-taken" in (g.get("class") or "")}
    assert marked == taken.nodes
    lit = {
        (p.get("data-source"), p.get("data-target"))
        for p in edges
        if "rb-taken" in p.get("class", "")
    }
    assert lit == taken.edges
    assert "\u00d72" in "".join(nodes["step:start"].itertext())  # ran twice


def test_layout_puts_forward_edges_downwards_and_boxes_apart() -> None:
    graph = workflow_graph(StatefulFlow)
    lay = layout(graph)
    assert lay.layers["event:StartEvent"] == 0
    assert lay.layers["event:StopEvent"] == max(lay.layers.values())
    back = [e for e in graph.edges if lay.layers[e.target] <= lay.layers[e.source]]
    assert back == [GraphEdge("step:setup", "event:StartEvent")]  # the loop, and only it
    boxes = list(lay.boxes.values())
    for i, (x1, y1, w1, h1) in enumerate(boxes):
        assert x1 >= 0
        assert x1 + w1 <= lay.width
        assert y1 >= 0
        assert y1 + h1 <= lay.height
        for x2, y2, w2, h2 in boxes[i + 1 :]:
            overlap = x1 < x2 + w2 and x2 < x1 + w1 and y1 < y2 + h2 and y2 < y1 + h1
            assert not overlap


def test_html_is_one_offline_page_with_the_svg_inside() -> None:
    graph = workflow_graph(Mixed)
    page = to_html(graph, title="Mixed <flow>")
    assert page.startswith("<!DOCTYPE html>")
    assert "<title>Mixed &lt;flow&gt;</title>" in page
    assert to_svg(graph) in page
    assert "<script>" in page
    assert "src=" not in page
    assert "<link" not in page
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", page)


def test_a_graph_from_a_workflow_using_context_state_renders() -> None:
    class Stateful(Workflow):
        @step
        async def only(self, ctx: Context, ev: StartEvent) -> StopEvent:
            return StopEvent()

    graph = workflow_graph(Stateful)
    assert len(graph.nodes) == 3
    assert len(graph.edges) == 2
    nodes, edges = _svg_parts(to_svg(graph))
    assert len(nodes) == 3
    assert len(edges) == 2


def test_the_renderer_shortcuts_in_graph_give_the_same_drawings() -> None:
    from riverbed import graph as shortcuts

    graph = workflow_graph(Mixed)
    taken = TakenPath(frozenset({"step:begin"}))
    assert shortcuts.to_svg(graph, taken) == to_svg(graph, taken)
    assert shortcuts.to_mermaid(graph) == to_mermaid(graph)
    assert shortcuts.to_html(graph, title="t") == to_html(graph, title="t")


async def test_read_taken_path_reads_a_durable_run(tmp_path: Path) -> None:
    from riverbed.graph import read_taken_path

    flow = StatefulFlow(store=f"sqlite:///{tmp_path / 'runs.db'}")
    handler = flow.run(query="q", run_id="r")
    assert await handler == [1, 2, 3]
    try:
        taken = await read_taken_path(workflow_graph(flow), flow.store, "r")
    finally:
        await flow.store.close()
    graph = workflow_graph(flow)
    assert taken.edges == {(e.source, e.target) for e in graph.edges}
    assert taken.step_runs == {"start": 2, "setup": 1, "step_two": 1}
