"""The DurableStore contract, operation by operation, on every durable store.

Each test takes the ``store`` fixture, run once on SQLite (a file of the test's own) and
once on PostgreSQL (a schema of the test's own on the server of ``tests/pg_cluster.py``,
skipped, saying why, when there is none). Tests that look at rows behind the store's back
use ``backend.rows(sql, *args)``, the same SQL on either database.

What only one store has (SQLite's file, WAL, PRAGMAs, locking and URLs; PostgreSQL's
schemas, connections, advisory locks, URLs and passwords) is tested in
``tests/test_sqlite_store.py``, ``tests/test_postgres_store.py`` and
``tests/test_postgres_failures.py``.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from riverbed.stores.durable import (
    CommitRow,
    DurableStore,
    EventRow,
    ProducedRow,
    SentBeforeWait,
    WaiterRow,
)
from riverbed.stores.sqlite import SqliteStore

if TYPE_CHECKING:
    from riverbed.stores.postgres import PostgresStore

    AnyStore = SqliteStore | PostgresStore

KINDS = ["sqlite", "postgres"]
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
    store: AnyStore,
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


def store_class(kind: str) -> type[AnyStore]:
    if kind == "sqlite":
        return SqliteStore
    pytest.importorskip("asyncpg", reason="needs asyncpg: pip install 'riverbed[postgres]'")
    from riverbed.stores.postgres import PostgresStore

    return PostgresStore


class Backend:
    """The database behind the store under test, and a way to look at its rows."""

    def __init__(self, kind: str, where: str, clock: WallClock) -> None:
        self.kind = kind
        #: the SQLite file, or the PostgreSQL URL with the test's ``?schema=``
        self.where = where
        self.clock = clock

    def new_store(self) -> AnyStore:
        """A store on this database, not opened yet (as another process would open it)."""
        if self.kind == "sqlite":
            return SqliteStore(self.where, wall_clock=self.clock)
        from riverbed.stores.postgres import PostgresStore  # here: SQLite runs without asyncpg

        return PostgresStore.from_url(self.where, wall_clock=self.clock)

    def assert_conflict(self, error: StoreError) -> None:
        """``error`` reports a UNIQUE or PRIMARY KEY constraint the operation violated."""
        if self.kind == "sqlite":
            assert isinstance(error.__cause__, sqlite3.IntegrityError)
        else:
            # PostgresStore chains no driver error (``from None``: a traceback must not show
            # the URL's password); the message says what conflicted
            assert "conflicts with rows already in" in str(error)
            assert "already exists" in str(error)

    async def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Run ``sql`` (``?`` placeholders) behind the store's back, to look or to tamper."""
        if self.kind == "sqlite":
            return await asyncio.to_thread(self._sqlite_rows, sql, args)
        import asyncpg  # only here: the SQLite tests run without it

        numbers = iter(range(1, len(args) + 1))
        sql = re.sub(r"\?", lambda _: f"${next(numbers)}", sql)
        base, _, query = self.where.partition("?")
        schema = query.rsplit("schema=", 1)[1]
        conn = await asyncpg.connect(base, server_settings={"search_path": schema})
        try:
            return [tuple(row) for row in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    def _sqlite_rows(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.where, isolation_level=None)
        try:
            return [tuple(row) for row in conn.execute(sql, args)]
        finally:
            conn.close()


@pytest.fixture
def clock() -> WallClock:
    return WallClock()


@pytest.fixture(params=KINDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path, clock: WallClock) -> Backend:
    if request.param == "postgres":
        # a schema of the test's own, dropped afterwards; skips, saying why, without a server
        return Backend("postgres", request.getfixturevalue("pg_url"), clock)
    return Backend("sqlite", str(tmp_path / "runs.db"), clock)


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[AnyStore]:
    """The store under test, open, on SQLite and on PostgreSQL."""
    async with backend.new_store() as s:
        yield s


# -- shape ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_implements_every_durable_store_method(kind: str) -> None:
    cls = store_class(kind)
    for name, member in inspect.getmembers(DurableStore, inspect.isfunction):
        if name.startswith("_"):
            continue
        ours, protocol = inspect.signature(getattr(cls, name)), inspect.signature(member)
        assert list(ours.parameters) == list(protocol.parameters), name
        # the protocol's defaults, so that every store has the same ones
        assert [p.default for p in ours.parameters.values()] == [
            p.default for p in protocol.parameters.values()
        ], name
    assert cls.durable is True
    assert cls.heartbeat.__doc__


# -- runs ----------------------------------------------------------------------------


async def test_create_get_list_and_page_runs(store: AnyStore) -> None:
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
    assert [r.run_id for r in await store.list_runs(limit=1)] == ["d"]
    assert [r.run_id for r in await store.list_runs(limit=2, offset=1)] == ["c", "b"]
    assert await store.list_runs(offset=4) == []


async def test_a_taken_run_id_raises_run_exists(store: AnyStore) -> None:
    await new_run(store)
    with pytest.raises(RunExistsError, match="'r1'"):
        await new_run(store)
    assert len(await store.read_events("r1")) == 1


async def test_unknown_run_names_the_id_and_how_to_list(store: AnyStore) -> None:
    with pytest.raises(RunNotFoundError, match=r"'nope'.*list_runs"):
        await store.get_run("nope")
    for call in (
        store.read_events("nope"),
        store.read_stream("nope"),
        store.read_state("nope"),
        store.read_timeline("nope"),
        store.read_waiters("nope"),
        store.read_open_work("nope"),
        store.acquire_run("nope", ME),
        store.submit_event("nope", ev(0), (), ()),
        store.finish_run("nope", RunStatus.FAILED, None, "x"),
        store.claim("nope", 1, "s", "t", 30),
        store.heartbeat("nope", ME),
    ):
        with pytest.raises(RunNotFoundError):
            await call


async def test_finish_run_once(store: AnyStore, clock: WallClock) -> None:
    await new_run(store)
    await store.finish_run("r1", RunStatus.TIMED_OUT, None, '"late"')
    clock.now += 5
    await store.finish_run("r1", RunStatus.CANCELLED, None, '"ignored"')
    record = await store.get_run("r1")
    assert (record.status, record.error) == (RunStatus.TIMED_OUT, '"late"')
    assert record.finished_at == clock.now - 5


async def test_a_reopened_store_has_everything(backend: Backend) -> None:
    async with backend.new_store() as store:
        await new_run(store)
        await store.claim("r1", 1, "start", "t1", 30)
        produced = (ProducedRow(ev(2, "t.A", source_step="start"), ("next",)),)
        commit = CommitRow(
            1, "start", 1, "t1", produced, (("t.P", '"hi"'),), '{"n": 7}', next_seq=3
        )
        await store.commit("r1", commit)
        await store.register_waiter("r1", WaiterRow("w", "next", "t.Answer", "{}"))
        await store.release_run("r1", ME)

    async with backend.new_store() as store:
        assert (await store.get_run("r1")).status is RunStatus.RUNNING
        assert [e.seq for e in await store.read_events("r1")] == [1, 2]
        assert [s.payload for s in await store.read_stream("r1")] == ['"hi"']
        assert await store.read_state("r1") == ('{"n": 7}', "t.State")
        snap = await store.acquire_run("r1", ME)
        assert [(d.event_seq, d.step) for d in snap.deliveries] == [(2, "next")]
        assert [w.waiter_id for w in snap.waiters] == ["w"]
        assert (snap.next_seq, snap.stream_len) == (3, 1)


async def test_a_closed_store_says_so(backend: Backend) -> None:
    store = backend.new_store()
    await store.open()
    await store.close()
    await store.close()  # twice is fine
    with pytest.raises(StoreError, match="closed"):
        await store.get_run("r1")
    with pytest.raises(StoreError, match="closed"):
        await new_run(store)


# -- claim, commit, fail -------------------------------------------------------------


async def test_claim_counts_attempts_durably(store: AnyStore) -> None:
    await new_run(store)
    assert await store.claim("r1", 1, "start", "t1", 30) == 1
    assert await store.claim("r1", 1, "start", "t2", 30) == 2
    snap = await store.acquire_run("r1", ME)
    (delivery,) = snap.deliveries
    assert (delivery.status, delivery.attempts) == ("running", 2)


async def test_create_run_can_claim_the_start_deliveries(store: AnyStore, clock: WallClock) -> None:
    record = RunRecord("r1", "wf", RunStatus.RUNNING, 1.0)
    await store.create_run(
        record, ev(1, "t.Start", "{}"), ("a", "b"), "{}", "t.State", ME, None, ("ta", "tb")
    )
    snap = await store.acquire_run("r1", ME)
    rows = {d.step: d for d in snap.deliveries}
    # claimed as a commit claims what it produces: running, attempt 1, leased
    assert [(rows[s].status, rows[s].attempts) for s in "ab"] == [("running", 1)] * 2
    assert all(rows[s].visible_at > clock.now for s in "ab")
    # a second claim is attempt 2; the create_run token is then stale
    assert await store.claim("r1", 1, "b", "tb2", 30) == 2
    with pytest.raises(FencedError):
        await store.commit("r1", CommitRow(1, "b", 1, "tb", next_seq=2))
    # the token create_run was given is the claim: its attempt commits
    assert await store.commit("r1", CommitRow(1, "a", 1, "ta", next_seq=2)) == 1


async def test_claim_is_fenced_for_done_missing_or_finished(store: AnyStore) -> None:
    await new_run(store, targets=("start", "other"))
    await store.claim("r1", 1, "start", "t1", 30)
    await store.commit("r1", CommitRow(1, "start", 1, "t1"))
    with pytest.raises(FencedError, match="done or does not exist"):
        await store.claim("r1", 1, "start", "t2", 30)
    with pytest.raises(FencedError):
        await store.claim("r1", 7, "start", "t2", 30)
    await store.finish_run("r1", RunStatus.CANCELLED, None, None)
    with pytest.raises(FencedError, match="finished"):
        await store.claim("r1", 1, "other", "t3", 30)


async def test_a_commit_to_a_run_that_ended_meanwhile_writes_nothing(
    store: AnyStore, backend: Backend
) -> None:
    await new_run(store, targets=("s",))
    await store.claim("r1", 1, "s", "ts", 30)
    await store.finish_run("r1", RunStatus.CANCELLED, None, None)  # e.g. cancelled by id
    row = CommitRow(1, "s", 1, "ts", produced=(ProducedRow(ev(2), ("s",)),), next_seq=3)
    with pytest.raises(FencedError, match="finished"):
        await store.commit("r1", row)
    # Its claim still holds the delivery (the fence was rolled back with the rest).
    rows = await backend.rows("SELECT status, claim_token FROM deliveries WHERE run_id = 'r1'")
    assert [tuple(r) for r in rows] == [("running", "ts")]
    assert await backend.rows("SELECT * FROM commits WHERE run_id = 'r1'") == []
    assert len(await store.read_events("r1")) == 1


async def test_collect_buffers_follow_each_commits_adds_and_takes(store: AnyStore) -> None:
    await new_run(store, targets=("a", "b", "c"))
    rows = []
    for step, token in (("a", "ta"), ("b", "tb"), ("c", "tc")):
        await store.claim("r1", 1, step, token, 30)
        rows.append(CommitRow(1, step, 1, token, next_seq=2))
    # a buffers event 1 twice over (another buffer too); b takes one of them; c both adds
    # and takes event 1 of buffer "x" in one attempt (it completed the set at once).
    await store.commit("r1", replace(rows[0], collect_add=(("k", "", 1), ("k", "y", 1))))
    await store.commit("r1", replace(rows[1], collect_remove=(("k", "", 1),)))
    await store.commit(
        "r1", replace(rows[2], collect_add=(("k", "x", 1),), collect_remove=(("k", "x", 1),))
    )
    snap = await store.acquire_run("r1", ME)
    assert [(c.step, c.buffer_id, c.event.seq) for c in snap.collected] == [("k", "y", 1)]


async def test_commit_applies_every_effect(store: AnyStore, backend: Backend) -> None:
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
    # the state's text comes back exactly (PostgreSQL's jsonb would reorder its keys)
    state = '{"z": 1, "a": [1.5, null]}'
    assert await store.read_state("r1") == (state, "t.State")
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
    assert snap.deliveries[0].event.payload == '{"a": 1}'
    assert snap.deliveries[3].visible_at == 1_000_007.0
    assert [(c.step, c.buffer_id, c.event.seq) for c in snap.collected] == [
        ("sb", "buf", 2),
        ("sb", "buf", 3),
    ]
    assert (snap.next_seq, snap.stream_len, snap.extra["state_version"]) == (4, 2, "1")

    # the pre-claimed delivery commits with its token, without a claim; the commit removes
    # from the buffer and leaves the state alone
    commit2 = CommitRow(3, "sc", 1, "mine", collect_remove=(("sb", "buf", 2),), next_seq=2)
    assert await store.commit("r1", commit2) == 2
    snap = await store.acquire_run("r1", ME)
    assert [c.event.seq for c in snap.collected] == [3]
    assert (snap.next_seq, snap.state, snap.extra["state_version"]) == (4, state, "1")
    # a produced delivery that was not pre-claimed is claimed, then commits
    assert await store.claim("r1", 3, "sb", "t2", 30) == 1
    assert await store.commit("r1", CommitRow(3, "sb", 1, "t2")) == 3
    sql = "SELECT commit_seq, event_seq, step, attempt, started_at FROM commits ORDER BY 1"
    assert await backend.rows(sql) == [
        (1, 1, "start", 1, 999_999.0),
        (2, 3, "sc", 1, None),
        (3, 3, "sb", 1, None),
    ]


async def test_a_commit_can_end_the_run(store: AnyStore) -> None:
    await new_run(store)
    await store.claim("r1", 1, "start", "t1", 30)
    stop = CommitRow(1, "start", 1, "t1", status=RunStatus.COMPLETED, result='{"r": 42}')
    await store.commit("r1", stop)
    record = await store.get_run("r1")
    assert (record.status, record.result, record.error) == (RunStatus.COMPLETED, '{"r": 42}', None)
    assert record.finished_at is not None
    with pytest.raises(RunFinishedError):
        await store.acquire_run("r1", ME)


async def test_a_stale_token_cannot_commit_and_writes_nothing(store: AnyStore) -> None:
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


async def test_a_commit_on_a_finished_run_is_fenced(store: AnyStore) -> None:
    await new_run(store)
    await store.claim("r1", 1, "start", "t1", 30)
    await store.finish_run("r1", RunStatus.CANCELLED, None, None)
    with pytest.raises(FencedError, match="finished"):
        await store.commit("r1", CommitRow(1, "start", 1, "t1", state='{"n": 5}'))
    assert await store.read_state("r1") == ('{"n": 0}', "t.State")


async def test_a_commit_failing_midway_leaves_nothing(store: AnyStore, backend: Backend) -> None:
    async def assert_nothing_written(commits: list[tuple[Any, ...]]) -> None:
        run_sql = "SELECT state, state_version, next_seq, next_commit_seq, stream_next FROM runs"
        assert await backend.rows(run_sql) == [('{"n": 0}', 0, 2, 1, 1)]
        assert await backend.rows("SELECT seq FROM events") == [(1,)]
        assert await backend.rows("SELECT count(*) FROM stream") == [(0,)]
        assert await backend.rows("SELECT commit_seq, claim_token FROM commits") == commits

    async def deliveries() -> list[tuple[Any, ...]]:
        return await backend.rows("SELECT step, status, claim_token FROM deliveries ORDER BY step")

    await new_run(store, targets=("start", "other"))
    await store.claim("r1", 1, "start", "t1", 30)
    # Plant a row that makes the commit's commits insert (after the fence passed) violate
    # its UNIQUE (run_id, event_seq, step).
    await backend.rows(
        "INSERT INTO commits (run_id, commit_seq, event_seq, step, attempt, claim_token,"
        " committed_at) VALUES ('r1', 99, 1, 'start', 1, 'planted', 0.0)"
    )
    produced = (ProducedRow(ev(2), ("x",)),)
    full = CommitRow(1, "start", 1, "t1", produced, (("t.P", "{}"),), '{"n": 1}', next_seq=3)
    with pytest.raises(StoreError, match="nothing from this operation") as info:
        await store.commit("r1", full)
    assert not isinstance(info.value, FencedError)
    backend.assert_conflict(info.value)
    await assert_nothing_written(commits=[(99, "planted")])
    assert await deliveries() == [("other", "pending", None), ("start", "running", "t1")]

    # A produced event whose seq is already taken fails just as cleanly.
    await backend.rows("DELETE FROM commits")
    await store.claim("r1", 1, "other", "t2", 30)
    clash = replace(full, step="other", claim_token="t2", produced=(ProducedRow(ev(1), ("x",)),))
    with pytest.raises(StoreError, match="nothing from this operation") as info:
        await store.commit("r1", clash)
    assert not isinstance(info.value, FencedError)
    backend.assert_conflict(info.value)
    await assert_nothing_written(commits=[])
    assert await deliveries() == [("other", "running", "t2"), ("start", "running", "t1")]
    # The store is still usable and the delivery can still commit.
    assert await store.commit("r1", CommitRow(1, "start", 1, "t1")) == 1


async def test_next_seq_never_falls_behind_produced_events(store: AnyStore) -> None:
    await new_run(store)
    await store.claim("r1", 1, "start", "t1", 30)
    produced = (ProducedRow(ev(5), ("x",)), ProducedRow(ev(2), ("x",)))
    await store.commit("r1", CommitRow(1, "start", 1, "t1", produced, next_seq=0))
    assert (await store.acquire_run("r1", ME)).next_seq == 6


async def test_the_stream_is_gapless_across_commits(store: AnyStore) -> None:
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


async def test_fail_attempt_with_and_without_retry(
    store: AnyStore, backend: Backend, clock: WallClock
) -> None:
    await new_run(store)
    await store.claim("r1", 1, "start", "t1", 30)
    clock.now += 3
    await store.fail_attempt("r1", 1, "start", "t1", '"boom"', 5000.0, 1, clock.now - 2)
    clock.now += 1
    sql = "SELECT status, visible_at, last_error, claim_token FROM deliveries"
    assert await backend.rows(sql) == [("pending", 5000.0, '"boom"', None)]
    with pytest.raises(FencedError):  # the failed attempt no longer holds the delivery
        await store.commit("r1", CommitRow(1, "start", 1, "t1"))

    assert await store.claim("r1", 1, "start", "t2", 30) == 2
    await store.fail_attempt("r1", 1, "start", "t2", '"again"', None, 2)
    clock.now += 1
    sql = "SELECT status, last_error, claim_token FROM deliveries"
    assert await backend.rows(sql) == [("running", '"again"', "t2")]
    with pytest.raises(FencedError):  # a stale attempt cannot reset the delivery
        await store.fail_attempt("r1", 1, "start", "t1", '"stale"', 1.0)
    give_up = CommitRow(1, "start", 2, "t2", status=RunStatus.FAILED, error='"gave up"')
    assert await store.commit("r1", give_up) == 1
    assert (await store.get_run("r1")).status is RunStatus.FAILED
    timeline = await store.read_timeline("r1")
    assert [(t.kind, t.attempt, t.error, t.retry_at) for t in timeline] == [
        ("event", None, None, None),
        ("failure", 1, '"boom"', 5000.0),
        ("failure", 2, '"again"', None),
        ("commit", 2, None, None),
    ]
    assert timeline[1].duration == 2.0


async def test_open_work_lists_the_deliveries_not_done(store: AnyStore, clock: WallClock) -> None:
    await new_run(store, targets=("start", "audit"))
    assert [
        (w.event_seq, w.step, w.status, w.attempts, w.type_key)
        for w in await store.read_open_work("r1")
    ] == [
        (1, "audit", "pending", 0, "t.Start"),
        (1, "start", "pending", 0, "t.Start"),
    ]
    await store.claim("r1", 1, "start", "t1", 30)
    produced = ProducedRow(ev(2, "t.Next", "{}", source_step="start"), ("finish",))
    await store.commit("r1", CommitRow(1, "start", 1, "t1", produced=(produced,), next_seq=3))
    assert [
        (w.event_seq, w.step, w.status, w.type_key) for w in await store.read_open_work("r1")
    ] == [
        (1, "audit", "pending", "t.Start"),
        (2, "finish", "pending", "t.Next"),
    ]
    await store.claim("r1", 2, "finish", "t2", 30)
    [audit, finish] = await store.read_open_work("r1")
    assert (finish.status, finish.attempts, finish.visible_at) == ("running", 1, clock.now + 30)
    await store.claim("r1", 1, "audit", "t3", 30)
    await store.fail_attempt("r1", 1, "audit", "t3", '"boom"', clock.now + 60, 1)
    [audit, _] = await store.read_open_work("r1")
    assert (audit.status, audit.attempts, audit.visible_at) == ("pending", 1, clock.now + 60)


# -- events from outside, waiters, memos ---------------------------------------------


async def test_submit_event_is_idempotent_by_client_event_id(store: AnyStore) -> None:
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


async def test_submit_event_allocates_a_seq_when_given_none(store: AnyStore) -> None:
    await new_run(store, targets=())
    answer = ev(0, "t.Answer", '{"ok": true}', client_event_id="c-1")
    assert await store.submit_event("r1", answer, ("human",), ()) == (2, True)
    assert await store.submit_event("r1", answer, ("human",), ()) == (2, False)  # uses no seq
    assert await store.submit_event("r1", ev(0), ("s",), ()) == (3, True)
    assert await store.submit_event("r1", ev(10), ("s",), ()) == (10, True)
    assert await store.submit_event("r1", ev(0), ("s",), ()) == (11, True)
    events = await store.read_events("r1")
    assert [(e.seq, e.client_event_id) for e in events] == [
        (1, None),
        (2, "c-1"),
        (3, None),
        (10, None),
        (11, None),
    ]


async def test_submit_event_to_a_finished_run(store: AnyStore) -> None:
    await new_run(store, targets=())
    await store.submit_event("r1", ev(2, client_event_id="c-1"), (), ())
    await store.finish_run("r1", RunStatus.COMPLETED, None, None)
    with pytest.raises(RunFinishedError, match="already finished"):
        await store.submit_event("r1", ev(3), (), ())
    with pytest.raises(RunFinishedError, match="already finished"):
        await store.submit_event("r1", ev(0), (), ())
    # a retried submission still gets its original answer
    assert await store.submit_event("r1", ev(3, client_event_id="c-1"), (), ()) == (2, False)
    assert [e.seq for e in await store.read_events("r1")] == [1, 2]


async def test_waiters_register_once_and_get_resolved(store: AnyStore) -> None:
    await new_run(store)
    waiter = WaiterRow("w-1", "start", "t.Answer", '{"user": "a"}', timeout_at=55.5)
    # what the step streamed before waiting, then its question: streamed with the waiter
    announce = [("t.Progress", "{}"), ("t.Ask", "{}")]
    assert await store.register_waiter("r1", waiter, announce) == replace(waiter, new=True)
    # idempotent: a re-executed step registering the same id gets the stored row, and its
    # events are not streamed twice
    again = WaiterRow("w-1", "start", "t.Other", "{}")
    assert await store.register_waiter("r1", again, announce) == waiter
    assert [(r.seq, r.type_key) for r in await store.read_stream("r1")] == [
        (1, "t.Progress"),
        (2, "t.Ask"),
    ]

    answer = ev(2, "t.Answer", '{"user": "a"}')
    await store.submit_event("r1", answer, ("start",), ("w-1", "w-unknown"))
    later = ev(3, "t.Answer", '{"user": "b"}')
    await store.submit_event("r1", later, ("start",), ("w-1",))  # the first answer wins
    assert (await store.register_waiter("r1", waiter)).resolved == answer

    await store.register_waiter("r1", WaiterRow("w-0", "start", "t.Answer", "{}"))
    snap = await store.acquire_run("r1", ME)  # oldest first, whatever the ids
    assert [(w.waiter_id, w.resolved) for w in snap.waiters] == [("w-1", answer), ("w-0", None)]
    assert await store.read_waiters("r1") == list(snap.waiters)


async def test_a_new_waiter_is_answered_by_the_first_committed_of_its_answers(
    store: AnyStore,
) -> None:
    await new_run(store, targets=())
    for seq in (2, 3):
        await store.submit_event("r1", ev(seq, "t.Answer", f'{{"n": {seq}}}'), (), ())
    # 9 is not committed (its commit failed); 3 and 2 are, in the order the run handed
    # them out: 3 first
    waiter = WaiterRow("w-1", "start", "t.Answer", "{}", answers=(9, 3, 2))
    stored = await store.register_waiter("r1", waiter)
    assert stored.new is True
    assert stored.resolved is not None
    assert (stored.resolved.seq, stored.resolved.payload) == (3, '{"n": 3}')
    # an existing waiter keeps what it has: answers only apply to a new one
    await store.register_waiter("r1", WaiterRow("w-2", "start", "t.Answer", "{}"))
    again = await store.register_waiter("r1", WaiterRow("w-2", "s", "t.Answer", "{}", answers=(2,)))
    assert (again.new, again.resolved) == (False, None)
    none = await store.register_waiter("r1", WaiterRow("w-3", "s", "t.Answer", "{}", answers=(9,)))
    assert (none.new, none.resolved) == (True, None)


async def test_a_commit_records_the_answers_its_events_give(store: AnyStore) -> None:
    await new_run(store, targets=("start", "other"))
    await store.register_waiter("r1", WaiterRow("w-1", "start", "t.Reply", "{}"))
    await store.register_waiter("r1", WaiterRow("w-2", "start", "t.Reply", "{}"))
    earlier = ev(2, "t.Reply", '{"n": 0}')
    await store.submit_event("r1", earlier, (), ("w-2",))  # w-2 has its answer already
    await store.claim("r1", 1, "other", "t1", 30)
    reply = ev(3, "t.Reply", '{"n": 1}', source_step="other")
    produced = (ProducedRow(reply, ()),)
    row = CommitRow(1, "other", 1, "t1", produced, next_seq=4, resolves=((3, "w-1"), (3, "w-2")))
    await store.commit("r1", row)
    resolved = {w.waiter_id: w.resolved for w in await store.read_waiters("r1")}
    assert resolved == {"w-1": reply, "w-2": earlier}  # the first answer wins


async def test_answers_to_waiters_can_be_recorded_after_the_commit(store: AnyStore) -> None:
    await new_run(store, targets=("start", "other"))
    await store.claim("r1", 1, "other", "t1", 30)
    reply = ev(2, "t.Reply", '{"n": 1}', source_step="other")
    await store.commit("r1", CommitRow(1, "other", 1, "t1", (ProducedRow(reply, ()),), next_seq=3))
    # waiters that started waiting while that commit was on its way
    for waiter_id in ("w-late", "w-answered", "w-unborn"):
        await store.register_waiter("r1", WaiterRow(waiter_id, "start", "t.Reply", "{}"))
    earlier = ev(3, "t.Reply", '{"n": 0}')
    await store.submit_event("r1", earlier, (), ("w-answered",))
    await store.record_answers("r1", [(2, "w-late"), (2, "w-answered"), (9, "w-unborn")])
    resolved = {w.waiter_id: w.resolved for w in await store.read_waiters("r1")}
    # the first answer wins, and only an event in the journal answers
    assert resolved == {"w-late": reply, "w-answered": earlier, "w-unborn": None}
    await store.record_answers("r1", [])  # nothing to do


async def test_events_sent_before_a_wait_commit_with_a_new_waiter(store: AnyStore) -> None:
    await new_run(store)
    await store.claim("r1", 1, "start", "t1", 30)
    ping = ev(2, "t.Ping", "{}", source_step="start")
    sent = SentBeforeWait(1, "start", "t1", (ProducedRow(ping, ("answer",), 0, ("tp",)),))
    stale = SentBeforeWait(1, "start", "old", sent.produced)
    with pytest.raises(FencedError):
        await store.register_waiter("r1", WaiterRow("w-0", "start", "t.Pong", "{}"), (), stale)
    assert await store.read_waiters("r1") == []  # refused as a whole: no waiter either
    waiter = WaiterRow("w-1", "start", "t.Pong", "{}")
    assert (await store.register_waiter("r1", waiter, (), sent)).new
    assert [e.seq for e in await store.read_events("r1")] == [1, 2]
    # the sent event's delivery is claimed for the sender's process, as a commit claims
    snap = await store.acquire_run("r1", ME)
    rows = {(d.event_seq, d.step): d for d in snap.deliveries}
    assert (rows[2, "answer"].status, rows[2, "answer"].attempts) == ("running", 1)
    assert snap.next_seq == 3
    # a re-run reaching the same waiter sends nothing again
    again = SentBeforeWait(1, "start", "t1", (ProducedRow(ev(3, "t.Ping"), ("answer",)),))
    assert not (await store.register_waiter("r1", waiter, (), again)).new
    assert [e.seq for e in await store.read_events("r1")] == [1, 2]
    assert await store.commit("r1", CommitRow(2, "answer", 1, "tp", next_seq=3)) == 1


async def test_state_changed_before_a_wait_commits_with_a_new_waiter(store: AnyStore) -> None:
    await new_run(store)
    await store.claim("r1", 1, "start", "t1", 30)
    stale = SentBeforeWait(1, "start", "old", (), state='{"n": 9}')
    with pytest.raises(FencedError):
        await store.register_waiter("r1", WaiterRow("w-0", "start", "t.Pong", "{}"), (), stale)
    waiter = WaiterRow("w-1", "start", "t.Pong", "{}")
    sent = SentBeforeWait(1, "start", "t1", (), state='{"n": 1}')
    assert (await store.register_waiter("r1", waiter, (), sent)).new
    snap = await store.acquire_run("r1", ME)
    assert (snap.state, snap.extra["state_version"]) == ('{"n": 1}', "1")
    assert [e.seq for e in await store.read_events("r1")] == [1]  # no event was sent
    # a re-run reaching the same waiter writes nothing again
    again = SentBeforeWait(1, "start", "t1", (), state='{"n": 2}')
    assert not (await store.register_waiter("r1", waiter, (), again)).new
    snap = await store.acquire_run("r1", ME)
    assert (snap.state, snap.extra["state_version"]) == ('{"n": 1}', "1")


async def test_memos_keep_the_first_value(store: AnyStore) -> None:
    await new_run(store)
    assert await store.get_memo("r1", "inv", "llm") is None
    assert await store.put_memo("r1", "inv", "llm", '"first"') == '"first"'
    assert await store.put_memo("r1", "inv", "llm", '"second"') == '"first"'
    assert await store.get_memo("r1", "inv", "llm") == '"first"'
    assert await store.get_memo("r1", "other", "llm") is None


# -- ownership -----------------------------------------------------------------------


async def test_acquire_run_returns_everything_needed_to_resume(store: AnyStore) -> None:
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
    assert snap.deliveries[0].event.type_key == "t.Start"
    assert (snap.state, snap.state_type) == ('{"n": 0}', "t.State")
    assert (snap.next_seq, snap.stream_len, snap.deadline) == (2, 1, 123.5)


async def test_acquire_run_can_claim_the_due_deliveries(store: AnyStore, clock: WallClock) -> None:
    await new_run(store, targets=("a", "b", "c", "d"))
    await store.claim("r1", 1, "b", "tb", 30)  # running: its owner died mid-step
    await store.claim("r1", 1, "c", "tc", 30)
    await store.fail_attempt("r1", 1, "c", "tc", "boom", clock.now + 60)  # backing off
    await store.claim("r1", 1, "d", "td", 30)
    await store.commit("r1", CommitRow(1, "d", 1, "td", stream=(("t.P", "{}"),), next_seq=2))
    snap = await store.acquire_run("r1", ME, claim=True)
    rows = {d.step: d for d in snap.deliveries}
    assert sorted(rows) == ["a", "b", "c"]  # d is done
    assert [(rows[s].status, rows[s].attempts) for s in "abc"] == [
        ("running", 1),  # pending and due: claimed, attempt 1
        ("running", 2),  # left running: claimed again, attempt 2
        ("pending", 1),  # its backoff has not passed: left alone
    ]
    token_a, token_b = rows["a"].claim_token, rows["b"].claim_token
    assert token_a
    assert token_b
    assert len({token_a, token_b, "tb"}) == 3
    assert rows["c"].claim_token is None
    # The tokens are the deliveries' claims: the dead attempt's is fenced, the new one commits.
    with pytest.raises(FencedError):
        await store.commit("r1", CommitRow(1, "b", 1, "tb", next_seq=2))
    assert await store.commit("r1", CommitRow(1, "b", 2, token_b, next_seq=2)) == 2
    assert await store.commit("r1", CommitRow(1, "a", 1, token_a, next_seq=2)) == 3
    # Without claim, nothing is claimed and no token is handed out.
    plain = await store.acquire_run("r1", ME)
    assert [(d.step, d.status, d.claim_token) for d in plain.deliveries] == [("c", "pending", None)]


async def test_release_run_can_return_claims_that_never_started(
    store: AnyStore, backend: Backend
) -> None:
    await new_run(store, targets=("a", "b"))
    await store.claim("r1", 1, "b", "tb", 30)
    await store.fail_attempt("r1", 1, "b", "tb", "boom", None)  # attempt 1 of b failed
    snap = await store.acquire_run("r1", ME, claim=True)
    claimed = [(d.event_seq, d.step, d.claim_token or "") for d in snap.deliveries]
    assert [(d.step, d.attempts) for d in snap.deliveries] == [("a", 1), ("b", 2)]
    # a's claim goes back; b's is given with a token that no longer holds it: ignored.
    await store.release_run("r1", ME, [claimed[0], (1, "b", "not-the-token")])
    rows = await backend.rows(
        "SELECT step, status, attempts, claim_token FROM deliveries WHERE run_id = 'r1'"
        " ORDER BY step"
    )
    assert [tuple(r) for r in rows] == [
        ("a", "pending", 0, None),
        ("b", "running", 2, claimed[1][2]),
    ]
    assert (await store.get_run("r1")).status is RunStatus.RUNNING
    again = await store.acquire_run("r1", ME, claim=True)
    assert [(d.step, d.attempts) for d in again.deliveries] == [("a", 1), ("b", 3)]


async def test_acquire_run_reads_the_stream_with_the_snapshot(store: AnyStore) -> None:
    await new_run(store, targets=("a",))
    await store.claim("r1", 1, "a", "ta", 30)
    stream = (("t.P", '{"i": 1}'), ("t.P", '{"i": 2}'))
    await store.commit("r1", CommitRow(1, "a", 1, "ta", stream=stream, next_seq=2))
    snap = await store.acquire_run("r1", ME)
    assert snap.stream is not None
    assert list(snap.stream) == await store.read_stream("r1")
    assert [(r.seq, r.payload) for r in snap.stream] == [(1, '{"i": 1}'), (2, '{"i": 2}')]


async def test_acquire_run_takes_over_a_dead_owner_at_once(store: AnyStore) -> None:
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


async def test_acquire_run_refuses_a_live_owner_of_this_process(store: AnyStore) -> None:
    sibling = f"{HOST}:{os.getpid()}:{uuid.uuid4().hex}"  # this process, another runner
    await new_run(store, owner=sibling)
    with pytest.raises(RunOwnedError, match=sibling):
        await store.acquire_run("r1", ME)


async def test_owner_leases_and_heartbeats(store: AnyStore, clock: WallClock) -> None:
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


async def test_only_the_owner_releases_and_heartbeats(store: AnyStore) -> None:
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


async def test_claimable_runs_are_unowned_runs_with_work_due(
    store: AnyStore, clock: WallClock
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


async def test_delete_runs_deletes_ended_runs_with_all_their_rows(
    store: AnyStore, backend: Backend, clock: WallClock
) -> None:
    await new_run(store, "old")
    await store.claim("old", 1, "start", "t", 30)
    await store.fail_attempt("old", 1, "start", "t", '"x"', 1.0, 1)
    await store.register_waiter("old", WaiterRow("w", "start", "t.A", "{}"), [("t.Q", "{}")])
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
        sql = f"SELECT count(*) FROM {table} WHERE run_id = ?"
        assert await backend.rows(sql, "old") == [(0,)], table
    assert await backend.rows("SELECT count(*) FROM attempt_failures") == [(0,)]
    assert await store.delete_runs(finished_before=clock.now + 1) == 1
    assert [r.run_id for r in await store.list_runs()] == ["running"]


# -- concurrency ---------------------------------------------------------------------


async def test_many_concurrent_commits_land_in_order(store: AnyStore) -> None:
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


async def test_postgres_leases_follow_the_server_clock(
    pg_url: str,  # noqa: F811 (the fixture)
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Workers on machines whose clocks disagree: a heartbeat written by a machine 100 s
    behind must not look 100 s old to the others (they would take over a live run)."""
    from riverbed.stores.postgres import PostgresStore

    def behind() -> float:
        return time.time() - 100

    remote = f"elsewhere.example:{os.getpid()}:{uuid.uuid4().hex}"  # cannot be probed
    async with (
        PostgresStore.from_url(pg_url, wall_clock=behind, server_clock=True) as slow,
        PostgresStore.from_url(pg_url) as right,
        PostgresStore.from_url(pg_url, wall_clock=behind, server_clock=False) as naive,
    ):
        assert 99 < slow.clock_offset < 101
        assert abs(right.clock_offset) < 1
        assert "clock is 100.0 s behind the PostgreSQL server's" in caplog.text
        await new_run(slow, "slow-owner", owner=remote)
        with pytest.raises(RunOwnedError, match=remote):
            await right.acquire_run("slow-owner", ME)
        await slow.heartbeat("slow-owner", remote)
        with pytest.raises(RunOwnedError, match=remote):
            await right.acquire_run("slow-owner", ME)
        # Without the server's clock the same live owner's lease looks lapsed.
        await new_run(naive, "naive-owner", owner=remote)
        assert (await right.acquire_run("naive-owner", ME)).owner == ME
