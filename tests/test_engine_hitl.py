"""ctx.wait_for_event and the human-in-the-loop patterns."""

import asyncio
import logging
from pathlib import Path

import pytest

from riverbed import (
    ConstantDelayRetryPolicy,
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
    WaitForEventTimeoutError,
    Workflow,
    WorkflowRuntimeError,
    WorkflowTimeoutError,
    step,
)
from riverbed.testing import FakeClock

pytestmark = pytest.mark.usefixtures("hang_guard")


class Answer(HumanResponseEvent):
    user: str
    text: str


class Question(InputRequiredEvent):
    user: str


async def answer_requests(handler: object, reply: object) -> list[Event]:
    """Read the stream; answer every InputRequiredEvent with ``reply(ev)``."""
    events: list[Event] = []
    async for ev in handler.stream_events():  # type: ignore[attr-defined]
        events.append(ev)
        if isinstance(ev, InputRequiredEvent):
            await handler.send_event(reply(ev))  # type: ignore[attr-defined]
    return events


async def test_code_before_the_wait_runs_once_and_the_request_is_streamed_once() -> None:
    before: list[int] = []

    class Flow(Workflow):
        @step
        async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
            before.append(ctx.attempt)
            answer = await ctx.wait_for_event(
                HumanResponseEvent, waiter_event=InputRequiredEvent(prefix="name?")
            )
            return StopEvent(result=f"hi {answer.response}")

    handler = Flow().run()
    events = await answer_requests(handler, lambda ev: HumanResponseEvent(response="ana"))
    assert await handler == "hi ana"
    assert before == [1]
    assert [type(e) for e in events] == [InputRequiredEvent, StopEvent]
    assert events[0].prefix == "name?"


async def test_a_retried_wait_that_was_not_answered_is_not_announced_again(
    clock: FakeClock,
) -> None:
    retried = asyncio.Event()

    class Flow(Workflow):
        @step(timeout=5, retry_policy=ConstantDelayRetryPolicy(maximum_attempts=2, delay=1))
        async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
            if ctx.attempt == 2:
                retried.set()
            answer = await ctx.wait_for_event(
                HumanResponseEvent, waiter_event=InputRequiredEvent(prefix="once"), timeout=None
            )
            return StopEvent(result=(ctx.attempt, answer.response))

    handler = Flow(clock=clock).run()
    requests = 0
    async for ev in handler.stream_events():
        if isinstance(ev, InputRequiredEvent):
            requests += 1
            # Answer only once the first attempt has timed out and the retry waits again.
            await retried.wait()
            await handler.send_event(HumanResponseEvent(response="late answer"))
    assert await handler == (2, "late answer")
    assert requests == 1
    assert clock.now() == 6


async def test_a_wait_retried_after_its_answer_was_used_asks_again(clock: FakeClock) -> None:
    class Flow(Workflow):
        @step(retry_policy=ConstantDelayRetryPolicy(maximum_attempts=2, delay=1))
        async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
            answer = await ctx.wait_for_event(
                HumanResponseEvent, waiter_event=InputRequiredEvent(prefix=f"#{ctx.attempt}")
            )
            if ctx.attempt == 1:
                raise ValueError("the model call after the answer failed")
            return StopEvent(result=answer.response)

    handler = Flow(clock=clock).run()
    events = await answer_requests(handler, lambda ev: HumanResponseEvent(response=ev.prefix))
    assert await handler == "#2"
    assert [e.prefix for e in events if isinstance(e, InputRequiredEvent)] == ["#1", "#2"]


async def test_the_same_waiter_id_waited_on_twice_is_announced_while_it_waits() -> None:
    class Flow(Workflow):
        @step
        async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
            got = []
            for n in range(2):
                answer = await ctx.wait_for_event(
                    HumanResponseEvent,
                    waiter_event=InputRequiredEvent(prefix=str(n)),
                    waiter_id="same",
                )
                got.append(answer.response)
            return StopEvent(result=got)

    handler = Flow().run()
    events = await answer_requests(handler, lambda ev: HumanResponseEvent(response=ev.prefix))
    assert await handler == ["0", "1"]
    assert [e.prefix for e in events if isinstance(e, InputRequiredEvent)] == ["0", "1"]


async def test_successive_waits_without_ids_are_each_announced() -> None:
    class Flow(Workflow):
        @step
        async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
            first = await ctx.wait_for_event(HumanResponseEvent, InputRequiredEvent(prefix="1"))
            second = await ctx.wait_for_event(HumanResponseEvent, InputRequiredEvent(prefix="2"))
            return StopEvent(result=first.response + second.response)

    handler = Flow().run()
    events = await answer_requests(handler, lambda ev: HumanResponseEvent(response=ev.prefix))
    assert await handler == "12"
    assert [e.prefix for e in events if isinstance(e, InputRequiredEvent)] == ["1", "2"]


async def test_requirements_filter_which_event_resolves_the_wait() -> None:
    unmatched: list[str] = []

    class Flow(Workflow):
        @step
        async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
            answer = await ctx.wait_for_event(
                Answer, waiter_event=Question(user="ana"), requirements={"user": "ana"}
            )
            return StopEvent(result=answer.text)

        @step
        async def log(self, ev: Answer) -> None:
            unmatched.append(ev.user)

    handler = Flow().run()
    async for ev in handler.stream_events():
        if isinstance(ev, Question):
            await handler.send_event(Answer(user="bob", text="from bob"))
            for _ in range(5):
                await asyncio.sleep(0)
            assert not handler.done()
            await handler.send_event(Answer(user="ana", text="from ana"))
    assert await handler == "from ana"
    # bob's answer did not match the waiter, so it went to the step that takes Answers;
    # ana's went to both the waiter and that step.
    assert unmatched[0] == "bob"


@pytest.mark.parametrize("durable", [False, True])
async def test_an_event_that_meets_no_waiters_requirements_is_dropped(
    durable: bool, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # No step takes Answer: one that does not meet the waiter's requirements is dropped
    # (as in LlamaIndex), not refused with "no wait_for_event is waiting for it".
    class Flow(Workflow):
        @step
        async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
            answer = await ctx.wait_for_event(
                Answer, waiter_event=Question(user="ana"), requirements={"user": "ana"}
            )
            return StopEvent(result=answer.text)

    options = {"store": f"sqlite:///{tmp_path / 'runs.db'}"} if durable else {}
    wf = Flow(**options)
    handler = wf.run()
    with caplog.at_level(logging.INFO, logger="riverbed"):
        async for ev in handler.stream_events():
            if isinstance(ev, Question):
                await handler.send_event(Answer(user="bob", text="from bob"))
                handler.ctx.send_event(Answer(user="eve", text="from eve"))
                for _ in range(5):
                    await asyncio.sleep(0)
                assert not handler.done()
                await handler.send_event(Answer(user="ana", text="from ana"))
        assert await handler == "from ana"
    dropped = [r.getMessage() for r in caplog.records if "no waiter" in r.getMessage()]
    assert len(dropped) == 2
    assert "Answer meets the requirements of no waiter" in dropped[0]
    assert dropped[0].endswith("; dropped")
    if durable:
        assert wf.store is not None
        await wf.store.close()

    class NoWaiter(Workflow):
        @step
        async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
            await ctx.wait_for_event(Question, timeout=None)
            return StopEvent()

    handler = NoWaiter().run()
    await asyncio.sleep(0.01)
    with pytest.raises(WorkflowRuntimeError, match="No step accepts Answer"):
        handler.ctx.send_event(Answer(user="ana", text="x"))  # nobody waits for Answers
    await handler.cancel_run()


async def test_the_event_resolving_a_wait_is_not_delivered_again_to_that_step() -> None:
    calls: list[str] = []

    class Flow(Workflow):
        @step
        async def ask(self, ctx: Context, ev: StartEvent | HumanResponseEvent) -> StopEvent:
            calls.append(type(ev).__name__)
            answer = await ctx.wait_for_event(HumanResponseEvent, InputRequiredEvent())
            for _ in range(5):  # give a second delivery, if there were one, time to start
                await asyncio.sleep(0)
            return StopEvent(result=answer.response)

    handler = Flow().run()
    await answer_requests(handler, lambda ev: HumanResponseEvent(response="ok"))
    assert await handler == "ok"
    assert calls == ["StartEvent"]


async def test_wait_timeout_raises_in_the_step(clock: FakeClock) -> None:
    class Flow(Workflow):
        @step
        async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
            try:
                await ctx.wait_for_event(HumanResponseEvent, timeout=5)
            except asyncio.TimeoutError as exc:
                return StopEvent(result=(type(exc).__name__, clock.now(), str(exc)))
            return StopEvent(result="answered")

    name, when, message = await Flow(clock=clock).run()
    assert name == "WaitForEventTimeoutError"
    assert when == 5
    assert "HumanResponseEvent" in message


async def test_an_unhandled_wait_timeout_fails_the_run(clock: FakeClock) -> None:
    class Flow(Workflow):
        @step
        async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
            await ctx.wait_for_event(HumanResponseEvent, timeout=60)
            return StopEvent()

    with pytest.raises(WaitForEventTimeoutError) as info:
        await Flow(clock=clock).run()
    assert isinstance(info.value, WorkflowTimeoutError)
    assert isinstance(info.value, TimeoutError)
    assert clock.now() == 60


async def test_default_wait_timeout_is_2000_seconds(clock: FakeClock) -> None:
    class Flow(Workflow):
        @step
        async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
            await ctx.wait_for_event(HumanResponseEvent)
            return StopEvent()

    with pytest.raises(WaitForEventTimeoutError):
        await Flow(clock=clock).run()
    assert clock.now() == 2000


async def test_an_answer_before_the_wait_timeout_wins(clock: FakeClock) -> None:
    class Flow(Workflow):
        @step
        async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
            answer = await ctx.wait_for_event(
                HumanResponseEvent, waiter_event=InputRequiredEvent(), timeout=5
            )
            return StopEvent(result=answer.response)

    handler = Flow(clock=clock).run()
    await answer_requests(handler, lambda ev: HumanResponseEvent(response="quick"))
    assert await handler == "quick"
    assert clock.now() < 5


class Conversation(Workflow):
    """The LlamaIndex HITL pattern: one step asks, another takes the answer."""

    @step
    async def ask(self, ev: StartEvent) -> InputRequiredEvent:
        return InputRequiredEvent(prefix="What is your name?")

    @step
    async def greet(self, ctx: Context, ev: HumanResponseEvent) -> StopEvent:
        await ctx.store.set("name", ev.response)
        return StopEvent(result=f"Hello, {ev.response}!")


async def test_input_required_returned_by_a_step_and_answered_through_the_handler() -> None:
    handler = Conversation().run()
    events = await answer_requests(handler, lambda ev: HumanResponseEvent(response="Ana"))
    assert await handler == "Hello, Ana!"
    assert [type(e) for e in events] == [InputRequiredEvent, StopEvent]
    assert events[0].prefix == "What is your name?"
    assert await handler.ctx.store.get("name") == "Ana"


async def test_many_waiters_each_get_their_own_answer() -> None:
    class Ask(Event):
        user: str

    class Got(Event):
        text: str

    class Flow(Workflow):
        @step
        async def begin(self, ctx: Context, ev: StartEvent) -> Ask | None:
            for user in ("a", "b", "c"):
                ctx.send_event(Ask(user=user))
            return None

        @step(num_workers=3)
        async def ask(self, ctx: Context, ev: Ask) -> Got:
            answer = await ctx.wait_for_event(
                Answer, waiter_event=Question(user=ev.user), requirements={"user": ev.user}
            )
            return Got(text=f"{ev.user}:{answer.text}")

        @step
        async def join(self, ctx: Context, ev: Got) -> StopEvent | None:
            got = ctx.collect_events(ev, [Got] * 3)
            return None if got is None else StopEvent(result=sorted(g.text for g in got))

    handler = Flow().run()
    events = await answer_requests(handler, lambda ev: Answer(user=ev.user, text=ev.user * 2))
    assert await handler == ["a:aa", "b:bb", "c:cc"]
    assert sorted(e.user for e in events if isinstance(e, Question)) == ["a", "b", "c"]
