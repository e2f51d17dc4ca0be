"""Draw a :class:`~riverbed.graph.WorkflowGraph` as Mermaid, a standalone SVG, or an
offline HTML page; with a :class:`~riverbed.graph.TakenPath` the path a run took is
highlighted.

Standard library only: the SVG is laid out here (layers from the start event down, back
edges such as loops drawn around the right side), so nothing is fetched from a CDN and no
graphviz is needed::

    from riverbed.graph import workflow_graph
    from riverbed.graph_render import to_html, to_mermaid, to_svg

    Path("flow.html").write_text(to_html(workflow_graph(MyWorkflow), title="My flow"))
"""

from __future__ import annotations

import functools
import html
from dataclasses import dataclass

from riverbed.graph import GraphEdge, GraphNode, TakenPath, WorkflowGraph

__all__ = ["Layout", "layout", "to_html", "to_mermaid", "to_svg"]

_TAKEN_COLOR = "#e4572e"


# -- Mermaid ---------------------------------------------------------------------------------
def _mermaid_shape(node: GraphNode, ident: str) -> str:
    label = node.label.replace('"', "#quot;")
    if node.kind == "step":
        return f'{ident}["{label}"]'
    if node.role == "input_required":
        return f'{ident}{{{{"{label}"}}}}'
    return f'{ident}(["{label}"])'


def to_mermaid(graph: WorkflowGraph, taken: TakenPath | None = None) -> str:
    """A Mermaid ``flowchart TD``: steps are boxes, events rounded; the taken path (if
    any) in the ``taken`` class and with thick red links."""
    ids = {node.id: f"n{i}" for i, node in enumerate(graph.nodes)}
    lines = ["flowchart TD"]
    lines += [f"    {_mermaid_shape(node, ids[node.id])}" for node in graph.nodes]
    for edge in graph.edges:
        arrow = "-->" if edge.kind == "flow" else f"-. {edge.kind} .->"
        lines.append(f"    {ids[edge.source]} {arrow} {ids[edge.target]}")
    lines += [
        "    classDef step fill:#eef3fb,stroke:#3b6fb6",
        "    classDef event fill:#fff7e6,stroke:#c08a1e",
        "    classDef start fill:#e7f6ea,stroke:#2e8b57",
        "    classDef stop fill:#fdeaea,stroke:#c0392b",
        f"    classDef taken stroke:{_TAKEN_COLOR},stroke-width:3px",
    ]
    for css in ("step", "event", "start", "stop"):
        members = [
            ids[n.id] for n in graph.nodes if n.kind == css or (n.kind == "event" and n.role == css)
        ]
        if members:
            lines.append(f"    class {','.join(members)} {css}")
    if taken is not None:
        members = [ids[n.id] for n in graph.nodes if n.id in taken.nodes]
        if members:
            lines.append(f"    class {','.join(members)} taken")
        links = [str(i) for i, e in enumerate(graph.edges) if (e.source, e.target) in taken.edges]
        if links:
            lines.append(f"    linkStyle {','.join(links)} stroke:{_TAKEN_COLOR},stroke-width:3px")
    return "\n".join(lines) + "\n"


# -- layout ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """Where each node is drawn: ``boxes[id] = (x, y, width, height)``, ``layers[id]``
    its row from the top; ``width``/``height`` of the whole drawing."""

    boxes: dict[str, tuple[float, float, float, float]]
    layers: dict[str, int]
    width: float
    height: float


_LAYER_GAP = 58.0
_NODE_GAP = 28.0
_MARGIN = 24.0


def _node_size(node: GraphNode) -> tuple[float, float]:
    width = max(84.0, 7.6 * len(node.label) + 30.0)
    return width, (34.0 if node.kind == "step" else 30.0)


def _back_edges(graph: WorkflowGraph) -> set[tuple[str, str]]:
    """Edges that close a cycle, found by a depth-first walk from the start nodes."""
    succs: dict[str, list[str]] = {n.id: [] for n in graph.nodes}
    for edge in graph.edges:
        succs[edge.source].append(edge.target)
    state: dict[str, int] = {}  # 1 = on the walk's stack, 2 = finished
    back: set[tuple[str, str]] = set()
    starts = [n.id for n in graph.nodes if n.role == "start"]
    for root in starts + [n.id for n in graph.nodes]:
        if root in state:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        state[root] = 1
        while stack:
            node, index = stack.pop()
            if index < len(succs[node]):
                stack.append((node, index + 1))
                target = succs[node][index]
                if state.get(target) == 1:
                    back.add((node, target))
                elif target not in state:
                    state[target] = 1
                    stack.append((target, 0))
            else:
                state[node] = 2
    return back


def _layers(graph: WorkflowGraph, back: set[tuple[str, str]]) -> dict[str, int]:
    """Longest-path layers of the graph without its back edges: every other edge points
    down at least one layer."""
    preds: dict[str, list[str]] = {n.id: [] for n in graph.nodes}
    for edge in graph.edges:
        if (edge.source, edge.target) not in back:
            preds[edge.target].append(edge.source)
    layer: dict[str, int] = {}
    remaining = [n.id for n in graph.nodes]
    while remaining:
        progressed = [n for n in remaining if all(p in layer for p in preds[n])]
        for node in progressed:
            layer[node] = 1 + max((layer[p] for p in preds[node]), default=-1)
        remaining = [n for n in remaining if n not in layer]
        if not progressed:  # cannot happen without back edges; stay safe
            layer.update(dict.fromkeys(remaining, 0))
            break
    return layer


def _centre(
    node: str, *, neighbours: dict[str, tuple[list[str], list[str]]], side: int, at: dict[str, int]
) -> float:
    places = [at[n] for n in neighbours[node][side] if n in at]
    return sum(places) / len(places) if places else float(at[node])


def _order(graph: WorkflowGraph, layer: dict[str, int]) -> list[list[str]]:
    rows: list[list[str]] = [[] for _ in range(max(layer.values(), default=-1) + 1)]
    for node in graph.nodes:
        rows[layer[node.id]].append(node.id)
    neighbours: dict[str, tuple[list[str], list[str]]] = {n.id: ([], []) for n in graph.nodes}
    for edge in graph.edges:
        neighbours[edge.target][0].append(edge.source)
        neighbours[edge.source][1].append(edge.target)
    for sweep in range(4):
        position = {node: i for row in rows for i, node in enumerate(row)}
        side = 0 if sweep % 2 == 0 else 1  # down: by predecessors; up: by successors
        for row in rows:
            row.sort(key=functools.partial(_centre, neighbours=neighbours, side=side, at=position))
            position.update({node: i for i, node in enumerate(row)})
    return rows


def layout(graph: WorkflowGraph) -> Layout:
    """A layered top-down layout of ``graph`` (deterministic for a given graph)."""
    back = _back_edges(graph)
    layer = _layers(graph, back)
    rows = _order(graph, layer)
    sizes = {n.id: _node_size(n) for n in graph.nodes}
    row_widths = [sum(sizes[n][0] for n in row) + _NODE_GAP * (len(row) - 1) for row in rows]
    inner = max(row_widths, default=0.0)
    boxes: dict[str, tuple[float, float, float, float]] = {}
    y = _MARGIN
    for row, row_width in zip(rows, row_widths, strict=True):
        x = _MARGIN + (inner - row_width) / 2
        tallest = max((sizes[n][1] for n in row), default=0.0)
        for node in row:
            width, height = sizes[node]
            boxes[node] = (x, y + (tallest - height) / 2, width, height)
            x += width + _NODE_GAP
        y += tallest + _LAYER_GAP
    loops = sum(1 for e in graph.edges if layer[e.target] <= layer[e.source])
    width = inner + 2 * _MARGIN + 16.0 * loops + (10.0 if loops else 0.0)
    return Layout(boxes, layer, width, max(y - _LAYER_GAP + _MARGIN, 2 * _MARGIN))


# -- SVG -------------------------------------------------------------------------------------
_SVG_STYLE = """
.rb-node rect { stroke-width: 1.4; }
.rb-node text { font: 13px ui-sans-serif, system-ui, sans-serif; fill: #1d2433; }
.rb-step rect { fill: #eef3fb; stroke: #3b6fb6; }
.rb-event rect { fill: #fff7e6; stroke: #c08a1e; }
.rb-role-start rect { fill: #e7f6ea; stroke: #2e8b57; }
.rb-role-stop rect { fill: #fdeaea; stroke: #c0392b; }
.rb-role-input_required rect, .rb-role-human_response rect { stroke-dasharray: 5 3; }
.rb-role-catch_error rect { fill: #f4ecf8; stroke: #8e44ad; }
.rb-edge { fill: none; stroke: #8a93a6; stroke-width: 1.4; }
.rb-edge-human { stroke-dasharray: 6 4; }
.rb-edge-error { stroke-dasharray: 3 3; stroke: #c0392b; }
.rb-has-path .rb-node:not(.rb-taken) { opacity: 0.38; }
.rb-has-path .rb-edge:not(.rb-taken) { opacity: 0.3; }
.rb-taken rect { stroke: #e4572e; stroke-width: 2.6; }
.rb-edge.rb-taken { stroke: #e4572e; stroke-width: 2.6; }
.rb-runs { font: bold 11px ui-sans-serif, system-ui, sans-serif; fill: #e4572e; }
"""


def _edge_path(edge: GraphEdge, lay: Layout, lane: int) -> str:
    sx, sy, sw, sh = lay.boxes[edge.source]
    tx, ty, tw, th = lay.boxes[edge.target]
    if lay.layers[edge.target] > lay.layers[edge.source]:
        x1, y1, x2, y2 = sx + sw / 2, sy + sh, tx + tw / 2, ty
        bend = (y2 - y1) / 2
        return (
            f"M{x1:.1f},{y1:.1f} C{x1:.1f},{y1 + bend:.1f} "
            f"{x2:.1f},{y2 - bend:.1f} {x2:.1f},{y2:.1f}"
        )
    # A loop back up (or sideways): down into the gap below the source's row, right to a
    # lane outside every node of the rows it passes, up, and into the target's right side.
    low, high = sorted((lay.layers[edge.source], lay.layers[edge.target]))
    right = max(x + w for n, (x, _, w, _) in lay.boxes.items() if low <= lay.layers[n] <= high)
    out = right + 22.0 + 16.0 * lane
    x1, y1 = sx + sw / 2, sy + sh
    x2, y2 = tx + tw, ty + th / 2
    gap = y1 + min(18.0, _LAYER_GAP / 3)
    return (
        f"M{x1:.1f},{y1:.1f} Q{x1:.1f},{gap:.1f} {x1 + 12:.1f},{gap:.1f} "
        f"L{out - 10:.1f},{gap:.1f} Q{out:.1f},{gap:.1f} {out:.1f},{gap - 10:.1f} "
        f"L{out:.1f},{y2 + 10:.1f} Q{out:.1f},{y2:.1f} {out - 10:.1f},{y2:.1f} "
        f"L{x2 + 2:.1f},{y2:.1f}"
    )


def _svg_node(node: GraphNode, lay: Layout, taken: TakenPath | None) -> str:
    x, y, w, h = lay.boxes[node.id]
    classes = ["rb-node", f"rb-{node.kind}"]
    if node.role:
        classes.append(f"rb-role-{node.role}")
    runs = ""
    if taken is not None and node.id in taken.nodes:
        classes.append("rb-taken")
        count = taken.step_runs.get(node.label, 0) if node.kind == "step" else 0
        if count > 1:
            runs = (
                f'<text class="rb-runs" x="{x + w - 4:.1f}" y="{y - 3:.1f}" '
                f'text-anchor="end">&#215;{count}</text>'
            )
    radius = 6 if node.kind == "step" else h / 2
    tip = node.type_key or f"step {node.label}"
    return (
        f'<g class="{" ".join(classes)}" data-id="{html.escape(node.id)}">'
        f"<title>{html.escape(tip)}</title>"
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="{radius:.1f}"/>'
        f'<text x="{x + w / 2:.1f}" y="{y + h / 2 + 4.5:.1f}" text-anchor="middle">'
        f"{html.escape(node.label)}</text>{runs}</g>"
    )


def to_svg(graph: WorkflowGraph, taken: TakenPath | None = None) -> str:
    """A standalone SVG document of ``graph`` with its own styles; nodes and edges carry
    ``data-id`` / ``data-source`` / ``data-target`` attributes for scripts."""
    lay = layout(graph)
    parts = [
        '<svg xmlns="http://www.w3.org/2000/svg" '
        f'class="rb-graph{" rb-has-path" if taken else ""}" '
        f'width="{lay.width:.0f}" height="{lay.height:.0f}" '
        f'viewBox="0 0 {lay.width:.0f} {lay.height:.0f}" role="img">',
        f"<title>{html.escape(graph.name or 'workflow')}</title>",
        f"<style>{_SVG_STYLE}</style>",
        "<defs>",
        '<marker id="rb-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="9" '
        'markerHeight="9" markerUnits="userSpaceOnUse" orient="auto-start-reverse">'
        '<path d="M0,0 L10,5 L0,10 z" fill="#8a93a6"/></marker>',
        '<marker id="rb-arrow-taken" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="10" '
        'markerHeight="10" markerUnits="userSpaceOnUse" orient="auto-start-reverse">'
        f'<path d="M0,0 L10,5 L0,10 z" fill="{_TAKEN_COLOR}"/></marker>',
        "</defs>",
    ]
    lane = 0
    for edge in graph.edges:
        is_taken = taken is not None and (edge.source, edge.target) in taken.edges
        loop = lay.layers[edge.target] <= lay.layers[edge.source]
        classes = "rb-edge" + ("" if edge.kind == "flow" else f" rb-edge-{edge.kind}")
        classes += " rb-taken" if is_taken else ""
        marker = "rb-arrow-taken" if is_taken else "rb-arrow"
        parts.append(
            f'<path class="{classes}" data-source="{html.escape(edge.source)}" '
            f'data-target="{html.escape(edge.target)}" d="{_edge_path(edge, lay, lane)}" '
            f'marker-end="url(#{marker})"/>'
        )
        lane += 1 if loop else 0
    parts += [_svg_node(node, lay, taken) for node in graph.nodes]
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


# -- HTML ------------------------------------------------------------------------------------
_HTML_STYLE = """
body { font: 14px ui-sans-serif, system-ui, sans-serif; margin: 24px; color: #1d2433; }
h1 { font-size: 18px; margin: 0 0 4px; }
.sub { color: #5b6478; margin: 0 0 16px; }
.graph { overflow: auto; border: 1px solid #dde2ea; border-radius: 8px; padding: 8px; }
.rb-node { cursor: pointer; }
.rb-focus .rb-node:not(.rb-near), .rb-focus .rb-edge:not(.rb-near) { opacity: .2; }
#info { margin-top: 12px; min-height: 1.4em; color: #38415a; }
.legend span { display: inline-block; margin-right: 14px; }
.legend i { display: inline-block; width: 14px; height: 10px; border: 1.4px solid;
  margin-right: 5px; border-radius: 3px; vertical-align: -1px; }
"""

_HTML_SCRIPT = """
(function () {
  var svg = document.querySelector('.rb-graph'), info = document.getElementById('info');
  var edges = Array.prototype.slice.call(svg.querySelectorAll('.rb-edge'));
  function clear() {
    svg.classList.remove('rb-focus');
    svg.querySelectorAll('.rb-near').forEach(function (el) { el.classList.remove('rb-near'); });
  }
  svg.querySelectorAll('.rb-node').forEach(function (node) {
    var id = node.getAttribute('data-id');
    node.addEventListener('mouseenter', function () {
      svg.classList.add('rb-focus'); node.classList.add('rb-near');
      edges.forEach(function (e) {
        var s = e.getAttribute('data-source'), t = e.getAttribute('data-target');
        if (s === id || t === id) {
          e.classList.add('rb-near');
          var other = svg.querySelector('.rb-node[data-id="' + (s === id ? t : s) + '"]');
          if (other) other.classList.add('rb-near');
        }
      });
    });
    node.addEventListener('mouseleave', clear);
    node.addEventListener('click', function () {
      var ins = edges.filter(function (e) { return e.getAttribute('data-target') === id; })
        .map(function (e) { return e.getAttribute('data-source'); });
      var outs = edges.filter(function (e) { return e.getAttribute('data-source') === id; })
        .map(function (e) { return e.getAttribute('data-target'); });
      info.textContent = id + ' (' + node.querySelector('title').textContent + ')  from: ' +
        (ins.join(', ') || 'nothing') + '  to: ' + (outs.join(', ') || 'nothing');
    });
  });
})();
"""


def to_html(graph: WorkflowGraph, taken: TakenPath | None = None, title: str = "") -> str:
    """A self-contained HTML page (inline SVG, CSS and a little JavaScript; works
    offline): hover a node to see its neighbours, click it for its connections."""
    heading = html.escape(title or graph.name or "workflow")
    counts = (
        f"{sum(1 for n in graph.nodes if n.kind == 'step')} steps, "
        f"{sum(1 for n in graph.nodes if n.kind == 'event')} events"
    )
    if taken is not None:
        counts += f"; highlighted: the path of one run ({len(taken.edges)} edges taken)"
    legend = (
        '<p class="legend"><span><i style="background:#eef3fb;border-color:#3b6fb6"></i>step'
        '</span><span><i style="background:#fff7e6;border-color:#c08a1e"></i>event</span>'
        '<span><i style="background:#e7f6ea;border-color:#2e8b57"></i>start</span>'
        '<span><i style="background:#fdeaea;border-color:#c0392b"></i>stop</span>'
        + (
            f'<span><i style="border-color:{_TAKEN_COLOR}"></i>taken by the run</span>'
            if taken is not None
            else ""
        )
        + "</p>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{heading}</title>\n<style>{_HTML_STYLE}</style>\n</head>\n<body>\n"
        f'<h1>{heading}</h1>\n<p class="sub">{html.escape(counts)}</p>\n{legend}\n'
        f'<div class="graph">\n{to_svg(graph, taken)}</div>\n<p id="info">Click a node.</p>\n'
        f"<script>{_HTML_SCRIPT}</script>\n</body>\n</html>\n"
    )
