"""PostgresStore: the durable store contract, operation by operation.

The same promises as ``tests/test_sqlite_store.py`` makes for SQLite, checked against a
real server (``tests/pg_cluster.py``), each test in a schema of its own. Failure modes,
migrations and concurrency are in ``tests/test_postgres_failures.py``.
"""

from __future__ import annotations

import inspect
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import asyncpg
import pytest

from pg_cluster import pg_server, pg_url  # noqa: F401 (fixtures)
from riverbed.errors import (
    FencedError,
    RunExistsError,
    RunFinishedError,
    RunNotFoundError,
    RunOwnedError,
    StoreError,
)
from riverbed.stores.base import RunRecord, RunStatus
from riverbed.stores.durable import CommitRow, DurableStore, EventRow, ProducedRow, WaiterRow
from riverbed.stores.postgres import PostgresStore
from riverbed.stores.sqlite import SqliteStore

HOST = socket.gethostname()
ME = f"{HOST}:{os.getpid()}:{uuid.uuid4().hex}"


class WallClock:
    """A settable wall clock, so lease expiry needs no sleeping."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


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
    store: PostgresStore,
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


@pytest.fixture
def clock() -> WallClock:
    return WallClock()


@pytest.fixture
async def store(pg_url: str, clock: WallClock) -> AsyncIterator[PostgresStore]:  # noqa: F811
    async with PostgresStore.from_url(pg_url, wall_clock=clock) as s:
        yield s


@pytest.fixture
async def sql(pg_url: str) -> AsyncIterator[asyncpg.Connection]:  # noqa: F811
    """A plain connection to the test's schema, to look at rows behind the store."""
    base, _, query = pg_url.partition("?")
    conn = await asyncpg.connect(base, server_settings={"search_path": query.split("=")[1]})
    try:
        yield conn
    finally:
        await conn.close()


# -- shape -------------------------------------------------------------------------


def test_implements_every_durable_store_method_like_sqlite() -> None:
    for name, member in inspect.getmembers(DurableStore, inspect.isfunction):
        if name.startswith("_"):
            continue
        ours = inspect.signature(getattr(PostgresStore, name))
        assert list(ours.parameters) == list(inspect.signature(member).parameters), name
        sqlite = inspect.signature(getattr(SqliteStore, name))
        assert [p.default for p in ours.parameters.values()] == [
            p.default for p in sqlite.parameters.values()
        ], name
    assert PostgresStore.durable is True
    assert PostgresStore.heartbeat.__doc__


# -- runs --------------------------------------------------------------------------


async def test_create_get_list_and_page_runs(store: PostgresStore) -> None:
    for run_id, workflow, at in (("a", "wf1", 1.0), ("b", "wf2", 2.0), ("c", "wf1", 3.0)):
        await new_run(store, run_id, workflow=workflow, started_at=at)
    await new_run(store, "d", workflow="wf1", started_at=3.0)  # a tie: insertion order
    await store.finish_run("c", RunStatus.COMPLETED, '"done"', None)
    record = await store.get_run("a")
    assert (record.run_id, record.workflow, record.status) == ("a", "wf1", RunStatus.RUNNING)
    assert (record.started_at, record.finished_at) == (1.0, None)
    assert [r.run_id for r in await store.list_runs()] == ["d", "c", "b", "a"]
    assert [r.run_id for r in await store.list_runs(workflow="wf1")] == ["d", "c", "a"]
    assert [r.run_id for r in await store.list_runs(status=RunStatus.RUNNING)] == ["d", "b", "a"]
    assert [r.run_id for r in await store.list_runs("wf1", RunStatus.COMPLETED)] == ["c"]
    assert [r.run_id for r in await store.list_runs(limit=2, offset=1)] == ["c", "b"]
    assert await store.list_runs(offset=4) == []


async def test_a_taken_run_id_raises_run_exists(store: PostgresStore) -> None:
    await new_run(store)
    with pytest.raises(RunExistsError, match="'r1'"):
        await new_run(store)
    assert len(await store.read_events("r1")) == 1


async def test_unknown_run_names_the_id(store: PostgresStore) -> None:
    with pytest.raises(RunNotFoundError, match=r"'nope'.*list_runs"):
        await store.get_run("nope")
    for call in (
        store.read_events("nope"),
        store.read_stream("nope"),
        store.read_state("nope"),
        store.read_timeline("nope"),
        store.acquire_run("nope", ME),
        store.submit_event("nope", ev(0), (), ()),
        store.finish_run("nope", RunStatus.FAILED, None, "x"),
        store.claim("nope", 1, "s", "t", 30),
        store.heartbeat("nope", ME),
    ):
        with pytest.raises(RunNotFoundError):
            await call


async def test_finish_run_once(store: PostgresStore, clock: WallClock) -> None:
    await new_run(store)
    await store.finish_run("r1", RunStatus.TIMED_OUT, None, '"late"')
    clock.now += 5
    await store.finish_run("r1", RunStatus.CANCELLED, None, '"ignored"')
    record = await store.get_run("r1")
    assert (record.status, record.error) == (RunStatus.TIMED_OUT, '"late"')
    assert record.finished_at == clock.now - 5


# -- claim, commit, fail -----------------------------------------------------------


async def test_claim_counts_attempts_and_is_fenced(store: PostgresStore) -> None:
    await new_run(store, targets=("start", "other"))
    assert await store.claim("r1", 1, "start", "t1", 30) == 1
    assert await store.claim("r1", 1, "start", "t2", 30) == 2
    await store.commit("r1", CommitRow(1, "start", 2, "t2"))
    with pytest.raises(FencedError, match="done or does not exist"):
        await store.claim("r1", 1, "start", "t3", 30)
    with pytest.raises(FencedError):
        await store.claim("r1", 7, "start", "t3", 30)
    await store.finish_run("r1", RunStatus.CANCELLED, None, None)
    with pytest.raises(FencedError, match="finished"):
        await store.claim("r1", 1, "other", "t4", 30)


async def test_commit_applies_every_effect(store: PostgresStore, sql: asyncpg.Connection) -> None:
    await new_run(store)
    await store.claim("r1", 1, "start", "t1", 30)
    commit = CommitRow(
        event_seq=1,
        step="start",
        attempt=1,
        claim_token="t1",
        produced=(
            ProducedRow(ev(2, "t.A", '{"a": 1}', source_step="start"), ("sa", "sb"), lineage=3),
            ProducedRow(ev(3, "t.B", source_step="start"), ("sb", "sc"), claims=("", "mine")),
        ),
        stream=(("t.P", '{"p": 1}'), ("t.P", '{"p": 2}')),
        state='{"z": 1, "a": [1.5, null]}',
        collect_add=(("sb", "buf", 2), ("sb", "buf", 3)),
        next_seq=4,
        lease_seconds=7,
        started_at=999_999.0,
    )
    assert await store.commit("r1", commit) == 1
    # the state's text comes back exactly (jsonb would reorder its keys)
    assert await store.read_state("r1") == ('{"z": 1, "a": [1.5, null]}', "t.State")
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
    assert [(d.event_seq, d.step, d.status, d.lineage, d.attempts) for d in snap.deliveries] == [
        (2, "sa", "pending", 3, 0),
        (2, "sb", "pending", 3, 0),
        (3, "sb", "pending", 0, 0),
        (3, "sc", "running", 0, 1),  # claimed by the committer for itself
    ]
    assert snap.deliveries[3].visible_at == 1_000_007.0
    assert [(c.step, c.buffer_id, c.event.seq) for c in snap.collected] == [
        ("sb", "buf", 2),
        ("sb", "buf", 3),
    ]
    assert (snap.next_seq, snap.stream_len, snap.extra["state_version"]) == (4, 2, "1")
    # the pre-claimed delivery commits with its token, without a claim
    commit2 = CommitRow(3, "sc", 1, "mine", collect_remove=(("sb", "buf", 2),), next_seq=2)
    assert await store.commit("r1", commit2) == 2
    snap = await store.acquire_run("r1", ME)
    assert [c.event.seq for c in snap.collected] == [3]
    assert (snap.next_seq, snap.extra["state_version"]) == (4, "1")
    rows = await sql.fetch(
        "SELECT commit_seq, event_seq, step, attempt, started_at FROM commits ORDER BY 1"
    )
    assert [tuple(r) for r in rows] == [(1, 1, "start", 1, 999_999.0), (2, 3, "sc", 1, None)]


async def test_a_commit_can_end_the_run(store: PostgresStore) -> None:
    await new_run(store)
    await store.claim("r1", 1, "start", "t1", 30)
    stop = CommitRow(1, "start", 1, "t1", status=RunStatus.COMPLETED, result='{"r": 42}')
    await store.commit("r1", stop)
    record = await store.get_run("r1")
    assert (record.status, record.result, record.error) == (RunStatus.COMPLETED, '{"r": 42}', None)
    assert record.finished_at is not None
    with pytest.raises(RunFinishedError):
        await store.acquire_run("r1", ME)


async def test_a_stale_token_cannot_commit_and_writes_nothing(store: PostgresStore) -> None:
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


async def test_a_commit_on_a_finished_run_is_fenced(store: PostgresStore) -> None:
    await new_run(store)
    await store.claim("r1", 1, "start", "t1", 30)
    await store.finish_run("r1", RunStatus.CANCELLED, None, None)
    with pytest.raises(FencedError, match="finished"):
        await store.commit("r1", CommitRow(1, "start", 1, "t1", state='{"n": 5}'))
    assert await store.read_state("r1") == ('{"n": 0}', "t.State")


async def test_a_commit_failing_midway_leaves_nothing(
    store: PostgresStore, sql: asyncpg.Connection
) -> None:
    await new_run(store)
    await store.claim("r1", 1, "start", "t1", 30)
    # a produced event whose seq is taken: the events insert fails after the fence passed
    clash = CommitRow(
        1,
        "start",
        1,
        "t1",
        produced=(ProducedRow(ev(1), ("x",)),),
        stream=(("t.P", "{}"),),
        state='{"n": 1}',
    )
    with pytest.raises(StoreError, match="nothing from this operation") as info:
        await store.commit("r1", clash)
    assert not isinstance(info.value, FencedError)
    run = await sql.fetchrow(
        "SELECT state, state_version, next_seq, next_commit_seq, stream_next FROM runs"
    )
    assert tuple(run) == ('{"n": 0}', 0, 2, 1, 1)
    assert await sql.fetchval("SELECT count(*) FROM commits") == 0
    assert await sql.fetchval("SELECT count(*) FROM stream") == 0
    delivery = await sql.fetchrow("SELECT status, claim_token FROM deliveries")
    assert tuple(delivery) == ("running", "t1")
    assert await store.commit("r1", CommitRow(1, "start", 1, "t1")) == 1


async def test_fail_attempt_with_and_without_retry(
    store: PostgresStore, sql: asyncpg.Connection, clock: WallClock
) -> None:
    await new_run(store)
    await store.claim("r1", 1, "start", "t1", 30)
    clock.now += 3
    await store.fail_attempt("r1", 1, "start", "t1", '"boom"', 5000.0, 1, clock.now - 2)
    clock.now += 1
    row = await sql.fetchrow("SELECT status, visible_at, last_error, claim_token FROM deliveries")
    assert tuple(row) == ("pending", 5000.0, '"boom"', None)
    with pytest.raises(FencedError):  # the failed attempt no longer holds the delivery
        await store.commit("r1", CommitRow(1, "start", 1, "t1"))
    assert await store.claim("r1", 1, "start", "t2", 30) == 2
    await store.fail_attempt("r1", 1, "start", "t2", '"again"', None, 2)
    clock.now += 1
    row = await sql.fetchrow("SELECT status, last_error, claim_token FROM deliveries")
    assert tuple(row) == ("running", '"again"', "t2")
    with pytest.raises(FencedError):  # a stale attempt cannot reset the delivery
        await store.fail_attempt("r1", 1, "start", "t1", '"stale"', 1.0)
    give_up = CommitRow(1, "start", 2, "t2", status=RunStatus.FAILED, error='"gave up"')
    assert await store.commit("r1", give_up) == 1
    timeline = await store.read_timeline("r1")
    assert [(t.kind, t.attempt, t.error, t.retry_at) for t in timeline] == [
        ("event", None, None, None),
        ("failure", 1, '"boom"', 5000.0),
        ("failure", 2, '"again"', None),
        ("commit", 2, None, None),
    ]
    assert timeline[1].duration == 2.0


async def test_the_stream_is_gapless_across_commits(store: PostgresStore) -> None:
    await new_run(store, targets=("a", "b", "c", "d"))
    for step, size in {"a": 2, "b": 0, "c": 3, "d": 1}.items():
        await store.claim("r1", 1, step, f"tok-{step}", 30)
        rows = tuple(("t.P", f'{{"step": "{step}", "i": {i}}}') for i in range(size))
        await store.commit("r1", CommitRow(1, step, 1, f"tok-{step}", stream=rows))
    stream = await store.read_stream("r1")
    assert [s.seq for s in stream] == list(range(1, 7))
    assert [s.commit_seq for s in stream] == [1, 1, 3, 3, 3, 4]
    assert [s.seq for s in await store.read_stream("r1", after=2, limit=3)] == [3, 4, 5]
    assert await store.read_stream("r1", after=6) == []


# -- events from outside, waiters, memos -------------------------------------------


async def test_submit_event_is_idempotent_by_client_event_id(store: PostgresStore) -> None:
    await new_run(store, targets=())
    answer = ev(0, "t.Answer", '{"ok": true}', client_event_id="c-1")
    assert await store.submit_event("r1", answer, ("human",), ()) == (2, True)
    assert await store.submit_event("r1", answer, ("human",), ()) == (2, False)
    assert await store.submit_event("r1", ev(0), ("s",), ()) == (3, True)
    assert await store.submit_event("r1", ev(10), ("s",), ()) == (10, True)
    assert await store.submit_event("r1", ev(0), ("s",), ()) == (11, True)
    await store.finish_run("r1", RunStatus.COMPLETED, None, None)
    with pytest.raises(RunFinishedError, match="already finished"):
        await store.submit_event("r1", ev(0), (), ())
    # a retried submission still gets its original answer after the run ended
    assert await store.submit_event("r1", answer, (), ()) == (2, False)
    events = await store.read_events("r1")
    assert [(e.seq, e.client_event_id) for e in events] == [
        (1, None),
        (2, "c-1"),
        (3, None),
        (10, None),
        (11, None),
    ]


async def test_waiters_register_once_and_get_resolved(store: PostgresStore) -> None:
    await new_run(store)
    waiter = WaiterRow("w-1", "start", "t.Answer", '{"user": "a"}', timeout_at=55.5)
    assert await store.register_waiter("r1", waiter, ("t.Ask", "{}")) == replace(waiter, new=True)
    again = WaiterRow("w-1", "start", "t.Other", "{}")
    assert await store.register_waiter("r1", again, ("t.Ask", "{}")) == waiter
    assert [(r.seq, r.type_key) for r in await store.read_stream("r1")] == [(1, "t.Ask")]
    answer = ev(2, "t.Answer", '{"user": "a"}')
    await store.submit_event("r1", answer, ("start",), ("w-1", "w-unknown"))
    later = ev(3, "t.Answer", '{"user": "b"}')
    await store.submit_event("r1", later, ("start",), ("w-1",))  # the first answer wins
    assert (await store.register_waiter("r1", waiter)).resolved == answer
    await store.register_waiter("r1", WaiterRow("w-0", "start", "t.Answer", "{}"))
    snap = await store.acquire_run("r1", ME)
    assert [(w.waiter_id, w.resolved) for w in snap.waiters] == [("w-1", answer), ("w-0", None)]
    assert await store.read_waiters("r1") == list(snap.waiters)
    with pytest.raises(RunNotFoundError):
        await store.read_waiters("nope")


async def test_memos_keep_the_first_value(store: PostgresStore) -> None:
    await new_run(store)
    assert await store.get_memo("r1", "inv", "llm") is None
    assert await store.put_memo("r1", "inv", "llm", '"first"') == '"first"'
    assert await store.put_memo("r1", "inv", "llm", '"second"') == '"first"'
    assert await store.get_memo("r1", "inv", "llm") == '"first"'
    assert await store.get_memo("r1", "other", "llm") is None


# -- ownership ---------------------------------------------------------------------


async def test_acquire_run_returns_everything_needed_to_resume(store: PostgresStore) -> None:
    await new_run(store, targets=("a", "b", "c"), deadline=123.5)
    await store.claim("r1", 1, "a", "ta", 30)
    await store.commit("r1", CommitRow(1, "a", 1, "ta", stream=(("t.P", "{}"),), next_seq=2))
    await store.claim("r1", 1, "b", "tb", 30)  # running: its owner died mid-step
    snap = await store.acquire_run("r1", ME)
    assert (snap.record.run_id, snap.owner) == ("r1", ME)
    assert [(d.step, d.status, d.attempts) for d in snap.deliveries] == [
        ("b", "running", 1),
        ("c", "pending", 0),
    ]
    assert (snap.state, snap.state_type) == ('{"n": 0}', "t.State")
    assert (snap.next_seq, snap.stream_len, snap.deadline) == (2, 1, 123.5)


async def test_owner_leases_and_heartbeats(store: PostgresStore, clock: WallClock) -> None:
    remote = f"elsewhere.example:{os.getpid()}:{uuid.uuid4().hex}"  # cannot be probed
    await new_run(store, "theirs", owner=remote)
    with pytest.raises(RunOwnedError, match=remote):
        await store.acquire_run("theirs", ME)
    clock.now += 29
    await store.heartbeat("theirs", remote)
    clock.now += 29
    with pytest.raises(RunOwnedError):
        await store.acquire_run("theirs", ME)
    clock.now += 2  # 31 s since the last heartbeat: the lease has lapsed
    assert (await store.acquire_run("theirs", ME)).owner == ME
    with pytest.raises(RunOwnedError, match="no longer owned"):
        await store.heartbeat("theirs", remote)
    await store.heartbeat("theirs", ME)
    await store.release_run("theirs", remote)  # not the owner: nothing happens
    assert (await store.acquire_run("theirs", ME)).owner == ME
    await store.release_run("theirs", ME)
    assert (await store.acquire_run("theirs", remote)).owner == remote


async def test_delete_runs_deletes_ended_runs_with_all_their_rows(
    store: PostgresStore, sql: asyncpg.Connection, clock: WallClock
) -> None:
    await new_run(store, "old")
    await store.claim("old", 1, "start", "t", 30)
    await store.fail_attempt("old", 1, "start", "t", '"x"', 1.0, 1)
    await store.register_waiter("old", WaiterRow("w", "start", "t.A", "{}"), ("t.Q", "{}"))
    await store.put_memo("old", "inv", "m", "1")
    await store.claim("old", 1, "start", "t2", 30)
    done = CommitRow(1, "start", 2, "t2", produced=(ProducedRow(ev(2), ("x",)),), next_seq=3)
    await store.commit("old", replace(done, collect_add=(("x", "", 2),)))
    await store.finish_run("old", RunStatus.COMPLETED, None, None)
    clock.now += 100
    await new_run(store, "recent")
    await store.finish_run("recent", RunStatus.FAILED, None, "e")
    await new_run(store, "running")
    assert await store.delete_runs(finished_before=clock.now - 50) == 1
    assert [r.run_id for r in await store.list_runs()] == ["running", "recent"]
    for table in ("events", "deliveries", "commits", "stream", "collected", "waiters", "memos"):
        assert await sql.fetchval(f"SELECT count(*) FROM {table} WHERE run_id = 'old'") == 0
    assert await sql.fetchval("SELECT count(*) FROM attempt_failures") == 0
    assert await store.delete_runs(finished_before=clock.now + 1) == 1
    assert [r.run_id for r in await store.list_runs()] == ["running"]


async def test_claimable_runs_are_unowned_runs_with_work_due(
    store: PostgresStore, clock: WallClock
) -> None:
    async def run(run_id: str, *, version: str | None = "v1", workflow: str = "wf") -> None:
        record = RunRecord(run_id, workflow, RunStatus.RUNNING, 1.0, workflow_version=version)
        await store.create_run(record, ev(1), ("s",), "{}", "t.State", ME, None)
        await store.release_run(run_id, ME)
        clock.now += 1  # updated_at orders them

    await run("free")
    await run("any-version", version=None)
    await run("other-version", version="v2")
    await run("other-workflow", workflow="wf2")
    await run("owned")
    await store.acquire_run("owned", ME)
    await run("lapsed")
    await store.acquire_run("lapsed", "elsewhere.example:1:x")
    await run("backoff")
    await store.claim("backoff", 1, "s", "t", 30)
    await store.fail_attempt("backoff", 1, "s", "t", '"e"', clock.now + 1000)
    await run("parked")
    await store.register_waiter("parked", WaiterRow("w", "s", "t.A", "{}"))
    await run("wait-timed-out")
    await store.register_waiter("wait-timed-out", WaiterRow("w", "s", "t.A", "{}", timeout_at=5))
    await run("done")
    await store.finish_run("done", RunStatus.COMPLETED, None, None)
    clock.now += 31  # "lapsed" (and "owned") missed their heartbeats; "owned" beats now
    await store.heartbeat("owned", ME)
    found = await store.claimable_runs([("wf", "v1")], limit=10)
    assert found == ["free", "any-version", "lapsed", "wait-timed-out"]
    assert await store.claimable_runs([("wf", "v1")], limit=2) == ["free", "any-version"]
    assert await store.claimable_runs([("wf", "v2"), ("wf2", "v1")], limit=10) == [
        "any-version",
        "other-version",
        "other-workflow",
    ]
    assert await store.claimable_runs([], limit=10) == []
    # taking one is acquire_run: the first taker wins, the next sees a live owner
    await store.acquire_run("free", ME)
    with pytest.raises(RunOwnedError):
        await store.acquire_run("free", f"{HOST}:{os.getpid()}:another")
    assert "free" not in await store.claimable_runs([("wf", "v1")], limit=10)


def test_the_core_never_imports_asyncpg_and_a_missing_driver_says_what_to_install() -> None:
    core = (
        "import sys, riverbed, riverbed.stores.urls as u;"
        " u.store_from_url('memory://'); u.store_from_url('sqlite:///x.db');"
        " assert 'asyncpg' not in sys.modules, 'the core imported asyncpg'"
    )
    assert subprocess.run([sys.executable, "-c", core], capture_output=True).returncode == 0
    missing = (
        "import sys; sys.modules['asyncpg'] = None;"
        " from riverbed.stores.urls import store_from_url;"
        " store_from_url('postgresql://u:pw@h/db')"
    )
    done = subprocess.run([sys.executable, "-c", missing], capture_output=True, text=True)
    assert done.returncode == 1
    assert "pip install 'riverbed[postgres]'" in done.stderr
