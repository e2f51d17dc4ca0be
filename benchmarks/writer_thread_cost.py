"""What the SQLite writer thread costs a chain of durable steps (a diagnostic, not a target).

    benchmarks/.venv/bin/python benchmarks/writer_thread_cost.py [--reps 5] [--runs 200]
                                                                  [--dir /var/tmp]

S1 (sequential 10-step runs) on SQLite ``synchronous=NORMAL`` spends most of a step waiting
for other threads: a step hands its commit to the store's writer thread and resumes when
the writer answers. This script measures S1 and the bare transaction of ``durable.py`` in
four set-ups, each repetition in fresh child processes (order rotated per repetition):

- ``shipped``: riverbed as it is;
- ``one CPU``: the same, with the whole process pinned to one CPU before any thread starts
  (``os.sched_setaffinity``), so the loop thread and the writer thread share a core;
- ``inline``: the writes run on the event loop's thread instead of the writer thread (the
  store's ``write`` replaced in the child; riverbed never does this: the writer thread is
  there so that the loop never waits for SQLite's locks, checkpoints or disk);
- the bare transaction, on the calling thread, free and pinned.

It prints us/step and each set-up's ratio to the bare transaction of the same repetition.
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

HERE = Path(__file__).resolve().parent
MODES = ("bare", "bare one CPU", "shipped", "shipped one CPU", "inline")


def child(mode: str, runs: int, folder: Path) -> float:
    """Run ``mode`` once in this (fresh) process; returns us/step."""
    if "one CPU" in mode:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # before any thread starts
    sys.path.insert(0, str(HERE))
    import durable
    import engines
    import scenarios

    from riverbed.stores.urls import store_from_url

    steps = runs * scenarios.CHAIN_STEPS
    if mode.startswith("bare"):
        path = folder / "bare.db"
        asyncio.run(durable.new_file(path, "NORMAL"))
        conn = durable.connect(path, "NORMAL")
        record, start = durable.start_row()
        durable.transaction(
            conn, durable.writes.create_run, record, start, (durable.STEP,), "{}",
            durable.STATE_KEY, durable.OWNER, None, time.time(),
        )
        for seq in range(1, 101):  # warm-up
            durable.transaction(conn, durable.bare_step, seq)
        t0 = time.perf_counter()
        for seq in range(101, 101 + steps):
            durable.transaction(conn, durable.bare_step, seq)
        elapsed = time.perf_counter() - t0
        conn.close()
        return elapsed / steps * 1e6

    if mode == "inline":
        from riverbed.stores import _sqlite_conn, _sqlite_writer

        async def write(self: _sqlite_conn.SqliteConnections, fn: object, doing: str) -> object:
            loop = asyncio.get_running_loop()
            future = loop.create_future()
            job = _sqlite_writer.Job(loop, future, tx=fn, doing=doing)  # type: ignore[arg-type]
            _sqlite_writer.run_group(self._write_conn, [job], self._translate)
            return await future

        _sqlite_conn.SqliteConnections.write = write  # type: ignore[assignment,method-assign]

    async def main() -> float:
        store = store_from_url(f"sqlite:///{folder / 'runs.db'}?synchronous=NORMAL")
        await store.open()
        api = engines.load("riverbed").api
        await scenarios.s1_chain(api, runs=10, options={"store": store})()  # warm-up
        job = scenarios.s1_chain(api, runs=runs, options={"store": store})
        t0 = time.perf_counter()
        problem = await job()
        elapsed = time.perf_counter() - t0
        await store.close()
        if problem is not None:
            raise SystemExit(f"{mode}: INCORRECT: {problem}")
        return elapsed / steps * 1e6

    return asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--dir", default=None, help="where the database files go")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.runs, Path(args.dir))))
        return
    results: dict[str, list[float]] = {m: [] for m in MODES}
    ratios: dict[str, list[float]] = {m: [] for m in MODES}
    for rep in range(args.reps):
        order = MODES[rep % len(MODES) :] + MODES[: rep % len(MODES)]
        got: dict[str, float] = {}
        for mode in order:
            with tempfile.TemporaryDirectory(dir=args.dir) as folder:
                out = subprocess.run(
                    [sys.executable, __file__, "--child", mode, "--runs", str(args.runs),
                     "--dir", folder],
                    capture_output=True, text=True, check=True,
                )
            got[mode] = json.loads(out.stdout)
        for mode in MODES:
            base = got["bare one CPU" if "one CPU" in mode else "bare"]
            results[mode].append(got[mode])
            ratios[mode].append(got[mode] / base)
        print(f"rep {rep + 1}: " + ", ".join(f"{m} {got[m]:.0f}" for m in MODES), flush=True)
    print(f"\nS1 chain, {args.runs} runs x 10 steps, SQLite NORMAL; {os.cpu_count()} CPUs;"
          f" {args.reps} repetitions (median [min-max])\n")
    print("| set-up | us/step | x bare transaction (same CPU set-up) |")
    print("|---|---:|---|")
    for mode in MODES:
        r = ratios[mode]
        print(f"| {mode} | {statistics.median(results[mode]):.0f} | "
              f"{statistics.median(r):.2f} [{min(r):.2f}-{max(r):.2f}] |")


if __name__ == "__main__":
    main()
