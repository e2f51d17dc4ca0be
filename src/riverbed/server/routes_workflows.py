"""Endpoints about the served workflows: list them, describe their input, output and
graph, and start runs."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from riverbed.server.params import StartBody, query_bool, query_number, read_body
from riverbed.server.problems import Problem
from riverbed.server.service import RunService, run_json

__all__ = ["routes"]


def _service(request: Request) -> RunService:
    service: RunService = request.app.state.service
    return service


async def list_workflows(request: Request) -> Response:
    """``GET /api/workflows``"""
    catalog = _service(request).catalog
    return JSONResponse({"workflows": [e.describe() for e in catalog.entries.values()]})


async def get_workflow(request: Request) -> Response:
    """``GET /api/workflows/{name}``: summary plus the JSON schemas."""
    entry = _service(request).catalog.get(request.path_params["name"])
    return JSONResponse({**entry.describe(), **entry.schema()})


async def get_schema(request: Request) -> Response:
    """``GET /api/workflows/{name}/schema``: input, output and event JSON schemas."""
    entry = _service(request).catalog.get(request.path_params["name"])
    return JSONResponse(entry.schema())


async def get_graph(request: Request) -> Response:
    """``GET /api/workflows/{name}/graph``: steps, events and how they connect, as data
    (``graph``) and drawn (``svg``)."""
    from riverbed.graph import workflow_graph
    from riverbed.graph_render import to_svg

    entry = _service(request).catalog.get(request.path_params["name"])
    graph = workflow_graph(entry.workflow)
    return JSONResponse({"graph": graph.to_dict(), "svg": to_svg(graph)})


async def start_run(request: Request) -> Response:
    """``POST /api/workflows/{name}/runs``: start a run; 202 at once with its id, or with
    ``?wait=true`` (and an optional ``timeout`` in seconds) 200 once it has ended."""
    service = _service(request)
    entry = service.catalog.get(request.path_params["name"])
    wait = query_bool(request, "wait")
    timeout = query_number(request, "timeout", 0.0, 86_400.0)
    body = await read_body(request, StartBody)
    run_id = await service.start(entry, body.input, body.run_id)
    location = {"location": str(request.url_for("get_run", run_id=run_id).path)}
    if wait:
        record = await service.wait(run_id, timeout)
        status = 200 if record.status.is_terminal else 202
        return JSONResponse(run_json(record), status_code=status, headers=location)
    try:
        _, record = await service.find(run_id)
    except Problem:  # not recorded yet: it waits for a slot (num_concurrent_runs)
        body_json: dict[str, Any] = {"run_id": run_id, "workflow": entry.name, "status": "running"}
        return JSONResponse(body_json, status_code=202, headers=location)
    return JSONResponse(run_json(record), status_code=202, headers=location)


def routes() -> list[Route]:
    """The workflow endpoints."""
    return [
        Route("/api/workflows", list_workflows, methods=["GET"]),
        Route("/api/workflows/{name}", get_workflow, methods=["GET"]),
        Route("/api/workflows/{name}/schema", get_schema, methods=["GET"]),
        Route("/api/workflows/{name}/graph", get_graph, methods=["GET"]),
        Route("/api/workflows/{name}/runs", start_run, methods=["POST"]),
    ]
