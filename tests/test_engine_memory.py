"""A finished run is freed as soon as nothing of the caller's refers to it.

Runs, their contexts and their waiters used to refer to each other in cycles, so a finished
run (its stream, every event it streamed, its state) stayed in memory until the garbage
collector's next full pass. With the collector off, these tests see that a run is freed by
reference counting alone, and that what callers still hold keeps working.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from riverbed import Context, Event, StartEvent, StopEvent, Workflow, step
from riverbed.handler import WorkflowHandler


class Tick(Event):
    i: int


class Ping(Event):
    pass


class Streams(Workflow):
    @step
    async def emit(self, ctx: Context, ev: StartEvent) -> StopEvent:
        for i in range(100):
            ctx.write_event_to_stream(Tick(i=i))
        await ctx.store.set("seen", 100)
        return StopEvent(result="done")


class Waits(Workflow):
    """Registers a waiter (the run's waiters are involved) that an event answers."""

    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
        answer = await ctx.wait_for_event(Ping, timeout=5)
        return StopEvent(result=type(answer).__name__)


@pytest.fixture
def no_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def test_a_finished_run_is_freed_with_its_handler(no_gc: None) -> None:
    handler = Streams().run()
    streamed = [ev async for ev in handler.stream_events()]
    assert await handler == "done"
    assert len(streamed) == 101
    run = weakref.ref(handler._run)
    del handler, streamed
    assert run() is None


async def waiting(handler: WorkflowHandler) -> None:
    for _ in range(1000):
        if handler._run.waiters:
            return
        await asyncio.sleep(0.001)
    raise AssertionError("the step never waited")


async def test_a_run_that_waited_is_freed_too(no_gc: None) -> None:
    handler = Waits().run()
    await waiting(handler)
    handler.ctx.send_event(Ping())
    assert await handler == "Ping"
    run = weakref.ref(handler._run)
    del handler
    assert run() is None


async def test_the_context_outlives_its_finished_run(no_gc: None) -> None:
    workflow = Streams()
    ctx = Context(workflow)
    handler = workflow.run(ctx=ctx)
    assert await handler == "done"
    run_id, run = handler.run_id, weakref.ref(handler._run)
    assert ctx._run is handler._run  # while the handler is held, so is the run
    del handler
    assert run() is None
    # The context keeps its state and the run's id, and can run again.
    assert ctx.run_id == run_id
    assert not ctx.is_running
    assert await ctx.store.get("seen") == 100
    assert await workflow.run(ctx=ctx) == "done"
    assert ctx.run_id != run_id


async def test_a_cancelled_run_stays_with_its_context_for_to_dict() -> None:
    workflow = Waits()
    ctx = Context(workflow)
    handler = workflow.run(ctx=ctx)
    await waiting(handler)
    await handler.cancel_run()
    run = weakref.ref(handler._run)
    del handler
    gc.collect()
    assert run() is not None  # kept: its unfinished work is part of the context
    saved = ctx.to_dict()
    assert list(saved["queues"]) == ["ask"]  # the waiting step's StartEvent, to run again
    assert saved["is_running"]
