"""Durable benchmark: what SQLite durability costs per step, against a bare SQLite transaction.

Run it through ``benchmarks/run-durable`` (or any Python with riverbed installed)::

    benchmarks/run-durable [--quick] [--reps N] [--dir TMPDIR] [--json PATH]

In one process, with 5 interleaved repetitions (order rotated each repetition), it measures:

- S1 (10-step chain, N runs) and S2 (fan-out/fan-in, 4 workers, K=100 and K=1,000) on the
  memory store, SQLite ``synchronous=NORMAL`` and SQLite ``synchronous=FULL``, each SQLite
  repetition in a fresh file;
- the bare baseline: per step, one ``BEGIN IMMEDIATE`` transaction on a plain ``sqlite3``
  connection (WAL, same ``synchronous``, same schema) doing the writes a step commit does,
  on the calling thread; ``durable per-step cost / bare transaction`` is paired per
  repetition;
- where the time goes, layer by layer: riverbed's own claim and commit SQL on the calling
  thread, the same through ``SqliteStore`` (its writer thread), the whole engine, and two
  no-op thread round trips;
- history growth: the cost of a window of steps early and late in one 10,000-step run.

Every repetition checks its result (the scenario's own check, then the rows in the file) and
reports INCORRECT, ERROR or HANG instead of a number. Engine code is not modified.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import json
import math
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import bench
import engines
import scenarios
from report import OK, CaseResult, Rep, fmt, span
from scenarios import CHAIN_STEPS, Job

from riverbed.stores import _sqlite_writes as writes
from riverbed.stores._sqlite_writer import WriterThread
from riverbed.stores.base import RunRecord, RunStatus
from riverbed.stores.durable import CommitRow, EventRow, ProducedRow
from riverbed.stores.sqlite import SqliteStore
from riverbed.stores.urls import store_from_url

SYNCS = ("NORMAL", "FULL")
BARE_LIMIT = 2.0  # target: durable per-step cost <= 2x the bare transaction
GROWTH_LIMIT = 1.5  # target: last window / first window of one long run
PROBE_BELOW = 10  # as in bench.py: probe a full-size job unless the warm-up says it is long

# Rows of the bare, "riverbed SQL" and "store API" subjects: one run, one step "spin" that
# consumes event seq and produces seq + 1.
RUN_ID = "bench-run"
STEP = "spin"
EVENT_KEY = "benchmarks.Tick"
STATE_KEY = "benchmarks.State"
OWNER = "bench:0:owner"


@dataclass(frozen=True)
class Sizes:
    reps: int = 5
    s1_runs: int = 200  # 2,000 steps; the bare baseline of S1 runs as many transactions
    s1_warm: int = 10
    s2_events: tuple[int, ...] = (100, 1000)
    s2_workers: int = 4
    s2_warm: int = 50
    layer_steps: int = 1000
    layer_warm: int = 50
    growth_steps: int = 10_000
    growth_window: int = 100
    growth_warm: int = 200
    min_rep_seconds: float = 0.2
    max_loops: int = 200


FULL = Sizes()
QUICK = Sizes(reps=2, s1_runs=20, s1_warm=5, s2_events=(50, 200), s2_warm=20, layer_steps=200,
              layer_warm=20, growth_steps=1000, growth_warm=100, min_rep_seconds=0.05)


# --- subjects: something that runs a job on a fresh file and checks the file afterwards ----

@dataclass
class Prepared:
    """A job ready to time, and ``finish(loops)``: untimed check of the file, then close.
    ``finish`` returns what is wrong with the stored rows, or None."""

    job: Job
    finish: Callable[[int], Awaitable[str | None]]
    stamps: list[float] | None = None


Make = Callable[[Path, bool], Awaitable[Prepared]]


@dataclass(frozen=True)
class Subject:
    name: str
    label: str
    make: Make  # (fresh folder, warm-up?) -> Prepared
    fixed_loops: int | None = None  # growth runs are one run per repetition


@dataclass
class Case:
    key: str
    unit: str
    units: int
    warm_units: int
    subjects: list[Subject]
    result: CaseResult | None = None
    stamps: dict[str, list[list[float]]] = field(default_factory=dict)


def store_url(path: Path, sync: str) -> str:
    if sync == PG:
        return pg_schema_url(path.parent.name)
    return f"sqlite:///{path}?synchronous={sync}"  # an absolute path gives sqlite:////...


#: S1 and S2 also run on PostgreSQL when a server is given (--pg-url): one schema per
#: repetition, the same engine code as on SQLite
PG = "PostgreSQL"
PG_URL: str | None = None


def pg_schema_url(tag: str) -> str:
    assert PG_URL is not None
    schema = "bench_" + "".join(c if c.isalnum() else "_" for c in tag).lower()[-40:]
    return f"{PG_URL}{'&' if '?' in PG_URL else '?'}schema={schema}"


def pg_stores() -> tuple[str, ...]:
    return (PG,) if PG_URL else ()


async def pg_check_and_drop(url: str, runs: int) -> str | None:
    """The PostgreSQL counterpart of check_file: every run completed; then drop the schema."""
    import asyncpg  # type: ignore[import-untyped]

    schema = url.rsplit("schema=", 1)[1]
    conn = await asyncpg.connect(PG_URL)
    try:
        done = await conn.fetchval(
            f'SELECT count(*) FROM "{schema}".runs WHERE status = \'completed\''
        )
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        await conn.close()
    return None if done == runs else f"{done} runs completed in PostgreSQL, expected {runs}"


def check_file(path: Path, runs: int, commits: int) -> str | None:
    """What is wrong with the rows an engine job left in ``path``, or None: every run
    completed, one commit per step, no delivery left open."""
    conn = sqlite3.connect(path)
    try:
        total, completed, found, pending = (
            conn.execute(sql).fetchone()[0]
            for sql in (
                "SELECT count(*) FROM runs",
                "SELECT count(*) FROM runs WHERE status = 'completed'",
                "SELECT count(*) FROM commits",
                "SELECT count(*) FROM deliveries WHERE status != 'done'",
            )
        )
    finally:
        conn.close()
    if (total, completed, found, pending) != (runs, runs, commits, 0):
        return (f"file holds {total} runs ({completed} completed), {found} commits, {pending} "
                f"open deliveries; expected {runs} completed runs, {commits} commits, 0 open")
    return None


def engine_subject(name: str, label: str, sync: str | None, builder: str,
                   params: dict[str, Any], warm_params: dict[str, Any],
                   expect: Callable[[dict[str, Any], int], tuple[int, int]],
                   stamps: bool = False, fixed_loops: int | None = None) -> Subject:
    """A riverbed scenario on the memory store (``sync`` None) or a fresh SQLite file.

    ``expect(params, loops)`` gives the completed runs and commits the file must hold.
    """
    api = engines.load("riverbed").api

    async def make(folder: Path, warm: bool) -> Prepared:
        p = warm_params if warm else params
        store, options = None, {}
        url = None
        if sync is not None:
            path = folder / "runs.db"
            url = store_url(path, sync)
            # the same object Workflow(store="sqlite:///...") builds; opened here, untimed
            store = store_from_url(url)
            await store.open()
            options["store"] = store
        marks: list[float] | None = [] if stamps else None
        kwargs = {"stamps": marks} if stamps else {}
        job = getattr(scenarios, builder)(api, **p, options=options, **kwargs)

        async def finish(loops: int) -> str | None:
            if store is None:
                return None
            await store.close()
            runs, commits = expect(p, loops)
            if sync == PG:
                assert url is not None
                return await pg_check_and_drop(url, runs)
            return check_file(folder / "runs.db", runs, commits)

        return Prepared(job, finish, marks)

    return Subject(name, label, make, fixed_loops)


# --- the bare baseline and riverbed's SQL without the engine ------------------------------

def connect(path: Path, sync: str) -> sqlite3.Connection:
    """A connection set up as riverbed's writer is: WAL, ``synchronous``, foreign keys."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {sync}")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


async def new_file(path: Path, sync: str) -> None:
    """Create ``path`` with riverbed's schema (its migrations), untimed."""
    store = SqliteStore(path, synchronous=sync)  # type: ignore[arg-type]
    await store.open()
    await store.close()


def transaction(conn: sqlite3.Connection, fn: Callable[..., Any], *args: Any) -> Any:
    conn.execute("BEGIN IMMEDIATE")
    try:
        out = fn(conn, *args)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return out


def bare_step(conn: sqlite3.Connection, seq: int) -> None:
    """The writes of one step commit, in plain SQL: state, produced event and its delivery,
    consumed delivery done, commit row."""
    now = time.time()
    conn.execute(
        "UPDATE runs SET state = ?, state_version = state_version + 1, next_seq = ?,"
        " next_commit_seq = next_commit_seq + 1, updated_at = ? WHERE run_id = ?",
        (json.dumps({"steps": seq}), seq + 2, now, RUN_ID),
    )
    conn.execute(
        "INSERT INTO events (run_id, seq, type_key, payload, source_step, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (RUN_ID, seq + 1, EVENT_KEY, json.dumps({"i": seq + 1}), STEP, now),
    )
    conn.execute(
        "INSERT INTO deliveries (run_id, event_seq, step, visible_at) VALUES (?, ?, ?, ?)",
        (RUN_ID, seq + 1, STEP, now),
    )
    conn.execute(
        "UPDATE deliveries SET status = 'done', claim_token = NULL"
        " WHERE run_id = ? AND event_seq = ? AND step = ?",
        (RUN_ID, seq, STEP),
    )
    conn.execute(
        "INSERT INTO commits (run_id, commit_seq, event_seq, step, attempt, claim_token,"
        " committed_at) VALUES (?, ?, ?, ?, 1, ?, ?)",
        (RUN_ID, seq, seq, STEP, uuid.uuid4().hex, now),
    )


def start_row() -> tuple[RunRecord, EventRow]:
    record = RunRecord(run_id=RUN_ID, workflow="bench", status=RunStatus.RUNNING,
                       started_at=time.time())
    return record, EventRow(1, EVENT_KEY, json.dumps({"i": 1}))


def commit_row(seq: int, attempt: int, token: str) -> CommitRow:
    """What riverbed commits for one loop step, plus a state write (as the bare one does)."""
    produced = ProducedRow(EventRow(seq + 1, EVENT_KEY, json.dumps({"i": seq + 1}), STEP),
                           (STEP,))
    return CommitRow(event_seq=seq, step=STEP, attempt=attempt, claim_token=token,
                     produced=(produced,), state=json.dumps({"steps": seq}), next_seq=seq + 2)


def check_steps(path: Path, done: int) -> str | None:
    """A file of the per-step subjects after ``done`` steps: commits, open work, state."""
    conn = sqlite3.connect(path)
    try:
        found = conn.execute("SELECT count(*) FROM commits").fetchone()[0]
        pending = conn.execute(
            "SELECT count(*) FROM deliveries WHERE status != 'done'").fetchone()[0]
        state = conn.execute("SELECT state FROM runs WHERE run_id = ?", (RUN_ID,)).fetchone()[0]
    finally:
        conn.close()
    want_state = json.dumps({"steps": done})
    if (found, pending, state) != (done, 1, want_state):
        return (f"{found} commits, {pending} open deliveries, state {state}; expected {done}, "
                f"1, {want_state}")
    return None


def claim_and_commit(conn: sqlite3.Connection, seq: int) -> None:
    """riverbed's claim and commit SQL for one step, inside the caller's one transaction."""
    token = uuid.uuid4().hex
    attempt = writes.claim(conn, RUN_ID, seq, STEP, token, time.time() + 30.0)
    writes.commit(conn, RUN_ID, commit_row(seq, attempt, token), time.time())


def step_subject(name: str, label: str, sync: str, kind: str, steps: int,
                 warm_steps: int) -> Subject:
    """Per-step work on one run, without the engine.

    ``bare``: one plain transaction per step on the calling thread. ``sql1``: riverbed's own
    claim and commit SQL (``_sqlite_writes``) in one transaction on the calling thread.
    ``sql``: the same as riverbed runs it, a claim transaction then a commit transaction.
    ``api``: that through ``SqliteStore.claim`` / ``.commit`` (its writer thread).
    """

    async def make(folder: Path, warm: bool) -> Prepared:
        n = warm_steps if warm else steps
        path = folder / f"{kind}.db"
        record, start = start_row()
        seq = [1]  # the delivery the next step consumes
        conn: sqlite3.Connection | None = None
        store: SqliteStore | None = None
        if kind == "api":
            store = SqliteStore(path, synchronous=sync)  # type: ignore[arg-type]
            await store.open()
            await store.create_run(record, start, (STEP,), "{}", STATE_KEY, OWNER, None)
        else:
            await new_file(path, sync)
            conn = connect(path, sync)
            transaction(conn, writes.create_run, record, start, (STEP,), "{}", STATE_KEY,
                        OWNER, None, time.time())

        async def job() -> str | None:
            first = seq[0]
            if kind == "bare":
                assert conn is not None
                for s in range(first, first + n):
                    transaction(conn, bare_step, s)
            elif kind == "sql1":
                assert conn is not None
                for s in range(first, first + n):
                    transaction(conn, claim_and_commit, s)
            elif kind == "sql":
                assert conn is not None
                for s in range(first, first + n):
                    token = uuid.uuid4().hex
                    attempt = transaction(conn, writes.claim, RUN_ID, s, STEP, token,
                                          time.time() + 30.0)
                    transaction(conn, writes.commit, RUN_ID, commit_row(s, attempt, token),
                                time.time())
            else:
                assert store is not None
                for s in range(first, first + n):
                    token = uuid.uuid4().hex
                    attempt = await store.claim(RUN_ID, s, STEP, token, 30.0)
                    await store.commit(RUN_ID, commit_row(s, attempt, token))
            seq[0] = first + n
            return None

        async def finish(loops: int) -> str | None:
            if conn is not None:
                conn.close()
            if store is not None:
                await store.close()
            return check_steps(path, seq[0] - 1)

        return Prepared(job, finish)

    return Subject(name, label, make)


def hop_subject(steps: int, warm_steps: int) -> Subject:
    """Two round trips to ``SqliteStore``'s writer thread per step, doing nothing: the thread
    hops of a claim and a commit through the store, without SQLite."""

    async def make(folder: Path, warm: bool) -> Prepared:
        n = warm_steps if warm else steps
        writer = WriterThread()  # what SqliteStore hands its writes to
        done = [0]

        def noop() -> int:
            return 1

        async def job() -> str | None:
            for _ in range(n):
                done[0] += await writer.submit(noop)
                done[0] += await writer.submit(noop)
            return None

        async def finish(loops: int) -> str | None:
            writer.stop()
            want = 2 * n * loops
            return None if done[0] == want else f"{done[0]} hops, expected {want}"

        return Prepared(job, finish)

    return Subject("hop", "2 no-op thread round trips (no SQLite)", make)


# --- the cases --------------------------------------------------------------------------

def s1_expect(p: dict[str, Any], loops: int) -> tuple[int, int]:
    return p["runs"] * loops, p["runs"] * CHAIN_STEPS * loops


def s2_expect(p: dict[str, Any], loops: int) -> tuple[int, int]:
    # scatter commits once, every item once in the workers and once in the collector
    return loops, (2 * p["events"] + 1) * loops


def loop_expect(p: dict[str, Any], loops: int) -> tuple[int, int]:
    return loops, (p["steps"] + 1) * loops  # the first step, then the loop step each time


def store_label(sync: str | None) -> str:
    if sync == PG:
        return PG
    return "memory store" if sync is None else f"SQLite {sync}"


def make_cases(sz: Sizes) -> list[Case]:
    s1 = {"runs": sz.s1_runs}
    s1_warm = {"runs": sz.s1_warm}
    steps, warm_steps = sz.s1_runs * CHAIN_STEPS, sz.s1_warm * CHAIN_STEPS
    cases = [Case("S1", "us/step", steps, warm_steps, [
        *(engine_subject(f"S1 {store_label(s)}", f"S1 chain, {store_label(s)}", s, "s1_chain",
                         s1, s1_warm, s1_expect) for s in (None, *SYNCS, *pg_stores())),
        *(step_subject(f"bare {s}", f"bare transaction, {s}", s, "bare", steps, warm_steps)
          for s in SYNCS),
    ])]
    for k in sz.s2_events:
        p = {"events": k, "workers": sz.s2_workers}
        warm = {"events": sz.s2_warm, "workers": sz.s2_workers}
        # The bare baseline does as many transactions as S2 commits steps (2K + 1), so
        # the paired ratio is the durable per-step cost over the bare transaction.
        commits, warm_commits = 2 * k + 1, 2 * sz.s2_warm + 1
        cases.append(Case(f"S2 K={k}", "us/event", k, sz.s2_warm, [
            *(engine_subject(f"S2 {store_label(s)}", f"S2 K={k:,} w={sz.s2_workers}, "
                             f"{store_label(s)}", s, "s2_fan_out", p, warm, s2_expect)
              for s in (None, *SYNCS, *pg_stores())),
            *(step_subject(f"bare {s}", f"bare transaction x {commits:,}, {s}", s, "bare",
                           commits, warm_commits) for s in SYNCS),
        ]))
    layers: list[Subject] = []
    n, warm_n = sz.layer_steps, sz.layer_warm
    for s in SYNCS:
        layers += [
            step_subject(f"bare {s}", f"bare transaction, {s}", s, "bare", n, warm_n),
            step_subject(f"sql1 {s}", f"riverbed claim + commit SQL in 1 txn, calling "
                         f"thread, {s}", s, "sql1", n, warm_n),
            step_subject(f"sql {s}", f"riverbed claim txn + commit txn, calling thread, {s}",
                         s, "sql", n, warm_n),
            step_subject(f"api {s}", f"SqliteStore.claim + .commit (writer thread), {s}", s,
                         "api", n, warm_n),
        ]
    layers += [
        engine_subject(f"loop {store_label(s)}", f"engine, one {n:,}-step run, {store_label(s)}",
                       s, "self_loop", {"steps": n}, {"steps": warm_n}, loop_expect)
        for s in (None, *SYNCS)
    ]
    layers.append(hop_subject(n, warm_n))
    cases.append(Case("layers", "us/step", n, warm_n, layers))
    g, gw = sz.growth_steps, sz.growth_warm
    cases.append(Case("growth", "us/step", g, gw, [
        engine_subject(f"growth {store_label(s)}", f"one {g:,}-step run, {store_label(s)}", s,
                       "self_loop", {"steps": g}, {"steps": gw}, loop_expect, stamps=True,
                       fixed_loops=1)
        for s in (None, "NORMAL")
    ]))
    return cases


# --- running ----------------------------------------------------------------------------

async def one_rep(subject: Subject, base: Path, rep: int, loops: int, timeout: float,
                  warm: bool = False) -> tuple[Rep, Prepared | None]:
    """Prepare ``subject`` on a fresh folder, time it, check the file, clean up."""
    folder = Path(tempfile.mkdtemp(prefix="riverbed-durable-", dir=base))
    prepared: Prepared | None = None
    try:
        try:
            prepared = await subject.make(folder, warm)
        except Exception as exc:
            return Rep(rep, "ERROR", 0.0, 0.0, f"setting up: {type(exc).__name__}: {exc}"), None
        gc.collect()
        gc.freeze()  # as in bench.py: earlier cases' heaps do not slow this one's collections
        try:
            result = await bench.timed(prepared.job, rep, timeout, loops)
        finally:
            gc.unfreeze()
        try:
            problem = await prepared.finish(loops)
        except Exception as exc:
            problem = f"checking the file: {type(exc).__name__}: {exc}"
        if result.status == OK and problem is not None:
            result = replace(result, status="INCORRECT", detail=problem)
        return result, prepared
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def run_case(case: Case, sz: Sizes, base: Path, timeout: float) -> CaseResult:
    result = CaseResult(case.key, case.key, case.unit, case.units,
                        {s.name: s.label for s in case.subjects})
    runnable: list[Subject] = []
    for subject in case.subjects:
        result.reps[subject.name] = []
        warm, _ = await one_rep(subject, base, -1, 1, timeout, warm=True)
        result.warmups[subject.name] = warm
        loops = subject.fixed_loops or 1
        if warm.status == OK and subject.fixed_loops is None:
            estimate = warm.wall * case.units / case.warm_units
            if estimate < PROBE_BELOW * sz.min_rep_seconds:
                probe, _ = await one_rep(subject, base, -1, 1, timeout)
                if probe.status != OK:
                    result.warmups[subject.name] = probe
                estimate = probe.wall
            loops = max(1, min(sz.max_loops, math.ceil(sz.min_rep_seconds / max(estimate, 1e-9))))
        result.loops[subject.name] = loops
        if result.warmups[subject.name].status == OK:
            runnable.append(subject)
    for rep in range(sz.reps):
        shift = rep % max(len(runnable), 1)
        for subject in runnable[shift:] + runnable[:shift]:
            r, prepared = await one_rep(subject, base, rep, result.loops[subject.name], timeout)
            result.reps[subject.name].append(r)
            if r.status == OK and prepared is not None and prepared.stamps is not None:
                case.stamps.setdefault(subject.name, []).append(prepared.stamps)
    case.result = result
    return result


# --- reporting --------------------------------------------------------------------------

def _ratio(values: Sequence[float]) -> str:
    return span(values, lambda v: f"{v:.2f}")


def _correct(result: CaseResult, name: str) -> str:
    bad = result.failures(name)
    return "yes" if not bad else "NO: " + ", ".join(sorted({r.status for r in bad}))


def case_table(result: CaseResult, refs: dict[str, str]) -> list[str]:
    """One row per subject; ``refs`` maps a subject to the subject its ratio is paired with."""
    lines = [f"| {result.key} | {result.unit}: median | min | max | ratio: median [min-max] "
             "| correct | loops |", "|---|---:|---:|---:|---|---|---:|"]
    for name in result.reps:
        values = result.values(name)
        cells = [fmt(statistics.median(values)), fmt(min(values)), fmt(max(values))] \
            if values else ["-", "-", "-"]
        ref = refs.get(name)
        ratio = f"{_ratio(result.paired(name, ref))} x {result.labels[ref]}" \
            if ref and values and result.values(ref) else ""
        lines.append(f"| {result.labels[name]} | {' | '.join(cells)} | {ratio} "
                     f"| {_correct(result, name)} | {result.loops.get(name, '-')} |")
    for name in result.reps:
        for r in result.failures(name):
            where = "warm-up" if r.rep < 0 else f"rep {r.rep}"
            lines.append(f"- {result.labels[name]}, {where}: {r.status}: {r.detail}")
    return lines


def median_or_none(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def windows(stamps: Sequence[float], width: int) -> dict[str, float]:
    """us/step over the first, middle and last ``width`` steps, and over first/last tenth."""
    n = len(stamps)

    def per_step(a: int, b: int) -> float:
        return (stamps[b] - stamps[a]) * 1e6 / (b - a)

    tenth = max(n // 10, 1)
    mid = n // 2
    return {
        "first": per_step(0, width),
        "middle": per_step(mid - width // 2, mid + width // 2),
        "last": per_step(n - 1 - width, n - 1),
        "first tenth": per_step(0, tenth),
        "last tenth": per_step(n - 1 - tenth, n - 1),
    }


def growth_table(case: Case, sz: Sizes) -> tuple[list[str], dict[str, list[float]]]:
    """Windows of one long run, per subject; and the paired last/first ratios."""
    n, w = sz.growth_steps, sz.growth_window
    tenth = n // 10
    middle = f"{n // 2 - w // 2 + 1:,}-{n // 2 + w // 2:,}"
    head = (f"| one {n:,}-step run | steps 1-{w} | steps {middle} "
            f"| steps {n - w + 1:,}-{n:,} | last {w} / first {w} | first {tenth:,} "
            f"| last {tenth:,} | last / first {tenth:,} | whole run | correct |")
    lines = [head, "|---|---:|---:|---:|---|---:|---:|---|---:|---|"]
    ratios: dict[str, list[float]] = {}
    assert case.result is not None
    for name, label in case.result.labels.items():
        per_rep = [windows(s, w) for s in case.stamps.get(name, []) if len(s) > 2 * w]
        col = {k: median_or_none([x[k] for x in per_rep]) for k in
               ("first", "middle", "last", "first tenth", "last tenth")}
        small = [x["last"] / x["first"] for x in per_rep]
        big = [x["last tenth"] / x["first tenth"] for x in per_rep]
        ratios[name] = small
        whole = case.result.values(name)
        cells = [fmt(v) if v is not None else "-" for v in col.values()]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} | {cells[2]} | {_ratio(small)} "
                     f"| {cells[3]} | {cells[4]} | {_ratio(big)} "
                     f"| {fmt(statistics.median(whole)) if whole else '-'} "
                     f"| {_correct(case.result, name)} |")
    return lines, ratios


def _cell(res: CaseResult, name: str, ref: str) -> tuple[str, str]:
    """``median us`` and ``x ref`` (paired per repetition) for one subject."""
    values = res.values(name)
    if not values:
        return "-", "-"
    return fmt(statistics.median(values)), _ratio(res.paired(name, ref))


def layer_name(kind: str, sync: str) -> str:
    return f"{kind} {store_label(sync)}" if kind == "loop" else f"{kind} {sync}"


def bare_ratio_table(s1: CaseResult | None, layers: CaseResult | None,
                     s2: Sequence[CaseResult] = ()) -> list[str]:
    """The headline: durable per-step cost / bare transaction, NORMAL and FULL."""
    lines = ["| durable per-step cost / bare transaction | NORMAL | FULL |", "|---|---|---|"]
    if s1 is not None:
        cells = [_ratio(s1.paired(f"S1 SQLite {sync}", f"bare {sync}")) for sync in SYNCS]
        lines.append(f"| S1 chain: {s1.units // CHAIN_STEPS:,} runs of 10 steps | "
                     f"{' | '.join(cells)} |")
    for result in s2:
        cells = [_ratio(result.paired(f"S2 SQLite {sync}", f"bare {sync}")) for sync in SYNCS]
        lines.append(f"| S2 fan-out/fan-in, {result.key[3:]} ({2 * result.units + 1:,} step "
                     f"commits, 4 workers) | {' | '.join(cells)} |")
    if layers is not None:
        cells = [_ratio(layers.paired(layer_name("loop", sync), f"bare {sync}")) for sync in SYNCS]
        lines.append(f"| one run of {layers.units:,} steps | {' | '.join(cells)} |")
    return lines


def layer_table(result: CaseResult, s1: CaseResult | None) -> list[str]:
    """Per-step cost layer by layer, NORMAL and FULL side by side, x the bare transaction."""
    rows = [("bare", "bare transaction (1 per step, calling thread)"),
            ("sql1", "riverbed's claim + commit SQL in one transaction, calling thread"),
            ("sql", "riverbed's claim transaction + commit transaction, calling thread"),
            ("api", "SqliteStore.claim + .commit (writer thread)"),
            ("loop", f"engine: one {result.units:,}-step run")]
    lines = ["| layer (us/step, median) | NORMAL | x bare NORMAL | FULL | x bare FULL |",
             "|---|---:|---|---:|---|"]
    for kind, label in rows:
        cells: list[str] = []
        for sync in SYNCS:
            cells += _cell(result, layer_name(kind, sync), f"bare {sync}")
        lines.append(f"| {label} | {' | '.join(cells)} |")
    if s1 is not None:
        cells = []
        for sync in SYNCS:
            cells += _cell(s1, f"S1 SQLite {sync}", f"bare {sync}")
        lines.append("| engine: S1, 10-step runs (+ create and release per run; bare of the S1 "
                     f"table) | {' | '.join(cells)} |")
    for name, label in (("loop memory store", "engine alone: the same run on the memory store"),
                        ("hop", "2 no-op thread round trips (no SQLite)")):
        values = result.values(name)
        lines.append(f"| {label} | {fmt(statistics.median(values)) if values else '-'} "
                     "| | | |")
    return lines


def check_targets(cases: dict[str, Case], growth: dict[str, list[float]],
                  sz: Sizes) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(target: str, subjects: Sequence[str], result: CaseResult | None,
            values: Sequence[float], limit: float, unit: str) -> None:
        if result is None:
            status, detail, measured = "SKIP", "not run", None
        elif any(result.failures(s) for s in subjects):
            status, detail, measured = "MISS", "failed repetitions (see the tables)", None
        elif not values:
            status, detail, measured = "SKIP", "no paired repetitions", None
        else:
            measured = statistics.median(values)
            status = "PASS" if measured <= limit else "MISS"
            detail = f"{measured:.2f} {unit} (target <= {limit:g})"
        out.append({"target": target, "status": status, "measured": measured, "limit": limit,
                    "detail": detail})

    s1 = cases["S1"].result if "S1" in cases else None
    for sync in SYNCS:
        pair = (f"S1 SQLite {sync}", f"bare {sync}")
        add(f"S1 durable per-step cost / bare transaction, {sync}", pair, s1,
            s1.paired(*pair) if s1 else [], BARE_LIMIT, "x")
    for key, case in cases.items():
        if key.startswith("S2 ") and case.result is not None:
            for sync in SYNCS:
                pair = (f"S2 SQLite {sync}", f"bare {sync}")
                add(f"{key} durable per-step cost / bare transaction, {sync}", pair,
                    case.result, case.result.paired(*pair), BARE_LIMIT, "x")
    g = cases["growth"].result if "growth" in cases else None
    w = sz.growth_window
    add(f"history growth, SQLite NORMAL: us/step of the last {w} / first {w} steps of one "
        f"{sz.growth_steps:,}-step run", ["growth SQLite NORMAL"], g,
        growth.get("growth SQLite NORMAL", []), GROWTH_LIMIT, "x")
    return out


# --- command line -----------------------------------------------------------------------

CASE_NAMES = ("S1", "S2", "layers", "growth")


def fs_type(path: Path) -> str:
    """The file system holding ``path`` (tmpfs would make FULL meaningless)."""
    best, kind = "", "?"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            mount = parts[1]
            if str(path).startswith(mount) and len(mount) > len(best):
                best, kind = mount, parts[2]
    except OSError:
        pass
    return kind


def versions() -> str:
    found = []
    for dist in ("riverbed", "pydantic"):
        try:
            found.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{dist} ?")
    return (f"Python {platform.python_version()}, {', '.join(found)}, "
            f"SQLite {sqlite3.sqlite_version}")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes and 2 reps: a smoke test")
    p.add_argument("--reps", type=int, help="timed repetitions (default 5, --quick 2)")
    p.add_argument("--only", default=",".join(CASE_NAMES),
                   help=f"cases to run, from {','.join(CASE_NAMES)} (e.g. under a profiler)")
    p.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()),
                   help="where the temporary database files go (default: the temp dir); "
                        "use a real disk, not tmpfs, or FULL measures nothing")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds before HANG")
    p.add_argument("--json", type=Path, help="also write every repetition to this file")
    p.add_argument("--pg-url", default=os.environ.get("RIVERBED_BENCH_PG_URL"),
                   help="also run S1 and S2 on this PostgreSQL server (a schema per "
                        "repetition; default $RIVERBED_BENCH_PG_URL)")
    args = p.parse_args(argv)
    args.only = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = sorted(set(args.only) - set(CASE_NAMES))
    if unknown:
        p.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASE_NAMES)}")
    return args


async def measure(cases: list[Case], sz: Sizes, base: Path, timeout: float) -> None:
    for case in cases:
        result = await run_case(case, sz, base, timeout)
        if case.key in ("layers", "growth"):
            continue  # printed at the end
        refs: dict[str, str] = {}
        for name in result.reps:
            if case.key == "S1" and name.startswith("S1 SQLite"):
                refs[name] = "bare " + name.rsplit(" ", 1)[1]
            elif name != case.subjects[0].name and not name.startswith("bare"):
                refs[name] = case.subjects[0].name  # x the memory store
        bench.emit([*case_table(result, refs), ""])


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    global PG_URL
    PG_URL = args.pg_url
    sz = QUICK if args.quick else FULL
    if args.reps:
        sz = replace(sz, reps=args.reps)
    try:
        engines.load("riverbed")
    except engines.EngineUnavailable as exc:
        print(f"riverbed cannot be imported: {exc}", file=sys.stderr)
        return 2
    base = args.dir.resolve()
    base.mkdir(parents=True, exist_ok=True)
    started = datetime.now().isoformat(timespec="seconds")
    revision = bench.source_revision()
    fs = fs_type(base)
    t0 = time.perf_counter()
    bench.emit([
        f"riverbed durable benchmark, {started}, commit {revision}, {versions()}",
        f"{'quick' if args.quick else 'full'} sizes, {sz.reps} reps; {os.cpu_count()} CPUs "
        f"({cpu_model()}); database files in {base} ({fs})", ""])
    if fs in ("tmpfs", "ramfs"):
        print(f"warning: {base} is {fs}: fsync costs nothing there, FULL is not measured. "
              "Pass --dir on a real disk.", file=sys.stderr)
    cases = [c for c in make_cases(sz) if c.key.split(" ")[0] in args.only]
    asyncio.run(measure(cases, sz, base, args.timeout))
    by_key = {c.key: c for c in cases}
    s1 = by_key["S1"].result if "S1" in by_key else None
    layers = by_key["layers"].result if "layers" in by_key else None
    s2 = [c.result for k, c in by_key.items() if k.startswith("S2 ") and c.result is not None]
    if s1 is not None or layers is not None or s2:
        bench.emit(["Durable per-step cost / bare transaction (paired per repetition, "
                    "median [min-max]):", "", *bare_ratio_table(s1, layers, s2), ""])
    if layers is not None:
        bench.emit(["Where a durable step's time goes (layer by layer, us/step; x bare paired "
                    "per repetition):", "", *layer_table(layers, s1), "",
                    "Per-layer repetitions:", "", *case_table(layers, {}), ""])
    growth: dict[str, list[float]] = {}
    if "growth" in by_key:
        lines, growth = growth_table(by_key["growth"], sz)
        bench.emit(["History growth (us/step over windows of one run; median over reps):", "",
                    *lines, ""])
    checks = check_targets(by_key, growth, sz)
    bench.emit(["Targets:", *(f"{c['status']:<4}  {c['target']}: {c['detail']}" for c in checks)])
    results = [c.result for c in cases if c.result is not None]
    failed = sum(len(r.failures(name)) for r in results for name in r.reps)
    bench.emit([f"total {time.perf_counter() - t0:.0f} s; failed repetitions: {failed}"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "started": started, "commit": revision, "versions": versions(),
            "quick": args.quick, "sizes": vars(sz), "dir": str(base), "fs": fs,
            "cases": [r.to_json() for r in results],
            "growth_windows": {name: [windows(s, sz.growth_window) for s in stamps]
                               for name, stamps in by_key["growth"].stamps.items()}
            if "growth" in by_key else {},
            "targets": checks,
        }, indent=1))
        bench.emit([f"wrote {args.json}"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
