"""Stores from URLs: ``memory://`` and ``sqlite:///path.db`` (PostgreSQL comes later).

Backends are imported only when their scheme is used, so the core never loads them.
"""

from __future__ import annotations

from typing import Any

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
    raise StoreError(
        f"Unknown store URL {url!r}. Use sqlite:///path/to/runs.db for durable runs on one "
        "machine, or memory:// for runs kept in memory."
    )
