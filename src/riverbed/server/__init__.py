"""riverbed's HTTP server: a JSON API to start, follow (Server-Sent Events), answer and
cancel durable runs, and the run inspector page, on Starlette.

Needs the ``server`` extra: ``pip install 'riverbed[server]'``. Nothing in the core
imports this package.
"""

from __future__ import annotations

try:
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"riverbed.server needs Starlette and uvicorn ({exc.name} is missing): "
        "pip install 'riverbed[server]'"
    ) from exc

from riverbed.server.app import create_app
from riverbed.server.errors import ServerConfigError
from riverbed.server.serve import run_server

__all__ = ["ServerConfigError", "create_app", "run_server"]
