"""``riverbed serve`` and ``riverbed worker``: thin launchers of the server and worker
extras, imported only when these commands run."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from riverbed.cli.common import UsageError
from riverbed.cli.loading import load_workflow
from riverbed.workflow import Workflow

__all__ = ["serve", "work"]


def _load_all(specs: Sequence[str]) -> list[Workflow]:
    return [load_workflow(spec) for spec in specs]


def _entry(module_name: str, function: str, command: str, extra: str) -> Any:
    """``module_name.function``, imported now; a missing extra is a one-line error."""
    try:
        module = importlib.import_module(module_name)
        return getattr(module, function)
    except (ImportError, AttributeError) as exc:
        raise UsageError(
            f"riverbed {command} needs the {extra} extra: pip install 'riverbed[{extra}]' "
            f"({type(exc).__name__}: {exc})"
        ) from exc


def _finish(outcome: Any) -> None:
    if inspect.iscoroutine(outcome):
        asyncio.run(outcome)


def serve(
    specs: Sequence[str],
    store_url: str | None,
    host: str,
    port: int,
    token: str | None,
    *,
    execute: bool = True,
) -> int:
    """Load the workflows and hand them to ``riverbed.server.run_server``."""
    workflows = _load_all(specs)
    run_server = _entry("riverbed.server", "run_server", "serve", "server")
    token = token or os.environ.get("RIVERBED_TOKEN")
    if execute:
        _finish(run_server(workflows, store_url, host, port, token))
    else:
        _finish(run_server(workflows, store_url, host, port, token, execute=False))
    return 0


def work(specs: Sequence[str], store_url: str | None, slots: int) -> int:
    """Load the workflows and hand them to ``riverbed.worker.run_worker``."""
    if store_url is None:
        raise UsageError(
            "riverbed worker needs the shared store: pass --store URL or set RIVERBED_STORE."
        )
    if slots < 1:
        raise UsageError(f"--slots must be at least 1, got {slots}.")
    workflows = _load_all(specs)
    run_worker = _entry("riverbed.worker", "run_worker", "worker", "postgres")
    # A worker is a service: say on stderr which runs it takes, parks and releases, and
    # every warning (a fenced commit, a run taken over, the store unreachable).
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log = logging.getLogger("riverbed")
    log.addHandler(handler)
    if log.level == logging.NOTSET or log.level > logging.WARNING:
        log.setLevel(logging.WARNING)
    logging.getLogger("riverbed.worker").setLevel(logging.INFO)
    try:
        _finish(run_worker(workflows, store_url, slots))
    finally:
        log.removeHandler(handler)
    return 0
