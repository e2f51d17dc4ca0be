"""A live process keeps ownership of its durable runs; nobody else may take them over."""

from __future__ import annotations

import asyncio
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
