"""Errors as RFC 9457 problem details: ``application/problem+json`` bodies that name the
problem, and the exception handlers that turn every failure into one.

A handler never sends a traceback: an unexpected exception is logged here and the client
gets a generic 500 problem.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from riverbed.errors import (
    ContextSerdeError,
    RunExistsError,
    RunFinishedError,
    RunNotFoundError,
    RunOwnedError,
    StoreLockedError,
    WorkflowError,
    WorkflowRuntimeError,
)

__all__ = ["PROBLEM_JSON", "Problem", "exception_handlers", "problem_response"]

logger = logging.getLogger("riverbed.server")

PROBLEM_JSON = "application/problem+json"

_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Invalid input",
    500: "Internal server error",
    503: "Service unavailable",
}


class Problem(Exception):
    """An HTTP error with a problem-details body.

    ``kind`` is a short slug naming the problem (``run-not-found``); it becomes the
    ``type`` URI ``urn:riverbed:problem:<kind>``. ``extra`` members are added to the body
    (e.g. ``errors`` for validation failures).
    """

    def __init__(
        self, status: int, kind: str, detail: str, *, title: str | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail
        self.title = title or _TITLES.get(status, "Error")
        self.extra = extra


def problem_response(
    problem: Problem, instance: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The JSON response for ``problem``."""
    body: dict[str, Any] = {
        "type": f"urn:riverbed:problem:{problem.kind}",
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
    }
    if instance is not None:
        body["instance"] = instance
    body.update(problem.extra)
    return JSONResponse(body, status_code=problem.status, media_type=PROBLEM_JSON, headers=headers)


def from_riverbed_error(exc: Exception) -> Problem | None:
    """The problem a riverbed error means for a client, or None if it is a server bug."""
    if isinstance(exc, RunNotFoundError):
        return Problem(404, "run-not-found", str(exc))
    if isinstance(exc, RunExistsError):
        return Problem(409, "run-exists", str(exc))
    if isinstance(exc, RunFinishedError):
        return Problem(409, "run-finished", str(exc))
    if isinstance(exc, RunOwnedError):
        return Problem(409, "run-owned", str(exc))
    if isinstance(exc, StoreLockedError):
        return Problem(503, "store-busy", str(exc))
    if isinstance(exc, ContextSerdeError):
        return Problem(422, "invalid-payload", str(exc))
    if isinstance(exc, WorkflowRuntimeError):
        return Problem(422, "rejected-by-workflow", str(exc))
    return None


async def _on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return problem_response(exc, request.url.path)


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
    detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "")
    if exc.status_code == 404:
        detail = f"No endpoint at {request.url.path}. See /openapi.json for the API."
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}."
    headers = dict(exc.headers) if exc.headers else None
    return problem_response(Problem(exc.status_code, kind, detail), request.url.path, headers)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    problem = from_riverbed_error(exc)
    if problem is not None:
        return problem_response(problem, request.url.path)
    logger.error(
        "riverbed server: unexpected error on %s %s",
        request.method,
        request.url.path,
        exc_info=exc,
    )
    generic = Problem(
        500,
        "internal-error",
        "The server failed to handle this request; the error is in its log.",
    )
    return problem_response(generic, request.url.path)


def exception_handlers() -> dict[Any, Any]:
    """Starlette ``exception_handlers`` mapping every error to a problem response."""
    return {
        Problem: _on_problem,
        HTTPException: _on_http_exception,
        # riverbed errors are answered by the exception middleware; a bare Exception goes
        # to Starlette's outermost handler (which also re-raises it for the server's log).
        WorkflowError: _on_unexpected,
        Exception: _on_unexpected,
    }
