"""Reading runs back (timeline, details), pruning old runs, paging and cancelling by id."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from pathlib import Path

import pytest

from riverbed import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    MemoryStore,
    RunFinishedError,
    RunNotFoundError,
    RunStatus,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowCancelledByUser,
    step,
)
from riverbed._engine.durable import owner_id
from riverbed.inspection import RunDetails, read_run, type_name
from riverbed.retry_policy import ConstantDelayRetryPolicy
from riverbed.stores._sqlite_conn import load_migrations, split_statements
from riverbed.stores.sqlite import SqliteStore

pytestmark = pytest.mark.usefixtures("hang_guard")


class Drafted(Event):
    text: str


class Flaky(Workflow):
    failures = 0

    @step
    async def draft(self, ctx: Context, ev: StartEvent) -> Drafted:
        await ctx.store.set("topic", ev.topic)
        ctx.write_event_to_stream(Event(msg="drafting"))
        return Drafted(text=f"about {ev.topic}")

    @step(retry_policy=ConstantDelayRetryPolicy(delay=0.01, maximum_attempts=3))
    async def publish(self, ctx: Context, ev: Drafted) -> StopEvent:
        if type(self).failures < 1:
            type(self).failures += 1
            raise ConnectionError("the printer is jammed")
        await asyncio.sleep(0.02)
        return StopEvent(result=ev.text.upper())


class Ask(Workflow):
    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> InputRequiredEvent:
        return InputRequiredEvent(prefix="?")

    @step
    async def answer(self, ctx: Context, ev: HumanResponseEvent) -> StopEvent:
        return StopEvent(result=ev.response)


def url(tmp_path: Path, extra: str = "") -> str:
    return f"sqlite:///{tmp_path / 'runs.db'}{extra}"


async def until_asked(handler: object) -> None:
    async for ev in handler.stream_events():  # type: ignore[attr-defined]
        if isinstance(ev, InputRequiredEvent):
            return


async def test_the_timeline_shows_events_failures_and_commits_in_order(tmp_path: Path) -> None:
    Flaky.failures = 0
    workflow = Flaky(store=url(tmp_path))
    assert await workflow.run(run_id="r1", topic="rivers") == "ABOUT RIVERS"

    timeline = await workflow.store.read_timeline("r1")
    shape = [(row.kind, row.step, type_name(row.type_key or "")) for row in timeline]
    assert shape == [
        ("event", None, "StartEvent"),
        ("commit", "draft", ""),
        ("event", None, "Drafted"),  # produced in draft's commit, so listed after it
        ("failure", "publish", ""),
        ("commit", "publish", ""),
        ("event", None, "StopEvent"),
    ]
    failure = next(row for row in timeline if row.kind == "failure")
    assert failure.attempt == 1
    assert "the printer is jammed" in (failure.error or "")
    assert (failure.retry_at or 0) >= failure.at
    last = timeline[-2]
    assert (last.attempt, last.commit_seq) == (2, 2)
    assert (last.duration or 0) >= 0.02
    produced = next(row for row in timeline if row.type_key and row.type_key.endswith("Drafted"))
    assert produced.source_step == "draft"


async def test_read_run_gives_state_result_stream_and_attempts(tmp_path: Path) -> None:
    Flaky.failures = 0
    workflow = Flaky(store=url(tmp_path))
    await workflow.run(run_id="r1", topic="deltas")

    details = await read_run(workflow.store, "r1")
    assert details.record.status is RunStatus.COMPLETED
    assert details.result == "ABOUT DELTAS"
    assert details.state["topic"] == "deltas"
    assert [(a.step, a.attempt, a.outcome) for a in details.attempts] == [
        ("draft", 1, "committed"),
        ("publish", 1, "retrying"),
        ("publish", 2, "committed"),
    ]
    assert [e.type for e in details.events] == ["StartEvent", "Drafted", "StopEvent"]
    assert details.events[1].data["text"] == "about deltas"
    assert (details.stream[0].seq, details.stream[0].type) == (1, "Event")
    data = json.loads(json.dumps(details.to_dict()))
    assert data["run"]["status"] == "completed"
    assert data["attempts"][1]["error"].startswith("ConnectionError")


async def test_read_run_of_an_unknown_id(tmp_path: Path) -> None:
    workflow = Flaky(store=url(tmp_path))
    await workflow.open_store()
    with pytest.raises(RunNotFoundError, match="nope"):
        await read_run(workflow.store, "nope")


async def test_prune_deletes_ended_runs_with_all_their_rows_and_keeps_running_ones(
    tmp_path: Path,
) -> None:
    Flaky.failures = 0
    workflow = Flaky(store=url(tmp_path))
    await workflow.run(run_id="old", topic="a")
    Flaky.failures = 0
    await workflow.run(run_id="older", topic="b")
    asker = Ask(store=url(tmp_path))
    waiting = asker.run(run_id="waiting")
    await until_asked(waiting)

    store: SqliteStore = workflow.store
    assert await store.delete_runs(time.time() - 3600) == 0  # nothing that old
    assert await store.delete_runs(time.time() + 1) == 2
    assert [r.run_id for r in await store.list_runs()] == ["waiting"]
    conn = sqlite3.connect(tmp_path / "runs.db")
    for table in ("events", "deliveries", "commits", "stream", "attempt_failures", "waiters"):
        left = {row[0] for row in conn.execute(f"SELECT DISTINCT run_id FROM {table}")}
        assert left <= {"waiting"}, table
    conn.close()
    await waiting.send_event(HumanResponseEvent(response="still here"))
    assert await waiting == "still here"


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_list_runs_pages_newest_first(tmp_path: Path, kind: str) -> None:
    store = MemoryStore() if kind == "memory" else url(tmp_path)
    workflow = Ask(store=store)
    for i in range(5):
        handler = workflow.run(run_id=f"r{i}")
        await until_asked(handler)
        await handler.send_event(HumanResponseEvent(response=str(i)))
        await handler
        await asyncio.sleep(0.002)  # distinct creation times
    first = await workflow.store.list_runs(limit=2)
    second = await workflow.store.list_runs(limit=2, offset=2)
    rest = await workflow.store.list_runs(limit=2, offset=4)
    assert [r.run_id for r in first + second + rest] == ["r4", "r3", "r2", "r1", "r0"]
    assert await workflow.store.list_runs(limit=2, offset=5) == []


async def test_cancel_run_by_id_of_a_run_running_here(tmp_path: Path) -> None:
    workflow = Ask(store=url(tmp_path))
    handler = workflow.run(run_id="r1")
    await until_asked(handler)
    record = await workflow.cancel_run("r1")
    assert record.status is RunStatus.CANCELLED
    with pytest.raises(WorkflowCancelledByUser):
        await handler


async def test_cancel_run_by_id_of_a_run_nobody_runs(tmp_path: Path) -> None:
    first = Ask(store=url(tmp_path))
    handler = first.run(run_id="r1")
    await until_asked(handler)
    run = handler.ctx._run
    assert run is not None
    for task in list(run._tasks):  # the process "dies" while the run waits
        task.cancel()
    first._live.clear()
    await first.store.release_run("r1", owner_id())

    other = Ask(store=url(tmp_path))
    record = await other.cancel_run("r1")
    assert record.status is RunStatus.CANCELLED
    assert "cancelled by the user" in (record.error or "")
    with pytest.raises(RunFinishedError, match="already ended"):
        await other.cancel_run("r1")
    with pytest.raises(RunFinishedError):
        await other.resume("r1")


async def test_cancel_run_by_id_stops_the_process_that_runs_it(tmp_path: Path) -> None:
    owner = Ask(store=url(tmp_path, "?lease_seconds=0.3"))
    handler = owner.run(run_id="r1")
    await until_asked(handler)

    elsewhere = Ask(store=url(tmp_path, "?lease_seconds=0.3"))
    elsewhere._live.clear()  # stands for another process: it does not run r1
    await elsewhere.cancel_run("r1")
    # The owner notices at its next heartbeat (a third of the lease) and stops.
    with pytest.raises(WorkflowCancelledByUser):
        await asyncio.wait_for(asyncio.shield(handler), 5)
    assert (await owner.store.get_run("r1")).status is RunStatus.CANCELLED


async def test_cancel_run_errors(tmp_path: Path) -> None:
    workflow = Ask(store=url(tmp_path))
    await workflow.open_store()
    with pytest.raises(RunNotFoundError):
        await workflow.cancel_run("missing")
    memory = Ask()
    with pytest.raises(RunNotFoundError):
        await memory.cancel_run("missing")


async def test_a_version_2_database_is_upgraded_and_its_old_runs_read(tmp_path: Path) -> None:
    Flaky.failures = 0
    path = tmp_path / "runs.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    for version, name, sql in load_migrations()[:2]:
        conn.execute("BEGIN IMMEDIATE")
        for statement in split_statements(sql):
            conn.execute(statement)
        conn.execute("INSERT INTO riverbed_migrations VALUES (?, ?, ?)", (version, name, 0.0))
        conn.execute(f"PRAGMA user_version = {version}")
        conn.execute("COMMIT")
    conn.close()

    workflow = Flaky(store=f"sqlite:///{path}")
    assert await workflow.run(run_id="r", topic="x") == "ABOUT X"
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == 4
    raw.close()
    kinds = [row.kind for row in await workflow.store.read_timeline("r")]
    assert (kinds.count("commit"), kinds.count("failure")) == (2, 1)


class Busy(Workflow):
    @step
    async def churn(self, ctx: Context, ev: StartEvent) -> Drafted:
        await asyncio.sleep(0.3)  # cancelled from elsewhere meanwhile: its commit is refused
        return Drafted(text="x")

    @step
    async def finish(self, ev: Drafted) -> StopEvent:
        return StopEvent(result=ev.text)


async def test_a_busy_run_cancelled_elsewhere_ends_cancelled_in_its_process(
    tmp_path: Path,
) -> None:
    owner = Busy(store=url(tmp_path))  # default lease: the heartbeat would take 10 s
    handler = owner.run(run_id="b")
    await asyncio.sleep(0.1)
    elsewhere = Busy(store=url(tmp_path))
    await elsewhere.cancel_run("b")
    with pytest.raises(WorkflowCancelledByUser):
        await asyncio.wait_for(asyncio.shield(handler), 3)
    record = await owner.store.get_run("b")
    assert record.status is RunStatus.CANCELLED
    assert await owner.store.read_timeline("b") == [
        row for row in await owner.store.read_timeline("b") if row.kind == "event"
    ]  # the refused commit left nothing behind


class Juggler(Workflow):
    """``work`` blocks until released; ``shaky`` fails and backs off for a minute."""

    release: asyncio.Event

    @step
    async def fan(self, ctx: Context, ev: StartEvent) -> Drafted:
        ctx.send_event(Drafted(text="shaky"))
        return Drafted(text="work")

    @step(retry_policy=ConstantDelayRetryPolicy(delay=60, maximum_attempts=3))
    async def handle(self, ev: Drafted) -> StopEvent | None:
        if ev.text == "shaky":
            raise ConnectionError("not yet")
        await type(self).release.wait()
        return StopEvent(result="done")


async def test_read_run_shows_the_open_work_and_a_run_waiting_for_input(tmp_path: Path) -> None:
    Juggler.release = asyncio.Event()
    workflow = Juggler(store=url(tmp_path))
    await workflow.open_store()
    handler = workflow.run(run_id="busy")

    async def read() -> RunDetails | None:
        with contextlib.suppress(RunNotFoundError):  # not created yet
            return await read_run(workflow.store, "busy")
        return None

    for _ in range(200):
        await asyncio.sleep(0.01)
        details = await read()
        if details is not None and len(details.attempts) == 2:
            break  # fan committed, shaky's first attempt failed
    assert details is not None
    work = {(w.step, w.event_seq, w.event_type, w.status, w.attempts) for w in details.open_work}
    assert work == {("handle", 2, "Drafted", "pending", 1), ("handle", 3, "Drafted", "running", 1)}
    pending = next(w for w in details.open_work if w.status == "pending")
    assert pending.not_before > time.time() + 30  # the retry backs off for a minute
    assert not details.waiting_for_input
    assert details.to_dict()["open_work"][0]["step"] == "handle"
    Juggler.release.set()
    assert await handler == "done"
    ended = await read_run(workflow.store, "busy")
    assert (ended.open_work, ended.waiting_for_input) == ([], False)

    for cls in (Ask, AskInOwnWords):
        await _asks_and_is_answered(workflow.store, cls)


class Question(InputRequiredEvent):
    topic: str


class AskInOwnWords(Workflow):
    """Asks with its own InputRequiredEvent subclass."""

    @step
    async def ask(self, ev: StartEvent) -> Question:
        return Question(topic="name")

    @step
    async def answer(self, ev: HumanResponseEvent) -> StopEvent:
        return StopEvent(result=ev.response)


async def _asks_and_is_answered(store: SqliteStore, cls: type[Workflow]) -> None:
    asker = cls(store=store)
    waiting = asker.run(run_id="asks")
    await until_asked(waiting)
    details = await read_run(store, "asks")
    assert (details.open_work, details.waiting, details.waiting_for_input) == ([], [], True)
    assert details.to_dict()["waiting_for_input"] is True
    await waiting.send_event(HumanResponseEvent(response="ok"))
    assert await waiting == "ok"
    assert not (await read_run(store, "asks")).waiting_for_input
    await store.delete_runs(time.time() + 1)
