"""``riverbed draw``: every step and edge of a workflow in Mermaid, SVG and HTML, and the
path one recorded run took."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cli_workflows.harness import example, flow
from riverbed.cli import main
from riverbed.cli.loading import load_workflow
from riverbed.graph import workflow_graph

SVG = "{http://www.w3.org/2000/svg}"
LINK = r"^    (n\d+) (?:-->|-\. (?:human|error) \.->) (n\d+)$"
SPECS = [
    example("research_assistant.py", "ResearchAssistant"),
    example("seed_stateful_flow.py", "StatefulFlow"),
    example("human_approval.py", "workflow"),
    flow("Guarded"),
]


def _svg_graph(svg: str) -> tuple[set[str], set[tuple[str, str]], set[str], set[tuple[str, str]]]:
    """Node ids, edges, and the highlighted ones, read back from an SVG drawing."""
    root = ET.fromstring(svg)
    groups = [g for g in root.iter(f"{SVG}g") if g.get("data-id")]
    paths = [p for p in root.iter(f"{SVG}path") if p.get("data-source")]
    nodes = {g.get("data-id", "") for g in groups}
    edges = {(p.get("data-source", ""), p.get("data-target", "")) for p in paths}
    lit_nodes = {g.get("data-id", "") for g in groups if "rb-taken" in g.get("class", "")}
    lit_edges = {
        (p.get("data-source", ""), p.get("data-target", ""))
        for p in paths
        if "rb-taken" in p.get("class", "")
    }
    return nodes, edges, lit_nodes, lit_edges


@pytest.mark.parametrize("spec", SPECS)
def test_svg_has_every_step_event_and_edge(spec: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["draw", spec, "--format", "svg"]) == 0
    nodes, edges, lit, _ = _svg_graph(capsys.readouterr().out)
    graph = workflow_graph(load_workflow(spec))
    assert nodes == {n.id for n in graph.nodes}
    assert edges == {(e.source, e.target) for e in graph.edges}
    assert lit == set()
    steps = {n.label for n in graph.nodes if n.kind == "step"}
    assert steps == set(load_workflow(spec)._step_specs())


@pytest.mark.parametrize("spec", SPECS)
def test_mermaid_is_the_default_and_has_every_edge(
    spec: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["draw", spec]) == 0
    text = capsys.readouterr().out
    assert text.startswith("flowchart TD\n")
    labels = dict(re.findall(r"^    (n\d+)\W+\"([^\"]+)\"", text, re.MULTILINE))
    links = re.findall(LINK, text, re.MULTILINE)
    graph = workflow_graph(load_workflow(spec))
    assert sorted(labels.values()) == sorted(n.label for n in graph.nodes)
    assert sorted((labels[a], labels[b]) for a, b in links) == sorted(
        (graph.node(e.source).label, graph.node(e.target).label) for e in graph.edges
    )


def test_output_file_format_follows_its_suffix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = example("research_assistant.py", "ResearchAssistant")
    for name, head in (("g.html", "<!DOCTYPE html>"), ("g.svg", "<svg "), ("g.mmd", "flowchart")):
        assert main(["draw", spec, "-o", str(tmp_path / name)]) == 0
        assert (tmp_path / name).read_text().startswith(head)
    assert capsys.readouterr().out == ""
    page = (tmp_path / "g.html").read_text()
    assert "<title>research_assistant.ResearchAssistant</title>" in page
    assert not re.search(r"(src|href)=", page)  # nothing fetched: works offline
    svg = page[page.index("<svg ") : page.index("</svg>") + len("</svg>")]
    nodes, edges, _, _ = _svg_graph(svg)
    graph = workflow_graph(load_workflow(spec))
    assert nodes == {n.id for n in graph.nodes}
    assert edges == {(e.source, e.target) for e in graph.edges}


def test_an_image_suffix_riverbed_cannot_write_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It wrote Mermaid text into g.png (exit 0): a file no image viewer opens.
    spec = example("research_assistant.py", "ResearchAssistant")
    assert main(["draw", spec, "-o", str(tmp_path / "g.png")]) == 2
    assert "cannot write .png images: write .svg" in capsys.readouterr().err
    assert not (tmp_path / "g.png").exists()
    assert main(["draw", spec, "-o", str(tmp_path / "g.png"), "--format", "svg"]) == 0
    assert (tmp_path / "g.png").read_text().startswith("<svg ")  # asked for explicitly


def test_run_highlights_the_path_one_run_took(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    spec = flow("Guarded")
    url = "sqlite:///runs.db"
    assert main(["run", spec, "-q", "--store", url, "--run-id", "r1"]) == 0
    capsys.readouterr()
    assert main(["draw", spec, "--run", "r1", "--store", url, "-f", "svg"]) == 0
    _, _, lit_nodes, lit_edges = _svg_graph(capsys.readouterr().out)
    # risky failed, so the error handler ran: the path goes through StepFailedEvent.
    assert lit_nodes == {
        "event:StartEvent",
        "step:risky",
        "event:StepFailedEvent",
        "step:recover",
        "event:StopEvent",
    }
    assert lit_edges == {
        ("event:StartEvent", "step:risky"),
        ("step:risky", "event:StepFailedEvent"),
        ("event:StepFailedEvent", "step:recover"),
        ("step:recover", "event:StopEvent"),
    }
    assert main(["draw", spec, "--run", "r1", "--store", url, "-f", "html"]) == 0
    assert "taken by the run" in capsys.readouterr().out


def test_run_of_another_workflow_or_unknown_id_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    url = "sqlite:///runs.db"
    assert (
        main(["run", flow("greeter"), "-q", "-a", "name=x", "--store", url, "--run-id", "g"]) == 0
    )
    capsys.readouterr()
    assert main(["draw", flow("Guarded"), "--run", "g", "--store", url]) == 2
    assert "is a run of flows.Greeter, not of flows.Guarded" in capsys.readouterr().err
    assert main(["draw", flow("Guarded"), "--run", "nope", "--store", url]) == 2
    assert "No run 'nope'" in capsys.readouterr().err
    assert main(["draw", flow("Guarded"), "--store", url]) == 2
    assert "--store is for --run" in capsys.readouterr().err


def test_an_unwritable_output_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "missing" / "g.svg"
    assert main(["draw", flow("Guarded"), "-o", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"riverbed: error: Cannot write '{target}'")
    assert len(err.splitlines()) == 1
