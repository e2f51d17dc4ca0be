"""PostgresStore under stress: migrations, concurrent connections, bad URLs, an
unreachable server, connections that break (even during COMMIT), and passwords.

Runs against the server of ``tests/pg_cluster.py``, each test in a schema of its own.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from pg_cluster import (  # noqa: F401 (fixtures)
    cluster,
    drop_schema,
    pg_server,
    pg_url,
    private_cluster,
    with_schema,
)
from riverbed import Context, StartEvent, StopEvent, Workflow, step
from riverbed.errors import (
    FencedError,
    StoreCorruptError,
    StoreError,
    StoreLockedError,
    StoreSchemaError,
)
from riverbed.stores import _pg_conn
from riverbed.stores._pg_conn import load_migrations
from riverbed.stores.base import RunRecord, RunStatus
from riverbed.stores.durable import CommitRow, EventRow, ProducedRow
from riverbed.stores.postgres import PostgresStore, StoreUnavailableError
from riverbed.stores.urls import store_from_url

LATEST = max(version for version, _, _ in load_migrations())
SECRET = "pa$$-w0rd-e9c1"


def schema_of(url: str) -> str:
    return url.rsplit("schema=", 1)[1]


@pytest.fixture
async def sql(pg_url: str) -> AsyncIterator[asyncpg.Connection]:  # noqa: F811
    conn = await asyncpg.connect(
        pg_url.split("?")[0], server_settings={"search_path": schema_of(pg_url)}
    )
    try:
        yield conn
    finally:
        await conn.close()


async def new_run(store: PostgresStore, run_id: str = "r1", targets: tuple[str, ...] = ()) -> None:
    record = RunRecord(run_id, "wf", RunStatus.RUNNING, 1.0)
    await store.create_run(record, EventRow(1, "t.S", "{}"), targets, "{}", "t.State", "me", None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- migrations ----------------------------------------------------------------------


async def test_migrations_are_applied_once(pg_url: str, sql: asyncpg.Connection) -> None:  # noqa: F811
    for _ in range(2):
        async with PostgresStore.from_url(pg_url):
            pass
    rows = await sql.fetch("SELECT version, name FROM riverbed_migrations ORDER BY version")
    assert [tuple(r) for r in rows] == [(v, n) for v, n, _ in load_migrations()]
    assert rows[0]["name"] == "0001_initial.sql"
    assert len(rows) == LATEST


async def test_concurrent_opens_of_a_new_schema_migrate_once(
    pg_url: str,  # noqa: F811
    sql: asyncpg.Connection,
) -> None:
    stores = [PostgresStore.from_url(pg_url) for _ in range(6)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        # every store works on the one schema
        await asyncio.gather(*(new_run(s, f"r{i}") for i, s in enumerate(stores)))
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    assert await sql.fetchval("SELECT count(*) FROM riverbed_migrations") == LATEST
    assert await sql.fetchval("SELECT count(*) FROM runs") == 6


async def test_a_newer_schema_asks_to_upgrade(pg_url: str, sql: asyncpg.Connection) -> None:  # noqa: F811
    async with PostgresStore.from_url(pg_url) as store:
        await new_run(store)
    await sql.execute(
        "INSERT INTO riverbed_migrations VALUES ($1, '9999_future.sql', 0)", LATEST + 1
    )
    with pytest.raises(StoreSchemaError, match=rf"version {LATEST + 1}.*up to {LATEST}"):
        await PostgresStore.from_url(pg_url).open()
    assert await sql.fetchval("SELECT count(*) FROM runs") == 1  # not modified


async def test_a_failing_migration_leaves_the_schema_as_it_was(
    pg_url: str,  # noqa: F811
    sql: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with PostgresStore.from_url(pg_url) as store:
        await new_run(store)
    shipped = load_migrations()
    broken = "CREATE TABLE half_done (x int); SELECT 1 / 0;"
    monkeypatch.setattr(
        _pg_conn, "load_migrations", lambda: [*shipped, (LATEST + 1, "9999_bad.sql", broken)]
    )
    with pytest.raises(StoreError, match="division by zero"):
        await PostgresStore.from_url(pg_url).open()
    assert await sql.fetchval("SELECT max(version) FROM riverbed_migrations") == LATEST
    assert await sql.fetchval("SELECT to_regclass('half_done')") is None
    assert await sql.fetchval("SELECT count(*) FROM runs") == 1


async def test_a_schema_with_foreign_tables_is_not_taken_over(pg_url: str) -> None:  # noqa: F811
    schema = schema_of(pg_url)
    conn = await asyncpg.connect(pg_url.split("?")[0])
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"; CREATE TABLE "{schema}".runs (x int)')
    finally:
        await conn.close()
    store = PostgresStore.from_url(pg_url)
    with pytest.raises(StoreCorruptError, match="not riverbed's") as info:
        await store.open()
    assert "runs" in str(info.value)
    assert not store.is_open


# -- concurrency: the per-run sequence ---------------------------------------------------


async def test_concurrent_committers_and_a_tailing_reader_see_a_gapless_stream(
    pg_url: str,  # noqa: F811
    sql: asyncpg.Connection,
) -> None:
    """Research §4.5: with several connections committing to one run at once, commit and
    stream numbers come out 1..n in commit order, and a reader following the stream with
    ``seq > cursor`` never skips a row (a global serial would)."""
    steps = [f"s{i}" for i in range(60)]
    stores = [PostgresStore.from_url(pg_url) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        await new_run(stores[0], targets=tuple(steps))
        for i, step_name in enumerate(steps):
            await stores[i % 4].claim("r1", 1, step_name, f"t-{step_name}", 30)
        seen: list[int] = []
        done = asyncio.Event()

        async def tail() -> None:
            while True:
                finished = done.is_set()
                rows = await stores[0].read_stream("r1", after=seen[-1] if seen else 0)
                seen.extend(r.seq for r in rows)
                if finished and not rows:
                    return
                await asyncio.sleep(0)

        async def commit(i: int, step_name: str) -> int:
            stream = tuple(("t.P", f'{{"step": "{step_name}", "k": {k}}}') for k in range(i % 3))
            row = CommitRow(1, step_name, 1, f"t-{step_name}", stream=stream, state=f'{{"i": {i}}}')
            return await stores[i % 4].commit("r1", row)

        reader = asyncio.create_task(tail())
        numbers = await asyncio.gather(*(commit(i, s) for i, s in enumerate(steps)))
        done.set()
        await reader
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    total = sum(i % 3 for i in range(len(steps)))
    assert sorted(numbers) == list(range(1, len(steps) + 1))
    assert seen == list(range(1, total + 1))
    stream = await sql.fetch("SELECT seq, commit_seq FROM stream ORDER BY seq")
    assert [r["seq"] for r in stream] == list(range(1, total + 1))
    assert [r["commit_seq"] for r in stream] == sorted(r["commit_seq"] for r in stream)
    run = await sql.fetchrow("SELECT next_commit_seq, stream_next, state_version FROM runs")
    assert tuple(run) == (len(steps) + 1, total + 1, len(steps))


async def test_one_store_applies_a_runs_transactions_in_call_order(pg_url: str) -> None:  # noqa: F811
    """The engine may build a commit on the uncommitted effects of an earlier one (a
    fan-in buffer); like SQLite's single writer, the store applies a run's transactions in
    the order they were called, although its pool has many connections."""
    steps = [f"s{i:02d}" for i in range(40)]
    async with PostgresStore.from_url(pg_url) as store:
        await new_run(store, targets=tuple(steps))
        await new_run(store, "other", targets=tuple(steps))
        for s in steps:
            await store.claim("r1", 1, s, f"t-{s}", 30)
            await store.claim("other", 1, s, f"t-{s}", 30)
        calls = [
            store.commit(r, CommitRow(1, s, 1, f"t-{s}")) for s in steps for r in ("r1", "other")
        ]
        numbers = await asyncio.gather(*calls)
    assert numbers[0::2] == list(range(1, len(steps) + 1))
    assert numbers[1::2] == list(range(1, len(steps) + 1))


async def test_concurrent_submissions_with_one_client_event_id_apply_once(
    pg_url: str,  # noqa: F811
    sql: asyncpg.Connection,
) -> None:
    stores = [PostgresStore.from_url(pg_url) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        await new_run(stores[0])
        answer = EventRow(0, "t.Answer", "{}", None, "client-1")
        results = await asyncio.gather(
            *(s.submit_event("r1", answer, ("human",), ()) for s in stores for _ in range(3))
        )
        others = await asyncio.gather(
            *(s.submit_event("r1", EventRow(0, "t.E", "{}"), ("x",), ()) for s in stores)
        )
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    assert sorted(applied for _, applied in results) == [False] * 11 + [True]
    assert len({seq for seq, _ in results}) == 1
    seqs = sorted([results[0][0], *(seq for seq, _ in others)])
    assert seqs == [2, 3, 4, 5, 6]  # allocated under the run's row lock: no gaps
    assert await sql.fetchval("SELECT count(*) FROM events WHERE client_event_id IS NOT NULL") == 1


async def test_two_processes_race_for_one_delivery_one_commit_wins(pg_url: str) -> None:  # noqa: F811
    a, b = PostgresStore.from_url(pg_url), PostgresStore.from_url(pg_url)
    async with a, b:
        await new_run(a, targets=("s",))
        await a.claim("r1", 1, "s", "ta", 30)
        await b.claim("r1", 1, "s", "tb", 30)  # a's lease lapsed, b took over
        results = await asyncio.gather(
            a.commit("r1", CommitRow(1, "s", 1, "ta", state='{"by": "a"}')),
            b.commit("r1", CommitRow(1, "s", 2, "tb", state='{"by": "b"}')),
            return_exceptions=True,
        )
        assert isinstance(results[0], FencedError)
        assert results[1] == 1
        assert await a.read_state("r1") == ('{"by": "b"}', "t.State")


# -- connections that break --------------------------------------------------------------


async def test_a_connection_killed_between_transactions_is_replaced(
    pg_url: str,  # noqa: F811
    sql: asyncpg.Connection,
) -> None:
    async with PostgresStore.from_url(pg_url + "&application_name=rb_kill") as store:
        await new_run(store, targets=("s",))
        before = await sql.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'rb_kill'"
        )
        killed = await sql.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = 'rb_kill'"
        )
        assert killed >= 1
        assert await store.claim("r1", 1, "s", "t", 30) == 1
        assert await store.commit("r1", CommitRow(1, "s", 1, "t")) == 1
        after = await sql.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'rb_kill'"
        )
        assert after
        assert not {r["pid"] for r in before} & {r["pid"] for r in after}


async def test_a_transaction_whose_connection_dies_midway_runs_again(
    pg_url: str,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    tries: list[int] = []

    async def work(conn: Any) -> int:
        tries.append(await conn.fetchval("SELECT pg_backend_pid()"))
        await conn.execute(
            "INSERT INTO memos VALUES ('r1', 'i', $1::text, '1', 0)", str(len(tries))
        )
        if len(tries) == 1:  # the server goes away mid-transaction, before COMMIT
            await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        return len(tries)

    async with PostgresStore.from_url(pg_url) as store:
        await new_run(store)
        with caplog.at_level(logging.WARNING, logger="riverbed"):
            assert await store._db.transaction(work, "testing") == 2
        assert tries[0] != tries[1]
        assert await store.get_memo("r1", "i", "1") is None  # the first try was rolled back
        assert await store.get_memo("r1", "i", "2") == "1"
    retried = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retried) == 1
    assert "while testing; retrying" in retried[0]


class LoseTheCommitReply:
    """Make the next COMMIT happen on the server but its reply be lost, as when the
    network drops right after the server committed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fired = 0
        original = asyncpg.transaction.Transaction.__aexit__

        async def aexit(tr: Any, kind: Any, exc: Any, tb: Any) -> None:
            await original(tr, kind, exc, tb)  # commits when the block raised nothing
            if kind is None and not self.fired:
                self.fired += 1
                raise asyncpg.ConnectionDoesNotExistError("connection lost (simulated)")

        monkeypatch.setattr(asyncpg.transaction.Transaction, "__aexit__", aexit)


async def test_a_step_commit_whose_reply_was_lost_is_not_applied_twice(
    pg_url: str,  # noqa: F811
    sql: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with PostgresStore.from_url(pg_url) as store:
        await new_run(store, targets=("s", "t"))
        await store.claim("r1", 1, "s", "tok", 30)
        lost = LoseTheCommitReply(monkeypatch)
        row = CommitRow(
            1,
            "s",
            1,
            "tok",
            produced=(ProducedRow(EventRow(2, "t.E", "{}"), ("x",)),),
            stream=(("t.P", "{}"),),
            state='{"n": 1}',
        )
        assert await store.commit("r1", row) == 1  # found by its claim token, not redone
        assert lost.fired == 1
        # and a claim whose reply was lost is found by its token too
        lost.fired = 0
        assert await store.claim("r1", 1, "t", "tok-t", 30) == 1
        assert lost.fired == 1
    counts = await sql.fetchrow(
        "SELECT (SELECT count(*) FROM commits), (SELECT count(*) FROM events),"
        " (SELECT count(*) FROM stream), (SELECT state_version FROM runs),"
        " (SELECT attempts FROM deliveries WHERE step = 't')"
    )
    assert tuple(counts) == (1, 2, 1, 1, 1)


async def test_an_unverifiable_lost_commit_says_the_outcome_is_unknown(
    pg_url: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with PostgresStore.from_url(pg_url) as store:
        await new_run(store)
        LoseTheCommitReply(monkeypatch)
        # without a client_event_id a lost submission cannot be told apart from a new one
        with pytest.raises(StoreUnavailableError, match="may or may not have been applied"):
            await store.submit_event("r1", EventRow(0, "t.E", "{}"), ("s",), ())
        LoseTheCommitReply(monkeypatch)
        keyed = EventRow(0, "t.E", "{}", None, "c-9")
        assert await store.submit_event("r1", keyed, ("s",), ()) == (3, True)
        assert len(await store.read_events("r1")) == 3


# -- unreachable servers, URLs, passwords ----------------------------------------------


async def test_an_unreachable_server_is_named_after_bounded_retries() -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://app:{SECRET}@127.0.0.1:{port}/db?connect_timeout=0.6"
    store = store_from_url(url)
    assert isinstance(store, PostgresStore)
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError) as info:
        await store.open()
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 5
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message
    assert "tries" in message
    assert SECRET not in message
    assert info.value.__cause__ is None  # asyncpg's error, which may echo it, is dropped
    assert isinstance(info.value, StoreError)
    assert not store.is_open


async def test_a_missing_database_is_named(pg_server: str) -> None:  # noqa: F811
    base = pg_server.rsplit("/", 1)[0]
    with pytest.raises(StoreError, match=r"no database 'nope_db'.*createdb") as info:
        await PostgresStore.from_url(f"{base}/nope_db?connect_timeout=2").open()
    assert not isinstance(info.value, StoreUnavailableError)


async def test_the_password_never_shows(pg_server: str) -> None:  # noqa: F811
    # A server that trusts loopback ignores the password; one given a password in
    # RIVERBED_TEST_PG_URL is tested with that one.
    parts = urlsplit(pg_server)
    secret = parts.password or SECRET
    user = parts.username or "postgres"
    schema = f"t_{uuid.uuid4().hex[:16]}"
    url = f"postgresql://{user}:{secret}@{parts.netloc.rsplit('@', 1)[-1]}{parts.path}"
    try:
        store = store_from_url(with_schema(url, schema))
        assert secret not in repr(store)
        assert secret not in str(store.settings)
        assert f"{user}:***@" in repr(store)
        async with store:
            await new_run(store)
            with pytest.raises(StoreError) as info:
                await new_run(store)
            assert secret not in str(info.value)
    finally:
        await drop_schema(pg_server, schema)
    for bad in (
        f"postgresql://u:{SECRET}@h:notaport/db",
        f"postgresql://u:{SECRET}@h/db?bogus=1",
        f"postgresql://u:{SECRET}@h/db?schema=no;drop",
        f"postgresql://u:{SECRET}@h/db?pool_size=x",
        f"mysql://u:{SECRET}@h/db",
    ):
        with pytest.raises(StoreError) as bad_info:
            store_from_url(bad)
        assert SECRET not in str(bad_info.value), bad


def test_urls() -> None:
    store = store_from_url(
        "postgres://me:p%40ss@db.example:6543/app?schema=wf&lease_seconds=5&pool_size=3"
        "&connect_timeout=2&sslmode=require"
    )
    assert isinstance(store, PostgresStore)
    s = store.settings
    assert (s.host, s.port, s.user, s.password, s.database) == (
        "db.example",
        6543,
        "me",
        "p@ss",
        "app",
    )
    assert (s.schema, s.lease_seconds, s.pool_size, s.connect_timeout, s.sslmode) == (
        "wf",
        5.0,
        3,
        2.0,
        "require",
    )
    assert store.lease_seconds == 5.0
    assert repr(store) == "PostgresStore('postgresql://me:***@db.example:6543/app?schema=wf')"
    local = store_from_url("postgresql:///app?host=/var/run/postgresql")
    assert (local.settings.host, local.settings.port, local.settings.schema) == (
        "/var/run/postgresql",
        5432,
        "riverbed",
    )


async def test_a_row_locked_too_long_raises_store_locked(
    pg_url: str,  # noqa: F811
    sql: asyncpg.Connection,
) -> None:
    async with PostgresStore.from_url(pg_url + "&lock_timeout=0.3") as store:
        await new_run(store)
        async with sql.transaction():
            await sql.execute("SELECT 1 FROM runs WHERE run_id = 'r1' FOR UPDATE")
            started = time.monotonic()
            with pytest.raises(StoreLockedError, match=r"lock_timeout=0.3s while finishing"):
                await store.finish_run("r1", RunStatus.FAILED, None, "x")
            assert time.monotonic() - started < 3
        await store.finish_run("r1", RunStatus.FAILED, None, "x")  # free again
        assert (await store.get_run("r1")).status is RunStatus.FAILED


async def test_a_closed_store_says_so(pg_url: str) -> None:  # noqa: F811
    store = PostgresStore.from_url(pg_url)
    with pytest.raises(StoreError, match="closed"):
        await store.get_run("r1")


# -- a workflow, end to end ------------------------------------------------------------


class Counter(Workflow):
    @step
    async def count(self, ctx: Context, ev: StartEvent) -> StopEvent:
        await ctx.store.set("n", ev.n)
        return StopEvent(result=ev.n + 1)


async def test_a_workflow_on_a_postgres_url_and_resumed_from_another_store(
    pg_url: str,  # noqa: F811
) -> None:
    first = Counter(store=pg_url.replace("postgresql://", "postgres://"))
    handler = first.run(n=41, run_id="counted")
    assert await handler == 42
    await first.store.close()
    second = Counter(store=pg_url)
    try:
        await second.open_store()
        record = await second.store.get_run("counted")
        assert record.status is RunStatus.COMPLETED
        assert await second.store.read_state("counted") == ('{"n": 41}', "riverbed.state.DictState")
    finally:
        await second.store.close()


async def test_the_store_rides_out_a_server_crash_and_restart() -> None:
    """The server dies (``pg_ctl stop -m immediate``: no shutdown, crash recovery on the
    next start) while the store is in use; operations wait, reconnect and go on, and
    nothing committed before the crash is lost."""
    with private_cluster() as (url, directory, port):
        store = PostgresStore.from_url(f"{url}?schema=crash&connect_timeout=30")
        async with store:
            await new_run(store, targets=("s", "t"))
            await store.claim("r1", 1, "s", "ts", 30)
            assert await store.commit("r1", CommitRow(1, "s", 1, "ts", state='{"n": 1}')) == 1
            cluster("stop", directory, "immediate")

            async def restart() -> None:
                await asyncio.sleep(0.5)
                await asyncio.to_thread(cluster, "start", directory, str(port))

            restarting = asyncio.create_task(restart())
            started = time.monotonic()
            assert await store.claim("r1", 1, "t", "tt", 30) == 1  # waits for the server
            assert time.monotonic() - started >= 0.5
            await restarting
            assert await store.commit("r1", CommitRow(1, "t", 1, "tt")) == 2
            assert await store.read_state("r1") == ('{"n": 1}', "t.State")


def test_run_sync_twice_uses_a_pool_per_event_loop(pg_server: str) -> None:  # noqa: F811
    """Each run_sync has its own asyncio.run (its own loop); asyncpg connections belong
    to one loop, so the store opens a new pool in the new loop."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    workflow = Counter(store=with_schema(pg_server, schema))
    try:
        assert workflow.run_sync(n=1) == 2
        assert workflow.run_sync(n=2) == 3
        assert asyncio.run(workflow.store.list_runs(limit=5))[0].result == "3"
    finally:
        asyncio.run(workflow.store.close())
        asyncio.run(drop_schema(pg_server, schema))


# -- the store's loop ------------------------------------------------------------------


async def test_a_store_kept_on_its_callers_loop_needs_no_thread(pg_url: str) -> None:  # noqa: F811
    from riverbed.stores._pg_loop import HomeLoop

    store = PostgresStore.from_url(pg_url)
    store.use_running_loop()
    async with store:
        home = store._db._thread
        assert isinstance(home, HomeLoop)  # no thread of the store's own: the pool is here
        assert home.loop is asyncio.get_running_loop()
        await new_run(store)
        assert (await store.get_run("r1")).status is RunStatus.RUNNING

        # Another loop (a thread of its own, as run_sync makes) still reaches it.
        def elsewhere() -> RunStatus:
            return asyncio.run(store.get_run("r1")).status

        assert await asyncio.to_thread(elsewhere) is RunStatus.RUNNING
        with pytest.raises(StoreError, match="before the store is opened"):
            store.use_running_loop()
    assert not store.is_open
