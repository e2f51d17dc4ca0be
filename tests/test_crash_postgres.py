"""Crash tests of durable runs on PostgreSQL (research memo §5.2), like
``tests/test_crash_sqlite.py``: the same workload (``tests/crash/workload.py``) runs in a
child process that SIGKILLs itself at random crash points, against a PostgreSQL schema;
the supervisor starts it again until one exits 0, then checks every promise on the rows.

The checker is SQLite's own (:func:`test_crash_sqlite.check_invariants`): the PostgreSQL
rows are copied into a scratch SQLite file first, so both stores are held to exactly the
same invariants by the same code. A process killed inside a transaction (``in_commit``)
leaves the server to roll it back when the connection drops.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest

import test_crash_sqlite as crash
from pg_cluster import drop_schema, pg_server, pg_url  # noqa: F401 (fixtures)
from riverbed.testing import crashpoints_env

workload = crash.workload

# The workload builds a SQLite URL from its first argument; the child swaps in the
# PostgreSQL URL when the workflow is constructed, and otherwise runs it unchanged.
CHILD = """
import asyncio, sys
from tests.crash import workload

url, n_runs = sys.argv[1], int(sys.argv[2])
plain_init = workload.CrashFlow.__init__

def init(self, *args, store=None, **kwargs):
    plain_init(self, *args, store=url, **kwargs)

workload.CrashFlow.__init__ = init
sys.exit(asyncio.run(workload.main("-", n_runs)))
"""

#: the tables (and columns) the SQLite checker reads
TABLES = {
    "runs": "run_id, status, result, state, state_version, next_commit_seq, stream_next",
    "events": "run_id, seq, type_key, payload",
    "deliveries": "run_id, event_seq, step, status, attempts",
    "commits": "run_id, commit_seq, event_seq, step, attempt",
    "stream": "run_id, seq, commit_seq, payload",
    "collected": "run_id, step, buffer_id, event_seq",
}


def run_child(url: str, n_runs: int, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [sys.executable, "-c", CHILD, url, str(n_runs)],
            cwd=crash.ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=crash.CHILD_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the workload hung; its stderr:\n{exc.stderr!r}")


def supervise(
    url: str, n_runs: int, points: dict[str, float], seed: int, max_seconds: float = 90.0
) -> crash.Supervised:
    """Start the workload until it exits 0; any exit but SIGKILL fails the test."""
    result = crash.Supervised()
    started = time.monotonic()
    while True:
        if time.monotonic() - started > max_seconds:
            pytest.fail(
                f"the workload did not finish: {result.starts} starts, {result.kills} kills"
            )
        env = {
            **os.environ,
            **crashpoints_env(**points),
            workload.SEED_ENV: str(seed * 100_000 + result.starts),
        }
        result.starts += 1
        child = run_child(url, n_runs, env)
        result.stderr.append(child.stderr)
        if child.returncode == -signal.SIGKILL:
            result.kills += 1
            continue
        assert child.returncode == 0, f"exit {child.returncode}:\n{child.stderr}"
        result.seconds = time.monotonic() - started
        return result


async def copy_to_sqlite(url: str, target: Path) -> None:
    """The rows the checker reads, from the test's schema into a SQLite file."""
    base, _, query = url.partition("?")
    conn = await asyncpg.connect(base, server_settings={"search_path": query.split("=")[1]})
    lite = sqlite3.connect(target)
    try:
        for table, columns in TABLES.items():
            rows = await conn.fetch(f"SELECT {columns} FROM {table}")
            lite.execute(f"CREATE TABLE {table} ({columns})")
            marks = ", ".join("?" for _ in columns.split(","))
            lite.executemany(f"INSERT INTO {table} VALUES ({marks})", [tuple(r) for r in rows])
        lite.commit()
    finally:
        lite.close()
        await conn.close()


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    return tmp_path / "copy.db"


N_RUNS = 8


async def test_sigkill_at_random_points_breaks_no_promise(pg_url: str, scratch: Path) -> None:  # noqa: F811
    points = {"after_claim": 0.01, "before_commit": 0.01, "in_commit": 0.015, "after_commit": 0.01}
    supervised = supervise(pg_url, N_RUNS, points, seed=3)
    await copy_to_sqlite(pg_url, scratch)
    found = crash.check_invariants(scratch, N_RUNS)
    print(
        f"\npostgres: {supervised.kills} kills in {supervised.starts} starts, "
        f"{supervised.seconds:.1f} s; {found.commits} commits, {found.retried} deliveries "
        f"retried, {found.moot} moot audits; {len(found.violations)} violations"
    )
    assert found.violations == []
    crash.assert_clean_stderr(supervised)
    assert found.retried > 0  # the crashes interrupted real work
    assert supervised.kills >= 10


async def test_a_kill_inside_the_commit_transaction_is_rolled_back(
    pg_url: str,  # noqa: F811
    scratch: Path,
) -> None:
    """Die with the commit's every statement sent but not COMMIT: the server must roll it
    all back when the connection drops; the next process runs the step again."""
    env = {**os.environ, **crashpoints_env(in_commit=1.0)}
    child = run_child(pg_url, 1, env)
    assert child.returncode == -signal.SIGKILL, child.stderr
    base, _, query = pg_url.partition("?")
    conn = await asyncpg.connect(base, server_settings={"search_path": query.split("=")[1]})
    try:
        begin = await conn.fetchrow("SELECT status, attempts FROM deliveries WHERE step = 'begin'")
        counts = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM commits), (SELECT count(*) FROM events),"
            " (SELECT next_commit_seq FROM runs)"
        )
    finally:
        await conn.close()
    assert tuple(begin) == ("running", 1)
    assert tuple(counts) == (0, 1, 1)
    clean = {k: v for k, v in os.environ.items() if k != "RIVERBED_CRASHPOINTS"}
    assert run_child(pg_url, 1, clean).returncode == 0
    await copy_to_sqlite(pg_url, scratch)
    assert crash.check_invariants(scratch, 1).violations == []
