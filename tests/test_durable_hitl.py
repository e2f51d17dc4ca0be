"""Human input across processes, on SQLite (docs/durability.md, "Human input").

Process A (a child, ``tests/crash/hitl.py``) starts a durable run that asks for input and
exits (or is killed) while the run waits; process B (this test process, with a fresh
workflow object and nothing in memory) answers with ``workflow.send_event(run_id, ...)``;
the run completes there. A repeated answer with the same ``client_event_id`` is applied
once.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from riverbed import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowFailedEvent,
    step,
)
from riverbed.errors import RunExistsError, RunFinishedError
from riverbed.serialization import RecordedError
from riverbed.stores.base import RunStatus
from riverbed.testing import crashpoints_env

ROOT = Path(__file__).resolve().parents[1]
HITL_MODULE = "tests.crash.hitl"
CHILD_TIMEOUT = 60.0


def _load(name: str) -> ModuleType:
    # The child runs ``python -m tests.crash.hitl``; load the same file under the same
    # name, so both processes store and read the events under the same type keys.
    spec = importlib.util.spec_from_file_location(name, ROOT / (name.replace(".", "/") + ".py"))
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


hitl = sys.modules.get(HITL_MODULE) or _load(HITL_MODULE)


def child(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m tests.crash.hitl ARGS`` to its end."""
    return subprocess.run(
        [sys.executable, "-m", HITL_MODULE, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
    )


@pytest.fixture
def held() -> Iterator[list[subprocess.Popen[str]]]:
    """Children that hold a waiting run; killed (and reaped) at the end at the latest."""
    children: list[subprocess.Popen[str]] = []
    yield children
    for proc in children:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()  # reaps it and closes its pipes


def hold(held: list[subprocess.Popen[str]], *args: str) -> subprocess.Popen[str]:
    """Start a child that prints WAITING once its run waits for the answer, then sleeps."""
    proc = subprocess.Popen(
        [sys.executable, "-m", HITL_MODULE, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    held.append(proc)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until WAITING, or EOF if the child died
    if line.strip() != "WAITING":
        proc.kill()
        _, err = proc.communicate(timeout=CHILD_TIMEOUT)
        pytest.fail(f"the child did not get to wait: {line!r}\n{err}")
    return proc


def kill(proc: subprocess.Popen[str]) -> None:
    """SIGKILL a holding child and reap it (a reaped pid is free: its runs are taken over
    at once)."""
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=CHILD_TIMEOUT)
    assert proc.returncode == -signal.SIGKILL


def rows(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def answers_in_journal(db: Path, run_id: str) -> list[tuple[Any, ...]]:
    return rows(
        db,
        "SELECT seq, client_event_id FROM events WHERE run_id = ? AND type_key = ?",
        run_id,
        "riverbed.events.HumanResponseEvent",
    )


def run_state(db: Path, run_id: str) -> dict[str, Any]:
    state: dict[str, Any] = json.loads(
        rows(db, "SELECT state FROM runs WHERE run_id = ?", run_id)[0][0]
    )
    return state


async def test_event_pair_answered_from_another_process(tmp_path: Path) -> None:
    db = tmp_path / "hitl.db"
    run_id = "pair-1"
    first = child("start-pair", str(db), run_id)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "WAITING"

    # Process A is gone; the run waits in the file: running, no work left, the question
    # committed to the durable stream.
    assert rows(db, "SELECT status FROM runs") == [("running",)]
    assert rows(db, "SELECT step, status, attempts FROM deliveries") == [("ask", "done", 1)]
    stream = rows(db, "SELECT seq, type_key FROM stream WHERE run_id = ?", run_id)
    assert stream == [(1, "riverbed.events.InputRequiredEvent")]
    assert run_state(db, run_id) == {"topic": "rivers", "asked": 1}

    # Process B: nothing of the run in memory.
    wf = hitl.PairFlow(store=hitl.url(db))
    answer = HumanResponseEvent(response="a delta")
    handler = await wf.send_event(run_id, answer, client_event_id="answer-1")
    # The same answer again while the run goes on here: applied once.
    again = await wf.send_event(run_id, answer, client_event_id="answer-1")
    assert again.run_id == run_id
    assert await handler == "rivers: a delta"
    assert await again == "rivers: a delta"
    await wf.store.close()

    # And once more from yet another process, after the run completed: nothing changes.
    late = hitl.PairFlow(store=hitl.url(db))
    repeated = await late.send_event(run_id, answer, client_event_id="answer-1")
    assert await repeated == "rivers: a delta"
    await late.store.close()

    assert answers_in_journal(db, run_id) == [(3, "answer-1")]
    assert run_state(db, run_id) == {"topic": "rivers", "asked": 1, "answers": ["a delta"]}
    assert rows(db, "SELECT step, attempt FROM commits ORDER BY commit_seq") == [
        ("ask", 1),
        ("answer", 1),
    ]
    assert rows(db, "SELECT status FROM runs") == [("completed",)]


async def test_a_question_streamed_before_a_wait_reaches_readers_once(tmp_path: Path) -> None:
    """``write_event_to_stream(InputRequiredEvent(...))`` then ``wait_for_event``: what the
    step streamed before the wait commits with the waiter, so the asker's process sees it
    (it used to wait for the step's end: a hang), and a re-run of the step after a restart
    does not stream it twice."""
    db = tmp_path / "stream-wait.db"
    run_id = "stream-1"
    first = child("start-stream-wait", str(db), run_id)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "WAITING"
    types = "SELECT type_key FROM stream WHERE run_id = ? ORDER BY seq"
    asked = [("tests.crash.hitl.Progress",), ("riverbed.events.InputRequiredEvent",)]
    assert rows(db, types, run_id) == asked

    # Another process answers; the step runs again from the top there and waits under the
    # same waiter id, which has the answer: its copy of the events before the wait is
    # dropped, and what it streams after the wait commits with it.
    wf = hitl.StreamWaitFlow(store=hitl.url(db))
    handler = await wf.send_event(run_id, HumanResponseEvent(response="a delta"))
    assert await handler == "rivers: a delta"
    streamed = [type(ev).__name__ async for ev in handler.stream_events()]
    await wf.store.close()
    assert streamed == ["Progress", "InputRequiredEvent", "Progress", "StopEvent"]
    assert rows(db, types, run_id) == [*asked, ("tests.crash.hitl.Progress",)]


@pytest.mark.usefixtures("hang_guard")
async def test_a_question_streamed_before_a_wait_is_answered_in_one_process(
    tmp_path: Path,
) -> None:
    wf = hitl.StreamWaitFlow(store=hitl.url(tmp_path / "one.db"))
    handler = wf.run(run_id="one", start_event=hitl.Ask(topic="rivers"))
    seen = []
    async for ev in handler.stream_events():
        seen.append(type(ev).__name__)
        if isinstance(ev, InputRequiredEvent):
            await handler.send_event(HumanResponseEvent(response="upstream"))
    assert await handler == "rivers: upstream"
    assert seen == ["Progress", "InputRequiredEvent", "Progress", "StopEvent"]
    stored = await wf.store.read_stream("one", 0, 100)
    assert [row.type_key.rsplit(".", 1)[1] for row in stored] == [
        "Progress",
        "InputRequiredEvent",
        "Progress",
    ]
    await wf.store.close()


async def test_an_answer_from_a_sibling_step_survives_a_crash(tmp_path: Path) -> None:
    """A step waits for an event another step of the run sends. The process dies right
    after the answering step's commit: the answer is recorded with that commit, so the
    resumed run's waiting step (run again from the top) gets it at once instead of waiting
    for an answer that was already given."""
    db = tmp_path / "internal.db"
    run_id = "internal-1"
    env = {**os.environ, **crashpoints_env(after_commit=1.0)}
    first = child("start-internal", str(db), run_id, env=env)
    assert first.returncode == -signal.SIGKILL, first.stderr
    # the reply step committed (its Reply is in the journal) and answered the waiter
    assert rows(db, "SELECT step FROM commits") == [("reply",)]
    [(reply_seq,)] = rows(
        db,
        "SELECT seq FROM events WHERE run_id = ? AND type_key = ?",
        run_id,
        "tests.crash.hitl.Reply",
    )
    assert rows(db, "SELECT resolved_seq FROM waiters") == [(reply_seq,)]

    wf = hitl.InternalAnswerFlow(store=hitl.url(db))
    handler = await wf.resume(run_id)
    assert await asyncio.wait_for(handler, 30) == "rivers: from a sibling"
    await wf.store.close()
    assert sorted(rows(db, "SELECT step FROM commits")) == [("reply",), ("wait",)]


async def test_wait_for_event_across_restarts(
    tmp_path: Path, held: list[subprocess.Popen[str]]
) -> None:
    db = tmp_path / "wait.db"
    side = tmp_path / "before-the-wait.txt"
    run_id = "wait-1"

    # A starts the run; its step runs the code before the wait and waits. A exits.
    first = child("start-wait", str(db), run_id, str(side), "exit")
    assert first.returncode == 0, first.stderr
    waiter = rows(db, "SELECT waiter_id, step, resolved_seq FROM waiters")
    assert waiter == [(f"{run_id}:1:ask:wait0", "ask", None)]  # stable id, no answer yet
    assert rows(db, "SELECT status, attempts FROM deliveries") == [("running", 1)]

    # A2 resumes it without an answer: the step runs again from the top and waits under
    # the same waiter id. A2 is killed while waiting.
    second = hold(held, "resume-wait", str(db), run_id)
    # The question is already in the durable stream, so A2 reports it at once; wait until
    # its step has really run again (claimed, and the code before the wait done) before
    # killing it.
    for _ in range(400):
        claimed = rows(db, "SELECT status, attempts FROM deliveries") == [("running", 2)]
        if claimed and side.exists() and len(side.read_text().split()) == 2:
            break
        await asyncio.sleep(0.025)
    kill(second)
    assert rows(db, "SELECT count(*) FROM waiters") == [(1,)]
    assert rows(db, "SELECT status, attempts FROM deliveries") == [("running", 2)]

    # B answers. The answer is committed and resolves the recorded waiter; the step runs
    # once more here and its wait returns the recorded answer at once.
    wf = hitl.WaitFlow(store=hitl.url(db))
    answer = HumanResponseEvent(response="upstream")
    handler = await wf.send_event(run_id, answer, client_event_id="answer-1")
    assert await handler == "rivers: upstream"
    await wf.store.close()

    late = hitl.WaitFlow(store=hitl.url(db))
    repeated = await late.send_event(run_id, answer, client_event_id="answer-1")
    assert await repeated == "rivers: upstream"
    await late.store.close()

    # The code before the wait ran once in each process that executed the step.
    pids = side.read_text().split()
    assert len(pids) == 3
    assert len(set(pids)) == 3  # A, A2 and this process
    assert pids[-1] == str(os.getpid())
    [(answer_seq, client_id)] = answers_in_journal(db, run_id)
    assert client_id == "answer-1"
    assert rows(db, "SELECT resolved_seq FROM waiters") == [(answer_seq,)]
    assert run_state(db, run_id) == {"answers": ["upstream"]}
    assert rows(db, "SELECT step, attempt FROM commits") == [("ask", 3)]
    assert rows(db, "SELECT status FROM runs") == [("completed",)]


async def test_a_recorded_answer_survives_the_answering_process(
    tmp_path: Path, held: list[subprocess.Popen[str]]
) -> None:
    """B commits the answer and dies before the step finishes; C resumes and the step's
    wait returns the recorded answer at once."""
    db = tmp_path / "answered.db"
    side = tmp_path / "before-the-wait.txt"
    run_id = "wait-2"
    first = hold(held, "start-wait", str(db), run_id, str(side))
    kill(first)

    # B: the answer commits; B dies as soon as it claims the step again.
    dying = {**os.environ, **crashpoints_env(after_claim=1.0)}
    answering = child("answer", str(db), run_id, "downstream", env=dying)
    assert answering.returncode == -signal.SIGKILL, answering.stderr
    [(answer_seq, _)] = answers_in_journal(db, run_id)
    assert rows(db, "SELECT resolved_seq FROM waiters") == [(answer_seq,)]
    assert rows(db, "SELECT status FROM runs") == [("running",)]

    # C: a plain resume finishes the run with the recorded answer (no send_event).
    wf = hitl.WaitFlow(store=hitl.url(db))
    await wf.open_store()
    records = await wf.store.list_runs(status=RunStatus.RUNNING)
    assert [r.run_id for r in records] == [run_id]
    handler = await wf.resume(run_id)
    events = [ev async for ev in handler.stream_events()]
    assert await handler == "rivers: downstream"
    # Answered before the step ran here: it did not ask again (the one question in the
    # stream is A's, stored when A's step first waited).
    assert sum(isinstance(ev, InputRequiredEvent) for ev in events) == 1
    await wf.store.close()
    assert len(side.read_text().split()) == 2  # A, then C (B died before the body)
    assert run_state(db, run_id) == {"answers": ["downstream"]}
    assert rows(db, "SELECT step, attempt FROM commits") == [("ask", 3)]


class AnswerFails(Workflow):
    @step
    async def ask(self, ev: StartEvent) -> InputRequiredEvent:
        return InputRequiredEvent(prefix="name?")

    @step
    async def answer(self, ev: HumanResponseEvent) -> StopEvent:
        raise ValueError(f"cannot use {ev.response!r}")


async def test_a_repeated_answer_to_a_run_it_ended_gets_the_outcome(tmp_path: Path) -> None:
    """The retry of a submission that ended the run gets the run's outcome, read from the
    rows; a new event to an ended run is still refused."""
    url = f"sqlite:///{tmp_path / 'ended.db'}"
    first = AnswerFails(store=url)
    await hitl.until_asked(first.run(run_id="f-1"))
    await first.store.close()  # the asking process is gone

    answer = HumanResponseEvent(response="x")
    second = AnswerFails(store=url)
    handler = await second.send_event("f-1", answer, client_event_id="c-1")
    with pytest.raises(ValueError, match="cannot use 'x'"):
        await handler
    await second.store.close()

    third = AnswerFails(store=url)
    again = await third.send_event("f-1", answer, client_event_id="c-1")
    assert again.done()
    assert again.status is RunStatus.FAILED
    with pytest.raises(RecordedError, match="ValueError: cannot use 'x'"):
        await again
    assert isinstance(again.get_stop_event(), WorkflowFailedEvent)
    for client_event_id in ("c-2", None):
        with pytest.raises(RunFinishedError):
            await third.send_event("f-1", answer, client_event_id=client_event_id)
    await third.store.close()
    assert len(answers_in_journal(tmp_path / "ended.db", "f-1")) == 1


@pytest.mark.usefixtures("hang_guard")
async def test_a_run_live_here_stays_the_one_run(tmp_path: Path) -> None:
    """Regression: ``run(run_id=...)`` with the id of a run live in this process raised
    RunExistsError and also made the workflow forget the live run, so ``send_event``
    continued a second copy of it and the first handler never ended; ``resume`` of a live
    run started a second copy too."""
    wf = hitl.PairFlow(store=hitl.url(tmp_path / "live.db"))
    handler = wf.run(run_id="p-1", start_event=hitl.Ask(topic="deltas"))
    await hitl.until_asked(handler)
    with pytest.raises(RunExistsError):
        await wf.run(run_id="p-1", start_event=hitl.Ask(topic="deltas"))
    resumed = await wf.resume("p-1")
    answered = await wf.send_event("p-1", HumanResponseEvent(response="wide"))
    assert await handler == "deltas: wide"
    assert await resumed == await answered == "deltas: wide"
    await wf.store.close()
    assert rows(tmp_path / "live.db", "SELECT step, attempt FROM commits") == [
        ("ask", 1),
        ("answer", 1),
    ]


class _Ping(Event):
    pass


class _Pong(Event):
    n: int


class _AsksItself(Workflow):
    """A step that sends an event and waits, in the same step, for the reply to it."""

    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> _Ping | StopEvent:
        ctx.send_event(_Ping())
        reply = await ctx.wait_for_event(_Pong, timeout=None)
        return StopEvent(result=reply.n)

    @step
    async def answer(self, ctx: Context, ev: _Ping) -> None:
        ctx.send_event(_Pong(n=7))


@pytest.mark.usefixtures("hang_guard")
async def test_a_step_can_send_an_event_and_wait_for_the_reply(tmp_path: Path) -> None:
    # The event sent before the wait is committed with the waiter, so the step it goes to
    # runs while the sender waits (before, it was held for the sender's own commit, which
    # needed the reply: the run could not progress).
    assert await _AsksItself(timeout=5).run() == 7
    db = tmp_path / "runs.db"
    durable = _AsksItself(store=f"sqlite:///{db}", timeout=10)
    assert await durable.run(run_id="asks") == 7
    await durable.store.close()
    assert sorted(rows(db, "SELECT step, attempt FROM commits")) == [("answer", 1), ("ask", 1)]
    kinds = [k.rsplit(".", 1)[1] for (k,) in rows(db, "SELECT type_key FROM events ORDER BY seq")]
    assert kinds == ["StartEvent", "_Ping", "_Pong", "StopEvent"]


async def test_a_step_that_sends_and_waits_survives_a_crash_without_sending_twice(
    tmp_path: Path,
) -> None:
    """Killed after the replying step's commit: the reply is recorded on the waiter; the
    resumed run runs the asking step again, which reaches the same waiter, so its sent
    event is not sent (nor answered) a second time, and its wait returns the reply."""
    db = tmp_path / "send-wait.db"
    run_id = "send-wait-1"
    env = {**os.environ, **crashpoints_env(after_commit=1.0)}
    first = child("start-send-wait", str(db), run_id, env=env)
    assert first.returncode == -signal.SIGKILL, first.stderr
    assert rows(db, "SELECT step FROM commits") == [("answer",)]

    wf = hitl.SendWaitFlow(store=hitl.url(db))
    handler = await wf.resume(run_id)
    assert await asyncio.wait_for(handler, 30) == "rivers: pong"
    await wf.store.close()
    assert sorted(rows(db, "SELECT step, attempt FROM commits")) == [("answer", 1), ("ask", 2)]
    kinds = [k.rsplit(".", 1)[1] for (k,) in rows(db, "SELECT type_key FROM events ORDER BY seq")]
    assert kinds == ["Ask", "Ping", "Reply", "StopEvent"]


class _Item(Event):
    n: int


class _ReusesAWaiterId(Workflow):
    @step
    async def fan(self, ctx: Context, ev: StartEvent) -> _Item | None:
        ctx.send_event(_Item(n=1))
        ctx.send_event(_Item(n=2))
        return None

    @step
    async def handle(self, ctx: Context, ev: _Item) -> StopEvent:
        reply = await ctx.wait_for_event(
            HumanResponseEvent,
            waiter_id="approval",  # the same id for every item: a mistake in a durable run
            waiter_event=InputRequiredEvent(prefix=f"item {ev.n}?"),
            timeout=None,
        )
        return StopEvent(result=reply.response)


@pytest.mark.usefixtures("hang_guard")
async def test_a_waiter_id_used_by_two_deliveries_is_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wf = _ReusesAWaiterId(store=f"sqlite:///{tmp_path / 'runs.db'}")
    with caplog.at_level(logging.WARNING, logger="riverbed"):
        handler = wf.run()
        async for ev in handler.stream_events():
            if isinstance(ev, InputRequiredEvent):
                await handler.send_event(HumanResponseEvent(response="yes"))
        assert await handler == "yes"
    await wf.store.close()
    warned = [r.getMessage() for r in caplog.records if "already used" in r.getMessage()]
    assert len(warned) == 1
    assert "waiter_id 'approval'" in warned[0]
    assert "make it unique per wait" in warned[0]


class _LateWait(Workflow):
    """A step starts waiting while the commit of the step that answers it is on its way."""

    @step
    async def wait(self, ctx: Context, ev: StartEvent) -> StopEvent:
        await asyncio.sleep(0.05)  # the reply step has run; its commit is held (below)
        reply = await ctx.wait_for_event(_Pong, timeout=None)
        return StopEvent(result=reply.n)

    @step
    async def reply(self, ctx: Context, ev: StartEvent) -> None:
        ctx.send_event(_Pong(n=3))


@pytest.mark.usefixtures("hang_guard")
async def test_an_answer_to_a_waiter_newer_than_the_commit_is_recorded(tmp_path: Path) -> None:
    # The reply's commit was built before the waiter existed, so it could not name it; the
    # answer the waiter then gets in memory is recorded after the commit. Without that a
    # crash before the waiting step's end left the waiter unanswered in the store, and
    # the resumed step waited for an answer that had already been given.
    db = tmp_path / "runs.db"
    wf = _LateWait(store=f"sqlite:///{db}")
    await wf.open_store()
    store = wf.store
    assert store is not None
    commit = store.commit

    async def slow_reply_commit(run_id: str, row: Any) -> int:
        if row.step == "reply":
            await asyncio.sleep(0.3)  # the waiter registers meanwhile
        return await commit(run_id, row)

    store.commit = slow_reply_commit  # type: ignore[method-assign]
    assert await wf.run(run_id="late") == 3
    await store.close()
    [(pong_seq,)] = rows(db, "SELECT seq FROM events WHERE type_key LIKE '%._Pong'")
    [(waiter_id, resolved)] = rows(db, "SELECT waiter_id, resolved_seq FROM waiters")
    assert resolved == pong_seq, waiter_id
    assert sorted(rows(db, "SELECT step FROM commits")) == [("reply",), ("wait",)]


@pytest.mark.usefixtures("hang_guard")
async def test_a_wait_that_begins_while_its_answer_commits_is_answered_with_its_registration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reply's commit is in the writer's hands (held there) when the waiter registers:
    # the registration, queued behind it, records the answer in the same transaction. The
    # separate write that records late answers (record_answers) is made to never happen,
    # as if the process died right after the reply's commit: the answer is in the store
    # all the same.
    from riverbed._engine.durable import DurableRun
    from riverbed.stores import _sqlite_writes

    db = tmp_path / "runs.db"
    wf = _LateWait(store=f"sqlite:///{db}")
    sql_commit = _sqlite_writes.commit

    def held_reply_commit(conn: sqlite3.Connection, run_id: str, c: Any, now: float) -> int:
        if c.step == "reply":
            time.sleep(0.3)  # on the writer thread: the commit is on its way
        return sql_commit(conn, run_id, c, now)

    async def never(self: DurableRun, answers: Any) -> None:
        return None

    monkeypatch.setattr(_sqlite_writes, "commit", held_reply_commit)
    monkeypatch.setattr(DurableRun, "_record_answers", never)
    assert await wf.run(run_id="held") == 3
    await wf.store.close()
    [(pong_seq,)] = rows(db, "SELECT seq FROM events WHERE type_key LIKE '%._Pong'")
    assert rows(db, "SELECT resolved_seq FROM waiters") == [(pong_seq,)]


class _Tool(Event):
    q: str


class _ToolReply(Event):
    answer: str


class _Agent(Workflow):
    """Both steps change the state; one waits for the other's reply."""

    @step
    async def plan(self, ctx: Context, ev: StartEvent) -> _Tool | StopEvent:
        await ctx.store.set("phase", "calling the tool")
        ctx.send_event(_Tool(q=ev.q))
        reply = await ctx.wait_for_event(_ToolReply, timeout=None)
        await ctx.store.set("phase", "done")
        return StopEvent(result=f"{ev.q} -> {reply.answer}")

    @step
    async def tool(self, ctx: Context, ev: _Tool) -> None:
        phase = await ctx.store.get("phase")
        await ctx.store.set("tool_saw", phase)
        ctx.send_event(_ToolReply(answer=ev.q[::-1]))


@pytest.mark.usefixtures("hang_guard")
async def test_a_step_that_changed_the_state_lets_others_change_it_while_it_waits(
    tmp_path: Path,
) -> None:
    # The state a step changed before a wait commits with its waiter and the step gives
    # up the state's writer lease while it waits. It held the lease until its end, so the
    # tool step, which changes the state too, waited for it: the run could never finish.
    db = tmp_path / "runs.db"
    wf = _Agent(store=f"sqlite:///{db}")
    handler = wf.run(run_id="agent", q="abc")
    assert await asyncio.wait_for(handler, 10) == "abc -> cba"
    assert await handler.ctx.store.get("tool_saw") == "calling the tool"
    await wf.store.close()
    [(state_json,)] = rows(db, "SELECT state FROM runs")
    assert json.loads(state_json) == {"phase": "done", "tool_saw": "calling the tool"}
    # the same run in memory, for comparison
    assert await _Agent().run(q="abc") == "abc -> cba"


async def test_state_changed_before_a_wait_is_not_applied_twice_after_a_crash(
    tmp_path: Path,
) -> None:
    """Killed after the answering step's commit: the asking step's state change before
    its wait was committed with the waiter; run again, the step changes the state again
    before reaching the same waiter, and that second copy is undone."""
    db = tmp_path / "state-wait.db"
    run_id = "state-wait-1"
    env = {**os.environ, **crashpoints_env(after_commit=1.0)}
    first = child("start-state-wait", str(db), run_id, env=env)
    assert first.returncode == -signal.SIGKILL, first.stderr
    assert rows(db, "SELECT step FROM commits") == [("answer",)]
    [(state_json,)] = rows(db, "SELECT state FROM runs")
    assert json.loads(state_json) == {"asks": 1, "answers": 1}

    wf = hitl.StateWaitFlow(store=hitl.url(db))
    handler = await wf.resume(run_id)
    assert await asyncio.wait_for(handler, 30) == "rivers: pong, asks=1, answers=1"
    await wf.store.close()
    assert sorted(rows(db, "SELECT step, attempt FROM commits")) == [("answer", 1), ("ask", 2)]


async def test_an_answer_sent_right_after_resume_reaches_the_stored_wait(tmp_path: Path) -> None:
    """``resume()`` then ``handler.send_event()`` at once: the resumed step has not reached
    its wait again yet, so no waiter is in memory; the stored one takes the answer (it was
    refused with "no ctx.wait_for_event is waiting for it")."""
    db = tmp_path / "resume-answer.db"
    side = tmp_path / "before-the-wait.txt"
    run_id = "resume-answer-1"
    first = child("start-wait", str(db), run_id, str(side), "exit")
    assert first.returncode == 0, first.stderr

    wf = hitl.WaitFlow(store=hitl.url(db))
    handler = await wf.resume(run_id)
    assert await handler.send_event(HumanResponseEvent(response="downstream")) is True
    assert await asyncio.wait_for(handler, 30) == "rivers: downstream"
    await wf.store.close()

    [(answer_seq, _)] = answers_in_journal(db, run_id)
    assert rows(db, "SELECT resolved_seq FROM waiters") == [(answer_seq,)]
    assert rows(db, "SELECT step, attempt FROM commits") == [("ask", 2)]
    assert len(side.read_text().split()) == 2  # the code before the wait: once per process
