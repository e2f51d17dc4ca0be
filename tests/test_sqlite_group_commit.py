"""Group commit in the SQLite store's writer: writes that queue up together share one
transaction, each in its own savepoint, and each keeps its own outcome."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from riverbed import Context, Event, StartEvent, StopEvent, Workflow, step
from riverbed.errors import StoreError
from riverbed.stores import _sqlite_writer
from riverbed.stores._sqlite_conn import SqliteConnections
from riverbed.stores.sqlite import SqliteStore

pytestmark = pytest.mark.usefixtures("hang_guard")


@pytest.fixture
async def conns(tmp_path: Path) -> AsyncIterator[SqliteConnections]:
    db = SqliteConnections(tmp_path / "group.db", "NORMAL", 5.0)
    await db.open()
    await db.write(lambda c: c.execute("CREATE TABLE t (k TEXT PRIMARY KEY)"), "creating t")
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
def groups(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every group the writer runs."""
    sizes: list[int] = []
    real = _sqlite_writer.run_group

    def counting(
        conn: sqlite3.Connection | None, jobs: list[_sqlite_writer.Job], tr: object
    ) -> None:
        sizes.append(len(jobs))
        real(conn, jobs, tr)  # type: ignore[arg-type]

    monkeypatch.setattr("riverbed.stores._sqlite_conn.run_group", counting)
    return sizes


def insert(key: str) -> Callable[[sqlite3.Connection], str]:
    def tx(conn: sqlite3.Connection) -> str:
        conn.execute("INSERT INTO t (k) VALUES (?)", (key,))
        return key

    return tx


async def keys(db: SqliteConnections) -> list[str]:
    return await db.read(lambda c: [r[0] for r in c.execute("SELECT k FROM t ORDER BY k")], "")


async def queued_behind_a_blocked_write(
    db: SqliteConnections, txs: list[Callable[[sqlite3.Connection], str]]
) -> list[str | BaseException]:
    """Start a write that blocks the writer, queue ``txs`` behind it, then let it go: the
    queued ones reach the writer together."""
    entered, release = threading.Event(), threading.Event()

    def blocker(conn: sqlite3.Connection) -> str:
        entered.set()
        release.wait(10)
        conn.execute("INSERT INTO t (k) VALUES ('blocker')")
        return "blocker"

    first = asyncio.ensure_future(db.write(blocker, "blocking"))
    await asyncio.to_thread(entered.wait, 10)
    rest = [asyncio.ensure_future(db.write(tx, f"write {i}")) for i, tx in enumerate(txs)]
    await asyncio.sleep(0)  # every write is in the writer's queue
    release.set()
    assert await first == "blocker"
    return list(await asyncio.gather(*rest, return_exceptions=True))


async def test_writes_queued_together_share_one_transaction(
    conns: SqliteConnections, groups: list[int]
) -> None:
    out = await queued_behind_a_blocked_write(conns, [insert(k) for k in "abcd"])
    assert out == ["a", "b", "c", "d"]
    assert groups[-2:] == [1, 4]  # the blocker alone, then the four queued behind it
    assert await keys(conns) == ["a", "b", "blocker", "c", "d"]


async def test_a_failing_write_in_a_group_rolls_back_only_itself(
    conns: SqliteConnections, groups: list[int]
) -> None:
    def half_then_fail(conn: sqlite3.Connection) -> str:
        conn.execute("INSERT INTO t (k) VALUES ('half')")
        raise ValueError("the step's own check failed")

    out = await queued_behind_a_blocked_write(
        conns, [insert("a"), half_then_fail, insert("a"), insert("c")]
    )
    assert out[0] == "a"
    assert out[3] == "c"
    assert isinstance(out[1], ValueError)
    # a SQLite error is translated into the store's error, naming what was being done
    assert isinstance(out[2], StoreError)
    assert "Write 2 conflicts" in str(out[2])
    assert groups[-1] == 4
    assert await keys(conns) == ["a", "blocker", "c"]


async def test_a_write_that_ends_the_whole_transaction_reruns_the_ones_before_it(
    conns: SqliteConnections,
) -> None:
    # SQLite ends the transaction itself after some errors (an I/O error, a full disk);
    # the writes before it in the group were undone with it and must run again.
    def abort(conn: sqlite3.Connection) -> str:
        conn.execute("ROLLBACK")
        raise sqlite3.OperationalError("disk I/O error")

    out = await queued_behind_a_blocked_write(conns, [insert("a"), abort, insert("c")])
    assert out[0] == "a"
    assert out[2] == "c"
    assert isinstance(out[1], StoreError)
    assert await keys(conns) == ["a", "blocker", "c"]


async def test_a_failed_commit_fails_every_write_of_its_group(conns: SqliteConnections) -> None:
    await conns.write(
        lambda c: c.execute(
            "CREATE TABLE child (k TEXT REFERENCES t (k) DEFERRABLE INITIALLY DEFERRED)"
        ),
        "creating child",
    )

    def orphan(conn: sqlite3.Connection) -> str:
        # checked at COMMIT only: the shared COMMIT fails, so nothing in the group is kept
        conn.execute("INSERT INTO child (k) VALUES ('nobody')")
        return "orphan"

    out = await queued_behind_a_blocked_write(conns, [insert("a"), orphan, insert("c")])
    assert all(isinstance(o, StoreError) for o in out), out
    assert await keys(conns) == ["blocker"]


class Item(Event):
    n: int


class Done(Event):
    n: int


class FanOut(Workflow):
    @step
    async def start(self, ctx: Context, ev: StartEvent) -> Item | None:
        for n in range(20):
            ctx.send_event(Item(n=n))
        return None

    @step(num_workers=8)
    async def work(self, ev: Item) -> Done:
        await asyncio.sleep(0)
        return Done(n=ev.n)

    @step
    async def join(self, ctx: Context, ev: Done) -> StopEvent | None:
        got = ctx.collect_events(ev, [Done] * 20)
        if got is None:
            return None
        return StopEvent(result=sorted(e.n for e in got))  # type: ignore[attr-defined]


async def test_concurrent_steps_commit_in_groups_and_lose_nothing(
    tmp_path: Path, groups: list[int]
) -> None:
    store = SqliteStore(tmp_path / "runs.db")
    results = await asyncio.gather(*(FanOut(store=store).run(run_id=f"r{i}") for i in range(4)))
    assert results == [list(range(20))] * 4
    assert max(groups) > 1  # steps of concurrent runs did share transactions
    conn = sqlite3.connect(tmp_path / "runs.db")
    try:
        commits = conn.execute("SELECT run_id, count(*) FROM commits GROUP BY run_id").fetchall()
        open_work = conn.execute("SELECT count(*) FROM deliveries WHERE status != 'done'")
        assert open_work.fetchone()[0] == 0
    finally:
        conn.close()
    # start + 20 work + 20 join per run: one commit each
    assert sorted(commits) == [(f"r{i}", 41) for i in range(4)]
    await store.close()
