"""Workers take runs nobody runs from a shared store, park waiting runs, release on stop."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from riverbed import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    RunStatus,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowConfigurationError,
    step,
)
from riverbed.errors import RunOwnedError
from riverbed.worker import Worker

pytestmark = pytest.mark.usefixtures("hang_guard")


class Doubled(Event):
    value: int


class Double(Workflow):
    @step
    async def double(self, ctx: Context, ev: StartEvent) -> Doubled:
        await ctx.store.set("seen", ev.value)
        return Doubled(value=ev.value * 2)

    @step
    async def finish(self, ev: Doubled) -> StopEvent:
        return StopEvent(result=ev.value)


class Approve(Workflow):
    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> InputRequiredEvent:
        await ctx.store.set("asked", ev.item)
        return InputRequiredEvent(prefix=f"approve {ev.item}?")

    @step
    async def decide(self, ctx: Context, ev: HumanResponseEvent) -> StopEvent:
        item = await ctx.store.get("asked")
        return StopEvent(result=f"{item}: {ev.response}")


class WaitInStep(Workflow):
    before = 0

    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
        type(self).before += 1
        answer = await ctx.wait_for_event(
            HumanResponseEvent, waiter_event=InputRequiredEvent(prefix="?")
        )
        return StopEvent(result=answer.response)


class Slow(Workflow):
    @step
    async def crawl(self, ev: StartEvent) -> StopEvent:
        await asyncio.sleep(30)
        return StopEvent(result="too late")


def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runs.db'}?lease_seconds=0.6"


async def until(predicate: Callable[[], Any], seconds: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting"
        await asyncio.sleep(0.05)


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


async def status_of(workflow: Workflow, run_id: str) -> RunStatus:
    return (await workflow.store.get_run(run_id)).status  # type: ignore[no-any-return]


async def test_a_submitted_run_is_run_by_a_worker(tmp_path: Path, started: Any) -> None:
    client = Double(store=url(tmp_path))
    run_id = await client.submit(value=21)
    record = await client.store.get_run(run_id)
    assert record.status is RunStatus.RUNNING
    assert record.workflow_version == client.workflow_version

    worker = Worker([Double()], store=url(tmp_path), poll_interval=0.05)
    started(worker)
    await until(lambda: _is(client, run_id, RunStatus.COMPLETED))
    assert (await client.store.get_run(run_id)).result == "42"
    assert worker.taken == 1


async def _is(workflow: Workflow, run_id: str, status: RunStatus) -> bool:
    return await status_of(workflow, run_id) is status


async def test_a_worker_leaves_runs_of_other_versions_alone(tmp_path: Path, started: Any) -> None:
    class V1(Double):
        version = "1"

    class V2(Double):
        version = "2"

    client = V1(store=url(tmp_path), workflow_name="double")
    run_id = await client.submit(value=1)
    worker = Worker([V2(workflow_name="double")], store=url(tmp_path), poll_interval=0.05)
    started(worker)
    await asyncio.sleep(0.5)
    assert worker.taken == 0
    assert await status_of(client, run_id) is RunStatus.RUNNING

    right = Worker([V1(workflow_name="double")], store=url(tmp_path), poll_interval=0.05)
    started(right)
    await until(lambda: _is(client, run_id, RunStatus.COMPLETED))


async def test_a_run_waiting_for_a_human_is_parked_and_continued_after_the_answer(
    tmp_path: Path, started: Any
) -> None:
    client = Approve(store=url(tmp_path))
    run_id = await client.submit(item="invoice-7")
    worker = Worker([Approve()], store=url(tmp_path), poll_interval=0.05, park_after=0.2)
    started(worker)
    await until(lambda: _parked(worker))
    assert worker.running == []
    row = _raw(tmp_path, "SELECT owner, status FROM runs WHERE run_id = ?", run_id)
    assert row == (None, "running")  # nobody holds it while the human thinks

    other = Approve(store=url(tmp_path))  # e.g. the HTTP server answering
    assert (
        await other.send_event(run_id, HumanResponseEvent(response="yes"), continue_here=False)
        is None
    )
    await until(lambda: _is(client, run_id, RunStatus.COMPLETED))
    assert (await client.store.get_run(run_id)).result == '"invoice-7: yes"'


async def _parked(worker: Worker) -> bool:
    return worker.parked >= 1


def _raw(tmp_path: Path, sql: str, *args: Any) -> Any:
    conn = sqlite3.connect(tmp_path / "runs.db")
    try:
        return conn.execute(sql, args).fetchone()
    finally:
        conn.close()


async def test_a_step_parked_in_wait_for_event_gets_the_answer_after_it_comes(
    tmp_path: Path, started: Any
) -> None:
    WaitInStep.before = 0
    client = WaitInStep(store=url(tmp_path))
    run_id = await client.submit()
    worker = Worker([WaitInStep()], store=url(tmp_path), poll_interval=0.05, park_after=0.2)
    started(worker)
    await until(lambda: _parked(worker))
    await asyncio.sleep(0.3)
    assert worker.taken == 1  # an unanswered wait does not make the run claimable again

    await client.send_event(run_id, HumanResponseEvent(response="ok"), continue_here=False)
    await until(lambda: _is(client, run_id, RunStatus.COMPLETED))
    assert (await client.store.get_run(run_id)).result == '"ok"'
    # The parked attempt was cut short, so the step ran again to pick up the answer.
    assert WaitInStep.before == 2


async def test_stop_releases_running_runs_at_once(tmp_path: Path) -> None:
    client = Slow(store=url(tmp_path))
    run_id = await client.submit()
    worker = Worker([Slow()], store=url(tmp_path), poll_interval=0.05)
    task = asyncio.create_task(worker.run())
    await until(lambda: _taken(worker))
    assert _raw(tmp_path, "SELECT owner FROM runs WHERE run_id = ?", run_id)[0] is not None
    worker.stop()
    await asyncio.wait_for(task, 5)
    assert _raw(tmp_path, "SELECT owner, status FROM runs WHERE run_id = ?", run_id) == (
        None,
        "running",
    )


async def _taken(worker: Worker) -> bool:
    return worker.taken >= 1


async def test_worker_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(WorkflowConfigurationError, match="durable store"):
        Worker([Double()])
    with pytest.raises(WorkflowConfigurationError, match="at least one"):
        Worker([], store=url(tmp_path))
    with pytest.raises(WorkflowConfigurationError, match="slots"):
        Worker([Double()], store=url(tmp_path), slots=0)
    with pytest.raises(WorkflowConfigurationError, match="named"):
        Worker([Double(), Double()], store=url(tmp_path))


async def test_the_version_is_a_digest_of_the_steps_unless_given() -> None:
    class Other(Workflow):
        @step
        async def double(self, ctx: Context, ev: StartEvent) -> StopEvent:
            return StopEvent(result=1)

    assert Double().workflow_version == Double().workflow_version
    assert Double().workflow_version != Other().workflow_version

    class Named(Double):
        version = "2026-11"

    assert Named().workflow_version == "2026-11"


async def test_an_answer_to_a_run_a_worker_holds_is_recorded_as_answering_the_wait(
    tmp_path: Path, started: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The answer goes through the store to the worker that holds the run; the waiter is
    # marked answered in the same transaction, so had the worker parked the run just
    # before reading it, the next worker would still find the wait over.
    WaitInStep.before = 0
    client = WaitInStep(store=url(tmp_path))
    run_id = await client.submit()
    worker = Worker([WaitInStep()], store=url(tmp_path), poll_interval=0.05, park_after=60)
    started(worker)
    await until(lambda: _waiting(tmp_path, run_id))

    # The answer comes from another process (another owner id than the worker's).
    monkeypatch.setattr("riverbed._engine.by_id.owner_id", lambda: "elsewhere:1:client")
    await client.send_event(run_id, HumanResponseEvent(response="fine"), continue_here=False)
    resolved = _raw(tmp_path, "SELECT resolved_seq FROM waiters WHERE run_id = ?", run_id)[0]
    assert resolved is not None
    await until(lambda: _is(client, run_id, RunStatus.COMPLETED))
    assert WaitInStep.before == 1  # the worker held the run: the step was not run again


async def _waiting(tmp_path: Path, run_id: str) -> bool:
    return _raw(tmp_path, "SELECT count(*) FROM waiters WHERE run_id = ?", run_id)[0] == 1


class WaitAWhile(Workflow):
    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
        from riverbed import WaitForEventTimeoutError

        try:
            await ctx.wait_for_event(
                HumanResponseEvent, waiter_event=InputRequiredEvent(prefix="?"), timeout=1.0
            )
        except WaitForEventTimeoutError:
            return StopEvent(result="nobody answered")
        return StopEvent(result="answered")


async def test_a_wait_timeout_fires_on_a_worker_after_the_run_was_parked(
    tmp_path: Path, started: Any
) -> None:
    client = WaitAWhile(store=url(tmp_path))
    run_id = await client.submit()
    worker = Worker([WaitAWhile()], store=url(tmp_path), poll_interval=0.05, park_after=0.2)
    started(worker)
    await until(lambda: _parked(worker))
    assert worker.running == []  # parked: no process holds the run while it waits
    # The wait's timeout is a row: when it is due, the run needs a process again.
    await until(lambda: _is(client, run_id, RunStatus.COMPLETED), seconds=10)
    assert (await client.store.get_run(run_id)).result == '"nobody answered"'
    assert worker.taken == 2


async def test_a_run_timeout_fires_on_a_worker_after_the_run_was_parked(
    tmp_path: Path, started: Any
) -> None:
    client = Approve(store=url(tmp_path), timeout=1.0)
    run_id = await client.submit(item="late")
    worker = Worker([Approve(timeout=1.0)], store=url(tmp_path), poll_interval=0.05, park_after=0.2)
    started(worker)
    await until(lambda: _parked(worker))
    await until(lambda: _is(client, run_id, RunStatus.TIMED_OUT), seconds=10)
    assert worker.taken == 2


async def test_a_worker_that_keeps_losing_named_runs_queries_instead(tmp_path: Path) -> None:
    # Every worker hears every notification; when other workers take most named runs
    # first, racing for each one wastes a transaction apiece: query for free runs instead.
    worker = Worker([Double()], store=f"sqlite:///{tmp_path / 'runs.db'}")
    store = worker._store
    await store.open()
    tried: list[str] = []
    queried: list[int] = []

    async def acquire_run(run_id: str, owner: str, *, claim: bool = False) -> Any:
        tried.append(run_id)
        raise RunOwnedError(f"{run_id} is taken")

    async def claimable_runs(pairs: Any, limit: int) -> list[str]:
        queried.append(limit)
        return []

    store.notified_runs = lambda pairs, limit: [f"named-{len(tried)}"]
    store.acquire_run = acquire_run
    store.claimable_runs = claimable_runs
    pairs = [("double", Double().workflow_version)]
    try:
        for _ in range(10):
            await worker._fill(pairs)
            worker._polled = 0.0  # every fill may query
    finally:
        await store.close()
    assert 4 <= len(tried) <= 6  # after 4 lost races it mostly queries (and retries now and then)
    assert len(queried) == 10  # and found work by querying (each fill here)
