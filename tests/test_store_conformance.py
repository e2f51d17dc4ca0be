"""One behaviour, every store: the same workflows run on ``memory://``, on SQLite and on
PostgreSQL.

Every test takes the ``backend`` fixture, which is parametrized over the stores and builds
``Workflow(store=...)``. A durable run must behave exactly like an in-memory one as far as
the caller can see (results, errors, stream, state). Where the stores promise different
things (a failed attempt's state edits, below), each test asserts what each store promises
and says why.

For the durable stores, :meth:`Backend.check` also reads the rows a run left behind and
checks the durable contract (``docs/durability.md``, research §2.3): the run's status,
exactly one commit per finished delivery (P3), a gapless stream in commit order that matches
what the readers saw (P6), and an event journal whose sequence numbers never fall behind.
PostgreSQL tests run each in a schema of their own on the server of ``tests/pg_cluster.py``
(skipped, saying why, when there is none).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from pg_cluster import drop_schema, pg_server, with_schema  # noqa: F401 (a fixture)
from riverbed import (
    ConstantDelayRetryPolicy,
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StateValidationError,
    StepFailedEvent,
    StopEvent,
    Workflow,
    WorkflowCancelledByUser,
    WorkflowCancelledEvent,
    WorkflowFailedEvent,
    WorkflowHandler,
    WorkflowRuntimeError,
    WorkflowTimedOutEvent,
    WorkflowTimeoutError,
    catch_error,
    step,
)
from riverbed.stores.base import RunStatus
from riverbed.testing import FakeClock

pytestmark = pytest.mark.usefixtures("hang_guard")


# -- the fixture -----------------------------------------------------------------------


@dataclass
class Rows:
    """What a durable run left in its database."""

    status: str
    result: Any
    error: str | None
    state: Any
    state_version: int
    parent_run_id: str | None
    #: (seq, type name, payload) of every event that entered the run
    events: list[tuple[int, str, Any]]
    #: (event_seq, step, status, attempts) of every delivery
    deliveries: list[tuple[int, str, str, int]]
    #: (commit_seq, event_seq, step, attempt)
    commits: list[tuple[int, int, str, int]]
    #: (seq, commit_seq, type name, payload) of the durable stream
    stream: list[tuple[int, int, str, Any]]
    #: (step, buffer_id, event_seq) held in collect buffers
    collected: list[tuple[str, str, int]]


def _name(type_key: str) -> str:
    return type_key.rsplit(".", 1)[-1]


RUN_SQL = (
    "SELECT status, result, error, state, state_version, parent_run_id FROM runs WHERE run_id = ?"
)
#: the same SQL for SQLite and PostgreSQL (``?`` becomes ``$1``)
ROW_SQL = {
    "events": "SELECT seq, type_key, payload FROM events WHERE run_id = ? ORDER BY seq",
    "deliveries": "SELECT event_seq, step, status, attempts FROM deliveries"
    " WHERE run_id = ? ORDER BY event_seq, step",
    "commits": "SELECT commit_seq, event_seq, step, attempt FROM commits"
    " WHERE run_id = ? ORDER BY commit_seq",
    "stream": "SELECT seq, commit_seq, type_key, payload FROM stream WHERE run_id = ? ORDER BY seq",
    "collected": "SELECT step, buffer_id, event_seq FROM collected WHERE run_id = ?"
    " ORDER BY step, buffer_id, event_seq",
}


def _rows(run_id: str, run: Any, q: dict[str, list[Any]]) -> Rows:
    assert run is not None, f"run {run_id} has no row"
    status, result, error, state, version, parent = tuple(run)
    return Rows(
        status=status,
        result=None if result is None else json.loads(result),
        error=error,
        state=json.loads(state),
        state_version=version,
        parent_run_id=parent,
        events=[(s, _name(t), json.loads(p)) for s, t, p in q["events"]],
        deliveries=q["deliveries"],
        commits=q["commits"],
        stream=[(s, c, _name(t), json.loads(p)) for s, c, t, p in q["stream"]],
        collected=q["collected"],
    )


class Backend:
    """Builds workflows on one kind of store and checks what the store kept."""

    def __init__(self, kind: str, tmp_path: Path, server: str | None = None) -> None:
        self.kind = kind
        self.path = tmp_path / "runs.db"
        self.pg_server = server
        self.schema = f"t_{uuid.uuid4().hex[:16]}"
        self._workflows: list[Workflow] = []

    @property
    def durable(self) -> bool:
        return self.kind != "memory"

    @property
    def url(self) -> str:
        if self.kind == "postgres":
            assert self.pg_server is not None
            return with_schema(self.pg_server, self.schema)
        return f"sqlite:///{self.path}" if self.durable else "memory://"

    def make(self, cls: type[Workflow], **kwargs: Any) -> Any:
        """``cls(store=<this backend>, **kwargs)``; each instance gets its own store object
        (its own connections to the one database, like separate processes)."""
        workflow = cls(store=self.url, **kwargs)
        self._workflows.append(workflow)
        return workflow

    async def close(self) -> None:
        for workflow in self._workflows:
            store = workflow.store
            if getattr(store, "durable", False) and store.is_open:
                await store.close()
        if self.kind == "postgres" and self.pg_server is not None:
            await drop_schema(self.pg_server, self.schema)

    async def rows(self, run_id: str) -> Rows:
        """The run's rows, read behind the store's back."""
        if self.kind == "sqlite":
            return await asyncio.to_thread(self._sqlite_rows, run_id)
        assert self.pg_server is not None
        import asyncpg  # only here: the memory and SQLite tests run without it

        conn = await asyncpg.connect(self.pg_server, server_settings={"search_path": self.schema})
        try:
            run = await conn.fetchrow(RUN_SQL.replace("?", "$1"), run_id)
            queries = {
                name: [tuple(r) for r in await conn.fetch(sql.replace("?", "$1"), run_id)]
                for name, sql in ROW_SQL.items()
            }
        finally:
            await conn.close()
        return _rows(run_id, run, queries)

    def _sqlite_rows(self, run_id: str) -> Rows:
        conn = sqlite3.connect(self.path)
        try:
            run = conn.execute(RUN_SQL, (run_id,)).fetchone()
            queries = {
                name: [tuple(r) for r in conn.execute(sql, (run_id,))]
                for name, sql in ROW_SQL.items()
            }
        finally:
            conn.close()
        return _rows(run_id, run, queries)

    async def check(
        self,
        handler: WorkflowHandler,
        status: RunStatus = RunStatus.COMPLETED,
        *,
        all_done: bool | None = None,
        stream_matches: bool = True,
    ) -> Rows | None:
        """Check the rows of a finished run (SQLite only; memory returns None).

        ``all_done``: every delivery committed (the default for completed runs).
        ``stream_matches``: the durable stream equals what a reader saw, minus the terminal
        event (false for a parent whose children's events were forwarded to its stream).
        """
        assert handler.done()
        assert handler.status is status
        if not self.durable:
            return None
        rows = await self.rows(handler.run_id)
        assert rows.status == status.value
        if all_done is None:
            all_done = status is RunStatus.COMPLETED
        # P3: exactly one commit per finished delivery, and no commit of an unfinished one.
        committed = [(e, s) for _, e, s, _ in rows.commits]
        assert len(committed) == len(set(committed)), "a delivery committed twice"
        done = [(e, s) for e, s, st, _ in rows.deliveries if st == "done"]
        assert sorted(committed) == sorted(done), (rows.commits, rows.deliveries)
        for _, event_seq, step_name, attempt in rows.commits:
            attempts = {(e, s): a for e, s, _, a in rows.deliveries}[(event_seq, step_name)]
            assert attempt == attempts, "the commit is not by the last claimed attempt"
        if all_done:
            assert all(st == "done" for _, _, st, _ in rows.deliveries), rows.deliveries
        # P6: commit numbers 1..n; the stream is gapless from 1 and in commit order.
        assert [c for c, _, _, _ in rows.commits] == list(range(1, len(rows.commits) + 1))
        assert [s for s, _, _, _ in rows.stream] == list(range(1, len(rows.stream) + 1))
        commit_seqs = [c for _, c, _, _ in rows.stream]
        assert commit_seqs == sorted(commit_seqs)
        assert set(commit_seqs) <= {c for c, _, _, _ in rows.commits}
        # The journal: seqs unique and increasing; every delivery is of a journalled event.
        seqs = [s for s, _, _ in rows.events]
        assert seqs == sorted(set(seqs))
        assert {e for e, _, _, _ in rows.deliveries} <= set(seqs)
        if stream_matches:
            seen = [ev async for ev in handler.stream_events()][:-1]
            assert [(type(ev).__name__, ev.model_dump(mode="json")) for ev in seen] == [
                (name, payload) for _, _, name, payload in rows.stream
            ]
        if status.is_terminal and status is not RunStatus.COMPLETED:
            assert rows.error, "a run that did not complete records why"
        return rows


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """The store under test; every workflow of a test is built with ``backend.make``.
    PostgreSQL runs get a schema of their own, dropped afterwards."""
    # pg_server (tests/pg_cluster.py) is session-scoped and synchronous; it skips the
    # postgres tests, saying why, when there is no server to test against.
    server = request.getfixturevalue("pg_server") if request.param == "postgres" else None
    b = Backend(request.param, tmp_path, server)
    try:
        yield b
    finally:
        await b.close()


async def read_all(handler: WorkflowHandler) -> list[Event]:
    return [ev async for ev in handler.stream_events()]


# -- a linear chain ----------------------------------------------------------------------


class Question(StartEvent):
    topic: str
    depth: int = 1


class Drafted(Event):
    text: str


class Reviewed(Event):
    text: str
    score: float


class Linear(Workflow):
    @step
    async def draft(self, ev: Question) -> Drafted:
        return Drafted(text=f"{ev.topic}" * ev.depth)

    @step
    async def review(self, ev: Drafted) -> Reviewed:
        return Reviewed(text=ev.text.upper(), score=0.5, note="extra field")

    @step
    async def finish(self, ev: Reviewed) -> StopEvent:
        return StopEvent(result={"text": ev.text, "score": ev.score, "note": ev.note})


async def test_linear_chain_with_start_event_fields(backend: Backend) -> None:
    handler = backend.make(Linear).run(topic="ab", depth=2)
    assert await handler == {"text": "ABAB", "score": 0.5, "note": "extra field"}
    rows = await backend.check(handler)
    if rows is not None:
        assert [(s, n) for s, n, _ in rows.events] == [
            (1, "Question"),
            (2, "Drafted"),
            (3, "Reviewed"),
            (4, "StopEvent"),
        ]
        assert rows.events[0][2] == {"topic": "ab", "depth": 2}
        assert rows.events[2][2] == {"text": "ABAB", "score": 0.5, "note": "extra field"}
        assert [(e, s) for _, e, s, _ in rows.commits] == [
            (1, "draft"),
            (2, "review"),
            (3, "finish"),
        ]
        assert rows.result == {"text": "ABAB", "score": 0.5, "note": "extra field"}


class Report(StopEvent):
    title: str
    pages: int


class CustomStop(Workflow):
    @step
    async def write(self, ev: StartEvent) -> Report:
        return Report(title=ev.title, pages=3)


async def test_a_custom_stop_event_is_returned_whole(backend: Backend) -> None:
    handler = backend.make(CustomStop).run(title="rivers")
    report = await handler
    assert isinstance(report, Report)
    assert (report.title, report.pages, report.result) == ("rivers", 3, None)
    assert handler.get_stop_event() is report
    rows = await backend.check(handler)
    if rows is not None:
        assert rows.result == {"result": None, "title": "rivers", "pages": 3}


# -- fan-out / fan-in ----------------------------------------------------------------------


class Part(Event):
    group: str
    n: int


class PartDone(Event):
    group: str
    n: int


class FanInOut(Workflow):
    @step
    async def split(self, ctx: Context, ev: StartEvent) -> Part | None:
        for group in ("a", "b"):
            for n in range(ev.count):
                ctx.send_event(Part(group=group, n=n))
        return None

    @step(num_workers=4)
    async def work(self, ev: Part) -> PartDone:
        await asyncio.sleep(0)
        return PartDone(group=ev.group, n=ev.n * 10)

    @step
    async def join(self, ctx: Context, ev: PartDone) -> StopEvent | None:
        # One buffer per group: each completes on its own.
        got = ctx.collect_events(ev, [PartDone] * 3, buffer_id=ev.group)
        if got is None:
            return None
        totals = await ctx.store.get("totals", default={})
        totals[ev.group] = sorted(e.n for e in got)
        await ctx.store.set("totals", totals)
        if len(totals) < 2:
            return None
        return StopEvent(result=totals)


async def test_fan_out_and_fan_in_with_buffer_ids(backend: Backend) -> None:
    handler = backend.make(FanInOut).run(count=3)
    assert await handler == {"a": [0, 10, 20], "b": [0, 10, 20]}
    rows = await backend.check(handler)
    if rows is not None:
        parts = [n for _, n, _ in rows.events if n == "PartDone"]
        assert len(parts) == 6
        # Every delivery of the six PartDone events to join committed once; the buffers
        # were emptied when they completed, in the same commits.
        assert sum(1 for _, _, s, _ in rows.commits if s == "join") == 6
        assert rows.collected == []
        assert rows.state == {"totals": {"a": [0, 10, 20], "b": [0, 10, 20]}}


# -- typed state edited in parallel ----------------------------------------------------------


class Tally(BaseModel):
    count: int = 0
    seen: list[int] = Field(default_factory=list)
    label: str = "tally"


class Tick(Event):
    n: int


class Ticked(Event):
    n: int


class ParallelTally(Workflow):
    @step
    async def fan(self, ctx: Context[Tally], ev: StartEvent) -> Tick | None:
        for n in range(ev.count):
            ctx.send_event(Tick(n=n))
        return None

    @step(num_workers=50)
    async def bump(self, ctx: Context[Tally], ev: Tick) -> Ticked:
        async with ctx.store.edit_state() as state:
            current = state.count
            await asyncio.sleep(0)  # let every other worker try to interleave here
            state.count = current + 1
            state.seen.append(ev.n)
        return Ticked(n=ev.n)

    @step
    async def join(self, ctx: Context[Tally], ev: Ticked) -> StopEvent | None:
        if ctx.collect_events(ev, [Ticked] * 50) is None:
            return None
        return StopEvent(result=await ctx.store.get("count"))


async def test_typed_state_edited_by_50_parallel_steps_is_exact(backend: Backend) -> None:
    handler = backend.make(ParallelTally).run(count=50)
    assert await handler == 50
    state = await handler.ctx.store.get_state()
    assert isinstance(state, Tally)
    assert state.count == 50
    assert sorted(state.seen) == list(range(50))
    rows = await backend.check(handler)
    if rows is not None:
        assert rows.state["count"] == 50
        assert sorted(rows.state["seen"]) == list(range(50))
        assert rows.state_version == 50  # one state write per committing bump


# -- dict state ---------------------------------------------------------------------------


class DictPaths(Workflow):
    @step
    async def write(self, ctx: Context, ev: StartEvent) -> Drafted:
        await ctx.store.set("user.name", "ana")
        await ctx.store.set("user.tags", ["a", "b"])
        await ctx.store.set("user.tags.1", "c")
        await ctx.store.set("counts.runs", 1)
        return Drafted(text="x")

    @step
    async def read(self, ctx: Context, ev: Drafted) -> StopEvent:
        async with ctx.store.edit_state() as state:
            state["counts"]["runs"] += 1
        return StopEvent(
            result=[
                await ctx.store.get("user.name"),
                await ctx.store.get("user.tags.1"),
                await ctx.store.get("counts.runs"),
                await ctx.store.get("user.missing", default="none"),
            ]
        )


async def test_dict_state_with_dotted_paths(backend: Backend) -> None:
    handler = backend.make(DictPaths).run()
    assert await handler == ["ana", "c", 2, "none"]
    assert await handler.ctx.store.get("user") == {"name": "ana", "tags": ["a", "c"]}
    rows = await backend.check(handler)
    if rows is not None:
        assert rows.state == {"user": {"name": "ana", "tags": ["a", "c"]}, "counts": {"runs": 2}}
        assert rows.state_version == 2  # one write per committing step, however many sets


class Client:
    """Like an HTTP client: holds a lock, so it cannot be copied or stored."""

    def __init__(self) -> None:
        self.lock = threading.Lock()


class HoldsAClient(Workflow):
    @step
    async def go(self, ctx: Context, ev: StartEvent) -> StopEvent:
        client = Client()
        try:
            await ctx.store.set("client", client)
        except StateValidationError as exc:
            return StopEvent(result=str(exc))
        return StopEvent(result=await ctx.store.get("client") is client)


async def test_a_value_only_memory_can_hold(backend: Backend) -> None:
    handler = backend.make(HoldsAClient).run()
    result = await handler
    if backend.durable:
        # Durable state must survive the process, so it is refused when set, naming the key.
        assert "State key 'client'" in result
        assert "client" not in await handler.ctx.store.get_state()
        rows = await backend.check(handler)
        assert rows is not None
        assert rows.state == {}
    else:
        # Memory keeps any object, and shares (does not copy) what cannot be deep-copied.
        assert result is True
        await backend.check(handler)


# -- streaming ----------------------------------------------------------------------------


class Progress(Event):
    msg: str


class Streaming(Workflow):
    @step
    async def first(self, ctx: Context, ev: StartEvent) -> Drafted:
        ctx.write_event_to_stream(Progress(msg="1"))
        ctx.write_event_to_stream(Progress(msg="2"))
        return Drafted(text="d")

    @step
    async def second(self, ctx: Context, ev: Drafted) -> StopEvent:
        for msg in ("3", "4", "5"):
            ctx.write_event_to_stream(Progress(msg=msg))
            await asyncio.sleep(0)
        return StopEvent(result="end")


async def test_stream_order_many_readers_and_the_stop_event_last(backend: Backend) -> None:
    handler = backend.make(Streaming).run()
    readers = [asyncio.create_task(read_all(handler)) for _ in range(3)]
    results = await asyncio.gather(*readers)
    assert await handler == "end"
    late = await read_all(handler)  # a reader that comes after the end reads it all
    for events in (*results, late):
        assert [getattr(e, "msg", None) for e in events] == ["1", "2", "3", "4", "5", None]
        assert type(events[-1]) is StopEvent
        assert events[-1].result == "end"
    assert [e.msg for e in await _after(handler, 3)] == ["4", "5"]
    rows = await backend.check(handler)
    if rows is not None:
        # The two stream events of `first` share its commit; those of `second` follow.
        assert [(s, c, p["msg"]) for s, c, _, p in rows.stream] == [
            (1, 1, "1"),
            (2, 1, "2"),
            (3, 2, "3"),
            (4, 2, "4"),
            (5, 2, "5"),
        ]


async def _after(handler: WorkflowHandler, position: int) -> list[Any]:
    return [e async for e in handler.stream_events(after=position) if isinstance(e, Progress)]


# -- retries --------------------------------------------------------------------------------


class Flaky(Exception):
    pass


def retrying(fail_times: int, clock: FakeClock, seen: list[tuple[float, int]]) -> type[Workflow]:
    class Retrying(Workflow):
        @step(retry_policy=ConstantDelayRetryPolicy(maximum_attempts=4, delay=10))
        async def work(self, ctx: Context, ev: StartEvent) -> StopEvent:
            seen.append((clock.now(), ctx.attempt))
            # Two edits per attempt, one before and one after an await, then the failure.
            await ctx.store.set("tries", await ctx.store.get("tries", default=0) + 1)
            async with ctx.store.edit_state() as state:
                state["log"] = [*state.get("log", []), ctx.attempt]
            ctx.write_event_to_stream(Progress(msg=f"attempt {ctx.attempt}"))
            if ctx.attempt <= fail_times:
                raise Flaky(f"attempt {ctx.attempt}")
            return StopEvent(result=ctx.attempt)

    return Retrying


async def test_retries_count_attempts_and_failed_edits_are_not_applied_twice(
    backend: Backend, clock: FakeClock
) -> None:
    seen: list[tuple[float, int]] = []
    handler = backend.make(retrying(2, clock, seen), clock=clock).run()
    events = await read_all(handler)
    assert await handler == 3
    assert seen == [(0.0, 1), (10.0, 2), (20.0, 3)]
    state = await handler.ctx.store.get_state()
    if backend.durable:
        # Durable: an attempt's edits are part of its commit. A failed attempt never
        # commits, so its edits are rolled back and only the successful one counts; its
        # stream events are dropped too.
        assert (state["tries"], state["log"]) == (1, [3])
        assert [e.msg for e in events if isinstance(e, Progress)] == ["attempt 3"]
    else:
        # Memory: state edits apply when made (as in LlamaIndex), so each failed attempt's
        # edits stay; a retried step that must not double-count has to use
        # ctx.attempt / ctx.invocation_id itself. Stream events are published at once.
        assert (state["tries"], state["log"]) == (3, [1, 2, 3])
        assert [e.msg for e in events if isinstance(e, Progress)] == [
            "attempt 1",
            "attempt 2",
            "attempt 3",
        ]
    rows = await backend.check(handler)
    if rows is not None:
        assert rows.deliveries == [(1, "work", "done", 3)]
        assert rows.commits == [(1, 1, "work", 3)]
        assert rows.state == {"tries": 1, "log": [3]}
        assert rows.state_version == 1


async def test_a_step_that_exhausts_its_retries_fails_the_run(
    backend: Backend, clock: FakeClock
) -> None:
    seen: list[tuple[float, int]] = []
    handler = backend.make(retrying(10, clock, seen), clock=clock).run()
    with pytest.raises(Flaky, match="attempt 4"):
        await handler
    assert [a for _, a in seen] == [1, 2, 3, 4]
    events = await read_all(handler)
    assert isinstance(events[-1], WorkflowFailedEvent)
    assert events[-1].attempts == 4
    rows = await backend.check(handler, RunStatus.FAILED)
    if rows is not None:
        assert rows.error == "Flaky: attempt 4"
        # Giving up is committed with the failure; no attempt's edits survive.
        assert rows.deliveries == [(1, "work", "done", 4)]
        assert rows.state == {}


# -- @catch_error ---------------------------------------------------------------------------


class Recovering(Workflow):
    @step
    async def work(self, ctx: Context, ev: StartEvent) -> StopEvent:
        await ctx.store.set("touched", True)
        raise Flaky(f"bad {ev.topic}")

    @catch_error
    async def recover(self, ctx: Context, ev: StepFailedEvent) -> StopEvent:
        await ctx.store.set("recovered", ev.step_name)
        return StopEvent(
            result=[ev.step_name, type(ev.exception).__name__, str(ev.exception), ev.attempts]
        )


async def test_catch_error_recovers(backend: Backend) -> None:
    handler = backend.make(Recovering).run(topic="t")
    assert await handler == ["work", "Flaky", "bad t", 1]
    state = await handler.ctx.store.get_state()
    assert state["recovered"] == "work"
    # Memory keeps the failed step's edit; durable rolls it back (see the retry test).
    assert ("touched" in state) is (not backend.durable)
    rows = await backend.check(handler)
    if rows is not None:
        failed = [p for _, n, p in rows.events if n == "StepFailedEvent"]
        assert len(failed) == 1
        assert failed[0]["exception"] == {"__exception__": "Flaky", "message": "bad t"}
        assert failed[0]["input_event"] == {"topic": "t"}
        assert [s for _, _, s, _ in rows.commits] == ["work", "recover"]


# -- run timeout and cancel ------------------------------------------------------------------


class Forever(Workflow):
    @step
    async def wait(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(Progress(msg="started"))
        await asyncio.Event().wait()
        return StopEvent()


async def test_run_timeout(backend: Backend, clock: FakeClock) -> None:
    handler = backend.make(Forever, timeout=60, clock=clock).run()
    with pytest.raises(WorkflowTimeoutError, match="timed out after 60"):
        await handler
    assert clock.now() == 60
    events = await read_all(handler)
    assert isinstance(events[-1], WorkflowTimedOutEvent)
    rows = await backend.check(handler, RunStatus.TIMED_OUT)
    if rows is not None:
        assert "WorkflowTimeoutError" in (rows.error or "")
        assert rows.commits == []  # the step never committed
        assert rows.stream == []


class Cancellable(Workflow):
    started: asyncio.Event

    @step
    async def first(self, ctx: Context, ev: StartEvent) -> Drafted:
        ctx.write_event_to_stream(Progress(msg="first"))
        return Drafted(text="x")

    @step
    async def block(self, ctx: Context, ev: Drafted) -> StopEvent:
        await ctx.store.set("blocked", True)
        self.started.set()
        await asyncio.Event().wait()
        return StopEvent()


async def test_cancel_run(backend: Backend) -> None:
    workflow = backend.make(Cancellable)
    workflow.started = asyncio.Event()
    handler = workflow.run()
    await workflow.started.wait()
    await handler.cancel_run()
    with pytest.raises(WorkflowCancelledByUser):
        await handler
    events = await read_all(handler)
    assert [type(e) for e in events] == [Progress, WorkflowCancelledEvent]
    rows = await backend.check(handler, RunStatus.CANCELLED)
    if rows is not None:
        # `first` committed; `block` was claimed but never committed, nor its edit.
        assert rows.deliveries == [(1, "first", "done", 1), (2, "block", "running", 1)]
        assert rows.state == {}


# -- human in the loop -----------------------------------------------------------------------


class Conversation(Workflow):
    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> InputRequiredEvent:
        await ctx.store.set("asked", True)
        return InputRequiredEvent(prefix="What is your name?")

    @step
    async def greet(self, ctx: Context, ev: HumanResponseEvent) -> StopEvent:
        await ctx.store.set("name", ev.response)
        return StopEvent(result=f"Hello, {ev.response}!")


async def test_input_required_answered_through_the_handler(backend: Backend) -> None:
    handler = backend.make(Conversation).run()
    events: list[Event] = []
    async for ev in handler.stream_events():
        events.append(ev)
        if isinstance(ev, InputRequiredEvent):
            answer = HumanResponseEvent(response="Ana")
            assert await handler.send_event(answer, client_event_id="answer-1") is True
            # A retried submission with the same client id is applied once.
            assert await handler.send_event(answer, client_event_id="answer-1") is False
    assert await handler == "Hello, Ana!"
    assert [type(e) for e in events] == [InputRequiredEvent, StopEvent]
    assert events[0].prefix == "What is your name?"
    assert await handler.ctx.store.get("name") == "Ana"
    rows = await backend.check(handler)
    if rows is not None:
        assert [(s, n) for s, n, _ in rows.events] == [
            (1, "StartEvent"),
            (2, "InputRequiredEvent"),
            (3, "HumanResponseEvent"),
            (4, "StopEvent"),
        ]
        assert [s for _, _, s, _ in rows.commits] == ["ask", "greet"]
        assert rows.state == {"asked": True, "name": "Ana"}


async def test_a_run_waiting_for_input_is_resumed_elsewhere(backend: Backend) -> None:
    first = backend.make(Conversation)
    handler = first.run()
    async for ev in handler.stream_events():
        if isinstance(ev, InputRequiredEvent):
            break
    second = backend.make(Conversation)  # another process, in effect
    if not backend.durable:
        # Memory promises nothing across processes: there is nothing to resume from.
        with pytest.raises(WorkflowRuntimeError, match="needs a durable store"):
            await second.resume(handler.run_id)
        await handler.send_event(HumanResponseEvent(response="Ana"))
        assert await handler == "Hello, Ana!"
        return
    await first.store.close()  # the first "process" is gone; its run waits in the file
    resumed = await second.resume(handler.run_id)
    for _ in range(20):
        await asyncio.sleep(0)
    # Still waiting for the answer (not failed as stuck); the question is in its stream.
    assert not resumed.done()
    assert resumed.ctx.is_running
    assert await resumed.ctx.store.get("asked") is True
    again = await second.send_event(
        handler.run_id, HumanResponseEvent(response="Bo"), client_event_id="a1"
    )
    assert again.run_id == handler.run_id
    events = await read_all(resumed)
    assert [type(e) for e in events] == [InputRequiredEvent, StopEvent]
    assert await resumed == "Hello, Bo!"
    rows = await backend.check(resumed)
    assert rows is not None
    assert [s for _, _, s, _ in rows.commits] == ["ask", "greet"]


class Answer(HumanResponseEvent):
    user: str
    text: str


class Asked(InputRequiredEvent):
    user: str


class WaitsInStep(Workflow):
    before: list[int]
    logged: list[str]

    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
        self.before.append(ctx.attempt)
        await ctx.store.set("before", "wait")
        answer = await ctx.wait_for_event(
            Answer, waiter_event=Asked(user="ana"), requirements={"user": "ana"}, timeout=None
        )
        await ctx.store.set("after", answer.text)
        for _ in range(100):  # let `log` take both answers before the run ends
            if len(self.logged) == 2:
                break
            # not sleep(0): on PostgreSQL, `log` first claims its delivery over the network
            await asyncio.sleep(0.001)
        return StopEvent(result=answer.text)

    @step
    async def log(self, ev: Answer) -> None:
        self.logged.append(ev.user)


async def test_wait_for_event_in_a_step(backend: Backend) -> None:
    workflow = backend.make(WaitsInStep)
    workflow.before, workflow.logged = [], []
    handler = workflow.run()
    events: list[Event] = []
    async for ev in handler.stream_events():
        events.append(ev)
        if isinstance(ev, Asked):
            # bob's answer does not match the waiter: it goes to `log` only.
            await handler.send_event(Answer(user="bob", text="from bob"))
            for _ in range(20):
                await asyncio.sleep(0)
            assert not handler.done()
            await handler.send_event(Answer(user="ana", text="from ana"))
    assert await handler == "from ana"
    assert workflow.before == [1]  # the code before the wait ran once
    assert [type(e) for e in events] == [Asked, StopEvent]
    # The answer that resolved the wait is not delivered again to the waiting step, but
    # still reaches the other step that takes Answers.
    assert sorted(workflow.logged) == ["ana", "bob"]
    state = await handler.ctx.store.get_state()
    assert (state["before"], state["after"]) == ("wait", "from ana")
    # The StopEvent may end the run before `log` commits ana's answer: a step still
    # running when a run ends never commits (its delivery stays "running").
    # The waiter_event (the question) is stored in the durable stream when the waiter is
    # recorded, so a reader who connects later, or after a restart, sees it once.
    rows = await backend.check(handler, all_done=False)
    if rows is not None:
        assert len(rows.stream) == 1
        answers = [s for s, n, _ in rows.events if n == "Answer"]
        assert len(answers) == 2
        assert sorted((e, s) for e, s, _, _ in rows.deliveries if e in answers) == [
            (answers[0], "log"),
            (answers[1], "log"),
        ]


# -- sync steps ----------------------------------------------------------------------------


class SyncSteps(Workflow):
    @step
    def split(self, ctx: Context, ev: StartEvent) -> Part | None:
        ctx.write_event_to_stream(Progress(msg="from a thread"))
        for n in range(3):
            ctx.send_event(Part(group="g", n=n))
        return None

    @step(num_workers=2)
    def work(self, ev: Part) -> PartDone:
        return PartDone(group=ev.group, n=ev.n + 1)

    @step
    def join(self, ctx: Context, ev: PartDone) -> StopEvent | None:
        got = ctx.collect_events(ev, [PartDone] * 3)
        return None if got is None else StopEvent(result=sorted(e.n for e in got))


async def test_sync_def_steps(backend: Backend) -> None:
    handler = backend.make(SyncSteps).run()
    events = await read_all(handler)
    assert await handler == [1, 2, 3]
    assert [getattr(e, "msg", None) for e in events] == ["from a thread", None]
    # `join` has the default of 4 workers: the attempt that completes the fan-in may end
    # the run while a sibling join attempt is still committing (a store in another thread
    # or process makes that likely); that sibling's delivery then stays running, moot, as
    # in the crash tests (OFF_PATH_STEPS there).
    await backend.check(handler, all_done=False)


# -- nested workflows ------------------------------------------------------------------------


class Child(Workflow):
    @step
    async def work(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(Progress(msg=f"child {ev.x}"))
        await ctx.store.set("child", ev.x)
        return StopEvent(result=ev.x * 10)


class Parent(Workflow):
    child: Workflow
    children: list[WorkflowHandler]

    @step
    async def delegate(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(Progress(msg="parent before"))
        handler = self.child.run(x=ev.x)
        self.children.append(handler)
        value = await handler
        ctx.write_event_to_stream(Progress(msg="parent after"))
        return StopEvent(result=value + 1)


async def test_nested_workflow(backend: Backend) -> None:
    parent = backend.make(Parent)
    parent.child = backend.make(Child)
    parent.children = []
    handler = parent.run(x=4)
    events = await read_all(handler)
    assert await handler == 41
    [child] = parent.children
    messages = [getattr(e, "msg", None) for e in events]
    if backend.durable:
        # A durable parent streams its own events when its step commits, while the
        # child's events are forwarded as soon as the child commits them: a reader sees
        # the child's event before the parent's earlier one.
        assert messages == ["child 4", "parent before", "parent after", None]
    else:
        assert messages == ["parent before", "child 4", "parent after", None]
    assert await child.ctx.store.get("child") == 4
    # The child run is recorded with its parent in its own store.
    record = await parent.child.store.get_run(child.run_id)
    assert record.parent_run_id == handler.run_id
    child_rows = await backend.check(child)
    # The parent's durable stream holds its own events; the child's are in the child's.
    rows = await backend.check(handler, stream_matches=False)
    if rows is not None and child_rows is not None:
        assert [p["msg"] for _, _, _, p in rows.stream] == ["parent before", "parent after"]
        assert [p["msg"] for _, _, _, p in child_rows.stream] == ["child 4"]
        assert child_rows.parent_run_id == handler.run_id
        assert child_rows.result == 40


# -- the fixture itself -----------------------------------------------------------------------


async def test_the_backend_builds_the_store_it_names(backend: Backend) -> None:
    workflow = backend.make(Linear)
    assert getattr(workflow.store, "durable", False) is backend.durable
    started = time.time()
    handler = workflow.run(topic="x")
    await handler
    record = await workflow.store.get_run(handler.run_id)
    assert record.status is RunStatus.COMPLETED
    assert record.started_at >= started - 1
