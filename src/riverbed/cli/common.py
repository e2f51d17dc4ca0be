"""What every ``riverbed`` command shares: the usage error, exit codes, the store from
``--store`` / ``RIVERBED_STORE``, and printing JSON.

The CLI is the composition root: it is the only place that turns a store URL into a store.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from pydantic_core import to_jsonable_python

from riverbed.errors import StoreError, WorkflowError
from riverbed.workflow import Workflow

__all__ = [
    "EXIT_CANCELLED",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TIMED_OUT",
    "EXIT_USAGE",
    "STORE_ENV",
    "UsageError",
    "describe_store",
    "durable_store",
    "json_text",
    "one_line",
    "open_store",
    "require_rich",
    "run_async",
    "store_url",
    "use_store",
]

EXIT_OK = 0
#: the run failed (a step raised for good)
EXIT_FAILED = 1
#: bad input: a spec, an argument, a store URL or a run id; nothing was run
EXIT_USAGE = 2
#: the run exceeded the workflow's timeout
EXIT_TIMED_OUT = 3
#: the run was cancelled (``riverbed runs cancel``), or needs input nobody can give
EXIT_CANCELLED = 4
#: Ctrl-C (128 + SIGINT, as shells report it)
EXIT_INTERRUPTED = 130

STORE_ENV = "RIVERBED_STORE"

T = TypeVar("T")


class UsageError(WorkflowError):
    """Bad input on the command line; the message says what and how to fix it. Exits 2."""


def one_line(exc: BaseException | str) -> str:
    """An error message folded onto one line."""
    return " ".join(str(exc).split())


def store_url(given: str | None) -> str | None:
    """``--store`` if given, else ``$RIVERBED_STORE``, else None."""
    return given or os.environ.get(STORE_ENV) or None


def _make_store(url: str) -> Any:
    from riverbed.stores.urls import store_from_url

    try:
        return store_from_url(url)
    except StoreError as exc:
        raise UsageError(one_line(exc)) from exc


def durable_store(url: str | None, *, must_exist: bool = True) -> Any:
    """The durable store ``url`` names (not opened yet). With ``must_exist`` a SQLite file
    that is not there is an error rather than a new empty database."""
    if url is None:
        raise UsageError(f"No run store given: pass --store sqlite:///runs.db or set {STORE_ENV}.")
    store = _make_store(url)
    if not getattr(store, "durable", False):
        raise UsageError(
            f"{url!r} keeps runs in memory only; reading recorded runs needs a durable store "
            "such as sqlite:///runs.db."
        )
    path = getattr(store, "path", None)
    if must_exist and isinstance(path, Path) and not path.exists():
        raise UsageError(f"No run store at {str(path)!r} ({url}). Check --store.")
    return store


def use_store(workflow: Workflow, url: str | None) -> None:
    """Record ``workflow``'s runs in the store ``url`` names (None: keep its own)."""
    if url is not None:
        workflow.use_store(_make_store(url))


async def open_store(store: Any) -> None:
    """Open a durable store, turning a file that cannot be used into a usage error."""
    if getattr(store, "durable", False) and not getattr(store, "is_open", False):
        try:
            await store.open()
        except StoreError as exc:
            raise UsageError(one_line(exc)) from exc


def run_async(coro: Coroutine[Any, Any, T], store: Any = None) -> T:
    """``asyncio.run(coro)``, then close ``store`` (its threads and files) if it is open."""

    async def main() -> T:
        try:
            return await coro
        finally:
            if getattr(store, "is_open", False):
                await store.close()

    return asyncio.run(main())


def absolute_store_url(url: str) -> str:
    """``url`` with a relative SQLite path made absolute, so it works from any directory."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url.startswith(prefix + "/"):
        return url
    path, mark, query = url[len(prefix) :].partition("?")
    if not path or path == ":memory:":
        return url
    return f"{prefix}{Path(path).resolve()}{mark}{query}"


def describe_store(store: Any) -> str:
    """A URL for ``store``, to tell a user how to come back to it."""
    path = getattr(store, "path", None)
    if isinstance(path, Path):
        return f"sqlite:///{path}"
    return str(getattr(store, "url", "")) or type(store).__name__


def json_text(value: Any, indent: int | None = 2) -> str:
    """``value`` as JSON; what JSON cannot hold is shown with ``repr``."""
    return json.dumps(to_jsonable_python(value, fallback=repr), indent=indent, ensure_ascii=False)


def require_rich(command: str) -> None:
    """Raise a usage error naming the ``cli`` extra if ``rich`` is not installed."""
    try:
        import rich  # noqa: F401
    except ImportError:
        raise UsageError(
            f"riverbed {command} needs the cli extra: pip install 'riverbed[cli]'"
        ) from None
