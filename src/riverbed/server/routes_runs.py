"""Endpoints about runs: list, read, answer, cancel, and read their state, events,
timeline and path through the graph. The stream is in :mod:`riverbed.server.sse`."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from riverbed._tagged_json import to_plain
from riverbed.inspection import type_name
from riverbed.server.params import EventBody, query_int, query_number, read_body
from riverbed.server.problems import Problem
from riverbed.server.service import RunService, run_json
from riverbed.server.sse import stream_run
from riverbed.stores.base import RunStatus

__all__ = ["routes"]

#: ``waiting``: running runs that wait for an event from outside (a human's answer)
_STATUSES = [s.value for s in RunStatus] + ["waiting"]


def _service(request: Request) -> RunService:
    service: RunService = request.app.state.service
    return service


async def list_runs(request: Request) -> Response:
    """``GET /api/runs?workflow=&status=&limit=&offset=``: newest first."""
    service = _service(request)
    workflow = request.query_params.get("workflow") or None
    status_text = request.query_params.get("status") or None
    if status_text is not None and status_text not in _STATUSES:
        raise Problem(
            422,
            "invalid-query",
            f"status must be one of {', '.join(_STATUSES)}, got {status_text!r}.",
        )
    limit = query_int(request, "limit", 50, 1, 500)
    offset = query_int(request, "offset", 0, 0, 1_000_000)
    if status_text == "waiting":
        records = await service.waiting_runs(workflow, limit + 1, offset)
    else:
        status = RunStatus(status_text) if status_text else None
        records = await service.list_runs(workflow, status, limit + 1, offset)
    more = len(records) > limit
    records = records[:limit]
    waiting = await service.waiting_among(records)
    body: dict[str, Any] = {
        "runs": [{**run_json(r), "waiting": r.run_id in waiting} for r in records],
        "limit": limit,
        "offset": offset,
        "next_offset": offset + limit if more else None,
    }
    return JSONResponse(body)


async def get_run(request: Request) -> Response:
    """``GET /api/runs/{run_id}?wait=<seconds>``: status, result or error; with ``wait``,
    answers once the run has ended or the seconds have passed."""
    service = _service(request)
    run_id = request.path_params["run_id"]
    wait = query_number(request, "wait", 0.0, 300.0)
    if wait:
        record = await service.wait(run_id, wait)
    else:
        _, record = await service.find(run_id)
    return JSONResponse(run_json(record))


async def send_event(request: Request) -> Response:
    """``POST /api/runs/{run_id}/events``: ``{"type", "data", "client_event_id"?,
    "step"?}``; 202 once the event is committed."""
    run_id = request.path_params["run_id"]
    body = await read_body(request, EventBody)
    result = await _service(request).send(
        run_id, body.type, body.data, body.step, body.client_event_id
    )
    return JSONResponse(result, status_code=202)


async def cancel_run(request: Request) -> Response:
    """``POST /api/runs/{run_id}/cancel``: the run afterwards (an ended run as it is)."""
    record = await _service(request).cancel(request.path_params["run_id"])
    return JSONResponse(run_json(record))


async def get_state(request: Request) -> Response:
    """``GET /api/runs/{run_id}/state``: the last committed state."""
    run_id = request.path_params["run_id"]
    store, _ = await _service(request).find(run_id)
    state, state_type = await store.read_state(run_id)
    # Untyped state keeps its values' types in the store; clients get plain JSON.
    plain = to_plain(json.loads(state))
    return JSONResponse({"run_id": run_id, "state": plain, "state_type": state_type})


async def list_events(request: Request) -> Response:
    """``GET /api/runs/{run_id}/events?after=&limit=``: the events that entered the run
    (start event, events steps produced, events sent from outside), from a cursor."""
    run_id = request.path_params["run_id"]
    after = query_int(request, "after", 0, 0, 2**62)
    limit = query_int(request, "limit", 200, 1, 1000)
    store, _ = await _service(request).find(run_id)
    rows = [r for r in await store.read_events(run_id) if r.seq > after][:limit]
    events = [
        {
            "seq": r.seq,
            "type": type_name(r.type_key),
            "type_key": r.type_key,
            "source_step": r.source_step,
            "client_event_id": r.client_event_id,
            "data": json.loads(r.payload),
        }
        for r in rows
    ]
    next_after = rows[-1].seq if rows else after
    return JSONResponse({"run_id": run_id, "events": events, "next_after": next_after})


async def get_timeline(request: Request) -> Response:
    """``GET /api/runs/{run_id}/timeline``: events entering, attempts committing and
    failing, in time order, with durations."""
    run_id = request.path_params["run_id"]
    store, _ = await _service(request).find(run_id)
    reader = getattr(store, "read_timeline", None)
    if reader is None:
        raise Problem(404, "no-timeline", "This store does not record timelines.")
    rows = await reader(run_id)
    return JSONResponse({"run_id": run_id, "timeline": [_timeline_row(r) for r in rows]})


def _timeline_row(row: Any) -> dict[str, Any]:
    return {
        "kind": row.kind,
        "at": row.at,
        "event_seq": row.event_seq,
        "step": row.step,
        "attempt": row.attempt,
        "type": type_name(row.type_key) if row.type_key else None,
        "source_step": row.source_step,
        "started_at": row.started_at,
        "duration": row.duration,
        "error": row.error,
        "retry_at": row.retry_at,
    }


async def get_run_graph(request: Request) -> Response:
    """``GET /api/runs/{run_id}/graph``: the workflow's graph and the path this run took."""
    from riverbed.graph import taken_path, workflow_graph
    from riverbed.graph_render import to_svg

    service = _service(request)
    run_id = request.path_params["run_id"]
    store, record = await service.find(run_id)
    workflow = service.entry_of(record).workflow
    graph = workflow_graph(workflow)
    events = await store.read_events(run_id)
    reader = getattr(store, "read_timeline", None)
    steps_run = (
        [(r.event_seq, r.step) for r in await reader(run_id) if r.kind == "commit"]
        if reader is not None
        else []
    )
    taken = taken_path(graph, events, steps_run)
    return JSONResponse(
        {"graph": graph.to_dict(), "taken": taken.to_dict(), "svg": to_svg(graph, taken)}
    )


async def get_details(request: Request) -> Response:
    """``GET /api/runs/{run_id}/details``: record, state, timeline, attempts, events and
    stream in one answer (``riverbed.inspection.read_run``), for the inspector page."""
    from riverbed.inspection import read_run

    run_id = request.path_params["run_id"]
    store, _ = await _service(request).find(run_id)
    return JSONResponse((await read_run(store, run_id)).to_dict())


def routes() -> list[Route]:
    """The run endpoints."""
    return [
        Route("/api/runs", list_runs, methods=["GET"]),
        Route("/api/runs/{run_id}", get_run, methods=["GET"], name="get_run"),
        Route("/api/runs/{run_id}/events", send_event, methods=["POST"]),
        Route("/api/runs/{run_id}/events", list_events, methods=["GET"]),
        Route("/api/runs/{run_id}/cancel", cancel_run, methods=["POST"]),
        Route("/api/runs/{run_id}/state", get_state, methods=["GET"]),
        Route("/api/runs/{run_id}/stream", stream_run, methods=["GET"]),
        Route("/api/runs/{run_id}/timeline", get_timeline, methods=["GET"]),
        Route("/api/runs/{run_id}/graph", get_run_graph, methods=["GET"]),
        Route("/api/runs/{run_id}/details", get_details, methods=["GET"]),
    ]
