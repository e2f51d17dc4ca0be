"""A live process keeps ownership of its durable runs; nobody else may take them over."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from riverbed import (
    Context,
    HumanResponseEvent,
    InputRequiredEvent,
    RunOwnedError,
    StartEvent,
    StopEvent,
    Workflow,
    step,
)


class Ask(Workflow):
    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> InputRequiredEvent:
        return InputRequiredEvent(prefix="?")

    @step
    async def answer(self, ctx: Context, ev: HumanResponseEvent) -> StopEvent:
        return StopEvent(result=ev.response)


async def test_a_live_owner_keeps_its_run_past_the_lease(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}?lease_seconds=0.3"
    workflow = Ask(store=url)
    handler = workflow.run(run_id="r1")
    async for ev in handler.stream_events():
        if isinstance(ev, InputRequiredEvent):
            break
    await asyncio.sleep(1.0)  # three leases: without heartbeats the run would be up for grabs

    other = Ask(store=url)
    await other.open_store()
    with pytest.raises(RunOwnedError):
        await other.store.acquire_run("r1", "elsewhere:1:other")

    await handler.send_event(HumanResponseEvent(response="yes"))
    assert await handler == "yes"


class WaitBriefly(Workflow):
    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
        from riverbed import WaitForEventTimeoutError

        try:
            await ctx.wait_for_event(
                HumanResponseEvent, waiter_event=InputRequiredEvent(prefix="?"), timeout=2.0
            )
        except WaitForEventTimeoutError as exc:
            return StopEvent(result=str(exc))
        return StopEvent(result="answered")


async def test_a_resumed_wait_keeps_the_time_that_was_left(tmp_path: Path) -> None:
    import re

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    first = WaitBriefly(store=url)
    handler = first.run(run_id="w")
    async for ev in handler.stream_events():
        if isinstance(ev, InputRequiredEvent):
            break
    run = handler.ctx._run
    assert run is not None
    for task in list(run._tasks):  # the process "dies" while the step waits
        task.cancel()
    first._live.clear()
    await asyncio.sleep(0.8)

    resumed = await WaitBriefly(store=url).resume("w")
    message = await resumed
    waited = float(re.search(r"waited ([0-9.]+) seconds", message).group(1))  # type: ignore[union-attr]
    assert waited < 1.5  # the 2 s wait went on with what was left, not from zero


class SlowStep(Workflow):
    """A step that waits for the test to let it finish, then returns the result."""

    gate: asyncio.Event | None = None

    @step
    async def work(self, ctx: Context, ev: StartEvent) -> StopEvent:
        assert self.gate is not None
        await self.gate.wait()
        return StopEvent(result="done")


async def test_a_process_whose_claim_was_lost_stops_without_recording_anything(
    tmp_path: Path,
) -> None:
    # What a PostgreSQL server crash can do to a worker: the take of the run (committed
    # without waiting for the WAL flush) is undone under a step that is running. The step's
    # commit is then fenced; the run must not be called stuck and recorded as failed here.
    import sqlite3

    from riverbed.errors import FencedError

    db = tmp_path / "runs.db"
    workflow = SlowStep(store=f"sqlite:///{db}")
    workflow.gate = asyncio.Event()
    handler = workflow.run(run_id="r1")
    conn = sqlite3.connect(db, isolation_level=None)
    running = "SELECT count(*) FROM deliveries WHERE run_id = 'r1' AND status = 'running'"
    for _ in range(500):  # until the step has claimed its delivery and is running
        await asyncio.sleep(0.01)
        with contextlib.suppress(sqlite3.OperationalError):  # the schema is being made
            if conn.execute(running).fetchone()[0]:
                break
    conn.isolation_level = ""
    with conn:
        conn.execute(
            "UPDATE deliveries SET status = 'pending', attempts = 0, claim_token = NULL,"
            " visible_at = 0 WHERE run_id = 'r1'"
        )
        conn.execute("UPDATE runs SET owner = NULL, owner_heartbeat = NULL WHERE run_id = 'r1'")
    workflow.gate.set()
    with pytest.raises(FencedError, match="lost its claim"):
        await handler
    status, owner = conn.execute("SELECT status, owner FROM runs WHERE run_id = 'r1'").fetchone()
    conn.close()
    assert (status, owner) == ("running", None)  # nothing recorded: it can be taken again

    again = SlowStep(store=f"sqlite:///{db}")
    again.gate = asyncio.Event()
    again.gate.set()
    assert await (await again.resume("r1")) == "done"
