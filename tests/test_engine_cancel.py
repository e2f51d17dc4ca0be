"""handler.cancel_run(): the stream ends with WorkflowCancelledEvent, awaiting raises
WorkflowCancelledByUser, running steps are cancelled and nothing runs afterwards."""

import asyncio
import sys

import pytest

from riverbed import (
    ConstantDelayRetryPolicy,
    Context,
    ContextStateError,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowCancelledByUser,
    WorkflowCancelledEvent,
    WorkflowError,
    step,
)
from riverbed.testing import FakeClock

pytestmark = pytest.mark.usefixtures("hang_guard")


class Started(Event):
    name: str


class Job(Event):
    n: int


def hanging_workflow() -> tuple[Workflow, list[str]]:
    """Two steps that announce themselves on the stream and then wait forever; the list
    records the steps that were cancelled and anything that ran after."""
    log: list[str] = []

    class Flow(Workflow):
        @step
        async def begin(self, ctx: Context, ev: StartEvent) -> Job | None:
            ctx.send_event(Job(n=1))
            ctx.send_event(Job(n=2))
            return None

        @step
        async def hang(self, ctx: Context, ev: Job) -> StopEvent:
            ctx.write_event_to_stream(Started(name=f"hang{ev.n}"))
            try:
                await asyncio.Event().wait()
            except Exception:
                log.append("swallowed")  # must not happen: cancel is a BaseException
                return StopEvent(result="swallowed")
            except asyncio.CancelledError:
                log.append(f"cancelled hang{ev.n}")
                raise
            log.append("finished")
            return StopEvent()

    return Flow(), log


async def test_cancel_run_ends_stream_and_raises_cancelled_by_user() -> None:
    wf, log = hanging_workflow()
    handler = wf.run()
    events: list[Event] = []
    async for ev in handler.stream_events():
        events.append(ev)
        if sum(isinstance(e, Started) for e in events) == 2:
            await handler.cancel_run()
    assert [type(e) for e in events] == [Started, Started, WorkflowCancelledEvent]
    assert handler.get_stop_event() is events[-1]
    with pytest.raises(WorkflowCancelledByUser) as info:
        await handler
    assert isinstance(info.value, WorkflowError)
    assert handler.status.value == "cancelled"
    await asyncio.sleep(0)
    assert sorted(log) == ["cancelled hang1", "cancelled hang2"]


async def test_stream_read_after_cancel_still_ends_with_cancelled_event() -> None:
    wf, _ = hanging_workflow()
    handler = wf.run()
    for _ in range(5):
        await asyncio.sleep(0)
    await handler.cancel_run()
    events = [ev async for ev in handler.stream_events()]
    assert isinstance(events[-1], WorkflowCancelledEvent)
    assert sum(isinstance(e, WorkflowCancelledEvent) for e in events) == 1
    with pytest.raises(WorkflowCancelledByUser):
        await handler


async def test_cancel_during_retry_backoff_stops_further_attempts(clock: FakeClock) -> None:
    attempts: list[float] = []
    clock = FakeClock(autojump=False)

    class Flow(Workflow):
        @step(retry_policy=ConstantDelayRetryPolicy(maximum_attempts=5, delay=10))
        async def work(self, ev: StartEvent) -> StopEvent:
            attempts.append(clock.now())
            raise ValueError("down")

    handler = Flow(clock=clock).run()
    for _ in range(10):
        await asyncio.sleep(0)
    assert attempts == [0.0]
    await handler.cancel_run()
    clock.advance(100)
    for _ in range(10):
        await asyncio.sleep(0)
    assert attempts == [0.0]
    with pytest.raises(WorkflowCancelledByUser):
        await handler


async def test_cancel_while_waiting_for_a_human() -> None:
    class Flow(Workflow):
        @step
        async def ask(self, ev: StartEvent) -> InputRequiredEvent:
            return InputRequiredEvent(prefix="?")

        @step
        async def answer(self, ev: HumanResponseEvent) -> StopEvent:
            return StopEvent()

    handler = Flow().run()
    async for ev in handler.stream_events():
        if isinstance(ev, InputRequiredEvent):
            await handler.cancel_run()
    with pytest.raises(WorkflowCancelledByUser):
        await handler
    with pytest.raises(ContextStateError, match="cancelled"):
        await handler.send_event(HumanResponseEvent(response="too late"))


async def test_cancel_after_the_run_finished_changes_nothing() -> None:
    class Flow(Workflow):
        @step
        async def work(self, ev: StartEvent) -> StopEvent:
            return StopEvent(result="done")

    handler = Flow().run()
    assert await handler == "done"
    await handler.cancel_run()
    assert await handler == "done"
    assert handler.status.value == "completed"
    events = [ev async for ev in handler.stream_events()]
    assert [type(e) for e in events] == [StopEvent]


async def test_cancelling_the_task_awaiting_the_handler_cancels_the_run() -> None:
    # As with LlamaIndex (whose handler is a Future): asyncio.wait_for(handler, t) running
    # out, or cancelling the awaiting task, aborts the run instead of leaving it running
    # unobserved with a result nobody can read.
    wf, log = hanging_workflow()
    handler = wf.run()
    waiter = asyncio.ensure_future(_await(handler))
    for _ in range(5):
        await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    events = [ev async for ev in handler.stream_events()]
    assert isinstance(events[-1], WorkflowCancelledEvent)
    assert handler.status.value == "cancelled"
    assert isinstance(handler.exception(), asyncio.CancelledError)
    await asyncio.sleep(0)
    assert sorted(log) == ["cancelled hang1", "cancelled hang2"]


async def test_shielded_await_does_not_cancel_the_run() -> None:
    release = asyncio.Event()

    class Flow(Workflow):
        @step
        async def work(self, ev: StartEvent) -> StopEvent:
            await release.wait()
            return StopEvent(result="finished")

    handler = Flow().run()
    waiter = asyncio.ensure_future(asyncio.shield(handler))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    assert await handler == "finished"
    assert handler.status.value == "completed"


async def _await(handler: object) -> object:
    return await handler  # type: ignore[misc]


@pytest.mark.skipif(
    sys.version_info < (3, 11), reason="Task.cancelling() is needed to tell a stray cancel"
)
async def test_a_stray_cancelled_error_from_step_code_fails_the_step() -> None:
    # The step awaits a task that something else cancelled: the step itself was not
    # cancelled, so this is a failure of the step (retried, caught, or failing the run), not
    # a worker that silently disappears and leaves the run hanging.
    class Flow(Workflow):
        @step(retry_policy=ConstantDelayRetryPolicy(maximum_attempts=2, delay=0))
        async def work(self, ctx: Context, ev: StartEvent) -> StopEvent:
            inner = asyncio.ensure_future(asyncio.Event().wait())
            await asyncio.sleep(0)
            inner.cancel()
            if ctx.attempt == 1:
                await inner
            return StopEvent(result=ctx.retry_info().last_exception)

    error = await asyncio.wait_for(Flow().run(), 5)
    assert isinstance(error, WorkflowError)
    assert "raised CancelledError although the step was not cancelled" in str(error)
    assert isinstance(error.__cause__, asyncio.CancelledError)
