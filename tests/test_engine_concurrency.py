"""Routing and concurrency: send_event broadcast and targeted, num_workers,
num_concurrent_runs."""

import asyncio
import threading

import pytest

from riverbed import (
    Context,
    Event,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowCancelledByUser,
    WorkflowRuntimeError,
    step,
)

pytestmark = pytest.mark.usefixtures("hang_guard")


class Job(Event):
    n: int


class Done(Event):
    step_name: str
    n: int


class Other(Event):
    pass


class Fanout(Workflow):
    """``begin`` broadcasts or targets a Job; ``left`` and ``right`` both take Jobs."""

    @step
    async def begin(self, ctx: Context, ev: StartEvent) -> Job | None:
        target = ev.get("target")
        ctx.send_event(Job(n=1), step=target)
        await ctx.store.set("expected", 1 if target else 2)
        return None

    @step
    async def left(self, ev: Job) -> Done:
        return Done(step_name="left", n=ev.n)

    @step
    async def right(self, ev: Job) -> Done:
        return Done(step_name="right", n=ev.n)

    @step
    async def gather(self, ctx: Context, ev: Done) -> StopEvent | None:
        expected = await ctx.store.get("expected")
        got = ctx.collect_events(ev, [Done] * expected)
        if got is None:
            return None
        return StopEvent(result=sorted(d.step_name for d in got))


async def test_send_event_broadcasts_to_every_accepting_step() -> None:
    assert await Fanout().run() == ["left", "right"]


async def test_send_event_with_step_reaches_only_that_step() -> None:
    assert await Fanout().run(target="right") == ["right"]
    assert await Fanout().run(target="left") == ["left"]


async def test_send_event_to_unknown_step_fails_in_the_step() -> None:
    with pytest.raises(WorkflowRuntimeError, match="Step nope does not exist"):
        await Fanout().run(target="nope")


async def test_send_event_to_a_step_that_does_not_take_it() -> None:
    with pytest.raises(WorkflowRuntimeError, match="Step gather does not accept event of type Job"):
        await Fanout().run(target="gather")


async def test_targeted_send_errors_can_be_caught_by_the_step() -> None:
    class Flow(Workflow):
        @step
        async def begin(self, ctx: Context, ev: StartEvent) -> StopEvent:
            errors = []
            for target in ("missing", "begin"):
                try:
                    ctx.send_event(Other(), step=target)
                except WorkflowRuntimeError as exc:
                    errors.append(type(exc).__name__)
            return StopEvent(result=errors)

    assert await Flow().run() == ["WorkflowRuntimeError", "WorkflowRuntimeError"]


async def test_send_event_rejects_non_events() -> None:
    class Flow(Workflow):
        @step
        async def begin(self, ctx: Context, ev: StartEvent) -> StopEvent:
            ctx.send_event({"not": "an event"})  # type: ignore[arg-type]
            return StopEvent()

    with pytest.raises(WorkflowRuntimeError, match="takes an Event"):
        await Flow().run()


async def test_sending_an_event_no_step_accepts_fails_the_run() -> None:
    class Flow(Workflow):
        @step
        async def begin(self, ctx: Context, ev: StartEvent) -> StopEvent:
            ctx.send_event(Other())
            return StopEvent()

    with pytest.raises(WorkflowRuntimeError, match="No step accepts Other"):
        await Flow().run()


def _gauge() -> tuple[list[int], list[int]]:
    return [0], [0]  # (current, maximum)


@pytest.mark.parametrize("workers", [1, 2, 3])
async def test_num_workers_caps_concurrency_of_a_step(workers: int) -> None:
    current, peak = _gauge()

    class Flow(Workflow):
        @step
        async def begin(self, ctx: Context, ev: StartEvent) -> Job | None:
            for i in range(8):
                ctx.send_event(Job(n=i))
            return None

        @step(num_workers=workers)
        async def work(self, ev: Job) -> Done:
            current[0] += 1
            peak[0] = max(peak[0], current[0])
            for _ in range(5):
                await asyncio.sleep(0)
            current[0] -= 1
            return Done(step_name="work", n=ev.n)

        @step
        async def gather(self, ctx: Context, ev: Done) -> StopEvent | None:
            got = ctx.collect_events(ev, [Done] * 8)
            return None if got is None else StopEvent(result=sorted(d.n for d in got))

    assert await Flow().run() == list(range(8))
    assert peak[0] == workers


async def test_num_workers_caps_sync_steps_too() -> None:
    lock = threading.Lock()
    current, peak = _gauge()
    gate = threading.Event()

    class Flow(Workflow):
        @step
        async def begin(self, ctx: Context, ev: StartEvent) -> Job | None:
            for i in range(6):
                ctx.send_event(Job(n=i))
            return None

        @step(num_workers=2)
        def work(self, ev: Job) -> Done:
            with lock:
                current[0] += 1
                peak[0] = max(peak[0], current[0])
            gate.wait(0.02)  # let the other worker thread overlap, if it may
            with lock:
                current[0] -= 1
            return Done(step_name="work", n=ev.n)

        @step
        async def gather(self, ctx: Context, ev: Done) -> StopEvent | None:
            got = ctx.collect_events(ev, [Done] * 6)
            return None if got is None else StopEvent(result=len(got))

    assert await Flow().run() == 6
    assert peak[0] <= 2


@pytest.mark.parametrize("limit", [1, 2])
async def test_num_concurrent_runs_caps_parallel_runs(limit: int) -> None:
    current, peak = _gauge()

    class Flow(Workflow):
        @step
        async def only(self, ev: StartEvent) -> StopEvent:
            current[0] += 1
            peak[0] = max(peak[0], current[0])
            for _ in range(5):
                await asyncio.sleep(0)
            current[0] -= 1
            return StopEvent(result=ev.i)

    wf = Flow(num_concurrent_runs=limit)
    handlers = [wf.run(i=i) for i in range(5)]
    assert await asyncio.gather(*handlers) == list(range(5))
    assert peak[0] == limit


async def test_runs_of_different_instances_are_not_capped_together() -> None:
    current, peak = _gauge()

    class Flow(Workflow):
        @step
        async def only(self, ev: StartEvent) -> StopEvent:
            current[0] += 1
            peak[0] = max(peak[0], current[0])
            for _ in range(5):
                await asyncio.sleep(0)
            current[0] -= 1
            return StopEvent()

    await asyncio.gather(*(Flow(num_concurrent_runs=1).run() for _ in range(3)))
    assert peak[0] == 3


async def test_a_failed_run_gives_its_slot_back() -> None:
    class Flow(Workflow):
        @step
        async def only(self, ev: StartEvent) -> StopEvent:
            if ev.get("fail"):
                raise ValueError("boom")
            return StopEvent(result="ok")

    wf = Flow(num_concurrent_runs=1)
    with pytest.raises(ValueError, match="boom"):
        await wf.run(fail=True)
    assert await asyncio.wait_for(wf.run(), 1) == "ok"


async def test_cancelling_a_run_waiting_for_a_slot_leaks_no_slot() -> None:
    release = asyncio.Event()

    class Flow(Workflow):
        @step
        async def only(self, ev: StartEvent) -> StopEvent:
            await release.wait()
            return StopEvent(result=ev.i)

    wf = Flow(num_concurrent_runs=1)
    first = wf.run(i=1)
    queued = wf.run(i=2)
    await asyncio.sleep(0)
    await queued.cancel_run()
    with pytest.raises(WorkflowCancelledByUser):
        await queued
    release.set()
    assert await first == 1
    assert await asyncio.wait_for(wf.run(i=3), 5) == 3
