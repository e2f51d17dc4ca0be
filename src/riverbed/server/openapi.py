"""The OpenAPI 3.1 document of the API, written by hand (``GET /openapi.json``)."""

from __future__ import annotations

from typing import Any

from riverbed.server.params import EventBody, StartBody
from riverbed.stores.base import RunStatus

__all__ = ["openapi_document"]


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "The workflow's name (module.ClassName unless given).",
    "schema": {"type": "string"},
}
_RUN_ID = {"name": "run_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


_ERRORS = {
    "401": _problem("Missing or wrong bearer token."),
    "422": _problem("A parameter or the body does not fit."),
}
_RUN_ERRORS = {**_ERRORS, "404": _problem("No such run.")}


def _body(model: type[Any]) -> dict[str, Any]:
    return {
        "required": False,
        "content": {"application/json": {"schema": _ref(model.__name__)}},
    }


def _paths() -> dict[str, Any]:
    run = _ref("Run")
    return {
        "/api/workflows": {
            "get": {
                "summary": "List the served workflows",
                "operationId": "listWorkflows",
                "responses": {
                    "200": _ok(
                        "The workflows.",
                        {
                            "type": "object",
                            "properties": {
                                "workflows": {"type": "array", "items": _ref("Workflow")}
                            },
                        },
                    ),
                    "401": _ERRORS["401"],
                },
            }
        },
        "/api/workflows/{name}": {
            "get": {
                "summary": "A workflow with its input, output and event schemas",
                "operationId": "getWorkflow",
                "parameters": [_NAME],
                "responses": {
                    "200": _ok("The workflow.", {"type": "object"}),
                    "404": _problem("No such workflow."),
                    "401": _ERRORS["401"],
                },
            }
        },
        "/api/workflows/{name}/schema": {
            "get": {
                "summary": "JSON schemas of the input, the output and the events it takes",
                "operationId": "getWorkflowSchema",
                "parameters": [_NAME],
                "responses": {
                    "200": _ok("The schemas.", {"type": "object"}),
                    "404": _problem("No such workflow."),
                    "401": _ERRORS["401"],
                },
            }
        },
        "/api/workflows/{name}/graph": {
            "get": {
                "summary": "The workflow's graph: steps, events and edges",
                "operationId": "getWorkflowGraph",
                "parameters": [_NAME],
                "responses": {
                    "200": _ok("The graph.", {"type": "object"}),
                    "404": _problem("No such workflow."),
                    "401": _ERRORS["401"],
                },
            }
        },
        "/api/workflows/{name}/runs": {
            "post": {
                "summary": "Start a run",
                "operationId": "startRun",
                "parameters": [
                    _NAME,
                    _query("wait", {"type": "boolean"}, "Answer once the run has ended."),
                    _query(
                        "timeout",
                        {"type": "number", "minimum": 0, "maximum": 86400},
                        "With wait: give up waiting after this many seconds (202).",
                    ),
                ],
                "requestBody": _body(StartBody),
                "responses": {
                    "200": _ok("The run ended (wait=true).", run),
                    "202": _ok("The run started.", run),
                    "400": _problem("The body is not JSON."),
                    "404": _problem("No such workflow."),
                    "409": _problem("The run id is taken."),
                    "413": _problem("The body is too large."),
                    "415": _problem("The body is not JSON."),
                    **_ERRORS,
                },
            }
        },
        "/api/runs": {
            "get": {
                "summary": "List runs, newest first",
                "operationId": "listRuns",
                "parameters": [
                    _query("workflow", {"type": "string"}, "Only runs of this workflow."),
                    _query(
                        "status",
                        {"type": "string", "enum": [*(s.value for s in RunStatus), "waiting"]},
                        "Only runs with this status; `waiting`: running runs that wait for "
                        "an event from outside (a human's answer).",
                    ),
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": 500},
                        "Page size (50).",
                    ),
                    _query(
                        "offset",
                        {"type": "integer", "minimum": 0, "maximum": 1000000},
                        "Runs to skip.",
                    ),
                ],
                "responses": {
                    "200": _ok("A page of runs.", _ref("RunPage")),
                    "404": _problem("No such workflow."),
                    **_ERRORS,
                },
            }
        },
        "/api/runs/{run_id}": {
            "get": {
                "summary": "A run: status, result or error",
                "operationId": "getRun",
                "parameters": [
                    _RUN_ID,
                    _query(
                        "wait",
                        {"type": "number", "minimum": 0, "maximum": 300},
                        "Wait up to this many seconds for the run to end.",
                    ),
                ],
                "responses": {"200": _ok("The run.", run), **_RUN_ERRORS},
            }
        },
        "/api/runs/{run_id}/events": {
            "get": {
                "summary": "The events that entered the run, after a cursor",
                "operationId": "listRunEvents",
                "parameters": [
                    _RUN_ID,
                    _query(
                        "after", {"type": "integer", "minimum": 0}, "Only events with seq > after."
                    ),
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": 1000},
                        "At most this many (200).",
                    ),
                ],
                "responses": {"200": _ok("Events.", {"type": "object"}), **_RUN_ERRORS},
            },
            "post": {
                "summary": "Send an event to the run (e.g. a human's answer)",
                "operationId": "sendEvent",
                "parameters": [_RUN_ID],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("EventBody")}},
                },
                "responses": {
                    "202": _ok("The event is committed.", {"type": "object"}),
                    "400": _problem("The body is not JSON."),
                    "409": _problem("The run has ended, or its workflow is not served here."),
                    "413": _problem("The body is too large."),
                    "415": _problem("The body is not JSON."),
                    **_RUN_ERRORS,
                },
            },
        },
        "/api/runs/{run_id}/cancel": {
            "post": {
                "summary": "Cancel the run (an ended run is returned as it is)",
                "operationId": "cancelRun",
                "parameters": [_RUN_ID],
                "responses": {
                    "200": _ok("The run.", run),
                    "409": _problem("The run executes in a process that cannot be reached."),
                    **_RUN_ERRORS,
                },
            }
        },
        "/api/runs/{run_id}/state": {
            "get": {
                "summary": "The run's last committed state",
                "operationId": "getRunState",
                "parameters": [_RUN_ID],
                "responses": {"200": _ok("The state.", {"type": "object"}), **_RUN_ERRORS},
            }
        },
        "/api/runs/{run_id}/stream": {
            "get": {
                "summary": "Follow the run's stream (Server-Sent Events, resumable)",
                "operationId": "streamRun",
                "parameters": [
                    _RUN_ID,
                    _query(
                        "after",
                        {"type": "integer", "minimum": 0},
                        "Start after this stream position.",
                    ),
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": (
                            "id: <seq>, event: stream | end, data: JSON; event: live (no id)"
                            " for events written with durable=False"
                        ),
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    "400": _problem("Last-Event-ID is not a number."),
                    **_RUN_ERRORS,
                },
            }
        },
        "/api/runs/{run_id}/timeline": {
            "get": {
                "summary": "Events, commits and failed attempts in time order",
                "operationId": "getRunTimeline",
                "parameters": [_RUN_ID],
                "responses": {"200": _ok("The timeline.", {"type": "object"}), **_RUN_ERRORS},
            }
        },
        "/api/runs/{run_id}/details": {
            "get": {
                "summary": "Everything about a run: record, state, timeline, events, stream",
                "operationId": "getRunDetails",
                "parameters": [_RUN_ID],
                "responses": {"200": _ok("The details.", {"type": "object"}), **_RUN_ERRORS},
            }
        },
        "/api/runs/{run_id}/graph": {
            "get": {
                "summary": "The workflow's graph and the path this run took",
                "operationId": "getRunGraph",
                "parameters": [_RUN_ID],
                "responses": {
                    "200": _ok("Graph and path.", {"type": "object"}),
                    "409": _problem("The run's workflow is not served here."),
                    **_RUN_ERRORS,
                },
            }
        },
    }


def _schemas() -> dict[str, Any]:
    nullable_str = {"type": ["string", "null"]}
    return {
        "Problem": {
            "type": "object",
            "description": "RFC 9457 problem details.",
            "required": ["type", "title", "status", "detail"],
            "properties": {
                "type": {"type": "string"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "instance": {"type": "string"},
            },
        },
        "Workflow": {
            "type": "object",
            "required": ["name", "start_event", "stop_event", "accepts"],
            "properties": {
                "name": {"type": "string"},
                "class": {"type": "string"},
                "start_event": {"type": "string"},
                "stop_event": {"type": "string"},
                "accepts": {"type": "array", "items": {"type": "string"}},
                "human_input": {"type": "boolean"},
            },
        },
        "Run": {
            "type": "object",
            "required": ["run_id", "workflow", "status"],
            "properties": {
                "run_id": {"type": "string"},
                "workflow": {"type": "string"},
                "status": {"type": "string", "enum": [s.value for s in RunStatus]},
                "started_at": {"type": ["number", "null"]},
                "finished_at": {"type": ["number", "null"]},
                "result": {},
                "error": nullable_str,
                "parent_run_id": nullable_str,
                "owner": {
                    "type": ["string", "null"],
                    "description": "the process executing the run (host:pid:random)",
                },
                "owner_heartbeat": {
                    "type": ["number", "null"],
                    "description": "when the owner last said it is alive (epoch seconds)",
                },
            },
        },
        "RunPage": {
            "type": "object",
            "required": ["runs", "limit", "offset"],
            "properties": {
                "runs": {
                    "type": "array",
                    "items": {
                        "allOf": [
                            _ref("Run"),
                            {
                                "type": "object",
                                "properties": {
                                    "waiting": {
                                        "type": "boolean",
                                        "description": "running, and waiting for an event "
                                        "from outside (a human's answer)",
                                    }
                                },
                            },
                        ]
                    },
                },
                "limit": {"type": "integer"},
                "offset": {"type": "integer"},
                "next_offset": {"type": ["integer", "null"]},
            },
        },
        "StartBody": StartBody.model_json_schema(),
        "EventBody": EventBody.model_json_schema(),
    }


def openapi_document(title: str = "riverbed", bearer: bool = False) -> dict[str, Any]:
    """The document; with ``bearer`` every operation requires the bearer token."""
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": f"{title} API",
            "version": "1",
            "description": "Start, follow, answer and cancel durable workflow runs.",
        },
        "paths": _paths(),
        "components": {"schemas": _schemas()},
    }
    if bearer:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
    return doc
