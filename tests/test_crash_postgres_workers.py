"""Crash test of worker processes sharing one PostgreSQL schema (issue 6), like
``tests/test_crash_workers.py`` on SQLite, plus a crash of the server itself.

The crash workload's runs are submitted without running them; three worker processes
(``tests/crash/worker_proc.py``) take them. A supervisor SIGKILLs a random worker every
0.3-1.5 s and starts a new one, and once, mid-run, stops the PostgreSQL server with
``pg_ctl stop -m immediate`` (a crash: no checkpoint, the next start runs crash recovery)
and starts it again; the workers must ride it out. Runs are fed in while fewer than
``MIN_KILLS`` kills have happened, so every run of the test sees that many kills; then the
supervisor goes on killing until every run has ended. The invariants of research §5.1 are
then checked on the rows by SQLite's checker (the rows are copied, as in
``test_crash_postgres.py``).

With an external server (``RIVERBED_TEST_PG_URL``) the server is not crashed: the test
says so and checks the worker kills only.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import asyncpg

import test_crash_sqlite as crash
from pg_cluster import ServerControl, pg_control, pg_server, pg_url  # noqa: F401 (fixtures)
from riverbed.stores.base import RunStatus
from test_crash_postgres import copy_to_sqlite

workload = crash.workload

WORKERS = 3
#: runs per worker at once: few, so the rows to check stay few while the kills go on
SLOTS = 4
#: worker kills per run of the test; runs are fed in until there were this many
MIN_KILLS = 100
#: runs submitted up front, and the backlog of unfinished runs kept while feeding
FIRST_RUNS = 30
BACKLOG = 20
#: the server is crashed after this many worker kills
SERVER_CRASH_AT = 35
MAX_SECONDS = 240.0


class Workers:
    """The worker processes, each logging to a file of its own (a pipe could fill up and
    block a worker that logs while the server is away)."""

    def __init__(self, url: str, logs: Path) -> None:
        self.url, self.logs = url, logs
        self.started = 0
        self.born: dict[int, float] = {}
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []
        self._files: list[IO[bytes]] = []

    def start(self) -> tuple[subprocess.Popen[bytes], Path]:
        self.started += 1
        log = self.logs / f"worker-{self.started}.log"
        out = log.open("wb")
        self._files.append(out)
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.crash.worker_proc", self.url, str(SLOTS)],
            cwd=crash.ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.DEVNULL,
            stderr=out,
        )
        self.born[proc.pid] = time.monotonic()
        return proc, log

    def close(self) -> None:
        for out in self._files:
            out.close()


class Unfinished:
    """Counts the runs still running, on a connection of the test's own (made again after
    the server's restart); None while the server cannot answer."""

    def __init__(self, url: str) -> None:
        base, _, query = url.partition("?")
        self.base = base
        self.schema = dict(p.split("=") for p in query.split("&"))["schema"]
        self.conn: asyncpg.Connection | None = None

    async def __call__(self) -> int | None:
        try:
            if self.conn is None or self.conn.is_closed():
                self.conn = await asyncpg.connect(
                    self.base, timeout=5, server_settings={"search_path": self.schema}
                )
            return int(
                await self.conn.fetchval("SELECT count(*) FROM runs WHERE status = 'running'")
            )
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            if self.conn is not None:
                self.conn.terminate()
                self.conn = None
            return None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.terminate()


async def test_workers_and_the_server_killed_at_random_lose_nothing(
    pg_url: str,  # noqa: F811
    pg_control: ServerControl | str,  # noqa: F811
    tmp_path: Path,
) -> None:
    # connect_timeout: the workers' transactions wait out the server's restart.
    url = f"{pg_url}&lease_seconds=2&connect_timeout=60"
    client = workload.CrashFlow(store=url, workflow_name=workload.WORKFLOW_NAME)
    submitted = 0

    async def feed(n: int) -> None:
        nonlocal submitted
        ids = workload.run_ids(submitted + n)[submitted:]
        await asyncio.gather(  # at once: the supervisor's pace is the kills'
            *(
                client.submit(workload.Begin(run_index=submitted + i), run_id=run_id)
                for i, run_id in enumerate(ids)
            )
        )
        submitted += n

    await feed(FIRST_RUNS)
    rng = random.Random(6)
    pool = Workers(url, tmp_path)
    workers = [pool.start() for _ in range(WORKERS)]
    kills, server_crash, unfinished_at_crash = 0, None, None
    count_unfinished = Unfinished(url)
    started = time.monotonic()
    timed_out: str | None = None
    try:
        while True:
            left = await count_unfinished()
            if left == 0 and kills >= MIN_KILLS:
                break
            if time.monotonic() - started >= MAX_SECONDS:
                # Stop here, but check the rows first: they say why a run did not end.
                timed_out = f"{left} runs unfinished after {MAX_SECONDS} s, {kills} kills"
                break
            if left is not None and kills < MIN_KILLS and left < BACKLOG:
                await feed(BACKLOG)  # keep the workers busy until the kills are done
            await asyncio.sleep(rng.uniform(0.3, 1.5))
            victim = rng.randrange(WORKERS)
            workers[victim][0].send_signal(signal.SIGKILL)
            workers[victim][0].wait()
            kills += 1
            workers[victim] = pool.start()
            if kills == SERVER_CRASH_AT and isinstance(pg_control, ServerControl):
                unfinished_at_crash = await count_unfinished()
                began = time.monotonic()
                await asyncio.to_thread(pg_control.stop, "immediate")
                await asyncio.sleep(1.0)  # the workers find no server for a while
                await asyncio.to_thread(pg_control.start)
                server_crash = time.monotonic() - began
    finally:
        count_unfinished.close()
        await client.store.close()
        for proc, _ in workers:
            proc.send_signal(signal.SIGTERM)
        for proc, _ in workers:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        pool.close()
    seconds = time.monotonic() - started

    if timed_out is not None:
        scratch = tmp_path / "copy.db"
        await copy_to_sqlite(pg_url, scratch)
        found = crash.check_invariants(scratch, submitted)
        raise AssertionError(
            f"{timed_out}; {len(found.violations)} violations {found.violations[:10]}; "
            f"the runs still running: {await _stuck(pg_url)}; "
            f"worker logs: {_log_tails(tmp_path)}"
        )

    for proc, log in workers:  # stopped by SIGTERM: a clean exit, no traceback
        text = log.read_text()
        young = time.monotonic() - pool.born[proc.pid] < 2.0
        assert proc.returncode == 0 or (young and proc.returncode == -signal.SIGTERM), text
        assert "Traceback" not in text, text

    scratch = tmp_path / "copy.db"
    await copy_to_sqlite(pg_url, scratch)
    found = crash.check_invariants(scratch, submitted)
    if isinstance(pg_control, ServerControl):
        restart = (
            f"server crashed after kill {SERVER_CRASH_AT} with {unfinished_at_crash} runs "
            f"unfinished, back in {server_crash:.1f} s"
        )
    else:
        restart = f"server crash skipped: {pg_control}"
    print(
        f"\npostgres workers: {kills} kills of {pool.started} workers, {restart}; "
        f"{submitted} runs, {found.commits} commits, {found.retried} deliveries retried in "
        f"{seconds:.1f} s; {len(found.violations)} violations"
    )
    if found.violations:  # say why runs failed: the errors they recorded
        errors = await _unfinished(pg_url)
        raise AssertionError(
            f"{len(found.violations)} violations, the first: {found.violations[:10]}; "
            f"runs not completed: {errors}"
        )
    assert kills >= MIN_KILLS
    assert found.retried > 0  # the kills interrupted real work
    if isinstance(pg_control, ServerControl):
        assert server_crash is not None
        assert unfinished_at_crash  # it crashed mid-run
    statuses = await _statuses(pg_url)
    assert statuses == {RunStatus.COMPLETED.value}


async def _unfinished(url: str) -> list[tuple[str, str, str | None]]:
    """Up to 5 runs that did not complete, with their status and recorded error."""
    base, _, query = url.partition("?")
    conn = await asyncpg.connect(base, server_settings={"search_path": query.split("=")[1]})
    try:
        rows = await conn.fetch(
            "SELECT run_id, status, error FROM runs WHERE status <> 'completed' LIMIT 5"
        )
        return [(r[0], r[1], r[2]) for r in rows]
    finally:
        await conn.close()


async def _stuck(url: str) -> list[str]:
    """The rows of up to 3 runs still running: their owner, and what is left to do."""
    base, _, query = url.partition("?")
    conn = await asyncpg.connect(base, server_settings={"search_path": query.split("=")[1]})
    try:
        now = time.time()
        found = []
        runs = await conn.fetch(
            "SELECT run_id, owner, owner_heartbeat, next_seq FROM runs"
            " WHERE status = 'running' LIMIT 3"
        )
        for run_id, owner, heartbeat, next_seq in runs:
            deliveries = await conn.fetch(
                "SELECT event_seq, step, status, attempts, claim_token IS NOT NULL,"
                " visible_at, last_error FROM deliveries WHERE run_id = $1"
                " AND status <> 'done' ORDER BY event_seq",
                run_id,
            )
            rows = [
                f"{d[0]}/{d[1]} {d[2]} attempts={d[3]} claimed={d[4]}"
                f" visible_in={d[5] - now:.1f}s error={d[6]!r}"
                for d in deliveries
            ]
            waiters = await conn.fetch(
                "SELECT waiter_id, step, resolved_seq FROM waiters WHERE run_id = $1", run_id
            )
            collected = await conn.fetchval(
                "SELECT count(*) FROM collected WHERE run_id = $1", run_id
            )
            heartbeat_age = None if heartbeat is None else round(now - heartbeat, 1)
            found.append(
                f"{run_id}: owner={owner} heartbeat {heartbeat_age} s ago, next_seq="
                f"{next_seq}, open deliveries {rows}, waiters {[tuple(w) for w in waiters]},"
                f" {collected} collected"
            )
        return found
    finally:
        await conn.close()


def _log_tails(logs: Path) -> dict[str, str]:
    """The last lines of the worker logs that are not empty."""
    tails = {}
    for log in sorted(logs.glob("worker-*.log")):
        text = log.read_text().strip()
        if text:
            tails[log.name] = text[-1500:]
    return tails


async def _statuses(url: str) -> set[str]:
    base, _, query = url.partition("?")
    conn = await asyncpg.connect(base, server_settings={"search_path": query.split("=")[1]})
    try:
        return {row[0] for row in await conn.fetch("SELECT DISTINCT status FROM runs")}
    finally:
        await conn.close()
