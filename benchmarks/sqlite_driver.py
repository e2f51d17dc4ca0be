"""Stdlib sqlite3 on one writer thread vs aiosqlite, for a transaction shaped like a commit.

Run: ``benchmarks/.venv/bin/pip install aiosqlite`` once, then
``benchmarks/.venv/bin/python benchmarks/sqlite_driver.py``. Results: docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiosqlite

from riverbed.stores._sqlite_conn import SqliteConnections

N = 2000
SCHEMA = [
    "CREATE TABLE b_runs (id TEXT PRIMARY KEY, state TEXT, n INT)",
    "CREATE TABLE b_events (run TEXT, seq INT, payload TEXT, PRIMARY KEY (run, seq))",
    "CREATE TABLE b_deliveries (run TEXT, seq INT, step TEXT, status TEXT, "
    "PRIMARY KEY (run, seq, step))",
]
STATEMENTS = [
    ("UPDATE b_runs SET state = ?, n = n + 1 WHERE id = 'r'", lambda i: (f'{{"n": {i}}}',)),
    ("INSERT INTO b_events VALUES ('r', ?, '{}')", lambda i: (i,)),
    ("INSERT INTO b_deliveries VALUES ('r', ?, 's', 'pending')", lambda i: (i,)),
    ("UPDATE b_deliveries SET status = 'done' WHERE run = 'r' AND seq = ?", lambda i: (i - 1,)),
]


def _transaction(conn: Any, i: int) -> None:
    for sql, params in STATEMENTS:
        conn.execute(sql, params(i))


async def writer_thread(path: Path) -> float:
    """riverbed's way: the whole transaction is one call on the writer thread."""
    db = SqliteConnections(path, "NORMAL", 5.0)
    await db.open()

    def setup(conn: Any) -> None:
        for sql in SCHEMA:
            conn.execute(sql)
        conn.execute("INSERT INTO b_runs VALUES ('r', '{}', 0)")

    await db.write(setup, "setup")
    start = time.perf_counter()
    for i in range(1, N):
        await db.write(lambda conn, i=i: _transaction(conn, i), "transaction")
    elapsed = time.perf_counter() - start
    await db.close()
    return elapsed / N * 1e6


async def with_aiosqlite(path: Path) -> float:
    """aiosqlite: one await, so one thread hop, per statement."""
    async with aiosqlite.connect(path, isolation_level=None) as db:
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        for sql in SCHEMA:
            await db.execute(sql)
        await db.execute("INSERT INTO b_runs VALUES ('r', '{}', 0)")
        start = time.perf_counter()
        for i in range(1, N):
            await db.execute("BEGIN IMMEDIATE")
            for sql, params in STATEMENTS:
                await db.execute(sql, params(i))
            await db.execute("COMMIT")
        return (time.perf_counter() - start) / N * 1e6


async def main() -> None:
    drivers = {"writer thread": writer_thread, "aiosqlite": with_aiosqlite}
    results: dict[str, list[float]] = {name: [] for name in drivers}
    for _ in range(5):  # interleaved repetitions
        for name, measure in drivers.items():
            results[name].append(await measure(Path(tempfile.mkdtemp()) / "bench.db"))
    for name, values in results.items():
        print(f"{name}: median {statistics.median(values):.0f} us per transaction")


if __name__ == "__main__":
    asyncio.run(main())
