"""Worker benchmark: runs executed by worker processes sharing one store.

    python benchmarks/workers.py [--stores sqlite,postgres] [--pg-url URL] [--runs N]
                                 [--workers 1,2,4] [--samples N] [--json PATH]

For each store, in one run of this script:

- **hand-off latency**: with idle workers up, one run at a time is submitted from this
  process (``Workflow.submit``); the latency is from the end of the submit (its row is
  committed) to the start of the run's first step in a worker, on the wall clock of one
  machine. Workers wake by polling (SQLite, every 0.1 s here) or by ``LISTEN/NOTIFY``
  (PostgreSQL), so this shows what the wake-up costs. p50 and p99 over ``--samples`` runs.
- **step commits per second** with 1, 2 and 4 worker processes: ``--runs`` runs of a
  10-step chain are submitted, and the wall time from the first submit to the last run's end
  gives commits (steps) per second. Does throughput grow with workers until the database is
  the bottleneck? Two series: steps that do nothing (CPU-bound: the machine's cores, shared
  with the database here, are the limit) and steps that each await 20 ms of I/O with 8
  slots per worker (the shape of LLM agents: each worker's capacity is the limit, so
  workers add throughput until the database is saturated).

Each worker is ``python benchmarks/workers.py --serve URL``. Every run's result is checked.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from riverbed import (  # noqa: E402
    Context,
    Event,
    RunStatus,
    StartEvent,
    StopEvent,
    Workflow,
    step,
)

CHAIN = 10


class Hop(Event):
    n: int


class Chain(Workflow):
    """S1's shape: ten steps in a row."""

    @step
    async def first(self, ev: StartEvent) -> Hop:
        return Hop(n=1)

    @step
    async def hop(self, ev: Hop) -> Hop | StopEvent:
        if ev.n + 1 < CHAIN:
            return Hop(n=ev.n + 1)
        return StopEvent(result=ev.n + 1)


#: each step of WaitingChain awaits this long (an LLM call, an HTTP request)
WAIT_SECONDS = 0.02
#: runs a worker executes at once in the waiting series (its capacity)
WAIT_SLOTS = 8


class WaitingChain(Workflow):
    """Ten steps in a row, each waiting on I/O for WAIT_SECONDS: the shape of agents and
    pipelines, where a worker's capacity (its slots) bounds throughput, not its CPU."""

    @step
    async def first(self, ev: StartEvent) -> Hop:
        await asyncio.sleep(WAIT_SECONDS)
        return Hop(n=1)

    @step
    async def hop(self, ev: Hop) -> Hop | StopEvent:
        await asyncio.sleep(WAIT_SECONDS)
        if ev.n + 1 < CHAIN:
            return Hop(n=ev.n + 1)
        return StopEvent(result=ev.n + 1)


class Ping(Workflow):
    """One step that says when it started."""

    @step
    async def ping(self, ctx: Context, ev: StartEvent) -> StopEvent:
        return StopEvent(result=time.time())


def serve(url: str, slots: int) -> None:
    from riverbed.worker import run_worker

    print("ready", flush=True)
    run_worker(
        [
            Chain(workflow_name="bench-chain"),
            WaitingChain(workflow_name="bench-wait"),
            Ping(workflow_name="bench-ping"),
        ],
        url,
        slots=slots,
        poll_interval=0.1,
    )


def start_workers(url: str, n: int, slots: int = 64) -> list[subprocess.Popen[str]]:
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--serve", url, str(slots)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for _ in range(n)
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
    time.sleep(1.0)  # imports done, first poll made, LISTEN set up
    return procs


def stop_workers(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(timeout=20)
        if proc.stdout is not None:
            proc.stdout.close()


async def wait_done(workflow: Workflow, run_ids: list[str], timeout: float = 600) -> float:
    store = workflow.store
    pending = set(run_ids)
    deadline = time.monotonic() + timeout
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} runs did not finish")
        ended = list(pending)
        if len(pending) > 1:
            # One query for all of them (reading each run every 10 ms would take the CPU
            # the workers measured here need): only the runs no longer running are read.
            running = await store.list_runs(
                workflow=workflow.workflow_name, status=RunStatus.RUNNING, limit=100_000
            )
            ended = list(pending - {r.run_id for r in running})
        for run_id in ended:
            record = await store.get_run(run_id)
            if record.status.is_terminal:
                if record.status.value != "completed":
                    raise RuntimeError(f"run {run_id} ended {record.status.value}: {record.error}")
                pending.discard(run_id)
        if pending:
            await asyncio.sleep(0.01)
    return time.time()


async def handoff(url: str, samples: int) -> dict[str, float]:
    client = Ping(store=url, workflow_name="bench-ping")
    procs = start_workers(url, 1)
    latencies: list[float] = []
    try:
        for _ in range(samples):
            run_id = await client.submit()
            submitted = time.time()
            await wait_done(client, [run_id])
            started = json.loads((await client.store.get_run(run_id)).result)
            latencies.append((started - submitted) * 1000)
    finally:
        stop_workers(procs)
        await client.store.close()
    latencies.sort()
    return {
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "samples": len(latencies),
    }


async def throughput(url: str, workers: int, runs: int, waiting: bool = False) -> dict[str, float]:
    if waiting:
        client: Workflow = WaitingChain(store=url, workflow_name="bench-wait")
        procs = start_workers(url, workers, WAIT_SLOTS)
    else:
        client = Chain(store=url, workflow_name="bench-chain")
        procs = start_workers(url, workers)
    pids = [p.pid for p in procs]
    try:
        # The runs are submitted concurrently, so that the client's submit rate is not
        # what limits the workers; the clock runs from the first submit to the last end.
        cpu_before = (cpu_seconds(pids), cpu_seconds(comm="postgres"), time.process_time())
        began = time.time()
        ids = list(await asyncio.gather(*(client.submit() for _ in range(runs))))
        ended = await wait_done(client, ids)
        cpu_after = (cpu_seconds(pids), cpu_seconds(comm="postgres"), time.process_time())
        for run_id in ids:
            assert json.loads((await client.store.get_run(run_id)).result) == CHAIN
    finally:
        stop_workers(procs)
        await client.store.close()
    seconds = ended - began
    worker_cpu, server_cpu, client_cpu = (a - b for a, b in zip(cpu_after, cpu_before, strict=True))
    return {
        "workers": workers,
        "runs": runs,
        "seconds": seconds,
        "commits_per_s": runs * CHAIN / seconds,
        # CPU seconds used per wall second: how much of the machine's cores each took
        "cores_workers": worker_cpu / seconds,
        "cores_postgres": server_cpu / seconds,
        "cores_client": client_cpu / seconds,
        "cores_machine": os.cpu_count() or 1,
    }


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int] | None = None, comm: str | None = None) -> float:
    """User + system CPU seconds of the processes ``pids`` (and of every process named
    ``comm``, e.g. the PostgreSQL server's), read from /proc; processes that are gone
    count 0. Returns 0.0 where there is no /proc."""
    total = 0
    chosen = set(pids or [])
    try:
        entries = os.listdir("/proc")
    except OSError:
        return 0.0
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        if int(entry) in chosen or (comm is not None and name == comm):
            fields = stat[stat.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICK


def fresh_sqlite(tmp: Path, name: str) -> str:
    return f"sqlite:///{tmp / name}.db"


async def fresh_postgres(base: str, name: str) -> str:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(base)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    head, _, _ = base.rpartition("/")
    return f"{head}/{name}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--stores", default="sqlite", help="sqlite,postgres")
    parser.add_argument("--pg-url", default=os.environ.get("RIVERBED_TEST_PG_URL"))
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for store in args.stores.split(","):
            n = 0

            async def fresh(kind: str = store) -> str:
                nonlocal n
                n += 1
                if kind == "sqlite":
                    return fresh_sqlite(Path(tmp), f"bench{n}")
                if not args.pg_url:
                    raise SystemExit("--pg-url (or RIVERBED_TEST_PG_URL) is needed for postgres")
                return await fresh_postgres(args.pg_url, f"riverbed_bench_{n}")

            entry: dict[str, Any] = {"handoff": await handoff(await fresh(), args.samples)}
            print(f"{store}: hand-off {entry['handoff']}", flush=True)
            entry["throughput"] = []
            for workers in [int(w) for w in args.workers.split(",")]:
                row = await throughput(await fresh(), workers, args.runs)
                entry["throughput"].append(row)
                print(f"{store}: {row}", flush=True)
            entry["waiting"] = []
            for workers in [int(w) for w in args.workers.split(",")]:
                row = await throughput(await fresh(), workers, args.runs, waiting=True)
                entry["waiting"].append(row)
                print(f"{store}: waiting steps: {row}", flush=True)
            results[store] = entry
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        asyncio.run(main())
