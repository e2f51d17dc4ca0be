"""SQL for ``ctx.memo``: a step's expensive sub-results, kept per delivery.

Each call is its own small transaction, committed as soon as the value is known, so an
attempt that crashes after an LLM answered reuses the answer on its retry.
"""

from __future__ import annotations

import sqlite3


def get_memo(conn: sqlite3.Connection, run_id: str, invocation: str, name: str) -> str | None:
    row = conn.execute(
        "SELECT value FROM memos WHERE run_id = ? AND invocation = ? AND name = ?",
        (run_id, invocation, name),
    ).fetchone()
    return None if row is None else str(row[0])


def put_memo(
    conn: sqlite3.Connection, run_id: str, invocation: str, name: str, value: str, now: float
) -> str:
    # The first value written wins: a concurrent or zombie attempt gets the same answer.
    conn.execute(
        "INSERT OR IGNORE INTO memos (run_id, invocation, name, value, created_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (run_id, invocation, name, value, now),
    )
    stored = get_memo(conn, run_id, invocation, name)
    assert stored is not None
    return stored
