"""Run timeouts, step timeouts, and that no default timeout kills a waiting run."""

import asyncio

import pytest

from riverbed import (
    ConstantDelayRetryPolicy,
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StepFailedEvent,
    StepTimeoutError,
    StopEvent,
    Workflow,
    WorkflowFailedEvent,
    WorkflowTimedOutEvent,
    WorkflowTimeoutError,
    catch_error,
    step,
)
from riverbed.testing import FakeClock

pytestmark = pytest.mark.usefixtures("hang_guard")


class Job(Event):
    n: int


async def forever() -> None:
    await asyncio.Event().wait()


class Hangs(Workflow):
    cancelled: list[str]

    @step
    async def begin(self, ctx: Context, ev: StartEvent) -> Job | None:
        ctx.send_event(Job(n=1))
        ctx.send_event(Job(n=2))
        return None

    @step
    async def hang(self, ev: Job) -> StopEvent:
        try:
            await forever()
        except asyncio.CancelledError:
            self.cancelled.append(f"hang{ev.n}")
            raise
        return StopEvent()


async def test_run_timeout_ends_the_stream_and_names_active_steps(clock: FakeClock) -> None:
    wf = Hangs(timeout=10, clock=clock)
    wf.cancelled = []
    handler = wf.run()
    events = [ev async for ev in handler.stream_events()]
    assert len(events) == 1
    [timed_out] = events
    assert isinstance(timed_out, WorkflowTimedOutEvent)
    assert timed_out.timeout == 10
    assert timed_out.active_steps == ["hang"]
    with pytest.raises(WorkflowTimeoutError, match="Currently active steps: hang") as info:
        await handler
    assert "10" in str(info.value)
    assert isinstance(info.value, TimeoutError)
    assert clock.now() == 10
    assert handler.status.value == "timed_out"
    await asyncio.sleep(0)
    assert sorted(wf.cancelled) == ["hang1", "hang2"]


async def test_run_timeout_with_no_step_active(clock: FakeClock) -> None:
    class Flow(Workflow):
        @step
        async def ask(self, ev: StartEvent) -> InputRequiredEvent:
            return InputRequiredEvent(prefix="?")

        @step
        async def answer(self, ev: HumanResponseEvent) -> StopEvent:
            return StopEvent()

    handler = Flow(timeout=30, clock=clock).run()
    with pytest.raises(WorkflowTimeoutError, match="No steps active"):
        await handler
    assert clock.now() == 30


async def test_run_timeout_while_a_retry_is_pending(clock: FakeClock) -> None:
    attempts: list[float] = []

    class Flow(Workflow):
        @step(retry_policy=ConstantDelayRetryPolicy(maximum_attempts=5, delay=100))
        async def work(self, ev: StartEvent) -> StopEvent:
            attempts.append(clock.now())
            raise ValueError("down")

    with pytest.raises(WorkflowTimeoutError):
        await Flow(timeout=150, clock=clock).run()
    assert attempts == [0.0, 100.0]
    assert clock.now() == 150


async def test_a_fast_run_is_not_affected_by_its_timeout(clock: FakeClock) -> None:
    class Flow(Workflow):
        @step
        async def work(self, ev: StartEvent) -> StopEvent:
            return StopEvent(result="fast")

    assert await Flow(timeout=1, clock=clock).run() == "fast"
    assert clock.now() == 0


class HumanLoop(Workflow):
    @step
    async def ask(self, ev: StartEvent) -> InputRequiredEvent:
        return InputRequiredEvent(prefix="name?")

    @step
    async def answer(self, ev: HumanResponseEvent) -> StopEvent:
        return StopEvent(result=f"hello {ev.response}")


async def test_no_default_timeout_a_run_waits_for_a_human(clock: FakeClock) -> None:
    handler = HumanLoop(clock=clock).run()
    async for ev in handler.stream_events():
        if isinstance(ev, InputRequiredEvent):
            clock.advance(10_000)
            await asyncio.sleep(0)
            assert not handler.done()
            await handler.send_event(HumanResponseEvent(response="ana"))
    assert await handler == "hello ana"
    assert clock.now() == 10_000


async def test_wait_for_event_without_timeout_waits_as_long_as_needed(clock: FakeClock) -> None:
    class Flow(Workflow):
        @step
        async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
            answer = await ctx.wait_for_event(
                HumanResponseEvent, waiter_event=InputRequiredEvent(), timeout=None
            )
            return StopEvent(result=answer.response)

    handler = Flow(clock=clock).run()
    async for ev in handler.stream_events():
        if isinstance(ev, InputRequiredEvent):
            clock.advance(10_000)
            await handler.send_event(HumanResponseEvent(response="late"))
    assert await handler == "late"


# -- step timeouts -----------------------------------------------------------------------


async def test_step_timeout_fails_the_run_with_step_timeout_error(clock: FakeClock) -> None:
    class Flow(Workflow):
        @step(timeout=2)
        async def slow(self, ev: StartEvent) -> StopEvent:
            await forever()
            return StopEvent()

    handler = Flow(clock=clock).run()
    with pytest.raises(StepTimeoutError, match="'slow' timed out after 2") as info:
        await handler
    assert isinstance(info.value, WorkflowTimeoutError)
    assert isinstance(info.value, TimeoutError)
    stop = handler.get_stop_event()
    assert isinstance(stop, WorkflowFailedEvent)
    assert stop.step_name == "slow"
    assert clock.now() == 2


async def test_step_timeout_goes_through_the_retry_policy(clock: FakeClock) -> None:
    starts: list[tuple[float, int]] = []

    class Flow(Workflow):
        @step(timeout=2, retry_policy=ConstantDelayRetryPolicy(maximum_attempts=3, delay=1))
        async def slow(self, ctx: Context, ev: StartEvent) -> StopEvent:
            starts.append((clock.now(), ctx.attempt))
            if ctx.attempt < 3:
                await forever()
            last = ctx.retry_info().last_exception
            return StopEvent(result=type(last).__name__)

    assert await Flow(clock=clock).run() == "StepTimeoutError"
    assert starts == [(0.0, 1), (3.0, 2), (6.0, 3)]


async def test_step_timeout_can_be_caught_by_catch_error(clock: FakeClock) -> None:
    class Flow(Workflow):
        @step(timeout=5)
        async def slow(self, ev: StartEvent) -> StopEvent:
            await forever()
            return StopEvent()

        @catch_error
        async def recover(self, ev: StepFailedEvent) -> StopEvent:
            return StopEvent(result=type(ev.exception).__name__)

    assert await Flow(clock=clock).run() == "StepTimeoutError"


async def test_a_step_within_its_timeout_is_not_cancelled(clock: FakeClock) -> None:
    class Flow(Workflow):
        @step(timeout=5)
        async def quick(self, ev: StartEvent) -> Job:
            return Job(n=1)

        @step(timeout=5)
        async def second(self, ev: Job) -> StopEvent:
            return StopEvent(result="ok")

    assert await Flow(clock=clock, timeout=60).run() == "ok"


async def test_except_exception_cannot_swallow_a_step_timeout(clock: FakeClock) -> None:
    class Flow(Workflow):
        @step(timeout=2)
        async def greedy(self, ev: StartEvent) -> StopEvent:
            try:
                await forever()
            except Exception:
                return StopEvent(result="swallowed")
            return StopEvent(result="unreachable")

    with pytest.raises(StepTimeoutError):
        await Flow(clock=clock).run()


async def test_except_exception_cannot_swallow_the_run_timeout(clock: FakeClock) -> None:
    class Flow(Workflow):
        @step
        async def greedy(self, ev: StartEvent) -> StopEvent:
            try:
                await forever()
            except Exception:
                return StopEvent(result="swallowed")
            return StopEvent(result="unreachable")

    with pytest.raises(WorkflowTimeoutError):
        await Flow(clock=clock, timeout=3).run()


async def test_step_timeout_error_is_catchable_as_asyncio_timeout() -> None:
    assert issubclass(StepTimeoutError, asyncio.TimeoutError)


async def test_run_timeout_is_measured_on_the_workflows_clock() -> None:
    # autojump off: nothing happens until the test moves time on.
    clock = FakeClock(autojump=False)
    wf = Hangs(timeout=60, clock=clock)
    wf.cancelled = []
    handler = wf.run()
    for _ in range(10):
        await asyncio.sleep(0)
    clock.advance(59)
    await asyncio.sleep(0)
    assert not handler.done()
    clock.advance(1)
    with pytest.raises(WorkflowTimeoutError):
        await handler
