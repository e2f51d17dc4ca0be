"""SqliteStore's own concerns: its file, WAL, PRAGMAs and migrations, damaged or foreign
files, locking and URLs.

What every durable store promises (runs, claims, commits, fencing, waiters, memos,
ownership...) is tested once for SQLite and PostgreSQL in
``tests/test_durable_store_contract.py``.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from riverbed.errors import StoreCorruptError, StoreError, StoreLockedError, StoreSchemaError
from riverbed.stores import _sqlite_conn
from riverbed.stores.base import RunStatus
from riverbed.stores.durable import CommitRow
from riverbed.stores.sqlite import SqliteStore, sqlite_store_from_url
from test_durable_store_contract import ev, new_run

#: the newest schema version this riverbed ships
LATEST = max(version for version, _, _ in _sqlite_conn.load_migrations())


def raw(path: Path) -> sqlite3.Connection:
    """A plain connection to peek at (or tamper with) the file behind the store's back."""
    return sqlite3.connect(path, isolation_level=None)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "runs.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(db_path) as s:
        yield s


# -- the file ------------------------------------------------------------------------


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


async def test_a_new_file_another_connection_is_setting_up_is_waited_for(
    db_path: Path,
) -> None:
    # Two processes opening the same new file together: while one holds its lock, SQLite
    # refuses the other's switch to WAL at once ("database is locked", no busy wait). The
    # store tries again until busy_timeout instead of failing to open.
    holder = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # a new file, still in rollback-journal mode
    loop = asyncio.get_running_loop()
    release = loop.call_later(0.3, lambda: (holder.execute("COMMIT"), holder.close()))
    try:
        async with SqliteStore(db_path, busy_timeout=5.0) as store:
            await new_run(store)
            assert [e.seq for e in await store.read_events("r1")] == [1]
    finally:
        release.cancel()
    with raw(db_path) as check:
        assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# -- the writer thread -----------------------------------------------------------------


async def test_writes_run_in_order_on_one_thread_off_the_loop(store: SqliteStore) -> None:
    seen: list[tuple[int, int]] = []

    def write(conn: sqlite3.Connection, i: int) -> int:
        seen.append((i, threading.get_ident()))
        return i * 10

    results = await asyncio.gather(
        *(store._db.write(lambda conn, i=i: write(conn, i), "testing") for i in range(20))
    )
    assert results == [i * 10 for i in range(20)]
    assert [i for i, _ in seen] == list(range(20))
    threads = {ident for _, ident in seen}
    assert len(threads) == 1
    assert threading.get_ident() not in threads


async def test_a_failed_write_raises_and_rolls_back(store: SqliteStore, db_path: Path) -> None:
    await new_run(store)

    def half_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE runs SET workflow = 'changed'")
        conn.execute("SELECT * FROM no_such_table")

    with pytest.raises(StoreError, match="no_such_table") as info:
        await store._db.write(half_then_fail, "testing")
    assert isinstance(info.value.__cause__, sqlite3.OperationalError)
    with pytest.raises(KeyError):  # not a sqlite3 error: handed back as it is
        await store._db.write(lambda conn: {}["missing"], "testing")
    assert (await store.get_run("r1")).workflow != "changed"
    assert await store._db.write(lambda conn: 1, "testing") == 1  # the writer carries on


async def test_a_write_cancelled_before_it_starts_does_not_run(store: SqliteStore) -> None:
    started, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def blocking(conn: sqlite3.Connection) -> None:
        started.set()
        release.wait(5)

    first = asyncio.ensure_future(store._db.write(blocking, "testing"))
    await asyncio.to_thread(started.wait, 5)
    second = asyncio.ensure_future(store._db.write(lambda conn: ran.append("x"), "testing"))
    await asyncio.sleep(0)
    second.cancel()
    release.set()
    await first
    await store._db.write(lambda conn: None, "testing")  # everything before it has run
    assert second.cancelled()
    assert ran == []


def test_one_store_serves_several_loops(db_path: Path) -> None:
    store = SqliteStore(db_path)
    asyncio.run(store.open())
    asyncio.run(new_run(store))

    def other_thread() -> str:
        return asyncio.run(store.get_run("r1")).run_id

    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(other_thread).result() == "r1"
    asyncio.run(store.claim("r1", 1, "start", "t1", 30))
    asyncio.run(store.close())


async def test_a_closed_store_refuses_writes(db_path: Path) -> None:
    store = SqliteStore(db_path)
    await store.open()
    writer = store._db._writer
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.claim("r1", 1, "start", "t1", 30)
    assert writer is not None
    with pytest.raises(StoreError, match="closed"):  # a write that reached a stopped writer
        await writer.submit(lambda: None)


async def test_a_commit_with_state_and_an_ending_writes_both(
    store: SqliteStore, db_path: Path
) -> None:
    await new_run(store)
    await store.claim("r1", 1, "start", "t1", 30)
    await store.commit(
        "r1",
        CommitRow(1, "start", 1, "t1", state='{"n": 1}', status=RunStatus.COMPLETED, result="7"),
    )
    conn = raw(db_path)
    row = conn.execute(
        "SELECT state, state_version, status, result, owner, finished_at IS NOT NULL,"
        " next_commit_seq FROM runs"
    ).fetchone()
    conn.close()
    assert row == ('{"n": 1}', 1, "completed", "7", None, 1, 2)


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
