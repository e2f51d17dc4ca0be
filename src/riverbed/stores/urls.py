"""Stores from URLs: ``memory://``, ``sqlite:///path.db`` and ``postgresql://...``.

Backends are imported only when their scheme is used, so the core never loads them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from riverbed.errors import StoreError

__all__ = ["store_from_url"]


def store_from_url(url: str) -> Any:
    """The store a URL names. Raises :class:`~riverbed.errors.StoreError` for an unknown
    scheme, naming the ones riverbed knows."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "memory":
        from riverbed.stores.memory import MemoryStore

        return MemoryStore()
    if scheme == "sqlite":
        from riverbed.stores.sqlite import sqlite_store_from_url

        return sqlite_store_from_url(url)
    if scheme in ("postgresql", "postgres"):
        from riverbed.stores.postgres import postgres_store_from_url

        return postgres_store_from_url(url)
    raise StoreError(
        f"Unknown store URL {_redacted(url)!r}. Use sqlite:///path/to/runs.db for durable runs "
        "on one machine, postgresql://user@host:5432/db for runs shared by many machines, or "
        "memory:// for runs kept in memory."
    )


def _redacted(url: str) -> str:
    """``url`` with any password replaced by ``***``, fit for an error message."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if not password:
        return url
    return url.replace(f":{password}@", ":***@", 1)
