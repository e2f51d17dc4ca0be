"""``create_app``: the ASGI application serving the API, the stream and the inspector page.

::

    from riverbed.server import create_app

    app = create_app([Approval(store="sqlite:///runs.db")], token=os.environ["RB_TOKEN"])
    # uvicorn myapp:app, or mount it: Mount("/riverbed", app=app)
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from riverbed.server import routes_runs, routes_workflows
from riverbed.server.catalog import Catalog
from riverbed.server.openapi import openapi_document
from riverbed.server.problems import exception_handlers
from riverbed.server.security import BearerAuth, BodyLimit
from riverbed.server.service import RunService
from riverbed.workflow import Workflow

__all__ = ["create_app"]

logger = logging.getLogger("riverbed.server")

STATIC = Path(__file__).parent / "static"


#: the page loads only its own files; the graph SVG it inserts carries a <style> element
_PAGE_HEADERS = {
    "cache-control": "no-cache",
    "content-security-policy": (
        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


async def _index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers=_PAGE_HEADERS)


async def _openapi(request: Request) -> Response:
    return JSONResponse(request.app.state.openapi)


async def _health(request: Request) -> Response:
    service: RunService = request.app.state.service
    return JSONResponse({"status": "ok", "workflows": len(service.catalog.entries)})


def create_app(
    workflows: Sequence[Workflow],
    *,
    token: str | None = None,
    cors_origins: Sequence[str] = (),
    max_body_bytes: int = 1_000_000,
    poll_seconds: float = 0.2,
    page: bool = True,
    execute: bool = True,
) -> Starlette:
    """The app serving ``workflows`` (each with a durable store).

    ``token``: every request must carry ``Authorization: Bearer <token>`` (the inspector
    page's static files excepted; the page asks for the token). ``cors_origins``: origins
    allowed to call the API from a browser (none by default; credentials are never
    allowed). ``max_body_bytes``: larger request bodies get 413. ``poll_seconds``: how
    often a followed run executing in another process is looked up. ``page``: serve the
    run inspector at ``/``. ``execute=False``: the server only records runs and answers
    (``Workflow.submit``, ``send_event(continue_here=False)``); ``riverbed worker``
    processes sharing the store execute them.
    """
    catalog = Catalog(workflows)
    service = RunService(catalog, poll_seconds, execute)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        opened = [s for s in catalog.stores() if not getattr(s, "is_open", True)]
        for entry in catalog.entries.values():
            await entry.workflow.open_store()
        try:
            yield
        finally:
            await service.close()
            if service.handlers:
                # Closing the store under them would fail their next commit; left as they
                # are, they continue when resumed (or at once in another server).
                logger.warning(
                    "riverbed server: %d run(s) still executing here at shutdown; they "
                    "continue when resumed.",
                    len(service.handlers),
                )
            else:
                for store in opened:
                    await store.close()

    routes: list[BaseRoute] = [
        Route("/openapi.json", _openapi, methods=["GET"]),
        Route("/api/health", _health, methods=["GET"]),
        *routes_workflows.routes(),
        *routes_runs.routes(),
    ]
    public: list[str] = []
    if page:
        routes.append(Route("/", _index, methods=["GET"]))
        routes.append(Mount("/static", app=StaticFiles(directory=STATIC), name="static"))
        public = ["/", "/static/"]
    middleware: list[Middleware] = []
    if cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(cors_origins),
                allow_credentials=False,
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
            )
        )
    if token is not None:
        middleware.append(Middleware(BearerAuth, token=token, public_paths=public))
    middleware.append(Middleware(BodyLimit, max_bytes=max_body_bytes))
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.openapi = openapi_document(bearer=token is not None)
    return app


def app_service(app: Any) -> RunService:
    """The :class:`RunService` behind an app made by :func:`create_app` (for tests and
    benchmarks)."""
    service: RunService = app.state.service
    return service
