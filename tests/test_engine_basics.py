"""Basic runs: start and stop events, loops, sync steps, run_sync, free-function steps."""

import asyncio
import threading

import pytest

from riverbed import (
    Context,
    ContextStateError,
    Event,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowRuntimeError,
    step,
)
from riverbed.testing import WorkflowTestRunner

pytestmark = pytest.mark.usefixtures("hang_guard")


class Ask(StartEvent):
    question: str
    times: int = 1


class Answer(StopEvent):
    text: str
    length: int


class Progress(Event):
    n: int


class Middle(Event):
    value: int


class Echo(Workflow):
    @step
    async def answer(self, ev: Ask) -> StopEvent:
        return StopEvent(result=ev.question * ev.times)


class CustomStop(Workflow):
    @step
    async def answer(self, ev: Ask) -> Answer:
        return Answer(text=ev.question, length=len(ev.question), result="ignored?")


async def test_run_kwargs_build_the_start_event_subclass() -> None:
    assert await Echo().run(question="ab", times=3) == "ababab"
    assert await Echo().run(question="x") == "x"


async def test_start_event_instance_can_be_passed() -> None:
    assert await Echo().run(start_event=Ask(question="q", times=2)) == "qq"


async def test_bad_run_kwargs_raise_before_the_run() -> None:
    with pytest.raises(WorkflowRuntimeError, match="nope"):
        Echo().run(question="x", nope=1)
    with pytest.raises(WorkflowRuntimeError, match="Ask"):
        Echo().run(times=2)  # question is required


async def test_base_stop_event_returns_its_result() -> None:
    handler = Echo().run(question="hi")
    assert await handler == "hi"
    stop = handler.get_stop_event()
    assert type(stop) is StopEvent
    assert stop.result == "hi"


async def test_custom_stop_event_returns_the_instance() -> None:
    result = await CustomStop().run(question="river")
    assert isinstance(result, Answer)
    assert (result.text, result.length) == ("river", 5)


class Loop(Workflow):
    @step
    async def count(self, ctx: Context, ev: StartEvent) -> StartEvent | StopEvent:
        n = await ctx.store.get("n", default=0)
        await ctx.store.set("n", n + 1)
        if n + 1 < 5:
            return StartEvent()
        return StopEvent(result=n + 1)


async def test_a_step_returning_start_event_loops() -> None:
    handler = Loop().run()
    assert await handler == 5
    assert await handler.ctx.store.get("n") == 5


class SyncSteps(Workflow):
    @step
    def begin(self, ctx: Context, ev: StartEvent) -> Middle | None:
        ctx.write_event_to_stream(Progress(n=threading.get_ident()))
        for i in range(3):
            ctx.send_event(Middle(value=i))
        return None

    @step(num_workers=1)
    def finish(self, ctx: Context, ev: Middle) -> StopEvent | None:
        ctx.write_event_to_stream(Progress(n=ev.value))
        seen = ctx.collect_events(ev, [Middle] * 3)
        if seen is None:
            return None
        return StopEvent(result=[m.value for m in seen])


async def test_sync_steps_run_in_a_thread_and_can_send_and_stream() -> None:
    handler = SyncSteps().run()
    events = [ev async for ev in handler.stream_events()]
    assert await handler == [0, 1, 2]
    progress = [ev.n for ev in events if isinstance(ev, Progress)]
    # The first Progress carries the id of the thread the sync step ran in.
    assert progress[0] != threading.get_ident()
    assert sorted(progress[1:]) == [0, 1, 2]
    assert isinstance(events[-1], StopEvent)


def test_run_sync_from_plain_sync_code() -> None:
    assert Echo().run_sync(question="s", times=2) == "ss"
    assert isinstance(CustomStop().run_sync(question="abc"), Answer)


def test_run_without_a_loop_points_to_run_sync() -> None:
    with pytest.raises(WorkflowRuntimeError, match="run_sync"):
        Echo().run(question="x")


async def test_run_sync_inside_a_loop_points_to_await() -> None:
    with pytest.raises(WorkflowRuntimeError, match=r"await workflow\.run"):
        Echo().run_sync(question="x")


class Pipeline(Workflow):
    @step
    async def begin(self, ev: StartEvent) -> Middle:
        return Middle(value=20)


@step(workflow=Pipeline)
async def double(ev: Middle) -> Progress:
    return Progress(n=ev.value * 2)


@step(workflow=Pipeline, num_workers=1)
def add_one_sync(ctx: Context, ev: Progress) -> StopEvent:
    ctx.write_event_to_stream(Middle(value=ev.n))
    return StopEvent(result=ev.n + 1)


async def test_free_function_steps_join_the_workflow() -> None:
    wf = Pipeline()
    assert {"begin", "double", "add_one_sync"} <= set(wf._step_specs())
    handler = wf.run()
    events = [ev async for ev in handler.stream_events()]
    assert await handler == 41
    assert [type(ev) for ev in events] == [Middle, StopEvent]
    assert events[0].value == 40


class Extras(Workflow):
    @step
    async def begin(self, ev: StartEvent) -> Middle:
        return Middle(value=1, note="extra", tags=["a"])

    @step
    async def read(self, ev: Middle) -> StopEvent:
        return StopEvent(
            result=(ev.note, ev["note"], ev.get("note"), ev.get("missing", "dflt"), ev["tags"])
        )


async def test_extra_event_fields_as_attribute_item_and_get() -> None:
    assert await Extras().run() == ("extra", "extra", "extra", "dflt", ["a"])


async def test_start_event_extras_reach_the_step() -> None:
    class Flow(Workflow):
        @step
        async def begin(self, ev: StartEvent) -> StopEvent:
            return StopEvent(result=(ev.topic, ev.get("depth", 0)))

    assert await Flow().run(topic="rivers") == ("rivers", 0)


async def test_a_step_returning_a_non_event_fails_the_run() -> None:
    class Bad(Workflow):
        @step
        async def begin(self, ev: StartEvent) -> StopEvent:
            return "not an event"  # type: ignore[return-value]

    with pytest.raises(WorkflowRuntimeError, match="returned str instead of an Event"):
        await Bad().run()


async def test_test_runner_collects_the_stream() -> None:
    result = await WorkflowTestRunner(SyncSteps()).run()
    assert result.result == [0, 1, 2]
    assert result.all_event_types[Middle] == 3
    assert isinstance(result.collected[-1], StopEvent)


async def test_steps_of_one_run_share_the_loop() -> None:
    loops: list[asyncio.AbstractEventLoop] = []

    class Flow(Workflow):
        @step
        async def begin(self, ev: StartEvent) -> Middle:
            loops.append(asyncio.get_running_loop())
            return Middle(value=1)

        @step
        async def end(self, ev: Middle) -> StopEvent:
            loops.append(asyncio.get_running_loop())
            return StopEvent(result=None)

    await Flow().run()
    assert loops == [asyncio.get_running_loop()] * 2


class Unwanted(Event):
    pass


async def test_a_sync_step_gets_send_event_errors_like_an_async_step() -> None:
    errors: list[str] = []

    class Flow(Workflow):
        @step
        def begin(self, ctx: Context, ev: StartEvent) -> StopEvent:
            for target in (None, "nope", "begin"):
                try:
                    ctx.send_event(Unwanted(), step=target)
                except WorkflowRuntimeError as exc:
                    errors.append(str(exc).split(".")[0])
            return StopEvent(result=len(errors))

    assert await Flow().run() == 3
    assert errors == [
        "No step accepts Unwanted and no ctx",
        "Step nope does not exist in test_engine_basics",
        "Step begin does not accept event of type Unwanted; it takes StartEvent",
    ]


async def test_an_unroutable_event_sent_by_a_sync_step_fails_the_run() -> None:
    class Flow(Workflow):
        @step
        def begin(self, ctx: Context, ev: StartEvent) -> Middle | None:
            ctx.send_event(Unwanted())
            return None

        @step
        async def end(self, ev: Middle) -> StopEvent:
            return StopEvent()

    with pytest.raises(WorkflowRuntimeError, match="No step accepts Unwanted"):
        await asyncio.wait_for(Flow().run(), 5)


async def test_a_stop_event_ends_the_run_and_cancels_other_steps() -> None:
    log: list[str] = []

    class Flow(Workflow):
        @step
        async def begin(self, ctx: Context, ev: StartEvent) -> Middle | Progress | None:
            ctx.send_event(Progress(n=1))
            ctx.send_event(Middle(value=1))
            return None

        @step
        async def slow(self, ev: Progress) -> StopEvent:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                log.append("slow cancelled")
                raise
            return StopEvent(result="slow")

        @step
        async def fast(self, ev: Middle) -> StopEvent:
            for _ in range(3):
                await asyncio.sleep(0)
            return StopEvent(result="fast")

    handler = Flow().run()
    assert await handler == "fast"
    await asyncio.sleep(0)
    assert log == ["slow cancelled"]
    with pytest.raises(ContextStateError):
        await handler.send_event(Progress(n=2))


async def test_handler_state_while_running_and_after() -> None:
    release = asyncio.Event()

    class Flow(Workflow):
        @step
        async def work(self, ev: StartEvent) -> StopEvent:
            await release.wait()
            return StopEvent(result="r")

    handler = Flow().run()
    await asyncio.sleep(0)
    assert not handler.done()
    assert handler.status.value == "running"
    assert handler.get_stop_event() is None
    assert handler.exception() is None
    with pytest.raises(asyncio.InvalidStateError):
        handler.result()
    release.set()
    assert await handler == "r"
    assert handler.done()
    assert handler.result() == "r"
    assert handler.exception() is None
    assert handler.status.value == "completed"
    assert handler.run_id in repr(handler)


async def test_one_worker_takes_events_in_the_order_they_were_sent() -> None:
    order: list[int] = []

    class Flow(Workflow):
        @step
        async def begin(self, ctx: Context, ev: StartEvent) -> Progress | None:
            for i in range(20):
                ctx.send_event(Progress(n=i))
            return None

        @step(num_workers=1)
        async def take(self, ctx: Context, ev: Progress) -> StopEvent | None:
            order.append(ev.n)
            await asyncio.sleep(0)
            return StopEvent(result=order) if len(order) == 20 else None

    assert await Flow().run() == list(range(20))


async def test_many_stages_with_different_worker_counts() -> None:
    class A(Event):
        n: int

    class B(Event):
        n: int

    class C(Event):
        n: int

    current = {"a": 0, "b": 0, "c": 0}
    peak = dict(current)

    async def busy(name: str) -> None:
        current[name] += 1
        peak[name] = max(peak[name], current[name])
        for _ in range(3):
            await asyncio.sleep(0)
        current[name] -= 1

    class Flow(Workflow):
        @step
        async def begin(self, ctx: Context, ev: StartEvent) -> A | None:
            for i in range(50):
                ctx.send_event(A(n=i))
            return None

        @step(num_workers=1)
        async def a(self, ev: A) -> B:
            await busy("a")
            return B(n=ev.n)

        @step(num_workers=2)
        async def b(self, ev: B) -> C:
            await busy("b")
            return C(n=ev.n)

        @step(num_workers=3)
        def c_sync(self, ctx: Context, ev: C) -> StopEvent | None:
            got = ctx.collect_events(ev, [C] * 50)
            return None if got is None else StopEvent(result=sorted(e.n for e in got))

    assert await Flow().run() == list(range(50))
    assert peak["a"] == 1
    assert peak["b"] == 2
