"""Context across runs, and Context methods called where they cannot work."""

import asyncio

import pytest

from riverbed import (
    Context,
    ContextStateError,
    Event,
    HumanResponseEvent,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowCancelledByUser,
    WorkflowRuntimeError,
    step,
)

pytestmark = pytest.mark.usefixtures("hang_guard")


class Counter(Workflow):
    @step
    async def count(self, ctx: Context, ev: StartEvent) -> StopEvent:
        runs = await ctx.store.get("runs", default=0)
        await ctx.store.set("runs", runs + 1)
        greeting = await ctx.store.get("greeting", default="?")
        return StopEvent(result=f"{greeting} #{runs + 1}")


async def test_context_seeded_before_run_read_after_and_reused() -> None:
    wf = Counter()
    ctx = Context(wf)
    assert ctx.run_id is None
    assert not ctx.is_running
    await ctx.store.set("greeting", "hello")
    handler = wf.run(ctx=ctx)
    assert ctx.is_running
    assert await handler == "hello #1"
    assert not ctx.is_running
    assert ctx.run_id == handler.run_id
    assert await ctx.store.get("runs") == 1

    second = wf.run(ctx=ctx)
    assert await second == "hello #2"
    assert await ctx.store.get("runs") == 2
    assert ctx.run_id == second.run_id != handler.run_id
    assert second.ctx is ctx


async def test_a_context_can_be_reused_after_a_failed_run() -> None:
    class Flow(Workflow):
        @step
        async def work(self, ctx: Context, ev: StartEvent) -> StopEvent:
            await ctx.store.set("tries", await ctx.store.get("tries", default=0) + 1)
            if ev.get("fail"):
                raise ValueError("first run fails")
            return StopEvent(result=await ctx.store.get("tries"))

    wf = Flow()
    ctx = Context(wf)
    with pytest.raises(ValueError, match="first run fails"):
        await wf.run(ctx=ctx, fail=True)
    assert await wf.run(ctx=ctx) == 2


async def test_a_second_concurrent_run_on_one_context_is_refused() -> None:
    release = asyncio.Event()

    class Flow(Workflow):
        @step
        async def work(self, ev: StartEvent) -> StopEvent:
            await release.wait()
            return StopEvent(result="first")

    wf = Flow()
    ctx = Context(wf)
    first = wf.run(ctx=ctx)
    with pytest.raises(ContextStateError, match="already used by run"):
        wf.run(ctx=ctx)
    # Separate contexts run in parallel.
    other = wf.run()
    release.set()
    assert await first == "first"
    assert await other == "first"
    assert ctx.run_id == first.run_id


async def test_a_context_belongs_to_one_workflow_class() -> None:
    class Other(Workflow):
        @step
        async def work(self, ev: StartEvent) -> StopEvent:
            return StopEvent()

    with pytest.raises(WorkflowRuntimeError, match="made for Counter"):
        Other().run(ctx=Context(Counter()))


async def test_a_context_works_with_another_instance_of_the_same_class() -> None:
    ctx = Context(Counter())
    await ctx.store.set("greeting", "hey")
    assert await Counter().run(ctx=ctx) == "hey #1"


class Ping(Event):
    pass


async def test_step_only_methods_raise_outside_a_step() -> None:
    ctx = Context(Counter())
    with pytest.raises(ContextStateError, match="collect_events"):
        ctx.collect_events(Ping(), [Ping])
    with pytest.raises(ContextStateError, match="wait_for_event"):
        await ctx.wait_for_event(HumanResponseEvent)
    with pytest.raises(ContextStateError, match="attempt"):
        _ = ctx.attempt
    with pytest.raises(ContextStateError, match="invocation_id"):
        _ = ctx.invocation_id
    with pytest.raises(ContextStateError, match="retry_info"):
        ctx.retry_info()


async def test_step_only_methods_raise_from_the_handler_side() -> None:
    release = asyncio.Event()

    class Flow(Workflow):
        @step
        async def work(self, ev: StartEvent) -> StopEvent:
            await release.wait()
            return StopEvent()

    handler = Flow().run()
    with pytest.raises(ContextStateError, match="only works inside a step"):
        handler.ctx.collect_events(Ping(), [Ping])
    with pytest.raises(ContextStateError, match="only works inside a step"):
        await handler.ctx.wait_for_event(HumanResponseEvent)
    release.set()
    await handler


async def test_send_event_before_the_run_started() -> None:
    ctx = Context(Counter())
    with pytest.raises(ContextStateError, match="before the workflow started"):
        ctx.send_event(Ping())
    with pytest.raises(ContextStateError, match="before the workflow started"):
        ctx.write_event_to_stream(Ping())


async def test_send_event_after_the_run_finished() -> None:
    handler = Counter().run()
    await handler
    with pytest.raises(ContextStateError, match="finished"):
        await handler.send_event(Ping())


async def test_a_step_cannot_use_another_runs_context_for_step_only_calls() -> None:
    outer_ctx: list[Context] = []

    class Inner(Workflow):
        @step
        async def work(self, ev: StartEvent) -> StopEvent:
            try:
                outer_ctx[0].collect_events(Ping(), [Ping])
            except ContextStateError as exc:
                return StopEvent(result=str(exc))
            return StopEvent(result="no error")

    class Outer(Workflow):
        @step
        async def work(self, ctx: Context, ev: StartEvent) -> StopEvent:
            outer_ctx.append(ctx)
            return StopEvent(result=await Inner().run())

    assert "inside a step of a run using this context" in await Outer().run()


async def test_state_written_by_concurrent_steps_is_kept() -> None:
    class Job(Event):
        n: int

    class Flow(Workflow):
        @step
        async def begin(self, ctx: Context, ev: StartEvent) -> Job | None:
            for i in range(10):
                ctx.send_event(Job(n=i))
            return None

        @step(num_workers=10)
        async def add(self, ctx: Context, ev: Job) -> StopEvent | None:
            async with ctx.store.edit_state() as state:
                await asyncio.sleep(0)
                state["total"] = state.get("total", 0) + ev.n
                state["count"] = state.get("count", 0) + 1
                done = state["count"] == 10
            return StopEvent(result=await ctx.store.get("total")) if done else None

    assert await Flow().run() == 45


# -- the rest of LlamaIndex's Context and handler surface ----------------------------------


class _Tick(Event):
    n: int


class _Done(StopEvent):
    total: int


def _progress(message: str) -> None:
    """A helper a step calls without passing ctx (as a decorator around a step would)."""
    Context.get_step_context().write_event_to_stream(_Tick(n=len(message)))


class _Helpers(Workflow):
    release: asyncio.Event

    @step
    async def work(self, ev: StartEvent) -> _Done:
        _progress("four")
        await type(self).release.wait()
        return _Done(total=4)


async def test_get_step_context_running_steps_and_the_context_stream() -> None:
    _Helpers.release = asyncio.Event()
    workflow = _Helpers()
    handler = workflow.run()
    ctx = handler.ctx
    seen = []
    async for ev in ctx.stream_events():
        seen.append(ev)
        if isinstance(ev, _Tick):
            assert await ctx.running_steps() == ["work"]
            with pytest.raises(ContextStateError, match="still running"):
                ctx.get_result()
            _Helpers.release.set()
    assert [type(ev) for ev in seen] == [_Tick, _Done]
    assert seen[0].n == 4
    done = await handler
    assert isinstance(done, _Done)
    assert ctx.get_result() is done
    assert await handler.stop_event_result() is done
    assert not handler.cancelled()
    with pytest.raises(ContextStateError, match="finished"):
        await ctx.running_steps()
    with pytest.raises(WorkflowRuntimeError, match="only works inside a step"):
        Context.get_step_context()


async def test_stop_event_result_gives_the_base_stop_event_and_cancel_stops_the_run() -> None:
    class Plain(Workflow):
        @step
        async def go(self, ev: StartEvent) -> StopEvent:
            return StopEvent(result=7)

    handler = Plain().run()
    stop = await handler.stop_event_result()
    assert type(stop) is StopEvent
    assert stop.result == 7
    assert await handler == 7

    _Helpers.release = asyncio.Event()  # never set: the step waits until cancelled
    waiting = _Helpers().run()
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(WorkflowCancelledByUser):
        await waiting
    assert waiting.cancelled()
    with pytest.raises(WorkflowCancelledByUser):
        await waiting.stop_event_result()
