"""Crash tests of durable runs on SQLite (research memo §5.1-§5.2, docs/durability.md).

A supervisor starts the workload of ``tests/crash/workload.py`` in a child process whose
crash points (``RIVERBED_CRASHPOINTS``) SIGKILL it at random: before a claim, after it
(before the step body), before a commit is sent, inside the commit transaction before
``COMMIT``, and right after the commit. It starts the child again until one exits 0, then
checks every promise of the contract on the rows with plain ``sqlite3`` (see
:func:`check_invariants`).

Each crash test costs about 10-20 s on 2 cores, mostly Python start-ups (one per kill).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest

from riverbed.errors import RunExistsError
from riverbed.stores.base import RunStatus
from riverbed.testing import crashpoints_env

ROOT = Path(__file__).resolve().parents[1]
WORKLOAD_MODULE = "tests.crash.workload"


def _load(name: str) -> ModuleType:
    # The child runs ``python -m tests.crash.workload`` from the project root; load the same
    # file under the same name here (tests/ is not a package, so it is not importable).
    spec = importlib.util.spec_from_file_location(name, ROOT / (name.replace(".", "/") + ".py"))
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


workload = sys.modules.get(WORKLOAD_MODULE) or _load(WORKLOAD_MODULE)

#: kills of one crash test: below this the probabilities need tuning, not the engine fixing
MIN_KILLS = 50
#: a child that runs this long hangs (a whole workload takes about 1 s without crashes)
CHILD_TIMEOUT = 60.0


# -- the supervisor ------------------------------------------------------------------------


@dataclass
class Supervised:
    starts: int = 0
    kills: int = 0
    seconds: float = 0.0
    #: stderr of every start, in order
    stderr: list[str] = field(default_factory=list)


def run_child(
    db: Path, n_runs: int, env: dict[str, str], synchronous: str = "NORMAL", timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", WORKLOAD_MODULE, str(db), str(n_runs), synchronous]
    try:
        return subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:  # subprocess.run has killed it
        pytest.fail(f"the workload hung for {timeout:.0f} s; its stderr:\n{exc.stderr!r}")


def supervise(
    db: Path,
    n_runs: int,
    points: dict[str, float],
    *,
    synchronous: str = "NORMAL",
    seed: int = 0,
    max_starts: int = 400,
    max_seconds: float = 150.0,
) -> Supervised:
    """Start the workload until it exits 0; every other exit than SIGKILL fails the test."""
    result = Supervised()
    started = time.monotonic()
    while True:
        elapsed = time.monotonic() - started
        if result.starts >= max_starts or elapsed > max_seconds:
            pytest.fail(
                f"the workload did not finish: {result.starts} starts, {result.kills} kills "
                f"in {elapsed:.0f} s; last stderr:\n{result.stderr[-1] if result.stderr else ''}"
            )
        env = {
            **os.environ,
            **crashpoints_env(**points),
            workload.SEED_ENV: str(seed * 100_000 + result.starts),
        }
        result.starts += 1
        child = run_child(db, n_runs, env, synchronous, CHILD_TIMEOUT)
        result.stderr.append(child.stderr)
        if child.returncode == -signal.SIGKILL:
            result.kills += 1
            continue
        if child.returncode == workload.EXIT_RUN_OWNED:
            pytest.fail(f"a restarted workload got RunOwnedError:\n{child.stderr}")
        assert child.returncode == 0, f"exit {child.returncode}:\n{child.stderr}"
        result.seconds = time.monotonic() - started
        return result


def assert_clean_stderr(supervised: Supervised) -> None:
    """No child printed a traceback or an unretrieved task error (a fenced commit's
    warning is expected: an off-path step may still run when its run completes)."""
    for number, text in enumerate(supervised.stderr, 1):
        for marker in ("Traceback", "never retrieved", "Error"):
            assert marker not in text, f"start {number} printed:\n{text}"


# -- the invariants ------------------------------------------------------------------------

OFF_PATH_STEPS = frozenset({"audit"})
"""Steps whose deliveries may stay pending or running in a completed run.

The commit that returns the StopEvent marks the run completed in the same transaction;
from then on ``claim`` refuses every delivery of the run, and a commit still in flight is
fenced ("run has finished"). Work the result does not wait for is therefore *moot*: its
delivery keeps status pending (never claimed, or claimed by a process that died) or
running (claimed, the commit refused or never sent), it has no commits row, and none of its
effects (state, events, stream) exist. In this workload only ``audit`` is off the path:
``join`` waits for every ``Tallied``, so every delivery of ``begin``, ``link``,
``spread``, ``work``, ``tally`` and ``join`` must be done, each with exactly one commit.
"""


@dataclass
class Findings:
    violations: list[str] = field(default_factory=list)
    retried: int = 0  # deliveries with attempts > 1
    moot: int = 0  # off-path deliveries a completed run left undone
    commits: int = 0


def _short(type_key: str) -> str:
    return type_key.rsplit(".", 1)[-1]


def check_invariants(db: Path, n_runs: int) -> Findings:
    """The invariants of research §5.1 for the workload's runs, on the raw rows."""
    found = Findings()
    chain, items = workload.CHAIN, workload.ITEMS
    conn = sqlite3.connect(db)
    try:
        runs = {
            row[0]: row[1:]
            for row in conn.execute(
                "SELECT run_id, status, result, state, state_version, next_commit_seq,"
                " stream_next FROM runs"
            )
        }
        if set(runs) != set(workload.run_ids(n_runs)):
            found.violations.append(f"runs in the file: {sorted(runs)}")
        for run_id in sorted(runs):
            _check_run(conn, run_id, runs[run_id], chain, items, found)
        # Anywhere in the file: one commit per delivery (also a UNIQUE constraint).
        doubled = conn.execute(
            "SELECT run_id, event_seq, step, count(*) FROM commits"
            " GROUP BY run_id, event_seq, step HAVING count(*) > 1"
        ).fetchall()
        if doubled:
            found.violations.append(f"deliveries committed twice: {doubled}")
        found.retried = conn.execute(
            "SELECT count(*) FROM deliveries WHERE attempts > 1"
        ).fetchone()[0]
    finally:
        conn.close()
    return found


def _check_run(
    conn: sqlite3.Connection,
    run_id: str,
    run: tuple[object, ...],
    chain: int,
    items: int,
    found: Findings,
) -> None:
    bad = found.violations
    status, result, state_json, state_version, next_commit_seq, stream_next = run
    index = int(run_id.split("-")[1])
    values = [workload.item_value(index, k) for k in range(items)]

    # 1. every run is terminal, with the result the fan-in computes
    if status != "completed" or json.loads(str(result)) != list(range(items)):
        bad.append(f"{run_id}: status {status}, result {result}")

    # the journal: each event once (a doubled commit would produce its events twice)
    events = {
        seq: (_short(key), json.loads(payload))
        for seq, key, payload in conn.execute(
            "SELECT seq, type_key, payload FROM events WHERE run_id = ?", (run_id,)
        )
    }
    kinds = Counter(kind for kind, _ in events.values())
    want = {"Begin": 1, "Link": chain, "Spread": 1, "Item": items, "Worked": items}
    want.update({"Tallied": items, "StopEvent": 1})
    if kinds != Counter(want):
        bad.append(f"{run_id}: events {dict(kinds)}, expected {want}")
    worked = {seq: p for seq, (kind, p) in events.items() if kind == "Worked"}
    if sorted((p["item"], p["value"]) for p in worked.values()) != list(enumerate(values)):
        bad.append(f"{run_id}: Worked events {sorted(worked.values(), key=str)}")

    # 2. commits: numbered 1..n in order, one per delivery, only for done deliveries, by
    # the delivery's last attempt (a later claim is impossible once it is done)
    commits = conn.execute(
        "SELECT commit_seq, event_seq, step, attempt FROM commits WHERE run_id = ?"
        " ORDER BY commit_seq",
        (run_id,),
    ).fetchall()
    found.commits += len(commits)
    if [c[0] for c in commits] != list(range(1, len(commits) + 1)) or next_commit_seq != len(
        commits
    ) + 1:
        bad.append(f"{run_id}: commit_seq not 1..{len(commits)} (next {next_commit_seq})")
    deliveries = {
        (seq, step): (status, attempts)
        for seq, step, status, attempts in conn.execute(
            "SELECT event_seq, step, status, attempts FROM deliveries WHERE run_id = ?",
            (run_id,),
        )
    }
    committed: dict[tuple[int, str], int] = {}
    for commit_seq, event_seq, step, attempt in commits:
        key = (event_seq, step)
        if key in committed:
            bad.append(f"{run_id}: {key} committed twice")
        committed[key] = commit_seq
        delivery = deliveries.get(key)
        if delivery is None or delivery != ("done", attempt):
            bad.append(f"{run_id}: commit {commit_seq} of {key} (attempt {attempt}): {delivery}")
    per_step = Counter(step for _, step in deliveries)
    want_steps = {"begin": 1, "link": chain, "spread": 1}
    want_steps.update({"work": items, "tally": items, "audit": items, "join": items})
    if per_step != Counter(want_steps):
        bad.append(f"{run_id}: deliveries per step {dict(per_step)}")

    # 6. done <=> committed; an undone delivery is moot work of an off-path step (see
    # OFF_PATH_STEPS) and nothing else
    for key, (status_, attempts) in sorted(deliveries.items()):
        if status_ == "done":
            if key not in committed:
                bad.append(f"{run_id}: {key} done without a commit")
            if attempts < 1:
                bad.append(f"{run_id}: {key} done after {attempts} attempts")
        elif key[1] in OFF_PATH_STEPS and key not in committed:
            found.moot += 1
        else:
            bad.append(f"{run_id}: {key} left {status_} after {attempts} attempts")

    # 3-4. state: the oracle computed from the committed deliveries' events
    state = json.loads(str(state_json))
    tallied = [worked[seq] for seq, step in committed if step == "tally"]
    audited = [worked[seq]["item"] for seq, step in committed if step == "audit"]
    if state.get("counter") != sum(p["value"] for p in tallied) or state["counter"] != sum(values):
        bad.append(f"{run_id}: counter {state.get('counter')}, expected {sum(values)}")
    if sorted(state.get("ids", [])) != list(range(items)):  # each once: no loss, no double
        bad.append(f"{run_id}: ids {state.get('ids')}")
    if sorted(state.get("audited", [])) != sorted(audited):
        bad.append(f"{run_id}: audited {state.get('audited')}, committed audits {audited}")
    editing = len(tallied) + len(audited)
    if state_version != editing:
        bad.append(f"{run_id}: state_version {state_version}, state-editing commits {editing}")

    # 5. the stream: numbered 1..n without gaps, each progress event once, written by the
    # commit of the step (and link position / item) it names
    stream = conn.execute(
        "SELECT seq, commit_seq, payload FROM stream WHERE run_id = ? ORDER BY seq", (run_id,)
    ).fetchall()
    expected_labels = Counter(
        [f"link-{i}" for i in range(chain)] + ["spread"] + [f"work-{k}" for k in range(items)]
    )
    labels = Counter(json.loads(payload)["label"] for _, _, payload in stream)
    if [row[0] for row in stream] != list(range(1, len(stream) + 1)) or stream_next != len(
        stream
    ) + 1:
        bad.append(f"{run_id}: stream seq not 1..{len(stream)} (next {stream_next})")
    if labels != expected_labels:
        bad.append(f"{run_id}: stream labels {dict(labels)}")
    by_commit = {seq: (event_seq, step) for seq, event_seq, step, _ in commits}
    for seq, commit_seq, payload in stream:
        label = json.loads(payload)["label"]
        event_seq, step = by_commit.get(commit_seq, (0, "?"))
        kind, data = events.get(event_seq, ("?", {}))
        origin = {"Link": f"link-{data.get('position')}", "Spread": "spread"}.get(
            kind, f"work-{data.get('item')}"
        )
        if label != origin or step not in ("link", "spread", "work"):
            bad.append(f"{run_id}: stream {seq} {label!r} written by commit {commit_seq}")

    # fan-in bookkeeping is gone with the run; no waiters in this workload
    left = conn.execute("SELECT count(*) FROM collected WHERE run_id = ?", (run_id,)).fetchone()
    if left[0]:
        bad.append(f"{run_id}: {left[0]} events still held by collect_events")


# -- the tests -----------------------------------------------------------------------------

N_RUNS = 20


@pytest.mark.parametrize(
    ("synchronous", "points", "seed"),
    [
        pytest.param(
            "NORMAL",
            {
                "after_claim": 0.015,
                "before_commit": 0.015,
                "in_commit": 0.015,
                "after_commit": 0.015,
            },
            1,
            id="normal-around-commits",
        ),
        pytest.param(
            "FULL",
            {"before_claim": 0.0125, "after_claim": 0.0125, "in_commit": 0.025},
            2,
            id="full-claims-and-in-commit",
        ),
    ],
)
def test_sigkill_at_random_points_breaks_no_promise(
    tmp_path: Path, synchronous: str, points: dict[str, float], seed: int
) -> None:
    db = tmp_path / "crash.db"
    supervised = supervise(db, N_RUNS, points, synchronous=synchronous, seed=seed)
    found = check_invariants(db, N_RUNS)
    print(
        f"\n{synchronous}: {supervised.kills} kills in {supervised.starts} starts, "
        f"{supervised.seconds:.1f} s; {found.commits} commits, {found.retried} deliveries "
        f"retried, {found.moot} moot audits; {len(found.violations)} violations"
    )
    assert found.violations == []
    assert_clean_stderr(supervised)
    # 7. the crashes interrupted real work, often
    assert found.retried > 0
    assert supervised.kills >= MIN_KILLS


def _rows(db: Path) -> tuple[list[tuple[str]], tuple[str, int] | None, int, int, int]:
    """(run statuses, the begin delivery's (status, attempts), commits, events, links)."""
    conn = sqlite3.connect(db)
    try:
        status = conn.execute("SELECT status FROM runs").fetchall()
        begin = conn.execute(
            "SELECT status, attempts FROM deliveries WHERE step = 'begin'"
        ).fetchone()
        commits = conn.execute("SELECT count(*) FROM commits").fetchone()[0]
        events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        links = conn.execute("SELECT count(*) FROM deliveries WHERE step = 'link'").fetchone()[0]
    finally:
        conn.close()
    return status, begin, commits, events, links


def _finish_cleanly_and_count_begin_attempts(db: Path) -> int:
    clean = {k: v for k, v in os.environ.items() if k != "RIVERBED_CRASHPOINTS"}
    assert run_child(db, 1, clean, timeout=CHILD_TIMEOUT).returncode == 0
    found = check_invariants(db, 1)
    assert found.violations == []
    conn = sqlite3.connect(db)
    try:
        return int(
            conn.execute("SELECT attempts FROM deliveries WHERE step = 'begin'").fetchone()[0]
        )
    finally:
        conn.close()


def _die_at(db: Path, point: str) -> None:
    env = {**os.environ, **crashpoints_env(**{point: 1.0})}
    child = run_child(db, 1, env, timeout=CHILD_TIMEOUT)
    assert child.returncode == -signal.SIGKILL, child.stderr


@pytest.mark.parametrize(
    ("point", "begin_after_crash", "commits_after_crash"),
    [
        pytest.param("after_claim", ("running", 1), 0, id="after_claim"),
        pytest.param("before_commit", ("running", 1), 0, id="before_commit"),
        # everything the commit wrote is rolled back
        pytest.param("in_commit", ("running", 1), 0, id="in_commit"),
        pytest.param("after_commit", ("done", 1), 1, id="after_commit"),
    ],
)
def test_each_crash_point_leaves_the_rows_it_promises(
    tmp_path: Path, point: str, begin_after_crash: tuple[str, int], commits_after_crash: int
) -> None:
    """Die at the first pass of one point (probability 1), check the rows, then resume."""
    db = tmp_path / "point.db"
    _die_at(db, point)
    status, begin, commits, events, links = _rows(db)
    assert status == [("running",)]
    # The start event's delivery was claimed with the run (create_run): attempt 1.
    assert begin == begin_after_crash
    assert commits == commits_after_crash
    # the begin step's Link exists (with its delivery) exactly when its commit does
    assert (events, links) == ((2, 1) if commits_after_crash else (1, 0))
    # the attempt that died without committing counts; the one after it commits
    assert _finish_cleanly_and_count_begin_attempts(db) == begin_after_crash[1] + (
        0 if commits_after_crash else 1
    )


def test_dying_before_a_claim_leaves_the_rows_as_they_were(tmp_path: Path) -> None:
    """``before_claim`` on both kinds of claim: the first step's, made with the run by
    create_run (dying there leaves no run at all), and a fresh claim when a resumed run
    runs an attempt again (dying there leaves the delivery as the dead attempt left it)."""
    db = tmp_path / "claim.db"
    _die_at(db, "before_claim")
    assert _rows(db) == ([], None, 0, 0, 0)
    _die_at(db, "after_claim")  # the run is created and its first attempt dies
    assert _rows(db)[1] == ("running", 1)
    _die_at(db, "before_claim")  # resumed; dies before claiming the attempt again
    assert _rows(db) == ([("running",)], ("running", 1), 0, 1, 0)
    assert _finish_cleanly_and_count_begin_attempts(db) == 2


async def test_a_dead_process_run_is_neither_restarted_nor_stalled(tmp_path: Path) -> None:
    """Regressions found by these tests. (1) ``run(run_id=...)`` with the id of a run a
    dead process left running raised RunExistsError *and* marked that run failed. (2) A
    resumed run waited out the dead attempt's lease (30 s) before running its step again."""
    db = tmp_path / "dead.db"
    env = {**os.environ, **crashpoints_env(after_claim=1.0)}
    assert run_child(db, 1, env, timeout=CHILD_TIMEOUT).returncode == -signal.SIGKILL

    wf = workload.CrashFlow(store=f"sqlite:///{db}", workflow_name=workload.WORKFLOW_NAME)
    with pytest.raises(RunExistsError):
        await wf.run(run_id="run-00", start_event=workload.Begin(run_index=0))
    record = await wf.store.get_run("run-00")
    assert (record.status, record.error) == (RunStatus.RUNNING, None)

    handler = await wf.resume("run-00")
    # The whole run takes well under a second; the stale lease had 30 s to run.
    assert await asyncio.wait_for(asyncio.shield(handler), 15) == list(range(workload.ITEMS))
    await wf.store.close()
    assert check_invariants(db, 1).violations == []
