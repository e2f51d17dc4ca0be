"""``riverbed draw``: a workflow's graph as Mermaid, SVG or offline HTML, optionally with
the path one recorded run took."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from riverbed.cli.common import UsageError, describe_store, open_store
from riverbed.errors import RunNotFoundError
from riverbed.graph import TakenPath, read_taken_path, workflow_graph
from riverbed.graph_render import to_html, to_mermaid, to_svg
from riverbed.workflow import Workflow

__all__ = ["FORMATS", "draw", "format_for", "write_output"]

FORMATS = ("mermaid", "html", "svg")
_SUFFIXES = {".mmd": "mermaid", ".mermaid": "mermaid", ".md": "mermaid", ".html": "html"}
_SUFFIXES |= {".htm": "html", ".svg": "svg"}
_IMAGES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".pdf"}


def format_for(chosen: str | None, output: str | None) -> str:
    """The format asked for, else the one ``-o``'s suffix names, else Mermaid."""
    if chosen:
        return chosen
    if output:
        suffix = Path(output).suffix.lower()
        if suffix in _IMAGES:
            # Mermaid text in a .png would look like a broken image: say what is possible.
            raise UsageError(
                f"riverbed draw cannot write {suffix} images: write .svg (an image), .html "
                "or .mmd, or pass --format."
            )
        return _SUFFIXES.get(suffix, "mermaid")
    return "mermaid"


async def _taken(workflow: Workflow, store: Any, run_id: str) -> TakenPath:
    await open_store(store)
    try:
        record = await store.get_run(run_id)
    except RunNotFoundError as exc:
        raise UsageError(
            f"No run {run_id!r} in {describe_store(store)}. List the runs with "
            f"`riverbed runs list --store {describe_store(store)}`."
        ) from exc
    if record.workflow != workflow.workflow_name:
        raise UsageError(
            f"Run {run_id} is a run of {record.workflow}, not of {workflow.workflow_name}; "
            "draw the workflow it ran."
        )
    return await read_taken_path(workflow_graph(workflow), store, run_id)


async def draw(
    workflow: Workflow,
    fmt: str,
    *,
    store: Any = None,
    run_id: str | None = None,
    title: str | None = None,
) -> str:
    """Render ``workflow`` (with ``run_id``'s path from ``store``). Returns the text."""
    graph = workflow_graph(workflow)
    taken = await _taken(workflow, store, run_id) if run_id is not None else None
    if fmt == "mermaid":
        text = to_mermaid(graph, taken)
    elif fmt == "svg":
        text = to_svg(graph, taken)
    else:
        heading = title or workflow.workflow_name + (f" - run {run_id}" if run_id else "")
        text = to_html(graph, taken, title=heading)
    return text


def write_output(output: str, text: str) -> None:
    """Write ``text`` to the file ``output``; a path that cannot be written is bad input."""
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"Cannot write {output!r}: {exc.strerror or exc}.") from exc
