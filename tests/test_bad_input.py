"""Bad input at run time fails early and clearly, always with a ``WorkflowError``."""

import asyncio
from typing import Any

import pytest

from riverbed import (
    Context,
    ContextSerdeError,
    ContextStateError,
    Event,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowError,
    WorkflowFailedEvent,
    WorkflowRuntimeError,
    WorkflowValidationError,
    step,
)
from riverbed.stores.base import RunStatus


class Ask(StartEvent):
    question: str
    times: int = 1


class Ping(Event):
    pass


class Pong(Event):
    pass


class Echo(Workflow):
    @step
    async def answer(self, ev: Ask) -> StopEvent:
        return StopEvent(result=ev.question * ev.times)


class Plain(Workflow):
    @step
    async def start(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result=dict(ev.items()))


# -- building the start event ------------------------------------------------------------


async def test_unknown_run_kwargs_are_named_with_the_fields_listed() -> None:
    with pytest.raises(WorkflowRuntimeError) as info:
        Echo().run(question="q", zeta=1, alpha=2)
    message = str(info.value)
    assert "Ask does not have: alpha, zeta" in message
    assert "Its fields are: question, times" in message


async def test_a_wrong_type_for_a_start_event_field() -> None:
    with pytest.raises(WorkflowRuntimeError) as info:
        Echo().run(question="q", times="many")
    message = str(info.value)
    assert "Failed creating a start event of type 'Ask'" in message
    assert "times" in message
    assert "'many'" in message


async def test_a_missing_required_start_event_field() -> None:
    with pytest.raises(WorkflowRuntimeError, match="question"):
        Echo().run(times=2)


async def test_the_plain_start_event_keeps_any_kwargs() -> None:
    assert await Plain().run(a=1, b="two") == {"a": 1, "b": "two"}


@pytest.mark.parametrize("bad", [Ping(), StartEvent(question="q"), {"question": "q"}, "q"])
async def test_start_event_must_be_the_workflows_start_event(bad: Any) -> None:
    with pytest.raises(WorkflowRuntimeError, match="start_event must be a Ask") as info:
        Echo().run(start_event=bad)
    assert type(bad).__name__ in str(info.value)


async def test_start_event_and_kwargs_together() -> None:
    with pytest.raises(WorkflowRuntimeError, match="not both") as info:
        Echo().run(start_event=Ask(question="q"), times=3)
    assert "times" in str(info.value)


async def test_a_subclass_of_the_start_event_is_accepted() -> None:
    class LoudAsk(Ask):
        loud: bool = True

    assert await Echo().run(start_event=LoudAsk(question="a", times=2)) == "aa"


# -- what steps return -------------------------------------------------------------------


class ReturnsJunk(Workflow):
    @step
    async def begin(self, ev: StartEvent) -> StopEvent:
        return ev.get("junk")  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("junk", "kind"), [("text", "str"), ({"a": 1}, "dict"), ([StopEvent()], "list")]
)
async def test_a_step_returning_a_non_event_fails_the_run(junk: Any, kind: str) -> None:
    handler = ReturnsJunk().run(junk=junk)
    with pytest.raises(WorkflowRuntimeError) as info:
        await handler
    message = str(info.value)
    assert f"Step function begin returned {kind} instead of an Event" in message
    assert handler.status is RunStatus.FAILED
    terminal = handler.get_stop_event()
    assert isinstance(terminal, WorkflowFailedEvent)
    assert terminal.step_name == "begin"


class ReturnsUndeclared(Workflow):
    @step
    async def begin(self, ev: StartEvent) -> Ping:
        return Pong()  # type: ignore[return-value]

    @step
    async def end(self, ev: Ping) -> StopEvent:
        return StopEvent()


async def test_an_event_no_step_accepts_fails_the_run_with_a_hint() -> None:
    with pytest.raises(WorkflowRuntimeError, match="No step accepts Pong") as info:
        await asyncio.wait_for(ReturnsUndeclared().run(), timeout=2)
    assert "ev: Pong" in str(info.value)


class SendsBadly(Workflow):
    @step
    async def begin(self, ctx: Context, ev: StartEvent) -> StopEvent:
        how = ev.get("how")
        if how == "not-an-event":
            ctx.send_event("hello")  # type: ignore[arg-type]
        elif how == "unknown-step":
            ctx.send_event(Ping(), step="nowhere")
        elif how == "wrong-step":
            ctx.send_event(Pong(), step="ping")
        return StopEvent()

    @step
    async def ping(self, ev: Ping) -> None:
        return None


@pytest.mark.parametrize(
    ("how", "match"),
    [
        ("not-an-event", "send_event\\(\\) takes an Event, got str"),
        ("unknown-step", "Step nowhere does not exist"),
        ("wrong-step", "Step ping does not accept event of type Pong"),
    ],
)
async def test_bad_send_event_calls_fail_the_step(how: str, match: str) -> None:
    with pytest.raises(WorkflowRuntimeError, match=match):
        await SendsBadly(disable_validation=True).run(how=how)


# -- where run() and run_sync() may be called -------------------------------------------


def test_run_outside_an_event_loop_points_to_run_sync() -> None:
    with pytest.raises(WorkflowRuntimeError, match="run_sync"):
        Echo().run(question="x")


async def test_run_sync_inside_a_running_loop_points_to_await() -> None:
    with pytest.raises(WorkflowRuntimeError, match=r"await workflow\.run"):
        Echo().run_sync(question="x")


def test_run_sync_reports_bad_kwargs_too() -> None:
    with pytest.raises(WorkflowRuntimeError, match="nope"):
        Echo().run_sync(question="x", nope=1)


# -- constructor and context arguments ----------------------------------------------------


@pytest.mark.parametrize("timeout", [-1, 0, "10", [1]])
def test_workflow_timeout_must_be_positive_or_none(timeout: Any) -> None:
    with pytest.raises(WorkflowValidationError, match="timeout must be a positive number"):
        Echo(timeout=timeout)


@pytest.mark.parametrize("count", [0, -2, 1.5])
def test_num_concurrent_runs_must_be_a_positive_int(count: Any) -> None:
    with pytest.raises(WorkflowValidationError, match="num_concurrent_runs"):
        Echo(num_concurrent_runs=count)


async def test_ctx_must_be_a_context() -> None:
    with pytest.raises(WorkflowRuntimeError, match="ctx must be a Context, got dict"):
        Echo().run(ctx={}, question="q")  # type: ignore[arg-type]


async def test_ctx_of_another_workflow_is_rejected() -> None:
    with pytest.raises(WorkflowRuntimeError, match="made for Plain, not Echo"):
        Echo().run(ctx=Context(Plain()), question="q")


async def test_a_context_cannot_serve_two_runs_at_once() -> None:
    class Slow(Workflow):
        @step
        async def start(self, ev: StartEvent) -> StopEvent:
            await asyncio.sleep(0.05)
            return StopEvent(result="done")

    workflow = Slow()
    ctx = Context(workflow)
    first = workflow.run(ctx=ctx)
    with pytest.raises(ContextStateError, match="already used by run"):
        workflow.run(ctx=ctx)
    assert await first == "done"
    assert await workflow.run(ctx=ctx) == "done"  # free again once finished


async def test_context_methods_outside_a_run() -> None:
    ctx = Context(Plain())
    with pytest.raises(ContextStateError, match="before the workflow started"):
        ctx.send_event(Ping())
    with pytest.raises(ContextStateError, match="only works inside a step"):
        ctx.collect_events(Ping(), [Ping])
    with pytest.raises(ContextStateError, match="only works inside a step"):
        await ctx.wait_for_event(Ping)
    with pytest.raises(ContextSerdeError):
        Context(Plain(), previous_context={})


# -- one root --------------------------------------------------------------------------


async def test_every_error_above_is_a_workflow_error() -> None:
    attempts: list[Any] = [
        lambda: Echo().run(question="q", nope=1),
        lambda: Echo().run(question="q", times="x"),
        lambda: Echo().run(start_event=Ping()),
        lambda: Echo().run(start_event=Ask(question="q"), times=1),
        lambda: Echo().run_sync(question="x"),
        lambda: Echo(timeout=-1),
        lambda: Echo().run(ctx="nope"),
        lambda: Context(Plain()).send_event(Ping()),
        lambda: step(num_workers=0),
    ]
    for attempt in attempts:
        with pytest.raises(WorkflowError):
            attempt()
    with pytest.raises(WorkflowError):
        await ReturnsJunk().run(junk=1)
