"""``run_server``: serve workflows with uvicorn (what ``riverbed serve`` calls)."""

from __future__ import annotations

import asyncio
import errno
import socket
import sys
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


def check_port(host: str, port: int) -> None:
    """Raise ``ServerConfigError`` if ``port`` is out of range or ``host:port`` is taken."""
    if not 0 < port < 65536:
        raise ServerConfigError(f"--port must be between 1 and 65535, got {port}.")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ServerConfigError(
                    f"Port {port} on {host} is already in use: pass another --port, or stop "
                    "the process that listens there."
                ) from exc
            raise ServerConfigError(f"Cannot listen on {host}:{port}: {exc.strerror}.") from exc


async def _check_stores(workflows: Sequence[Workflow]) -> None:
    seen: set[int] = set()
    for workflow in workflows:
        store = workflow.store
        if store is None or id(store) in seen or not getattr(store, "durable", False):
            continue
        seen.add(id(store))
        await workflow.open_store()
        await store.close()


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
    for a setting that cannot work (a port in use, too), and the store's own error for a
    store that cannot be opened, before anything listens. ``execute=False`` leaves
    executing runs to ``riverbed worker`` processes sharing the store.
    """
    import uvicorn

    from riverbed.server.app import create_app

    check_binding(host, token)
    if store_url is not None:
        use_store(workflows, store_url)
    app = create_app(workflows, token=token, cors_origins=cors_origins, execute=execute)
    check_port(host, port)
    # Open the stores once before listening: a damaged file or an unreachable database is
    # then reported as the store's own error, not as a traceback from the server's start.
    asyncio.run(_check_stores(workflows))
    if log_level in ("info", "debug", "trace"):
        names = ", ".join(w.workflow_name for w in workflows)
        where = f"[{host}]" if ":" in host else host
        mode = "" if execute else " (runs are executed by `riverbed worker` processes)"
        print(
            f"riverbed: serving {names} on http://{where}:{port}/ (runs page at /, API at "
            f"/api){mode}",
            file=sys.stderr,
            flush=True,
        )
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, lifespan="on", timeout_graceful_shutdown=5
    )
    asyncio.run(uvicorn.Server(config).serve())
