"""Durable runs given bad input: every case gets an error that names the problem and says
what to do, and nothing committed before it is lost or changed."""

from __future__ import annotations

import asyncio
import gc
import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from riverbed import (
    Context,
    ContextSerdeError,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    RunNotFoundError,
    StartEvent,
    StateValidationError,
    StopEvent,
    Workflow,
    WorkflowHandler,
    WorkflowRuntimeError,
    step,
)
from riverbed.errors import (
    RunExistsError,
    RunFinishedError,
    StoreCorruptError,
    StoreError,
    StoreLockedError,
    StoreSchemaError,
)
from riverbed.serialization import EventCodec, TypeRegistry, type_key
from riverbed.stores.base import RunStatus
from riverbed.stores.durable import EventRow
from riverbed.stores.sqlite import SqliteStore

pytestmark = pytest.mark.usefixtures("hang_guard")


# -- helpers ---------------------------------------------------------------------------------


class Progress(Event):
    msg: str


class Ask(Workflow):
    """Streams a Progress event, then waits for a human: a run that stays in the file."""

    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> InputRequiredEvent:
        await ctx.store.set("asked", ev.get("who", "someone"))
        ctx.write_event_to_stream(Progress(msg="asking"))
        return InputRequiredEvent(prefix="name?")

    @step
    async def greet(self, ev: HumanResponseEvent) -> StopEvent:
        return StopEvent(result=f"hi {ev.response}")


class Quick(Workflow):
    @step
    async def go(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result="done")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "runs.db"


def url(path: Path, query: str = "") -> str:
    return f"sqlite:///{path}{query}"


@pytest.fixture
async def workflows() -> AsyncIterator[list[Workflow]]:
    """Workflows to close at the end (each has its own store object)."""
    made: list[Workflow] = []
    yield made
    for workflow in made:
        if workflow.store.is_open:
            await workflow.store.close()


def build(made: list[Workflow], cls: type[Workflow], path: Path, query: str = "") -> Any:
    workflow = cls(store=url(path, query))
    made.append(workflow)
    return workflow


async def until_asked(handler: WorkflowHandler) -> None:
    async for ev in handler.stream_events():
        if isinstance(ev, InputRequiredEvent):
            return


async def waiting_run(made: list[Workflow], path: Path, cls: type[Workflow] = Ask) -> str:
    """A run that asked for input; its "process" then went away (the store is closed)."""
    workflow = build(made, cls, path)
    handler = workflow.run(who="ana")
    await until_asked(handler)
    await workflow.store.close()
    return str(handler.run_id)


async def finished_run(made: list[Workflow], path: Path) -> str:
    workflow = build(made, Quick, path)
    handler = workflow.run()
    assert await handler == "done"
    return str(handler.run_id)


def dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every riverbed table's rows, except run ownership (which acquiring may change)."""
    conn = sqlite3.connect(path)
    try:
        tables = ["events", "deliveries", "commits", "stream", "collected", "waiters"]
        out = {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall()) for t in tables}
        out["runs"] = sorted(
            conn.execute(
                "SELECT run_id, workflow, status, state, state_type, state_version, next_seq,"
                " next_commit_seq, stream_next, result, error FROM runs"
            ).fetchall()
        )
        return out
    finally:
        conn.close()


def truncate_to_half(path: Path) -> None:
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)


def status_of(path: Path, run_id: str) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(
            conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()[0]
        )
    finally:
        conn.close()


# -- damaged files ---------------------------------------------------------------------------


async def test_a_file_that_is_not_a_database_fails_the_run_untouched(
    db: Path, workflows: list[Workflow]
) -> None:
    garbage = os.urandom(8192)
    await asyncio.to_thread(db.write_bytes, garbage)
    handler = build(workflows, Quick, db).run()
    with pytest.raises(StoreCorruptError, match="not a SQLite database") as info:
        await handler
    message = str(info.value)
    assert str(db) in message
    assert "did not modify it" in message
    assert "backup" in message
    assert handler.status is RunStatus.FAILED
    assert await asyncio.to_thread(db.read_bytes) == garbage
    assert not await asyncio.to_thread(Path(f"{db}-wal").exists)


async def test_a_truncated_database_fails_resume_and_send_event_untouched(
    db: Path, workflows: list[Workflow]
) -> None:
    run_ids = [await waiting_run(workflows, db) for _ in range(30)]
    await asyncio.to_thread(truncate_to_half, db)
    damaged = await asyncio.to_thread(db.read_bytes)
    for attempt in (
        lambda wf: wf.resume(run_ids[0]),
        lambda wf: wf.send_event(run_ids[0], HumanResponseEvent(response="x")),
        lambda wf: wf.run(),
    ):
        workflow = build(workflows, Ask, db)
        with pytest.raises(StoreCorruptError, match=r"damaged, truncated.*Restore it"):
            await attempt(workflow)
    assert await asyncio.to_thread(db.read_bytes) == damaged


async def test_a_database_from_a_newer_riverbed_asks_for_an_upgrade(
    db: Path, workflows: list[Workflow]
) -> None:
    run_id = await waiting_run(workflows, db)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    before = dump(db)
    workflow = build(workflows, Ask, db)
    with pytest.raises(StoreSchemaError, match=r"schema version 99.*pip install -U riverbed"):
        await workflow.run()
    with pytest.raises(StoreSchemaError, match="newer riverbed"):
        await build(workflows, Ask, db).resume(run_id)
    assert dump(db) == before


# -- unknown and finished runs ---------------------------------------------------------------


async def test_an_unknown_run_id(db: Path, workflows: list[Workflow]) -> None:
    await finished_run(workflows, db)
    before = dump(db)
    workflow = build(workflows, Ask, db)
    with pytest.raises(RunNotFoundError, match=r"'nope'.*list_runs") as info:
        await workflow.resume("nope")
    assert isinstance(info.value, KeyError)  # as a dict lookup would
    with pytest.raises(RunNotFoundError, match="'nope'"):
        await workflow.send_event("nope", HumanResponseEvent(response="x"))
    assert dump(db) == before


async def test_a_finished_run_cannot_be_resumed_or_sent_events(
    db: Path, workflows: list[Workflow]
) -> None:
    run_id = await finished_run(workflows, db)
    before = dump(db)
    workflow = build(workflows, Quick, db)
    with pytest.raises(RunFinishedError, match=r"already finished \(completed\).*get_run"):
        await workflow.resume(run_id)
    with pytest.raises(RunFinishedError, match="already finished"):
        await workflow.send_event(run_id, StartEvent())
    assert dump(db) == before


async def test_resuming_with_a_workflow_of_another_name(
    db: Path, workflows: list[Workflow]
) -> None:
    run_id = await waiting_run(workflows, db)
    before = dump(db)
    with pytest.raises(WorkflowRuntimeError, match=r"belongs to workflow .*Ask.*Resume it with"):
        await build(workflows, Quick, db).resume(run_id)
    with pytest.raises(WorkflowRuntimeError, match=r"belongs to workflow .*Ask"):
        await build(workflows, Quick, db).send_event(run_id, StartEvent())
    assert dump(db) == before
    # The refused resume gave the run back: the right workflow can still take it.
    right = build(workflows, Ask, db)
    handler = await right.resume(run_id)
    await handler.send_event(HumanResponseEvent(response="ana"))
    assert await handler == "hi ana"


async def test_a_used_run_id_is_refused_and_the_old_run_is_untouched(
    db: Path, workflows: list[Workflow]
) -> None:
    done_id = await finished_run(workflows, db)
    waiting_id = await waiting_run(workflows, db)
    before = dump(db)
    workflow = build(workflows, Ask, db)
    for run_id in (done_id, waiting_id):
        handler = workflow.run(run_id=run_id)
        with pytest.raises(RunExistsError, match=f"{run_id!r} already exists.*Use a new id"):
            await handler
    assert dump(db) == before
    assert status_of(db, waiting_id) == "running"
    # The waiting run can still be finished.
    handler = await workflow.send_event(waiting_id, HumanResponseEvent(response="bo"))
    assert await handler == "hi bo"


# -- a locked file ---------------------------------------------------------------------------


async def test_a_locked_database_when_a_run_starts(db: Path, workflows: list[Workflow]) -> None:
    first = await finished_run(workflows, db)
    before = dump(db)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        handler = build(workflows, Quick, db, "?busy_timeout=0.2").run()
        with pytest.raises(StoreLockedError, match=r"busy_timeout=0.2s.*raise busy_timeout"):
            await handler
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert dump(db) == before
    # Once the lock is gone the same file works again, the earlier run intact.
    assert await build(workflows, Quick, db, "?busy_timeout=0.2").run() == "done"
    assert status_of(db, first) == "completed"


class Gate(Workflow):
    gate: asyncio.Event
    entered: asyncio.Event

    @step
    async def first(self, ctx: Context, ev: StartEvent) -> Progress:
        await ctx.store.set("first", 1)
        return Progress(msg="one")

    @step
    async def second(self, ctx: Context, ev: Progress) -> StopEvent:
        self.entered.set()
        await self.gate.wait()
        await ctx.store.set("second", 2)
        return StopEvent(result="done")


async def test_a_lock_taken_while_a_run_goes_on(
    db: Path, workflows: list[Workflow], caplog: pytest.LogCaptureFixture
) -> None:
    workflow = build(workflows, Gate, db, "?busy_timeout=0.2")
    workflow.gate, workflow.entered = asyncio.Event(), asyncio.Event()
    handler = workflow.run()
    await workflow.entered.wait()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        workflow.gate.set()
        with pytest.raises(StoreLockedError, match=r"busy_timeout=0\.2s") as info:
            await handler
        assert "Nothing committed was lost" in str(info.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    # The first step's commit is still there; the second never committed.
    conn = sqlite3.connect(db)
    try:
        commits = conn.execute("SELECT step FROM commits ORDER BY commit_seq").fetchall()
        state = conn.execute("SELECT state FROM runs").fetchone()[0]
    finally:
        conn.close()
    assert commits == [("first",)]
    assert state == '{"first": 1}'
    # The run is not recorded as failed (the store failed, not the run): it stopped here
    # (logged) and can be resumed and finish.
    assert "stopped here because the store failed" in caplog.text
    assert status_of(db, handler.run_id) == "running"
    again = build(workflows, Gate, db)
    again.gate, again.entered = asyncio.Event(), asyncio.Event()
    again.gate.set()
    resumed = await again.resume(handler.run_id)
    assert await resumed == "done"
    assert dict((await resumed.ctx.store.get_state()).items()) == {"first": 1, "second": 2}


# -- state that cannot be stored -------------------------------------------------------------


class Keeps(Workflow):
    @step
    async def go(self, ctx: Context, ev: StartEvent) -> StopEvent:
        await ctx.store.set("user", "ana")
        errors = []
        try:
            await ctx.store.set("client", object())
        except StateValidationError as exc:
            errors.append(str(exc))
        try:
            async with ctx.store.edit_state() as state:
                state["user"] = "changed"
                state["lock"] = asyncio.Lock()
        except StateValidationError as exc:
            errors.append(str(exc))
        return StopEvent(result=errors)


async def test_an_unstorable_state_value_is_refused_when_set(
    db: Path, workflows: list[Workflow]
) -> None:
    handler = build(workflows, Keeps, db).run()
    first, second = await handler
    assert "State key 'client'" in first
    assert "builtins.object" in first
    assert "keep clients and connections out of the state" in first
    assert "State key 'lock'" in second
    assert "asyncio.locks.Lock" in second
    # The state stayed as it was before each refused write; the run went on.
    state = await handler.ctx.store.get_state()
    assert dict(state.items()) == {"user": "ana"}
    conn = sqlite3.connect(db)
    try:
        row = conn.execute("SELECT status, state FROM runs").fetchone()
    finally:
        conn.close()
    assert row == ("completed", '{"user": "ana"}')


async def test_an_unstorable_state_value_left_uncaught_fails_the_run(
    db: Path, workflows: list[Workflow]
) -> None:
    class Careless(Workflow):
        @step
        async def go(self, ctx: Context, ev: StartEvent) -> StopEvent:
            await ctx.store.set("fine", 1)
            await ctx.store.set("conn", sqlite3.connect(":memory:"))
            return StopEvent()

    handler = build(workflows, Careless, db).run()
    with pytest.raises(StateValidationError, match=r"'conn'.*sqlite3.Connection"):
        await handler
    assert status_of(db, handler.run_id) == "failed"


class Typed(BaseModel):
    count: int = 0
    extra: Any = None


class TypedKeeps(Workflow):
    @step
    async def go(self, ctx: Context[Typed], ev: StartEvent) -> StopEvent:
        await ctx.store.set("count", 1)
        try:
            await ctx.store.set("extra", {"nested": [object()]})
        except StateValidationError as exc:
            return StopEvent(result=str(exc))
        return StopEvent(result="stored")


async def test_an_unstorable_value_in_typed_state(db: Path, workflows: list[Workflow]) -> None:
    handler = build(workflows, TypedKeeps, db).run()
    assert "State key 'extra'" in await handler
    state = await handler.ctx.store.get_state()
    assert (state.count, state.extra) == (1, None)


# -- stored data the workflow no longer knows ----------------------------------------------------


GONE_NAME = "tests.gone-demo"


async def run_with_a_class_that_goes_away(made: list[Workflow], path: Path) -> tuple[str, str]:
    """A waiting run whose stream holds an event of a class that no longer exists once this
    returns (as if the code was changed and the process restarted)."""

    class Gone(Event):
        msg: str

    class Before(Workflow):
        @step
        async def ask(self, ctx: Context, ev: StartEvent) -> InputRequiredEvent:
            ctx.write_event_to_stream(Gone(msg="x"))
            return InputRequiredEvent(prefix="name?")

        @step
        async def greet(self, ev: HumanResponseEvent) -> StopEvent:
            return StopEvent(result=f"hi {ev.response}")

    workflow = Before(store=url(path), workflow_name=GONE_NAME)
    handler = workflow.run()
    await until_asked(handler)
    await workflow.store.close()
    run = handler.ctx._run
    assert run is not None
    run.stream.events.clear()  # drop the instance
    for task in list(run._tasks):  # as if the process had exited: its heartbeat is gone
        task.cancel()
    await asyncio.sleep(0)
    return handler.run_id, f"{Gone.__module__}.{Gone.__qualname__}"


class After(Workflow):
    """The same workflow after the refactoring: the Gone event class was deleted."""

    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> InputRequiredEvent:
        return InputRequiredEvent(prefix="name?")

    @step
    async def greet(self, ev: HumanResponseEvent) -> StopEvent:
        return StopEvent(result=f"hi {ev.response}")


async def test_a_stored_event_whose_class_is_gone(db: Path, workflows: list[Workflow]) -> None:
    run_id, key = await run_with_a_class_that_goes_away(workflows, db)
    gc.collect()
    assert not any(type_key(c) == key for c in Event.__subclasses__()), "Gone still exists"
    before = dump(db)
    for attempt in (
        lambda wf: wf.resume(run_id),
        lambda wf: wf.send_event(run_id, HumanResponseEvent(response="x"), client_event_id="c"),
    ):
        workflow = After(store=url(db), workflow_name=GONE_NAME)
        workflows.append(workflow)
        with pytest.raises((ContextSerdeError, WorkflowRuntimeError)) as info:
            await attempt(workflow)
        message = str(info.value)
        assert repr(key) in message
        assert "restore it" in message
        # Neither the refused resume nor the refused send_event changed a row.
        assert dump(db) == before


async def test_an_event_class_missing_from_the_workflow_but_defined_still_loads(
    db: Path, workflows: list[Workflow]
) -> None:
    # Stream-only events need not appear in a step signature: a class this process
    # defines is found by its name (never imported), so this resume works.
    run_id = await waiting_run(workflows, db)

    class AskWithout(Workflow):
        @step
        async def ask(self, ctx: Context, ev: StartEvent) -> InputRequiredEvent:
            return InputRequiredEvent(prefix="name?")

        @step
        async def greet(self, ev: HumanResponseEvent) -> StopEvent:
            return StopEvent(result=f"hi {ev.response}")

    workflow = AskWithout(store=url(db), workflow_name=Ask().workflow_name)
    workflows.append(workflow)
    assert Progress not in workflow.events
    handler = await workflow.send_event(run_id, HumanResponseEvent(response="ana"))
    events = [ev async for ev in handler.stream_events()]
    assert [type(e) for e in events] == [Progress, InputRequiredEvent, StopEvent]
    assert await handler == "hi ana"


class Renamed(Workflow):
    """Ask with its second step renamed."""

    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> InputRequiredEvent:
        return InputRequiredEvent(prefix="name?")

    @step
    async def welcome(self, ev: HumanResponseEvent) -> StopEvent:
        return StopEvent(result=f"hi {ev.response}")


async def test_pending_work_for_a_step_that_is_gone(db: Path, workflows: list[Workflow]) -> None:
    run_id = await waiting_run(workflows, db)
    # The answer was committed for `greet`, then the process died before running it.
    async with SqliteStore(db) as store:
        key, payload = EventCodec(TypeRegistry()).dump(HumanResponseEvent(response="x"))
        await store.submit_event(run_id, EventRow(0, key, payload), ("greet",), ())
    before = dump(db)
    workflow = Renamed(store=url(db), workflow_name=Ask().workflow_name)
    workflows.append(workflow)
    with pytest.raises(WorkflowRuntimeError, match=r"step 'greet'.*Restore the step"):
        await workflow.resume(run_id)
    with pytest.raises(WorkflowRuntimeError, match=r"step 'greet'.*Restore the step"):
        await workflow.send_event(run_id, HumanResponseEvent(response="y"))
    # Naming a step the workflow lacks is refused before anything is written too.
    with pytest.raises(WorkflowRuntimeError, match=r"Step 'nope'.*Known steps: ask, welcome"):
        await workflow.send_event(run_id, HumanResponseEvent(response="y"), step="nope")
    assert dump(db) == before
    handler = await build(workflows, Ask, db).resume(run_id)
    assert await handler == "hi x"


# -- store URLs ------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["redis://x", "runs.db", "/tmp/runs.db", ""])
def test_an_unknown_store_url(bad: str) -> None:
    with pytest.raises(StoreError) as info:
        Quick(store=bad)
    message = str(info.value)
    assert repr(bad) in message
    assert "sqlite:///" in message
    assert "postgresql://" in message
    assert "memory://" in message


def test_an_unknown_store_url_never_shows_its_password() -> None:
    with pytest.raises(StoreError) as info:
        Quick(store="redis://admin:hunter2@cache:6379/0")
    assert "hunter2" not in str(info.value)
    assert "admin:***@cache" in str(info.value)


def test_a_sqlite_url_with_a_bad_option() -> None:
    with pytest.raises(StoreError, match=r"\['busy'\].*known: \['busy_timeout'"):
        Quick(store="sqlite:///runs.db?busy=1")


async def test_an_event_nobody_takes_is_refused_before_it_is_stored(
    db: Path, workflows: list[Workflow]
) -> None:
    """``handler.send_event`` with an event no step takes and no wait waits for: the same
    error as in memory, and the journal is unchanged (the event was committed, then
    refused)."""
    workflow = build(workflows, Ask, db)
    handler = workflow.run(who="ana")
    await until_asked(handler)
    before = dump(db)
    with pytest.raises(WorkflowRuntimeError, match="No step accepts Progress"):
        await handler.send_event(Progress(msg="nobody takes this"))
    assert dump(db) == before
    assert await handler.send_event(HumanResponseEvent(response="bo")) is True
    assert await handler == "hi bo"
