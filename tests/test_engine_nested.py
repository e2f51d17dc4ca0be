"""Nested workflows: a step that awaits another workflow's run."""

import asyncio
import threading
from typing import Any

import pytest

from riverbed import (
    Context,
    ContextStateError,
    Event,
    StartEvent,
    StepTimeoutError,
    StopEvent,
    Workflow,
    WorkflowCancelledByUser,
    WorkflowCancelledEvent,
    WorkflowHandler,
    WorkflowTimeoutError,
    step,
)
from riverbed.stores.base import RunStatus
from riverbed.stores.memory import MemoryStore
from riverbed.testing import FakeClock

pytestmark = pytest.mark.usefixtures("hang_guard")


class Note(Event):
    text: str


class Child(Workflow):
    @step
    async def work(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(Note(text=f"child got {ev.x}"))
        return StopEvent(result=ev.x * 10)


class Parent(Workflow):
    @step
    async def delegate(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(Note(text="parent before"))
        value = await Child().run(x=ev.x)
        ctx.write_event_to_stream(Note(text="parent after"))
        return StopEvent(result=value + 1)


async def test_a_step_awaits_a_child_run() -> None:
    assert await Parent().run(x=4) == 41


async def test_child_stream_events_reach_the_parent_stream() -> None:
    handler = Parent().run(x=2)
    events = [ev async for ev in handler.stream_events()]
    assert [getattr(e, "text", None) for e in events] == [
        "parent before",
        "child got 2",
        "parent after",
        None,
    ]
    # The child's StopEvent ends the child's stream, not the parent's.
    assert sum(isinstance(e, StopEvent) for e in events) == 1
    assert events[-1].result == 21


async def test_the_child_run_is_recorded_with_its_parent() -> None:
    children: list[WorkflowHandler] = []
    child_wf = Child()

    class Flow(Workflow):
        @step
        async def delegate(self, ev: StartEvent) -> StopEvent:
            handler = child_wf.run(x=1)
            children.append(handler)
            return StopEvent(result=await handler)

    parent = Flow().run()
    assert await parent == 10
    record = await child_wf.store.get_run(children[0].run_id)
    assert record.parent_run_id == parent.run_id


def hanging_child() -> tuple[type[Workflow], list[str], list[WorkflowHandler]]:
    log: list[str] = []
    handlers: list[WorkflowHandler] = []

    class Hang(Workflow):
        @step
        async def hang(self, ctx: Context, ev: StartEvent) -> StopEvent:
            ctx.write_event_to_stream(Note(text="child waiting"))
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                log.append("child cancelled")
                raise
            return StopEvent()

    class Outer(Workflow):
        @step
        async def delegate(self, ev: StartEvent) -> StopEvent:
            handler = Hang(timeout=ev.get("child_timeout"), clock=ev.get("clock")).run()
            handlers.append(handler)
            try:
                return StopEvent(result=await handler)
            except asyncio.CancelledError:
                log.append("parent step cancelled")
                raise

    return Outer, log, handlers


async def test_cancelling_the_parent_cancels_the_child() -> None:
    outer, log, children = hanging_child()
    handler = outer().run()
    async for ev in handler.stream_events():
        if isinstance(ev, Note):
            await handler.cancel_run()
    with pytest.raises(WorkflowCancelledByUser):
        await handler
    [child] = children
    child_events = [ev async for ev in child.stream_events()]
    assert isinstance(child_events[-1], WorkflowCancelledEvent)
    assert child.status.value == "cancelled"
    await asyncio.sleep(0)
    assert sorted(log) == ["child cancelled", "parent step cancelled"]


async def test_the_parent_timeout_cancels_the_child(clock: FakeClock) -> None:
    outer, log, children = hanging_child()
    with pytest.raises(WorkflowTimeoutError):
        await outer(timeout=20, clock=clock).run(clock=clock)
    [child] = children
    assert isinstance([ev async for ev in child.stream_events()][-1], WorkflowCancelledEvent)
    assert clock.now() == 20
    await asyncio.sleep(0)
    assert "child cancelled" in log


async def test_the_child_keeps_its_own_timeout(clock: FakeClock) -> None:
    outer, _, children = hanging_child()
    with pytest.raises(WorkflowTimeoutError, match="active steps: hang"):
        await outer(clock=clock).run(child_timeout=5, clock=clock)
    assert clock.now() == 5
    assert children[0].status.value == "timed_out"


async def test_a_parent_step_can_handle_the_child_timeout(clock: FakeClock) -> None:
    class Hang(Workflow):
        @step
        async def hang(self, ev: StartEvent) -> StopEvent:
            await asyncio.Event().wait()
            return StopEvent()

    class Outer(Workflow):
        @step
        async def delegate(self, ev: StartEvent) -> StopEvent:
            try:
                await Hang(timeout=7, clock=clock).run()
            except WorkflowTimeoutError:
                return StopEvent(result=f"child gave up at {clock.now()}")
            return StopEvent(result="unreachable")

    assert await Outer(timeout=100, clock=clock).run() == "child gave up at 7.0"


async def test_a_parent_step_timeout_cancels_the_child(clock: FakeClock) -> None:
    log: list[str] = []
    children: list[WorkflowHandler] = []

    class Hang(Workflow):
        @step
        async def hang(self, ev: StartEvent) -> StopEvent:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                log.append("child cancelled")
                raise
            return StopEvent()

    class Outer(Workflow):
        @step(timeout=3)
        async def delegate(self, ev: StartEvent) -> StopEvent:
            handler = Hang(clock=clock).run()
            children.append(handler)
            return StopEvent(result=await handler)

    with pytest.raises(StepTimeoutError):
        await Outer(clock=clock).run()
    events = [ev async for ev in children[0].stream_events()]
    assert isinstance(events[-1], WorkflowCancelledEvent)
    await asyncio.sleep(0)
    assert log == ["child cancelled"]


async def test_a_child_failure_raises_in_the_parent_step() -> None:
    class Broken(Workflow):
        @step
        async def work(self, ev: StartEvent) -> StopEvent:
            raise LookupError("child broke")

    class Outer(Workflow):
        @step
        async def delegate(self, ev: StartEvent) -> StopEvent:
            try:
                await Broken().run()
            except LookupError as exc:
                return StopEvent(result=f"handled: {exc}")
            return StopEvent()

    assert await Outer().run() == "handled: child broke"


async def test_nested_two_levels_stream_to_the_top() -> None:
    class Middle(Workflow):
        @step
        async def delegate(self, ctx: Context, ev: StartEvent) -> StopEvent:
            ctx.write_event_to_stream(Note(text="middle"))
            return StopEvent(result=await Child().run(x=ev.x))

    class Top(Workflow):
        @step
        async def delegate(self, ctx: Context, ev: StartEvent) -> StopEvent:
            return StopEvent(result=await Middle().run(x=ev.x))

    handler = Top().run(x=3)
    events = [ev async for ev in handler.stream_events()]
    assert [getattr(e, "text", None) for e in events] == ["middle", "child got 3", None]
    assert await handler == 30


async def test_children_started_concurrently_from_one_step() -> None:
    class Outer(Workflow):
        @step
        async def fan(self, ev: StartEvent) -> StopEvent:
            results = await asyncio.gather(*(Child().run(x=i) for i in range(4)))
            return StopEvent(result=results)

    handler = Outer().run()
    events = [ev async for ev in handler.stream_events()]
    assert await handler == [0, 10, 20, 30]
    assert sorted(e.text for e in events if isinstance(e, Note)) == [
        f"child got {i}" for i in range(4)
    ]


async def test_a_sync_step_can_run_a_child_with_run_sync() -> None:
    class Outer(Workflow):
        @step
        def delegate(self, ev: StartEvent) -> StopEvent:
            return StopEvent(result=Child().run_sync(x=ev.x))

    handler = Outer().run(x=5)
    events = [ev async for ev in handler.stream_events()]
    assert await handler == 50
    # The child ran on its own loop in the step's thread; its events still reach us.
    assert [getattr(e, "text", None) for e in events] == ["child got 5", None]


async def test_cancelling_the_parent_cancels_a_run_sync_child() -> None:
    finished = threading.Event()
    outcome: list[str] = []

    class Hang(Workflow):
        @step
        async def hang(self, ctx: Context, ev: StartEvent) -> StopEvent:
            ctx.write_event_to_stream(Note(text="child waiting"))
            await asyncio.Event().wait()
            return StopEvent()

    class Outer(Workflow):
        @step
        def delegate(self, ev: StartEvent) -> StopEvent:
            try:
                Hang().run_sync()
            except WorkflowCancelledByUser:
                outcome.append("child cancelled")
            finally:
                finished.set()
            return StopEvent()

    handler = Outer().run()
    async for ev in handler.stream_events():
        if isinstance(ev, Note):
            await handler.cancel_run()
    with pytest.raises(WorkflowCancelledByUser):
        await handler
    # The child's loop lives in a worker thread: give it a moment to see the cancel.
    assert await asyncio.to_thread(finished.wait, 5)
    assert outcome == ["child cancelled"]


async def test_a_child_run_refused_at_start_is_not_treated_as_a_child() -> None:
    class RecordingStore(MemoryStore):
        def __init__(self) -> None:
            super().__init__()
            self.started: list[str] = []
            self.finished: list[str] = []

        async def run_started(self, record: Any, start_event: Any, event_seq: int) -> None:
            self.started.append(record.run_id)
            await super().run_started(record, start_event, event_seq)

        async def run_finished(
            self, run_id: str, status: RunStatus, result: Any = None, error: Any = None
        ) -> None:
            self.finished.append(run_id)
            await super().run_finished(run_id, status, result, error)

    store = RecordingStore()
    child_wf = Child(store=store)

    class Outer(Workflow):
        @step
        async def work(self, ev: StartEvent) -> StopEvent:
            ctx = Context(child_wf)
            handler = child_wf.run(ctx=ctx, x=1)
            with pytest.raises(ContextStateError):
                child_wf.run(ctx=ctx, x=2, run_id="refused")
            return StopEvent(result=await handler)

    assert await Outer().run() == 10
    await asyncio.sleep(0)
    assert "refused" not in store.finished
    assert store.finished == store.started
