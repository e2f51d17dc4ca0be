"""Idle workers on PostgreSQL wake by ``LISTEN/NOTIFY`` (research §4.3), and only work left
unclaimed notifies: a submitted run, a run released with work due, an answer to a run
nobody runs. Step commits, whose follow-on work their own process runs, never notify.

Workers here poll every 30 s, so only a notification explains a start within a second.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest

from pg_cluster import pg_server, pg_url  # noqa: F401 (fixtures)
from riverbed import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    RunStatus,
    StartEvent,
    StopEvent,
    Workflow,
    step,
)
from riverbed.stores.postgres import PostgresStore
from riverbed.worker import Worker

pytestmark = pytest.mark.usefixtures("hang_guard")

#: so long that a run started within a second was started by a notification
POLL = 30.0
CHAIN = 6


class Hop(Event):
    n: int


class Chain(Workflow):
    @step
    async def first(self, ctx: Context, ev: StartEvent) -> Hop:
        await ctx.store.set("began", time.time())
        return Hop(n=1)

    @step
    async def hop(self, ctx: Context, ev: Hop) -> Hop | StopEvent:
        ctx.write_event_to_stream(Hop(n=ev.n))
        if ev.n < CHAIN:
            return Hop(n=ev.n + 1)
        return StopEvent(result=ev.n)


class Approve(Workflow):
    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> InputRequiredEvent:
        return InputRequiredEvent(prefix="approve?")

    @step
    async def decide(self, ev: HumanResponseEvent) -> StopEvent:
        return StopEvent(result=ev.response)


class Heard:
    """Notifications on a store's work channel, heard on a connection of the test's own."""

    def __init__(self) -> None:
        #: the workflow each notification names
        self.payloads: list[str] = []
        #: the run each notification names
        self.runs: list[str] = []
        self.conn: Any = None

    def __call__(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        data = json.loads(payload)
        self.payloads.append(data["workflow"])
        self.runs.append(data["run"])


@pytest.fixture
async def heard(pg_url: str) -> AsyncIterator[Heard]:  # noqa: F811
    listener = Heard()
    channel = PostgresStore.from_url(pg_url).settings.work_channel
    listener.conn = await asyncpg.connect(pg_url.split("?", 1)[0])
    await listener.conn.add_listener(channel, listener)
    try:
        yield listener
    finally:
        await listener.conn.close()


async def settle(heard: Heard) -> None:
    """Let notifications already sent reach the test's connection."""
    await heard.conn.fetchval("SELECT 1")
    await asyncio.sleep(0.1)
    await heard.conn.fetchval("SELECT 1")


@pytest.fixture
async def started() -> AsyncIterator[Callable[[Worker], asyncio.Task[None]]]:
    tasks: list[tuple[Worker, asyncio.Task[None]]] = []

    def start(worker: Worker) -> asyncio.Task[None]:
        task = asyncio.create_task(worker.run())
        tasks.append((worker, task))
        return task

    yield start
    for worker, task in tasks:
        worker.stop()
        await asyncio.wait_for(task, 10)
        await worker._store.close()


async def until(predicate: Callable[[], Any], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not await predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


async def listening(store: PostgresStore) -> None:
    """The store's LISTEN connection is up: its first wait connects and says "look now"."""
    assert await store.wait_for_work(5.0) is True


async def test_a_waiting_store_wakes_on_a_submit_from_another_connection(
    pg_url: str,  # noqa: F811
) -> None:
    waiting = PostgresStore.from_url(pg_url)
    client = Chain(store=pg_url, workflow_name="chain")
    await waiting.open()
    try:
        await listening(waiting)
        wakes: list[float] = []
        for _ in range(5):
            woke = asyncio.ensure_future(waiting.wait_for_work(POLL))
            await asyncio.sleep(0.2)  # it is waiting now
            assert not woke.done()
            await client.submit()
            submitted = time.monotonic()
            assert await asyncio.wait_for(woke, 5.0) is True
            wakes.append(time.monotonic() - submitted)
        print(f"\nwake-up after a submit: {', '.join(f'{w * 1000:.1f}' for w in wakes)} ms")
        assert max(wakes) < 1.0
        # Without anything sent it waits out its timeout and says so.
        began = time.monotonic()
        assert await waiting.wait_for_work(0.3) is False
        assert time.monotonic() - began >= 0.29
    finally:
        await waiting.close()
        await client.store.close()


async def test_a_worker_polling_every_30_s_starts_a_submitted_run_at_once(
    pg_url: str,  # noqa: F811
    started: Any,
) -> None:
    worker = Worker([Chain(workflow_name="chain")], store=pg_url, poll_interval=POLL)
    started(worker)
    await until(lambda: _listening(worker._store))
    await asyncio.sleep(0.2)  # its first looks are over: it waits for a notification
    client = Chain(store=pg_url, workflow_name="chain")
    try:
        run_id = await client.submit()
        submitted = time.time()
        await until(lambda: _ended(client, run_id), seconds=5.0)
        state = await client.store.read_state(run_id)
        began = float(json.loads(state[0])["began"])
        print(f"\nhand-off (submit to first step): {(began - submitted) * 1000:.1f} ms")
        assert began - submitted < 1.0
        assert worker.taken == 1
    finally:
        await client.store.close()


async def _listening(store: PostgresStore) -> bool:
    return store._db._listener.listening


async def _ended(workflow: Workflow, run_id: str) -> bool:
    return bool((await workflow.store.get_run(run_id)).status.is_terminal)


async def test_step_commits_never_notify(pg_url: str, heard: Heard, started: Any) -> None:  # noqa: F811
    # A run started here: every commit pre-claims its follow-on work (the fast path).
    local = Chain(store=pg_url, workflow_name="chain")
    try:
        assert await local.run() == CHAIN
        await settle(heard)
        assert heard.payloads == []

        # A submitted run: one notification, then a worker runs all of its steps silently.
        run_id = await local.submit()
        await settle(heard)
        assert heard.payloads == ["chain"]
        assert heard.runs == [run_id]
        worker = Worker([Chain(workflow_name="chain")], store=pg_url, poll_interval=POLL)
        started(worker)
        await until(lambda: _ended(local, run_id))
        await settle(heard)
        assert heard.payloads == ["chain"]
        commits = await heard.conn.fetchval(
            f'SELECT count(*) FROM "{pg_url.rsplit("=", 1)[1]}".commits WHERE run_id = $1', run_id
        )
        assert commits == CHAIN + 1
    finally:
        await local.store.close()


async def test_a_parked_run_notifies_when_answered_not_when_parked(
    pg_url: str,  # noqa: F811
    heard: Heard,
    started: Any,
) -> None:
    client = Approve(store=pg_url, workflow_name="approve")
    worker = Worker(
        [Approve(workflow_name="approve")], store=pg_url, poll_interval=POLL, park_after=0.2
    )
    started(worker)
    await until(lambda: _listening(worker._store))
    try:
        run_id = await client.submit()
        await until(lambda: _parked(worker))
        await settle(heard)
        assert heard.payloads == ["approve"]  # the submit; parking left no work due

        answered = time.monotonic()
        await client.send_event(run_id, HumanResponseEvent(response="yes"), continue_here=False)
        await until(lambda: _ended(client, run_id), seconds=5.0)
        assert time.monotonic() - answered < 1.0  # woken, not polled
        record = await client.store.get_run(run_id)
        assert record.status is RunStatus.COMPLETED
        assert record.result == '"yes"'
        await settle(heard)
        assert heard.payloads == ["approve", "approve"]
        assert worker.taken == 2
    finally:
        await client.store.close()


async def _parked(worker: Worker) -> bool:
    return worker.parked >= 1


async def test_an_event_to_a_run_nobody_runs_notifies(pg_url: str, heard: Heard) -> None:  # noqa: F811
    client = Approve(store=pg_url, workflow_name="approve")
    try:
        run_id = await client.submit()
        await settle(heard)
        # An event committed by a process that does not own the run (handoff_submit's
        # path): the run has no owner, so workers are told.
        from riverbed._engine.by_id import handoff_submit

        await handoff_submit(
            client, client.store, run_id, HumanResponseEvent(response="no"), "decide", None
        )
        await settle(heard)
        assert heard.payloads == ["approve", "approve"]
    finally:
        await client.store.close()


async def test_the_listener_comes_back_after_its_connection_is_killed(
    pg_url: str,  # noqa: F811
) -> None:
    waiting = PostgresStore.from_url(pg_url)
    client = Chain(store=pg_url, workflow_name="chain")
    await waiting.open()
    try:
        await listening(waiting)
        woke = asyncio.ensure_future(waiting.wait_for_work(POLL))
        await asyncio.sleep(0.2)
        admin = await asyncpg.connect(pg_url.split("?", 1)[0])
        try:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query = $1",
                f'LISTEN "{waiting.settings.work_channel}"',
            )
        finally:
            await admin.close()
        assert killed == 1
        # The waiter is woken (no exception), and its next wait listens again.
        assert await asyncio.wait_for(woke, 5.0) is True
        await listening(waiting)
        woke = asyncio.ensure_future(waiting.wait_for_work(POLL))
        await asyncio.sleep(0.2)
        await client.submit()
        assert await asyncio.wait_for(woke, 2.0) is True
    finally:
        await waiting.close()
        await client.store.close()


async def test_another_schema_does_not_wake_this_one(pg_url: str, pg_server: str) -> None:  # noqa: F811
    waiting = PostgresStore.from_url(pg_url)
    other_url = f"{pg_server}{'&' if '?' in pg_server else '?'}schema=riverbed_other_notify"
    other = Chain(store=other_url, workflow_name="chain")
    await waiting.open()
    try:
        assert waiting.settings.work_channel != other.store.settings.work_channel  # type: ignore[attr-defined]
        await listening(waiting)
        woke = asyncio.ensure_future(waiting.wait_for_work(0.5))
        await other.submit()
        assert await woke is False
    finally:
        await waiting.close()
        await other.store.close()
        from pg_cluster import drop_schema

        await drop_schema(pg_server, "riverbed_other_notify")


async def test_a_closed_store_waits_out_the_timeout_without_raising(pg_url: str) -> None:  # noqa: F811
    store = PostgresStore.from_url(pg_url)
    began = time.monotonic()
    assert await store.wait_for_work(0.2) is False
    assert time.monotonic() - began >= 0.19


async def test_a_notified_run_is_taken_without_querying_for_work(
    pg_url: str,  # noqa: F811
    started: Any,
) -> None:
    # The notification names the run: the worker acquires it at once, and its query for
    # claimable runs (a poll, every POLL seconds here) is not what finds it.
    client = Chain(store=pg_url, workflow_name="chain")
    # park_after: a worker holding a run looks for work every park_after / 2 too; keep
    # that beyond the test, so only the notification can make it look.
    worker = Worker(
        [Chain(workflow_name="chain")], store=pg_url, poll_interval=POLL, park_after=2 * POLL
    )
    store = worker._store
    real, queries = store.claimable_runs, []

    async def counting(*args: Any) -> list[str]:
        queries.append(args)
        return list(await real(*args))

    store.claimable_runs = counting
    started(worker)
    try:
        await until(lambda: _listening(store))
        await until(lambda: _true(bool(queries)))  # the worker's first look for work
        before = len(queries)
        run_id = await client.submit()
        await until(lambda: _ended(client, run_id), seconds=5.0)
        assert (await client.store.get_run(run_id)).result == str(CHAIN)
        assert len(queries) == before
        assert worker.taken == 1
    finally:
        await client.store.close()


async def _true(value: bool) -> bool:
    return value


def test_notified_runs_keeps_this_workers_runs_in_order() -> None:
    # No server needed: notifications are fed to the store's listener directly.
    store = PostgresStore.from_url("postgresql://app@localhost:5432/app")
    listener = store._db._listener

    def notify(run: str, workflow: str, version: str | None) -> None:
        payload = json.dumps({"run": run, "workflow": workflow, "version": version})
        listener._notified(None, 0, "riverbed_work", payload)

    notify("r1", "chain", "v1")
    notify("r2", "other", "v1")  # a workflow this worker does not serve: dropped
    notify("r3", "chain", "v0")  # a version it cannot run: dropped
    notify("r4", "chain", None)  # a run recorded without a version
    notify("r1", "chain", "v1")  # told twice
    notify("r5", "chain", "v1")
    listener._notified(None, 0, "riverbed_work", "chain")  # no run named: only wakes
    mine = [("chain", "v1")]
    assert store.notified_runs(mine, 2) == ["r1", "r4"]
    assert store.notified_runs(mine, 2) == ["r5"]  # kept for the next call, not lost
    assert store.notified_runs(mine, 2) == []
    assert listener.received == 7
