"""``run_server``: serve workflows with uvicorn (what ``riverbed serve`` calls)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from riverbed.server.errors import ServerConfigError
from riverbed.server.security import check_binding
from riverbed.workflow import Workflow

__all__ = ["run_server", "use_store"]


def use_store(workflows: Sequence[Workflow], store_url: str) -> None:
    """Make every workflow record its runs in the store at ``store_url`` (one store object
    shared by all of them)."""
    from riverbed.stores.urls import store_from_url

    store: Any = store_from_url(store_url)
    if not getattr(store, "durable", False):
        raise ServerConfigError(f"{store_url!r} is not a durable store; the server needs one.")
    for workflow in workflows:
        workflow.use_store(store)


def run_server(
    workflows: list[Workflow],
    store_url: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    *,
    cors_origins: Sequence[str] = (),
    log_level: str = "info",
    execute: bool = True,
) -> None:
    """Serve ``workflows`` on ``host:port`` until interrupted.

    ``store_url`` (``sqlite:///runs.db``) replaces the workflows' own stores. Listening
    beyond loopback requires a ``token``. Raises ``ServerConfigError`` (a ``ValueError``)
    for a setting that cannot work, before anything listens. ``execute=False`` leaves
    executing runs to ``riverbed worker`` processes sharing the store.
    """
    import uvicorn

    from riverbed.server.app import create_app

    check_binding(host, token)
    if store_url is not None:
        use_store(workflows, store_url)
    app = create_app(workflows, token=token, cors_origins=cors_origins, execute=execute)
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, lifespan="on", timeout_graceful_shutdown=5
    )
    asyncio.run(uvicorn.Server(config).serve())
