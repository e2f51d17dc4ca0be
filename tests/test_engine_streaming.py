"""handler.stream_events(): ordering, several readers, late readers, failures."""

import asyncio

import pytest

from riverbed import (
    Context,
    ContextStateError,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowFailedEvent,
    WorkflowRuntimeError,
    step,
)

pytestmark = pytest.mark.usefixtures("hang_guard")


class Tick(Event):
    n: int


class Next(Event):
    n: int


class Ticker(Workflow):
    """Streams Tick(0..count-1) over a chain of steps, then stops with the count."""

    @step
    async def begin(self, ctx: Context, ev: StartEvent) -> Next:
        ctx.write_event_to_stream(None)  # ignored
        return Next(n=0)

    @step
    async def tick(self, ctx: Context, ev: Next) -> Next | StopEvent:
        ctx.write_event_to_stream(Tick(n=ev.n))
        await asyncio.sleep(0)
        if ev.n + 1 < 5:
            return Next(n=ev.n + 1)
        return StopEvent(result=ev.n + 1)


async def test_stream_is_in_order_and_ends_with_the_stop_event() -> None:
    handler = Ticker().run()
    events = [ev async for ev in handler.stream_events()]
    assert [ev.n for ev in events[:-1]] == [0, 1, 2, 3, 4]
    assert type(events[-1]) is StopEvent
    assert events[-1].result == 5
    assert await handler == 5


async def test_two_readers_each_get_the_whole_stream() -> None:
    handler = Ticker().run()

    async def read() -> list[Event]:
        return [ev async for ev in handler.stream_events()]

    first, second = await asyncio.gather(read(), read())
    assert first == second
    assert len(first) == 6
    assert first[-1] is second[-1]


async def test_a_reader_started_after_the_run_finished_gets_everything() -> None:
    handler = Ticker().run()
    assert await handler == 5
    events = [ev async for ev in handler.stream_events()]
    assert [type(e) for e in events] == [Tick] * 5 + [StopEvent]
    again = [ev async for ev in handler.stream_events()]
    assert again == events


async def test_a_reader_can_resume_after_a_position() -> None:
    handler = Ticker().run()
    await handler
    events = [ev async for ev in handler.stream_events(after=3)]
    assert [getattr(e, "n", None) for e in events] == [3, 4, None]


async def test_a_reader_joining_midway_reads_from_the_start() -> None:
    release = asyncio.Event()

    class Flow(Workflow):
        @step
        async def work(self, ctx: Context, ev: StartEvent) -> StopEvent:
            ctx.write_event_to_stream(Tick(n=1))
            await release.wait()
            ctx.write_event_to_stream(Tick(n=2))
            return StopEvent()

    handler = Flow().run()
    early: list[Event] = []
    async for ev in handler.stream_events():
        early.append(ev)
        if len(early) == 1:
            late_reader = asyncio.ensure_future(_collect(handler))
            await asyncio.sleep(0)
            release.set()
    late = await late_reader
    assert [type(e) for e in early] == [Tick, Tick, StopEvent]
    assert late == early


async def _collect(handler: object) -> list[Event]:
    return [ev async for ev in handler.stream_events()]  # type: ignore[attr-defined]


async def test_failure_ends_the_stream_with_workflow_failed_event() -> None:
    class Flow(Workflow):
        @step
        async def begin(self, ctx: Context, ev: StartEvent) -> Next:
            ctx.write_event_to_stream(Tick(n=1))
            return Next(n=1)

        @step
        async def explode(self, ev: Next) -> StopEvent:
            raise KeyError("missing thing")

    handler = Flow().run()
    events = [ev async for ev in handler.stream_events()]
    assert [type(e) for e in events] == [Tick, WorkflowFailedEvent]
    failed = events[-1]
    assert failed.step_name == "explode"
    assert isinstance(failed.exception, KeyError)
    assert failed.attempts == 1
    with pytest.raises(KeyError, match="missing thing") as info:
        await handler
    assert info.value is failed.exception
    assert handler.status.value == "failed"


async def test_writing_to_the_stream_after_the_run_is_an_error() -> None:
    handler = Ticker().run()
    await handler
    with pytest.raises(ContextStateError, match="finished"):
        handler.ctx.write_event_to_stream(Tick(n=9))


async def test_a_stream_written_many_times_refuses_writes_once_the_run_ended() -> None:
    # The first write in a run sets up the per-token fast path; ending the run must
    # switch it off, or later writes would land after the stop event.
    handler = Ticker().run()
    await handler
    with pytest.raises(ContextStateError, match="finished"):
        handler.ctx.write_event_to_stream(Tick(n=9))
    events = [ev async for ev in handler.stream_events()]
    assert type(events[-1]) is StopEvent


async def test_a_reused_context_streams_to_its_new_run() -> None:
    workflow = Ticker()
    ctx = Context(workflow)
    first = workflow.run(ctx=ctx)
    await first
    second = workflow.run(ctx=ctx)
    events = [ev async for ev in second.stream_events()]
    assert [ev.n for ev in events[:-1]] == [0, 1, 2, 3, 4]
    # The first run's stream is closed and kept as it was.
    assert len([ev async for ev in first.stream_events()]) == 6


async def test_writing_something_that_is_not_an_event_names_the_fix() -> None:
    class Flow(Workflow):
        @step
        async def work(self, ctx: Context, ev: StartEvent) -> StopEvent:
            ctx.write_event_to_stream(Tick(n=1))  # the fast path is on from here
            ctx.write_event_to_stream({"n": 2})  # type: ignore[arg-type]
            return StopEvent()

    with pytest.raises(WorkflowRuntimeError, match="takes an Event, got dict"):
        await Flow().run()


async def test_the_handler_context_can_write_to_a_running_stream() -> None:
    release = asyncio.Event()

    class Flow(Workflow):
        @step
        async def work(self, ev: StartEvent) -> StopEvent:
            await release.wait()
            return StopEvent()

    handler = Flow().run()
    await asyncio.sleep(0)
    handler.ctx.write_event_to_stream(Tick(n=42))
    release.set()
    events = [ev async for ev in handler.stream_events()]
    assert [type(e) for e in events] == [Tick, StopEvent]


async def test_a_reader_cancelled_while_waiting_does_not_end_the_other_readers() -> None:
    class Ticker(Workflow):
        @step
        async def tick(self, ctx: Context, ev: StartEvent) -> StopEvent:
            await asyncio.sleep(0.05)
            ctx.write_event_to_stream(Event(msg="tick"))
            return StopEvent(result="done")

    handler = Ticker().run()

    async def read() -> list[Event]:
        return [ev async for ev in handler.stream_events()]

    quitter = asyncio.create_task(read())
    stayer = asyncio.create_task(read())
    await asyncio.sleep(0.01)  # both are waiting on the stream now
    quitter.cancel()
    events = await stayer
    assert [type(ev).__name__ for ev in events] == ["Event", "StopEvent"]
    assert quitter.cancelled()
    assert await handler == "done"


class Bursts(Workflow):
    """Writes three bursts of 100 Ticks, yielding to the loop between bursts."""

    @step
    async def burst(self, ctx: Context, ev: StartEvent) -> StopEvent:
        for n in range(300):
            ctx.write_event_to_stream(Tick(n=n))
            if n % 100 == 99:
                await asyncio.sleep(0)
        return StopEvent(result=300)


async def test_bursts_reach_slow_and_fast_readers_once_each_in_order() -> None:
    # Readers take what is buffered in batches; a slow reader's batch is overtaken by
    # the writer's next burst, which must come next, once, in order.
    handler = Bursts().run()

    async def read(slow: bool) -> list[int]:
        seen = []
        async for ev in handler.stream_events():
            seen.append(ev.n if isinstance(ev, Tick) else -1)
            if slow:
                await asyncio.sleep(0)
        return seen

    fast, slow = await asyncio.gather(read(False), read(True))
    assert fast == [*range(300), -1]
    assert slow == fast
    assert await handler == 300


async def test_a_reader_that_stops_midway_leaves_the_stream_whole() -> None:
    handler = Bursts().run()
    async for ev in handler.stream_events(after=10):
        assert ev.n == 10
        break
    assert await handler == 300
    events = [ev async for ev in handler.stream_events(after=150)]
    assert [getattr(e, "n", None) for e in events] == [*range(150, 300), None]


async def test_a_streamed_question_of_a_subclass_makes_the_run_wait() -> None:
    class AskName(InputRequiredEvent):
        pass

    class Flow(Workflow):
        @step
        async def ask(self, ctx: Context, ev: StartEvent) -> None:
            ctx.write_event_to_stream(AskName(prefix="name?"))

        @step
        async def answer(self, ev: HumanResponseEvent) -> StopEvent:
            return StopEvent(result=ev.response)

    handler = Flow().run()
    async for ev in handler.stream_events():
        if isinstance(ev, AskName):
            for _ in range(20):
                await asyncio.sleep(0)
            assert not handler.done()  # waiting for the answer, not "stopped making progress"
            await handler.send_event(HumanResponseEvent(response="ana"))
    assert await handler == "ana"
    assert AskName._asks_for_input
    assert not Tick._asks_for_input
    assert "_asks_for_input" not in AskName(prefix="x").model_dump()
