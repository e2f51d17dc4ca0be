"""Where runs are recorded: the :class:`Store` protocol and the in-memory store.

Durable stores (SQLite, PostgreSQL) live beside these and are imported only when asked for.
"""

from riverbed.stores.base import JournalEntry, RunRecord, RunStatus, StepCommit, Store
from riverbed.stores.memory import MemoryStore

__all__ = ["JournalEntry", "MemoryStore", "RunRecord", "RunStatus", "StepCommit", "Store"]
