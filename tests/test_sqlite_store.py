"""SqliteStore: the durable store contract, its failure modes and its file handling."""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from riverbed.errors import (
    FencedError,
    RunExistsError,
    RunFinishedError,
    RunNotFoundError,
    RunOwnedError,
    StoreCorruptError,
    StoreError,
    StoreLockedError,
    StoreSchemaError,
)
from riverbed.stores import _sqlite_conn
from riverbed.stores.base import RunRecord, RunStatus
from riverbed.stores.durable import (
    CommitRow,
    DurableStore,
    EventRow,
    ProducedRow,
    WaiterRow,
)
from riverbed.stores.sqlite import SqliteStore, sqlite_store_from_url

HOST = socket.gethostname()
ME = f"{HOST}:{os.getpid()}:{uuid.uuid4().hex}"


class WallClock:
    """A settable wall clock, so lease expiry needs no sleeping."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


#: the newest schema version this riverbed ships
LATEST = max(version for version, _, _ in _sqlite_conn.load_migrations())


def ev(
    seq: int,
    type_key: str = "t.Ev",
    payload: str = "{}",
    *,
    source_step: str | None = None,
    client_event_id: str | None = None,
) -> EventRow:
    return EventRow(seq, type_key, payload, source_step, client_event_id)


async def new_run(
    store: SqliteStore,
    run_id: str = "r1",
    targets: tuple[str, ...] = ("start",),
    *,
    workflow: str = "wf",
    owner: str = ME,
    started_at: float = 1.0,
    deadline: float | None = None,
) -> None:
    record = RunRecord(run_id, workflow, RunStatus.RUNNING, started_at)
    start = ev(1, "t.Start", '{"q": 1}')
    await store.create_run(record, start, targets, '{"n": 0}', "t.State", owner, deadline)


def raw(path: Path) -> sqlite3.Connection:
    """A plain connection to peek at (or tamper with) the file behind the store's back."""
    return sqlite3.connect(path, isolation_level=None)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "runs.db"


@pytest.fixture
def clock() -> WallClock:
    return WallClock()


@pytest.fixture
async def store(db_path: Path, clock: WallClock) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(db_path, wall_clock=clock) as s:
        yield s


# -- shape ---------------------------------------------------------------------------


def test_implements_every_durable_store_method() -> None:
    for name, member in inspect.getmembers(DurableStore, inspect.isfunction):
        if name.startswith("_"):
            continue
        ours = inspect.signature(getattr(SqliteStore, name))
        assert list(ours.parameters) == list(inspect.signature(member).parameters), name
    assert SqliteStore.durable is True


async def test_open_creates_a_wal_file_with_the_schema(store: SqliteStore, db_path: Path) -> None:
    conn = raw(db_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 4
    assert conn.execute("SELECT version, name FROM riverbed_migrations").fetchall() == [
        (1, "0001_initial.sql"),
        (2, "0002_waiter_timeouts.sql"),
        (3, "0003_attempt_history.sql"),
        (4, "0004_workers.sql"),
    ]
    conn.close()


# -- runs ----------------------------------------------------------------------------


async def test_create_get_and_list_runs(store: SqliteStore) -> None:
    await new_run(store, "a", workflow="wf1", started_at=1.0)
    await new_run(store, "b", workflow="wf2", started_at=2.0)
    await new_run(store, "c", workflow="wf1", started_at=3.0)
    await store.finish_run("c", RunStatus.COMPLETED, '"done"', None)

    record = await store.get_run("a")
    assert (record.run_id, record.workflow, record.status) == ("a", "wf1", RunStatus.RUNNING)
    assert record.started_at == 1.0
    assert record.finished_at is None

    assert [r.run_id for r in await store.list_runs()] == ["c", "b", "a"]
    assert [r.run_id for r in await store.list_runs(workflow="wf1")] == ["c", "a"]
    assert [r.run_id for r in await store.list_runs(status=RunStatus.RUNNING)] == ["b", "a"]
    assert [r.run_id for r in await store.list_runs("wf1", RunStatus.COMPLETED)] == ["c"]
    assert [r.run_id for r in await store.list_runs(limit=1)] == ["c"]


async def test_a_taken_run_id_raises_run_exists(store: SqliteStore) -> None:
    await new_run(store)
    with pytest.raises(RunExistsError, match="'r1'"):
        await new_run(store)
    assert len(await store.read_events("r1")) == 1


async def test_unknown_run_names_the_id_and_how_to_list(store: SqliteStore) -> None:
    with pytest.raises(RunNotFoundError, match=r"'nope'.*list_runs"):
        await store.get_run("nope")
    for call in (
        store.read_events("nope"),
        store.read_stream("nope"),
        store.read_state("nope"),
        store.acquire_run("nope", ME),
        store.submit_event("nope", ev(0), (), ()),
        store.finish_run("nope", RunStatus.FAILED, None, "x"),
    ):
        with pytest.raises(RunNotFoundError):
            await call


async def test_finish_run_once(store: SqliteStore, clock: WallClock) -> None:
    await new_run(store)
    await store.finish_run("r1", RunStatus.TIMED_OUT, None, '"late"')
    clock.now += 5
    await store.finish_run("r1", RunStatus.CANCELLED, None, '"ignored"')
    record = await store.get_run("r1")
    assert record.status is RunStatus.TIMED_OUT
    assert record.error == '"late"'
    assert record.finished_at == clock.now - 5


# -- claim, commit, fail -------------------------------------------------------------


async def test_claim_counts_attempts_durably(store: SqliteStore) -> None:
    await new_run(store)
    assert await store.claim("r1", 1, "start", "t1", 30) == 1
    assert await store.claim("r1", 1, "start", "t2", 30) == 2
    snap = await store.acquire_run("r1", ME)
    (delivery,) = snap.deliveries
    assert (delivery.status, delivery.attempts) == ("running", 2)


async def test_claim_is_fenced_for_done_missing_or_finished(store: SqliteStore) -> None:
    await new_run(store, targets=("start", "other"))
    await store.claim("r1", 1, "start", "t1", 30)
    await store.commit("r1", CommitRow(1, "start", 1, "t1"))
    with pytest.raises(FencedError):
        await store.claim("r1", 1, "start", "t2", 30)
    with pytest.raises(FencedError):
        await store.claim("r1", 7, "start", "t2", 30)
    await store.finish_run("r1", RunStatus.CANCELLED, None, None)
    with pytest.raises(FencedError, match="finished"):
        await store.claim("r1", 1, "other", "t3", 30)


async def test_commit_applies_every_effect(store: SqliteStore, db_path: Path) -> None:
    await new_run(store, targets=("start",))
    await store.claim("r1", 1, "start", "t1", 30)
    commit = CommitRow(
        event_seq=1,
        step="start",
        attempt=1,
        claim_token="t1",
        produced=(
            ProducedRow(ev(2, "t.A", '{"a": 1}', source_step="start"), ("sa", "sb"), lineage=3),
            ProducedRow(ev(3, "t.B", source_step="start"), ("sb",)),
        ),
        stream=(("t.P", '{"p": 1}'), ("t.P", '{"p": 2}')),
        state='{"n": 1}',
        collect_add=(("sb", "buf", 2), ("sb", "buf", 3)),
        next_seq=4,
    )
    assert await store.commit("r1", commit) == 1

    assert await store.read_state("r1") == ('{"n": 1}', "t.State")
    events = await store.read_events("r1")
    assert [(e.seq, e.type_key, e.source_step) for e in events] == [
        (1, "t.Start", None),
        (2, "t.A", "start"),
        (3, "t.B", "start"),
    ]
    stream = await store.read_stream("r1")
    assert [(s.seq, s.commit_seq, s.payload) for s in stream] == [
        (1, 1, '{"p": 1}'),
        (2, 1, '{"p": 2}'),
    ]
    snap = await store.acquire_run("r1", ME)
    assert [(d.event_seq, d.step, d.status, d.lineage) for d in snap.deliveries] == [
        (2, "sa", "pending", 3),
        (2, "sb", "pending", 3),
        (3, "sb", "pending", 0),
    ]
    assert snap.deliveries[0].event.payload == '{"a": 1}'
    assert [(c.step, c.buffer_id, c.event.seq) for c in snap.collected] == [
        ("sb", "buf", 2),
        ("sb", "buf", 3),
    ]
    assert (snap.next_seq, snap.stream_len, snap.extra["state_version"]) == (4, 2, "1")

    # the next commit removes from the buffer and leaves the state alone
    await store.claim("r1", 3, "sb", "t2", 30)
    commit2 = CommitRow(3, "sb", 1, "t2", collect_remove=(("sb", "buf", 2),), next_seq=2)
    assert await store.commit("r1", commit2) == 2
    snap = await store.acquire_run("r1", ME)
    assert [c.event.seq for c in snap.collected] == [3]
    assert (snap.next_seq, snap.state, snap.extra["state_version"]) == (4, '{"n": 1}', "1")
    conn = raw(db_path)
    assert conn.execute("SELECT commit_seq, event_seq, step, attempt FROM commits").fetchall() == [
        (1, 1, "start", 1),
        (2, 3, "sb", 1),
    ]
    conn.close()


async def test_a_commit_can_end_the_run(store: SqliteStore) -> None:
    await new_run(store)
    await store.claim("r1", 1, "start", "t1", 30)
    stop = CommitRow(1, "start", 1, "t1", status=RunStatus.COMPLETED, result='{"r": 42}')
    await store.commit("r1", stop)
    record = await store.get_run("r1")
    assert (record.status, record.result, record.error) == (RunStatus.COMPLETED, '{"r": 42}', None)
    assert record.finished_at is not None
    with pytest.raises(RunFinishedError):
        await store.acquire_run("r1", ME)


async def test_a_stale_token_cannot_commit_and_writes_nothing(store: SqliteStore) -> None:
    await new_run(store)
    await store.claim("r1", 1, "start", "old", 30)
    await store.claim("r1", 1, "start", "new", 30)  # e.g. after a lease expiry
    stale = CommitRow(
        1,
        "start",
        1,
        "old",
        produced=(ProducedRow(ev(2), ("x",)),),
        stream=(("t.P", "{}"),),
        state='{"n": 99}',
        next_seq=3,
        status=RunStatus.COMPLETED,
    )
    with pytest.raises(FencedError, match="no longer holds its claim"):
        await store.commit("r1", stale)
    assert len(await store.read_events("r1")) == 1
    assert await store.read_stream("r1") == []
    assert await store.read_state("r1") == ('{"n": 0}', "t.State")
    assert (await store.get_run("r1")).status is RunStatus.RUNNING

    fresh = CommitRow(1, "start", 2, "new", stream=(("t.P", "{}"),))
    assert await store.commit("r1", fresh) == 1  # the stale try used no commit number
    with pytest.raises(FencedError):  # and a delivery commits once
        await store.commit("r1", fresh)


async def test_a_commit_on_a_finished_run_is_fenced(store: SqliteStore) -> None:
    await new_run(store)
    await store.claim("r1", 1, "start", "t1", 30)
    await store.finish_run("r1", RunStatus.CANCELLED, None, None)
    with pytest.raises(FencedError, match="finished"):
        await store.commit("r1", CommitRow(1, "start", 1, "t1", state='{"n": 5}'))
    assert await store.read_state("r1") == ('{"n": 0}', "t.State")


async def test_a_commit_failing_midway_leaves_nothing(store: SqliteStore, db_path: Path) -> None:
    await new_run(store, targets=("start", "other"))
    await store.claim("r1", 1, "start", "t1", 30)
    # Plant a row that makes the commits insert (after the fence passed) violate its
    # UNIQUE (run_id, event_seq, step).
    conn = raw(db_path)
    conn.execute(
        "INSERT INTO commits VALUES ('r1', 99, 1, 'start', 1, 'planted', 0.0, NULL)",
    )
    full = CommitRow(
        1,
        "start",
        1,
        "t1",
        produced=(ProducedRow(ev(2), ("x",)),),
        stream=(("t.P", "{}"),),
        state='{"n": 1}',
        next_seq=3,
    )
    with pytest.raises(StoreError, match="nothing from this operation") as info:
        await store.commit("r1", full)
    assert not isinstance(info.value, FencedError)
    assert isinstance(info.value.__cause__, sqlite3.IntegrityError)

    run = conn.execute(
        "SELECT state, state_version, next_seq, next_commit_seq, stream_next FROM runs"
    ).fetchone()
    assert run == ('{"n": 0}', 0, 2, 1, 1)
    assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 1
    assert conn.execute("SELECT count(*) FROM stream").fetchone()[0] == 0
    assert conn.execute(
        "SELECT status, claim_token FROM deliveries WHERE step = 'start'"
    ).fetchone() == ("running", "t1")

    # A produced event whose seq is already taken fails just as cleanly.
    conn.execute("DELETE FROM commits")
    await store.claim("r1", 1, "other", "t2", 30)
    clash = CommitRow(1, "other", 1, "t2", produced=(ProducedRow(ev(1), ("x",)),))
    with pytest.raises(StoreError):
        await store.commit("r1", clash)
    assert conn.execute("SELECT count(*) FROM commits").fetchone()[0] == 0
    conn.close()
    # The store is still usable and the delivery can still commit.
    assert await store.commit("r1", CommitRow(1, "start", 1, "t1")) == 1


async def test_next_seq_never_falls_behind_produced_events(store: SqliteStore) -> None:
    await new_run(store)
    await store.claim("r1", 1, "start", "t1", 30)
    produced = (ProducedRow(ev(5), ("x",)), ProducedRow(ev(2), ("x",)))
    await store.commit("r1", CommitRow(1, "start", 1, "t1", produced, next_seq=0))
    assert (await store.acquire_run("r1", ME)).next_seq == 6


async def test_the_stream_is_gapless_across_commits(store: SqliteStore) -> None:
    await new_run(store, targets=("a", "b", "c", "d"))
    sizes = {"a": 2, "b": 0, "c": 3, "d": 1}
    for step, size in sizes.items():
        await store.claim("r1", 1, step, f"tok-{step}", 30)
        rows = tuple(("t.P", f'{{"step": "{step}", "i": {i}}}') for i in range(size))
        await store.commit("r1", CommitRow(1, step, 1, f"tok-{step}", stream=rows))
    stream = await store.read_stream("r1")
    assert [s.seq for s in stream] == list(range(1, 7))
    assert [s.commit_seq for s in stream] == [1, 1, 3, 3, 3, 4]
    assert [s.seq for s in await store.read_stream("r1", after=2, limit=3)] == [3, 4, 5]
    assert await store.read_stream("r1", after=6) == []


async def test_fail_attempt_with_and_without_retry(store: SqliteStore, db_path: Path) -> None:
    await new_run(store)
    await store.claim("r1", 1, "start", "t1", 30)
    await store.fail_attempt("r1", 1, "start", "t1", '"boom"', retry_at=5000.0)
    conn = raw(db_path)
    row = conn.execute("SELECT status, visible_at, last_error, claim_token FROM deliveries")
    assert row.fetchone() == ("pending", 5000.0, '"boom"', None)
    with pytest.raises(FencedError):  # the failed attempt no longer holds the delivery
        await store.commit("r1", CommitRow(1, "start", 1, "t1"))

    assert await store.claim("r1", 1, "start", "t2", 30) == 2
    await store.fail_attempt("r1", 1, "start", "t2", '"again"', retry_at=None)
    row = conn.execute("SELECT status, last_error, claim_token FROM deliveries")
    assert row.fetchone() == ("running", '"again"', "t2")
    conn.close()
    with pytest.raises(FencedError):  # a stale attempt cannot reset the delivery
        await store.fail_attempt("r1", 1, "start", "t1", '"stale"', retry_at=1.0)
    give_up = CommitRow(1, "start", 2, "t2", status=RunStatus.FAILED, error='"gave up"')
    assert await store.commit("r1", give_up) == 1
    assert (await store.get_run("r1")).status is RunStatus.FAILED


# -- events from outside, waiters ----------------------------------------------------


async def test_submit_event_is_idempotent_by_client_event_id(store: SqliteStore) -> None:
    await new_run(store, targets=())
    answer = ev(2, "t.Answer", '{"ok": true}', client_event_id="c-1")
    assert await store.submit_event("r1", answer, ("human",), ()) == (2, True)
    assert await store.submit_event("r1", answer, ("human",), ()) == (2, False)
    # a retry of the submission that did not know the seq gets the original one
    retry = ev(0, "t.Answer", '{"ok": true}', client_event_id="c-1")
    assert await store.submit_event("r1", retry, ("human",), ()) == (2, False)
    events = await store.read_events("r1")
    assert [(e.seq, e.client_event_id) for e in events] == [(1, None), (2, "c-1")]
    snap = await store.acquire_run("r1", ME)
    assert [(d.event_seq, d.step) for d in snap.deliveries] == [(2, "human")]
    assert snap.next_seq == 3


async def test_submit_event_allocates_a_seq_when_given_none(store: SqliteStore) -> None:
    await new_run(store, targets=())
    assert await store.submit_event("r1", ev(0), ("s",), ()) == (2, True)
    assert await store.submit_event("r1", ev(0), ("s",), ()) == (3, True)
    assert await store.submit_event("r1", ev(10), ("s",), ()) == (10, True)
    assert await store.submit_event("r1", ev(0), ("s",), ()) == (11, True)


async def test_submit_event_to_a_finished_run(store: SqliteStore) -> None:
    await new_run(store, targets=())
    await store.submit_event("r1", ev(2, client_event_id="c-1"), (), ())
    await store.finish_run("r1", RunStatus.COMPLETED, None, None)
    with pytest.raises(RunFinishedError, match="already finished"):
        await store.submit_event("r1", ev(3), (), ())
    # a retried submission still gets its original answer
    assert await store.submit_event("r1", ev(3, client_event_id="c-1"), (), ()) == (2, False)


async def test_waiters_register_once_and_get_resolved(store: SqliteStore) -> None:
    await new_run(store)
    waiter = WaiterRow("w-1", "start", "t.Answer", '{"user": "a"}')
    assert await store.register_waiter("r1", waiter, ("t.Ask", "{}")) == replace(waiter, new=True)
    # idempotent: a re-executed step registering the same id gets the stored row, and its
    # question is not streamed twice
    again = WaiterRow("w-1", "start", "t.Other", "{}")
    assert await store.register_waiter("r1", again, ("t.Ask", "{}")) == waiter
    assert [(r.seq, r.type_key) for r in await store.read_stream("r1")] == [(1, "t.Ask")]

    answer = ev(2, "t.Answer", '{"user": "a"}')
    await store.submit_event("r1", answer, ("start",), ("w-1", "w-unknown"))
    later = ev(3, "t.Answer", '{"user": "b"}')
    await store.submit_event("r1", later, ("start",), ("w-1",))  # first answer wins
    stored = await store.register_waiter("r1", waiter)
    assert stored.resolved == answer

    await store.register_waiter("r1", WaiterRow("w-2", "start", "t.Answer", "{}"))
    snap = await store.acquire_run("r1", ME)
    assert [(w.waiter_id, w.resolved) for w in snap.waiters] == [("w-1", answer), ("w-2", None)]


# -- ownership -----------------------------------------------------------------------


async def test_acquire_run_returns_everything_needed_to_resume(store: SqliteStore) -> None:
    await new_run(store, targets=("a", "b", "c"), deadline=123.5)
    await store.claim("r1", 1, "a", "ta", 30)
    await store.commit("r1", CommitRow(1, "a", 1, "ta", stream=(("t.P", "{}"),), next_seq=2))
    await store.claim("r1", 1, "b", "tb", 30)  # running: its owner died mid-step
    snap = await store.acquire_run("r1", ME)
    assert snap.record.run_id == "r1"
    assert snap.owner == ME
    assert [(d.step, d.status, d.attempts) for d in snap.deliveries] == [
        ("b", "running", 1),
        ("c", "pending", 0),
    ]
    assert snap.deliveries[0].event.type_key == "t.Start"
    assert (snap.state, snap.state_type) == ('{"n": 0}', "t.State")
    assert (snap.next_seq, snap.stream_len, snap.deadline) == (2, 1, 123.5)


async def test_acquire_run_takes_over_a_dead_owner_at_once(store: SqliteStore) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import os; print(os.getpid())", stdout=subprocess.PIPE
    )
    out, _ = await child.communicate()  # waits for it to exit and reaps it
    assert child.returncode == 0
    dead = f"{HOST}:{int(out)}:{uuid.uuid4().hex}"
    await new_run(store, owner=dead)  # its heartbeat is fresh, but the process is gone
    snap = await store.acquire_run("r1", ME)
    assert snap.owner == ME
    assert (await store.acquire_run("r1", ME)).owner == ME  # re-acquiring is fine


async def test_acquire_run_refuses_a_live_owner(store: SqliteStore, clock: WallClock) -> None:
    sibling = f"{HOST}:{os.getpid()}:{uuid.uuid4().hex}"  # this process, another runner
    await new_run(store, "mine", owner=sibling)
    with pytest.raises(RunOwnedError, match=sibling):
        await store.acquire_run("mine", ME)

    remote = f"elsewhere.example:{os.getpid()}:{uuid.uuid4().hex}"  # cannot be probed
    await new_run(store, "theirs", owner=remote)
    with pytest.raises(RunOwnedError):
        await store.acquire_run("theirs", ME)
    clock.now += 29
    await store.heartbeat("theirs", remote)
    clock.now += 29
    with pytest.raises(RunOwnedError):
        await store.acquire_run("theirs", ME)
    clock.now += 2  # 31 s since the last heartbeat: the lease has lapsed
    assert (await store.acquire_run("theirs", ME)).owner == ME


async def test_release_and_heartbeat(store: SqliteStore) -> None:
    other = f"elsewhere.example:1:{uuid.uuid4().hex}"
    await new_run(store, owner=other)
    await store.release_run("r1", ME)  # not the owner: nothing happens
    with pytest.raises(RunOwnedError):
        await store.acquire_run("r1", ME)
    await store.release_run("r1", other)
    await store.acquire_run("r1", ME)
    with pytest.raises(RunOwnedError, match="no longer owned"):
        await store.heartbeat("r1", other)
    await store.heartbeat("r1", ME)
    with pytest.raises(RunNotFoundError):
        await store.heartbeat("nope", ME)


# -- files ---------------------------------------------------------------------------


async def test_a_reopened_file_has_everything(db_path: Path) -> None:
    async with SqliteStore(db_path) as store:
        await new_run(store)
        await store.claim("r1", 1, "start", "t1", 30)
        produced = (ProducedRow(ev(2, "t.A", source_step="start"), ("next",)),)
        commit = CommitRow(
            1, "start", 1, "t1", produced, (("t.P", '"hi"'),), '{"n": 7}', next_seq=3
        )
        await store.commit("r1", commit)
        await store.register_waiter("r1", WaiterRow("w", "next", "t.Answer", "{}"))
        await store.release_run("r1", ME)

    async with SqliteStore(db_path) as store:
        assert (await store.get_run("r1")).status is RunStatus.RUNNING
        assert [e.seq for e in await store.read_events("r1")] == [1, 2]
        assert [s.payload for s in await store.read_stream("r1")] == ['"hi"']
        assert await store.read_state("r1") == ('{"n": 7}', "t.State")
        snap = await store.acquire_run("r1", ME)
        assert [(d.event_seq, d.step) for d in snap.deliveries] == [(2, "next")]
        assert [w.waiter_id for w in snap.waiters] == ["w"]
        assert (snap.next_seq, snap.stream_len) == (3, 1)


async def test_migrations_are_applied_once(db_path: Path) -> None:
    async with SqliteStore(db_path):
        pass
    conn = raw(db_path)
    first = conn.execute("SELECT version, applied_at FROM riverbed_migrations").fetchall()
    async with SqliteStore(db_path):
        pass
    assert conn.execute("SELECT version, applied_at FROM riverbed_migrations").fetchall() == first
    assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST
    conn.close()


async def test_a_failing_migration_leaves_the_file_as_it_was(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with SqliteStore(db_path) as store:
        await new_run(store)
    broken = [
        *_sqlite_conn.load_migrations(),
        (LATEST + 1, "9999_broken.sql", "CREATE TABLE extra (a);\nSELECT nonsense FROM nowhere;"),
    ]
    monkeypatch.setattr(_sqlite_conn, "load_migrations", lambda: broken)
    with pytest.raises(StoreError, match="opening the database") as info:
        await SqliteStore(db_path).open()
    assert isinstance(info.value.__cause__, sqlite3.OperationalError)
    conn = raw(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST
    assert (
        conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'extra'").fetchone()[0] == 0
    )
    assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
    conn.close()


def test_statements_split_around_strings_comments_and_triggers() -> None:
    script = """
    -- a comment; with a semicolon
    CREATE TABLE t (a TEXT DEFAULT 'x;y');
    CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET a = 'z'; END;
    INSERT INTO t VALUES ('1;2')
    """
    statements = list(_sqlite_conn.split_statements(script))
    assert len(statements) == 3
    assert statements[1].startswith("CREATE TRIGGER")
    assert statements[1].endswith("END;")
    conn = sqlite3.connect(":memory:")
    for statement in statements:
        conn.execute(statement)
    conn.close()


async def test_a_missing_directory_is_named(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "runs.db"
    with pytest.raises(StoreError, match=r"does not exist") as info:
        await SqliteStore(path).open()
    assert str(path.parent) in str(info.value)
    assert not path.parent.exists()


async def test_a_file_in_place_of_the_directory(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("x")
    with pytest.raises(StoreError, match="not a directory"):
        await SqliteStore(tmp_path / "plain" / "runs.db").open()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
async def test_an_unwritable_directory(tmp_path: Path) -> None:
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(StoreError, match="not writable"):
            await SqliteStore(locked / "runs.db").open()
    finally:
        locked.chmod(0o700)


def test_memory_databases_are_refused() -> None:
    with pytest.raises(StoreError, match="needs a file"):
        SqliteStore(":memory:")


async def _assert_refused_untouched(path: Path, match: str) -> None:
    before = await asyncio.to_thread(path.read_bytes)
    with pytest.raises(StoreCorruptError, match=match) as info:
        await SqliteStore(path).open()
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)
    assert str(path) in str(info.value)
    assert await asyncio.to_thread(path.read_bytes) == before, "a bad file must not change"


def _truncate_to_half(path: Path) -> None:
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)


async def test_a_truncated_file_is_reported_as_corrupt(db_path: Path) -> None:
    async with SqliteStore(db_path) as store:
        for i in range(60):
            await new_run(store, f"run-{i}")
            await store.submit_event(f"run-{i}", ev(2, payload='"' + "x" * 2000 + '"'), (), ())
    _truncate_to_half(db_path)
    await _assert_refused_untouched(db_path, "damaged, truncated")


async def test_garbage_is_reported_as_corrupt(db_path: Path) -> None:
    await asyncio.to_thread(db_path.write_bytes, os.urandom(8192))
    await _assert_refused_untouched(db_path, "not a SQLite database")


async def test_a_foreign_database_is_not_taken_over(db_path: Path) -> None:
    conn = raw(db_path)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY)")
    conn.close()
    with pytest.raises(StoreCorruptError, match="not a riverbed one"):
        await SqliteStore(db_path).open()
    conn = raw(db_path)
    tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    assert tables == [("customers",)]
    conn.close()


async def test_a_newer_schema_asks_to_upgrade(db_path: Path) -> None:
    async with SqliteStore(db_path) as store:
        await new_run(store)
    conn = raw(db_path)
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    with pytest.raises(StoreSchemaError, match=rf"version 999.*up to {LATEST}.*Upgrade riverbed"):
        await SqliteStore(db_path).open()
    conn = raw(db_path)
    assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
    conn.close()


async def test_a_lock_held_too_long_raises_store_locked(db_path: Path) -> None:
    async with SqliteStore(db_path, busy_timeout=0.05) as store:
        await new_run(store)
        holder = raw(db_path)
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StoreLockedError, match="busy_timeout") as info:
            await store.claim("r1", 1, "start", "t1", 30)
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        with pytest.raises(StoreLockedError):  # opening needs the lock to migrate
            await SqliteStore(db_path, busy_timeout=0.05).open()
        holder.execute("ROLLBACK")
        holder.close()
        # nothing was lost and the store carries on
        assert await store.claim("r1", 1, "start", "t1", 30) == 1
        assert [e.seq for e in await store.read_events("r1")] == [1]


async def test_a_closed_store_says_so(db_path: Path) -> None:
    store = SqliteStore(db_path)
    await store.open()
    await store.close()
    await store.close()  # twice is fine
    with pytest.raises(StoreError, match="closed"):
        await store.get_run("r1")
    with pytest.raises(StoreError, match="closed"):
        await new_run(store)


# -- URLs ----------------------------------------------------------------------------


async def test_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = sqlite_store_from_url("sqlite:///data/runs.db?synchronous=FULL")
    assert relative.path == tmp_path / "data" / "runs.db"
    (tmp_path / "data").mkdir()
    async with relative as store:
        await new_run(store)
    absolute = sqlite_store_from_url(f"sqlite:///{tmp_path}/data/runs.db?lease_seconds=5")
    assert absolute.path == tmp_path / "data" / "runs.db"
    assert absolute.lease_seconds == 5
    async with absolute as store:
        assert (await store.get_run("r1")).run_id == "r1"


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("sqlite:///:memory:", "durable runs must outlive"),
        ("sqlite://", "Not a SQLite URL"),
        ("postgresql://host/db", "Not a SQLite URL"),
        ("sqlite://host/runs.db", "three slashes"),
        ("sqlite:///runs.db?synchronous=OFF", "NORMAL or FULL"),
        ("sqlite:///runs.db?cache=big", "Unknown option"),
        ("sqlite:///runs.db?busy_timeout=soon", "must be numbers"),
    ],
)
def test_bad_urls(url: str, match: str) -> None:
    with pytest.raises(StoreError, match=match):
        sqlite_store_from_url(url)


# -- concurrency ---------------------------------------------------------------------


async def test_many_concurrent_commits_land_in_order(store: SqliteStore) -> None:
    n = 120
    steps = tuple(f"s{i:03d}" for i in range(n))
    await new_run(store, targets=steps)
    attempts = await asyncio.gather(*(store.claim("r1", 1, s, f"t-{s}", 30) for s in steps))
    assert attempts == [1] * n

    def commit_of(i: int, s: str) -> CommitRow:
        produced = (ProducedRow(ev(2 + i, source_step=s), ("sink",)),)
        stream = (("t.P", f'"{s}-a"'), ("t.P", f'"{s}-b"'))
        return CommitRow(1, s, 1, f"t-{s}", produced, stream, next_seq=2 + i + 1)

    async def reader() -> int:
        reads = 0
        for _ in range(20):
            rows = await store.read_stream("r1")
            assert [r.seq for r in rows] == list(range(1, len(rows) + 1))  # never a gap
            reads += 1
        return reads

    results = await asyncio.gather(
        reader(), *(store.commit("r1", commit_of(i, s)) for i, s in enumerate(steps))
    )
    commit_seqs = results[1:]
    assert sorted(commit_seqs) == list(range(1, n + 1))

    stream = await store.read_stream("r1", limit=10 * n)
    assert [r.seq for r in stream] == list(range(1, 2 * n + 1))
    by_step = dict(zip(steps, commit_seqs, strict=True))
    for row in stream:
        step_name = row.payload.strip('"').split("-")[0]
        assert row.commit_seq == by_step[step_name]
    # within a commit, rows keep their emission order
    assert [r.payload[-2] for r in stream[:2]] == ["a", "b"]
    snap = await store.acquire_run("r1", ME)
    assert snap.next_seq == n + 2
    assert len(snap.deliveries) == n
