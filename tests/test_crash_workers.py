"""Crash test of worker processes sharing one store (issue 6's supervisor, on SQLite).

The crash workload's runs are submitted without running them; several worker processes
(``tests/crash/worker_proc.py``) take them. A supervisor SIGKILLs a random worker every
0.2-0.8 s and starts a new one, until every run has ended; then the invariants of research
§5.1 are checked on the rows (the same checks as ``test_crash_sqlite.py``).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from riverbed.stores.base import RunStatus
from test_crash_sqlite import ROOT, check_invariants, workload

WORKERS = 3
N_RUNS = 600
MIN_KILLS = 8
MAX_SECONDS = 150.0


def start_worker(url: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.crash.worker_proc", url],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    BORN[process.pid] = time.monotonic()
    return process


#: when each worker was started: one stopped before it set up its signal handlers (in
#: its first second) may die of the SIGTERM instead of exiting cleanly
BORN: dict[int, float] = {}


def unfinished(db: Path) -> int:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return int(conn.execute("SELECT count(*) FROM runs WHERE status = 'running'").fetchone()[0])
    finally:
        conn.close()


async def test_workers_killed_at_random_lose_nothing(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    url = f"sqlite:///{db}?lease_seconds=1"
    client = workload.CrashFlow(store=url, workflow_name=workload.WORKFLOW_NAME)
    for index, run_id in enumerate(workload.run_ids(N_RUNS)):
        await client.submit(workload.Begin(run_index=index), run_id=run_id)
    await client.store.close()

    rng = random.Random(6)
    workers = [start_worker(url) for _ in range(WORKERS)]
    killed: list[subprocess.Popen[str]] = []
    started = time.monotonic()
    try:
        while unfinished(db):
            assert time.monotonic() - started < MAX_SECONDS, (
                f"{unfinished(db)} runs unfinished after {MAX_SECONDS} s, {len(killed)} kills"
            )
            await asyncio.sleep(rng.uniform(0.2, 0.8))
            victim = rng.randrange(WORKERS)
            workers[victim].send_signal(signal.SIGKILL)
            workers[victim].wait()
            killed.append(workers[victim])
            workers[victim] = start_worker(url)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()

    for worker in workers:  # stopped by SIGTERM: a clean exit, no traceback
        stderr = worker.stderr.read() if worker.stderr else ""
        young = time.monotonic() - BORN[worker.pid] < 2.0
        assert worker.returncode == 0 or (young and worker.returncode == -signal.SIGTERM), stderr
        assert "Traceback" not in stderr, stderr
    for worker in [*killed, *workers]:
        if worker.stderr:
            worker.stderr.close()

    found = check_invariants(db, N_RUNS)
    assert found.violations == []
    assert len(killed) >= MIN_KILLS, f"only {len(killed)} kills: the workload ran too fast"
    conn = sqlite3.connect(db)
    statuses = {row[0] for row in conn.execute("SELECT DISTINCT status FROM runs")}
    conn.close()
    assert statuses == {RunStatus.COMPLETED.value}
    print(f"{len(killed)} kills, {found.retried} retried deliveries, {found.commits} commits")
