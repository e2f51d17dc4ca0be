"""Retry policies, ctx.attempt / retry_info / invocation_id, and @catch_error."""

import asyncio
import itertools
import traceback

import pytest

from riverbed import (
    ConstantDelayRetryPolicy,
    Context,
    Event,
    ExponentialBackoffRetryPolicy,
    StartEvent,
    StepFailedEvent,
    StopEvent,
    Workflow,
    WorkflowFailedEvent,
    catch_error,
    step,
)
from riverbed.retry_policy import (
    retry_if_exception_type,
    retry_policy,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_fixed,
)
from riverbed.testing import FakeClock

pytestmark = pytest.mark.usefixtures("hang_guard")


class Flaky(Exception):
    pass


class Job(Event):
    n: int


def flaky(
    policy: object, fail_times: int, clock: FakeClock, error: type[Exception] = Flaky
) -> tuple[Workflow, list[tuple[float, int]]]:
    """A one-step workflow whose step fails ``fail_times`` times, and the list where each
    attempt is recorded as ``(fake time, ctx.attempt)``."""
    seen: list[tuple[float, int]] = []

    class Flow(Workflow):
        @step(retry_policy=policy)
        async def work(self, ctx: Context, ev: StartEvent) -> StopEvent:
            seen.append((clock.now(), ctx.attempt))
            if ctx.attempt <= fail_times:
                raise error(f"attempt {ctx.attempt}")
            return StopEvent(result=ctx.attempt)

    return Flow(clock=clock), seen


async def test_constant_delay_is_honoured_on_the_fake_clock(clock: FakeClock) -> None:
    wf, seen = flaky(ConstantDelayRetryPolicy(maximum_attempts=3, delay=5), 2, clock)
    assert await wf.run() == 3
    assert seen == [(0.0, 1), (5.0, 2), (10.0, 3)]


async def test_exponential_backoff_without_jitter(clock: FakeClock) -> None:
    policy = ExponentialBackoffRetryPolicy(maximum_attempts=5, initial_delay=1, jitter=False)
    wf, seen = flaky(policy, 4, clock)
    assert await wf.run() == 5
    assert seen == [(0.0, 1), (1.0, 2), (3.0, 3), (7.0, 4), (15.0, 5)]


async def test_exponential_backoff_jitter_is_bounded_and_replays_per_run_id() -> None:
    policy = ExponentialBackoffRetryPolicy(maximum_attempts=4, initial_delay=2, multiplier=3)
    schedules = []
    for _ in range(2):
        wf, seen = flaky(policy, 3, FakeClock())
        assert await wf.run(run_id="same-run") == 4
        schedules.append([t for t, _ in seen])
    assert schedules[0] == schedules[1]
    times = schedules[0]
    waits = [b - a for a, b in itertools.pairwise(times)]
    for wait, ceiling in zip(waits, [2, 6, 18], strict=True):
        assert 0 <= wait <= ceiling


async def test_exponential_backoff_is_capped(clock: FakeClock) -> None:
    policy = ExponentialBackoffRetryPolicy(
        maximum_attempts=5, initial_delay=4, max_delay=5, jitter=False
    )
    wf, seen = flaky(policy, 4, clock)
    await wf.run()
    assert [t for t, _ in seen] == [0.0, 4.0, 9.0, 14.0, 19.0]


async def test_composed_retry_policy(clock: FakeClock) -> None:
    policy = retry_policy(stop=stop_after_attempt(4), wait=wait_fixed(2))
    wf, seen = flaky(policy, 3, clock)
    assert await wf.run() == 4
    assert seen == [(0.0, 1), (2.0, 2), (4.0, 3), (6.0, 4)]


async def test_composed_policy_with_exponential_wait(clock: FakeClock) -> None:
    policy = retry_policy(stop=stop_after_attempt(4), wait=wait_exponential(multiplier=3))
    wf, seen = flaky(policy, 3, clock)
    await wf.run()
    assert [t for t, _ in seen] == [0.0, 3.0, 9.0, 21.0]


async def test_stop_after_delay_uses_the_run_clock() -> None:
    # LlamaIndex mixes clocks here and gives up at once; elapsed must be 0, 10, 20, 30.
    clock = FakeClock(start=1000.0)
    policy = retry_policy(stop=stop_after_delay(25), wait=wait_fixed(10))
    wf, seen = flaky(policy, 100, clock)
    with pytest.raises(Flaky, match="attempt 4"):
        await wf.run()
    assert [t for t, _ in seen] == [1000.0, 1010.0, 1020.0, 1030.0]


async def test_gives_up_after_max_attempts_with_the_original_error(clock: FakeClock) -> None:
    wf, seen = flaky(ConstantDelayRetryPolicy(maximum_attempts=3, delay=1), 99, clock)
    handler = wf.run()
    with pytest.raises(Flaky, match="attempt 3") as info:
        await handler
    assert len(seen) == 3
    frames = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert "work" in frames  # the step's own frame is in the traceback
    stop = handler.get_stop_event()
    assert isinstance(stop, WorkflowFailedEvent)
    assert (stop.step_name, stop.attempts, stop.exception) == ("work", 3, info.value)
    assert stop.elapsed_seconds == 2.0


async def test_without_a_policy_a_failure_is_final(clock: FakeClock) -> None:
    wf, seen = flaky(None, 1, clock)
    with pytest.raises(Flaky):
        await wf.run()
    assert len(seen) == 1


@pytest.mark.parametrize(
    "policy",
    [
        ConstantDelayRetryPolicy(maximum_attempts=5, delay=1, retry_on=(KeyError,)),
        ExponentialBackoffRetryPolicy(maximum_attempts=5, retry_on=KeyError),
        retry_policy(retry=retry_if_exception_type(KeyError), stop=stop_after_attempt(5)),
    ],
    ids=["constant", "exponential", "composed"],
)
async def test_errors_outside_retry_on_fail_at_once(clock: FakeClock, policy: object) -> None:
    wf, seen = flaky(policy, 99, clock, error=Flaky)
    with pytest.raises(Flaky, match="attempt 1"):
        await wf.run()
    assert len(seen) == 1

    wf, seen = flaky(policy, 2, clock, error=KeyError)
    assert await wf.run() == 3


async def test_retry_info_and_attempt() -> None:
    clock = FakeClock(start=1000.0)  # elapsed is measured from the first attempt, not from 0
    infos: list[tuple[int, int, float, str, bool]] = []

    class Flow(Workflow):
        @step(retry_policy=ConstantDelayRetryPolicy(maximum_attempts=3, delay=4))
        async def work(self, ctx: Context, ev: StartEvent) -> StopEvent:
            info = ctx.retry_info()
            infos.append(
                (
                    ctx.attempt,
                    info.retry_number,
                    info.elapsed_seconds,
                    repr(info.last_exception),
                    info.last_failed_at is not None,
                )
            )
            if ctx.attempt < 3:
                raise Flaky(f"no {ctx.attempt}")
            return StopEvent()

    await Flow(clock=clock).run()
    assert infos == [
        (1, 0, 0.0, "None", False),
        (2, 1, 4.0, "Flaky('no 1')", True),
        (3, 2, 8.0, "Flaky('no 2')", True),
    ]


async def test_invocation_id_is_stable_across_retries_and_distinct_across_deliveries(
    clock: FakeClock,
) -> None:
    ids: dict[int, list[str]] = {}

    class Flow(Workflow):
        @step
        async def begin(self, ctx: Context, ev: StartEvent) -> Job | None:
            ctx.send_event(Job(n=1))
            ctx.send_event(Job(n=2))
            return None

        @step(retry_policy=ConstantDelayRetryPolicy(maximum_attempts=3, delay=1))
        async def work(self, ctx: Context, ev: Job) -> Job | StopEvent | None:
            ids.setdefault(ev.n, []).append(ctx.invocation_id)
            if ctx.attempt < 3:
                raise Flaky("again")
            if ev.n == 2:
                return StopEvent(result=ctx.run_id)
            return None

    handler = Flow(clock=clock).run()
    run_id = await handler
    assert run_id == handler.run_id
    assert len(ids[1]) == len(ids[2]) == 3
    assert len(set(ids[1])) == len(set(ids[2])) == 1
    assert ids[1][0] != ids[2][0]
    assert ids[1][0].startswith(handler.run_id)


async def test_retry_of_a_sync_step(clock: FakeClock) -> None:
    attempts: list[int] = []

    class Flow(Workflow):
        @step(retry_policy=ConstantDelayRetryPolicy(maximum_attempts=2, delay=0))
        def work(self, ctx: Context, ev: StartEvent) -> StopEvent:
            attempts.append(ctx.attempt)
            if ctx.attempt == 1:
                raise Flaky("sync")
            return StopEvent(result="ok")

    assert await Flow(clock=clock).run() == "ok"
    assert attempts == [1, 2]


async def test_retries_do_not_leak_stream_events_of_failed_attempts(clock: FakeClock) -> None:
    class Note(Event):
        attempt: int

    class Flow(Workflow):
        @step(retry_policy=ConstantDelayRetryPolicy(maximum_attempts=2, delay=1))
        async def work(self, ctx: Context, ev: StartEvent) -> StopEvent:
            ctx.write_event_to_stream(Note(attempt=ctx.attempt))
            if ctx.attempt == 1:
                raise Flaky("x")
            return StopEvent()

    handler = Flow(clock=clock).run()
    events = [ev async for ev in handler.stream_events()]
    await handler
    # In memory, stream events are live: both attempts' notes are seen, in order.
    assert [ev.attempt for ev in events if isinstance(ev, Note)] == [1, 2]


# -- @catch_error ----------------------------------------------------------------------


async def test_catch_error_receives_step_failed_event_and_recovers() -> None:
    clock = FakeClock(start=1000.0)
    failures: list[StepFailedEvent] = []

    class Flow(Workflow):
        @step(retry_policy=ConstantDelayRetryPolicy(maximum_attempts=3, delay=5))
        async def work(self, ev: StartEvent) -> StopEvent:
            raise Flaky(f"bad {ev.topic}")

        @catch_error
        async def recover(self, ev: StepFailedEvent) -> StopEvent:
            failures.append(ev)
            return StopEvent(result=f"recovered from {ev.step_name}")

    handler = Flow(clock=clock).run(topic="t")
    assert await handler == "recovered from work"
    [failed] = failures
    assert failed.step_name == "work"
    assert isinstance(failed.input_event, StartEvent)
    assert failed.input_event.topic == "t"
    assert isinstance(failed.exception, Flaky)
    assert str(failed.exception) == "bad t"
    assert failed.attempts == 3
    assert failed.elapsed_seconds == 10.0
    assert failed.failed_at > 0


async def test_catch_error_is_not_invoked_when_a_retry_succeeds(clock: FakeClock) -> None:
    caught: list[str] = []

    class Flow(Workflow):
        @step(retry_policy=ConstantDelayRetryPolicy(maximum_attempts=3, delay=1))
        async def work(self, ctx: Context, ev: StartEvent) -> StopEvent:
            if ctx.attempt < 3:
                raise Flaky("not yet")
            return StopEvent(result="third time")

        @catch_error
        async def recover(self, ev: StepFailedEvent) -> StopEvent:
            caught.append(ev.step_name)
            return StopEvent(result="recovered")

    assert await Flow(clock=clock).run() == "third time"
    assert caught == []


class Scoped(Workflow):
    @step
    async def begin(self, ev: StartEvent) -> Job:
        if ev.get("fail") == "begin":
            raise Flaky("begin failed")
        return Job(n=1)

    @step
    async def finish(self, ev: Job) -> StopEvent:
        raise Flaky("finish failed")

    @catch_error(for_steps=["finish"])
    async def recover_finish(self, ev: StepFailedEvent) -> StopEvent:
        return StopEvent(result=f"scoped:{ev.step_name}")


async def test_catch_error_for_steps_only_covers_those_steps() -> None:
    assert await Scoped().run() == "scoped:finish"
    with pytest.raises(Flaky, match="begin failed"):
        await Scoped().run(fail="begin")


async def test_scoped_handler_wins_over_the_wildcard() -> None:
    class Flow(Scoped):
        @catch_error
        async def recover_any(self, ev: StepFailedEvent) -> StopEvent:
            return StopEvent(result=f"wildcard:{ev.step_name}")

    assert await Flow().run() == "scoped:finish"
    assert await Flow().run(fail="begin") == "wildcard:begin"


@pytest.mark.parametrize("budget", [1, 3])
async def test_max_recoveries_bounds_a_handler_that_loops(budget: int) -> None:
    recoveries: list[int] = []

    class Flow(Workflow):
        @step
        async def work(self, ev: Job) -> StopEvent:
            raise Flaky(f"job {ev.n}")

        @step
        async def begin(self, ev: StartEvent) -> Job:
            return Job(n=0)

        @catch_error(max_recoveries=budget)
        async def recover(self, ev: StepFailedEvent) -> Job:
            recoveries.append(ev.input_event.n)
            return Job(n=ev.input_event.n + 1)  # try again: fails again

    with pytest.raises(Flaky, match=f"job {budget}"):
        await asyncio.wait_for(Flow().run(), 5)  # without the budget it would loop forever
    assert recoveries == list(range(budget))


async def test_a_failing_handler_fails_the_run() -> None:
    class Flow(Workflow):
        @step
        async def work(self, ev: StartEvent) -> StopEvent:
            raise Flaky("step")

        @catch_error
        async def recover(self, ev: StepFailedEvent) -> StopEvent:
            raise RuntimeError("handler broke")

    with pytest.raises(RuntimeError, match="handler broke"):
        await Flow().run()
