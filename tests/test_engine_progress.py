"""A run that can make no more progress fails with a clear error; verbose output."""

import asyncio

import pytest

from riverbed import (
    ConstantDelayRetryPolicy,
    Context,
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
from riverbed.testing import FakeClock

pytestmark = pytest.mark.usefixtures("hang_guard")


class Job(Event):
    n: int


class Done(Event):
    n: int


async def test_a_step_returning_none_with_nothing_pending_fails_the_run() -> None:
    class Flow(Workflow):
        @step
        async def begin(self, ev: StartEvent) -> Job:
            return Job(n=1)

        @step
        async def maybe(self, ev: Job) -> StopEvent | None:
            return None  # forgot the StopEvent

    handler = Flow().run()
    events = [ev async for ev in handler.stream_events()]
    assert isinstance(events[-1], WorkflowFailedEvent)
    with pytest.raises(WorkflowRuntimeError, match="stopped making progress") as info:
        await asyncio.wait_for(handler, 5)
    assert "returning a StopEvent" in str(info.value)
    assert handler.status.value == "failed"


async def test_collect_events_that_never_complete_names_what_is_missing() -> None:
    class Flow(Workflow):
        @step
        async def begin(self, ctx: Context, ev: StartEvent) -> Done | None:
            ctx.send_event(Done(n=1))
            return None

        @step
        async def join(self, ctx: Context, ev: Done) -> StopEvent | None:
            got = ctx.collect_events(ev, [Done] * 3, buffer_id="joined")
            return None if got is None else StopEvent()

    with pytest.raises(WorkflowRuntimeError) as info:
        await asyncio.wait_for(Flow().run(), 5)
    message = str(info.value)
    assert "stopped making progress" in message
    assert "'join' (buffer 'joined') is still collecting events; missing: Done x2" in message


async def test_a_run_waiting_for_a_human_is_not_stuck() -> None:
    class Flow(Workflow):
        @step
        async def ask(self, ev: StartEvent) -> InputRequiredEvent:
            return InputRequiredEvent()

        @step
        async def answer(self, ev: HumanResponseEvent) -> StopEvent:
            return StopEvent(result=ev.response)

    handler = Flow().run()
    for _ in range(20):
        await asyncio.sleep(0)
    assert not handler.done()
    await handler.send_event(HumanResponseEvent(response="here"))
    assert await handler == "here"


async def test_a_run_waiting_for_a_retry_is_not_stuck() -> None:
    clock = FakeClock(autojump=False)

    class Flow(Workflow):
        @step(retry_policy=ConstantDelayRetryPolicy(maximum_attempts=2, delay=30))
        async def work(self, ctx: Context, ev: StartEvent) -> StopEvent:
            if ctx.attempt == 1:
                raise ValueError("later")
            return StopEvent(result="second")

    handler = Flow(clock=clock).run()
    for _ in range(20):
        await asyncio.sleep(0)
    assert not handler.done()
    clock.advance(30)
    assert await handler == "second"


async def test_a_run_inside_wait_for_event_is_not_stuck() -> None:
    class Flow(Workflow):
        @step
        async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
            got = await ctx.wait_for_event(HumanResponseEvent, timeout=None)
            return StopEvent(result=got.response)

    handler = Flow().run()
    for _ in range(20):
        await asyncio.sleep(0)
    assert not handler.done()
    await handler.send_event(HumanResponseEvent(response="late"))
    assert await handler == "late"


async def test_without_validation_a_quiet_run_waits_for_outside_events() -> None:
    class Flow(Workflow):
        @step
        async def begin(self, ev: StartEvent) -> None:
            return None

        @step
        async def finish(self, ev: Job) -> StopEvent:
            return StopEvent(result=ev.n)

    handler = Flow(disable_validation=True).run()
    for _ in range(20):
        await asyncio.sleep(0)
    assert not handler.done()
    await handler.send_event(Job(n=7))
    assert await handler == 7


async def test_quiet_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    class Flow(Workflow):
        @step
        async def work(self, ev: StartEvent) -> StopEvent:
            return StopEvent()

    await Flow().run()
    assert capsys.readouterr().out == ""


async def test_the_stuck_message_lists_only_buffers_still_collecting() -> None:
    class Flow(Workflow):
        @step
        async def begin(self, ctx: Context, ev: StartEvent) -> Done | None:
            for n in (1, 2, 3):
                ctx.send_event(Done(n=n))
            return None

        @step(num_workers=1)
        async def join(self, ctx: Context, ev: Done) -> StopEvent | None:
            buffer = "pair" if ev.n < 3 else "trio"
            want = 2 if buffer == "pair" else 3
            ctx.collect_events(ev, [Done] * want, buffer_id=buffer)
            return None  # "pair" completes, "trio" never does

    with pytest.raises(WorkflowRuntimeError) as info:
        await asyncio.wait_for(Flow().run(), 5)
    message = str(info.value)
    assert "(buffer 'trio') is still collecting events; missing: Done x2" in message
    assert "'pair'" not in message


class Feedback(HumanResponseEvent):
    note: str


class Answer(HumanResponseEvent):
    text: str


class Next(Event):
    text: str


async def test_a_side_message_while_a_question_is_open_does_not_fail_the_run() -> None:
    class Flow(Workflow):
        @step
        async def ask(self, ev: StartEvent) -> InputRequiredEvent:
            return InputRequiredEvent(prefix="name?")

        @step
        async def log(self, ctx: Context, ev: Feedback) -> None:
            await ctx.store.set("note", ev.note)

        @step
        async def answer(self, ctx: Context, ev: Answer) -> StopEvent:
            return StopEvent(result=(ev.text, await ctx.store.get("note")))

    handler = Flow().run()
    async for ev in handler.stream_events():
        if isinstance(ev, InputRequiredEvent):
            await handler.send_event(Feedback(note="typing..."))
            for _ in range(20):
                await asyncio.sleep(0)
            assert not handler.done()  # the question is still open
            await handler.send_event(Answer(text="ana"))
    assert await handler == ("ana", "typing...")


async def test_after_the_answer_a_dead_end_is_still_detected() -> None:
    class Flow(Workflow):
        @step
        async def ask(self, ev: StartEvent) -> InputRequiredEvent:
            return InputRequiredEvent(prefix="name?")

        @step
        async def answer(self, ev: Answer) -> Next:
            return Next(text=ev.text)

        @step
        async def finish(self, ev: Next) -> StopEvent | None:
            return None  # forgot the StopEvent

    handler = Flow().run()
    async for ev in handler.stream_events():
        if isinstance(ev, InputRequiredEvent):
            await handler.send_event(Answer(text="ana"))
    with pytest.raises(WorkflowRuntimeError, match="stopped making progress"):
        await handler


async def test_a_step_that_streams_a_question_and_returns_an_event_keeps_waiting() -> None:
    class Flow(Workflow):
        @step
        async def ask(self, ctx: Context, ev: StartEvent) -> Next:
            ctx.write_event_to_stream(InputRequiredEvent(prefix="name?"))
            return Next(text="asked")

        @step
        async def noted(self, ev: Next) -> None:
            return None

        @step
        async def answer(self, ev: Answer) -> StopEvent:
            return StopEvent(result=ev.text)

    handler = Flow().run()
    async for ev in handler.stream_events():
        if isinstance(ev, InputRequiredEvent):
            for _ in range(20):
                await asyncio.sleep(0)
            assert not handler.done()
            await handler.send_event(Answer(text="bo"))
    assert await handler == "bo"
