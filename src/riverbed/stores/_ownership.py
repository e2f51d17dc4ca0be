"""Who may take a run over: the rule both durable stores apply in ``acquire_run``.

A run is executed by one process at a time, its owner (``host:pid:random``), renewed by
heartbeats. Another process may take it when the owner's lease lapsed, or at once when the
owner is a process of this host that is gone.
"""

from __future__ import annotations

import os
import socket

from riverbed.errors import RunFinishedError, RunOwnedError
from riverbed.stores.base import RunStatus

__all__ = ["check_takeover", "owner_is_alive", "owner_is_dead"]

_HOST = socket.gethostname()


def owner_is_dead(owner: str) -> bool:
    """True when ``owner`` ("host:pid:uuid") names a process of this host that is gone."""
    parts = owner.split(":")
    if len(parts) < 3:
        return False
    host, pid_text = ":".join(parts[:-2]), parts[-2]
    if host != _HOST or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except OSError:
        # The pid exists but belongs to someone else, or cannot be probed: assume alive.
        return False
    return False


def owner_is_alive(owner: str, heartbeat: float | None, now: float, lease_seconds: float) -> bool:
    """Whether ``owner`` still holds its run: its heartbeat is fresh and it is not a gone
    process of this host."""
    fresh = heartbeat is not None and now - heartbeat < lease_seconds
    return fresh and not owner_is_dead(owner)


def check_takeover(
    run_id: str,
    status: RunStatus,
    current: str | None,
    heartbeat: float | None,
    owner: str,
    now: float,
    lease_seconds: float,
) -> None:
    """Raise ``RunFinishedError`` for an ended run, or ``RunOwnedError`` when a live process
    other than ``owner`` holds it (its heartbeat is fresh and it is not a dead local pid)."""
    if status.is_terminal:
        raise RunFinishedError(
            f"Run {run_id!r} has already finished ({status.value}); there is nothing to "
            "resume. Read its result with `await store.get_run(run_id)`."
        )
    if (
        current is not None
        and current != owner
        and owner_is_alive(current, heartbeat, now, lease_seconds)
    ):
        assert heartbeat is not None
        raise RunOwnedError(
            f"Run {run_id!r} is being executed by {current!r}, whose last heartbeat was "
            f"{now - heartbeat:.1f}s ago. Wait for it to finish, or resume the run after that "
            f"process has stopped (its claim lapses {lease_seconds:g}s after its last "
            "heartbeat)."
        )
