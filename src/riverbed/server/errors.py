"""The one error the server raises to its caller (not to HTTP clients)."""

from __future__ import annotations

from riverbed.errors import WorkflowError

__all__ = ["ServerConfigError"]


class ServerConfigError(WorkflowError, ValueError):
    """The server cannot start as configured (no token beyond loopback, a workflow
    without a durable store...); the message names the fix. Raised before anything
    listens. A ``ValueError`` too."""
