"""Mistakes in a workflow's declaration are reported when it is built, clearly.

Graph problems are found when the Workflow is constructed; ``@step`` option errors when the
decorator is applied; signature errors at the latest when the Workflow is constructed. Every
message names the step and the event and says how to fix it.
"""

from typing import Any

import pytest
from pydantic import BaseModel

from riverbed import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StepFailedEvent,
    StopEvent,
    Workflow,
    WorkflowConfigurationError,
    WorkflowError,
    WorkflowValidationError,
    catch_error,
    step,
)


class Ping(Event):
    pass


class Pong(Event):
    pass


class Orphan(Event):
    pass


class OtherStart(StartEvent):
    topic: str = ""


class OtherStop(StopEvent):
    pass


def build_error(workflow_cls: type[Workflow], **kwargs: Any) -> str:
    """Construct ``workflow_cls`` and return the validation error's message."""
    with pytest.raises(WorkflowValidationError) as info:
        workflow_cls(**kwargs)
    assert isinstance(info.value, WorkflowError)
    return str(info.value)


# -- a valid workflow first: the checks must not reject good graphs -----------------------


class Valid(Workflow):
    @step
    async def start(self, ev: StartEvent) -> Ping:
        return Ping()

    @step
    async def middle(self, ctx: Context, ev: Ping) -> Pong | None:
        return Pong()

    @step
    async def end(self, ev: Pong) -> StopEvent:
        return StopEvent(result="ok")


async def test_a_valid_workflow_builds_and_runs() -> None:
    workflow = Valid()
    assert workflow.start_event_class is StartEvent
    assert workflow.stop_event_class is StopEvent
    assert workflow.validate() is False
    assert await workflow.run() == "ok"


class HumanLoop(Workflow):
    @step
    async def ask(self, ev: StartEvent) -> InputRequiredEvent:
        return InputRequiredEvent()

    @step
    async def answer(self, ev: HumanResponseEvent) -> StopEvent:
        return StopEvent()


def test_input_required_needs_no_consumer_and_human_response_no_producer() -> None:
    assert HumanLoop().validate() is True


# -- start and stop events --------------------------------------------------------------


class NoStart(Workflow):
    @step
    async def only(self, ev: Ping) -> StopEvent:
        return StopEvent()


def test_no_step_accepts_start_event() -> None:
    message = build_error(NoStart)
    assert "StartEvent" in message
    assert "NoStart" in message
    assert "ev: StartEvent" in message  # how to fix


class NoSteps(Workflow):
    pass


def test_a_workflow_without_steps_is_rejected() -> None:
    message = build_error(NoSteps)
    assert "StartEvent" in message
    assert "StopEvent" in message


class TwoStarts(Workflow):
    @step
    async def one(self, ev: StartEvent) -> StopEvent:
        return StopEvent()

    @step
    async def two(self, ev: OtherStart) -> StopEvent:
        return StopEvent()


def test_two_start_event_types() -> None:
    message = build_error(TwoStarts)
    assert "Only one type of StartEvent" in message
    assert "OtherStart" in message
    assert "StartEvent, " in message or ", StartEvent" in message


class NoStop(Workflow):
    @step
    async def start(self, ev: StartEvent) -> None:
        return None


def test_no_step_returns_stop_event() -> None:
    message = build_error(NoStop)
    assert "StopEvent must be returned" in message
    assert "-> StopEvent" in message


class TwoStops(Workflow):
    @step
    async def start(self, ev: StartEvent) -> Ping | StopEvent:
        return StopEvent()

    @step
    async def other(self, ev: Ping) -> OtherStop:
        return OtherStop()


def test_two_stop_event_types() -> None:
    message = build_error(TwoStops)
    assert "Only one type of StopEvent" in message
    assert "OtherStop" in message


class AcceptsStop(Workflow):
    @step
    async def start(self, ev: StartEvent) -> StopEvent:
        return StopEvent()

    @step
    async def after(self, ev: StopEvent) -> None:
        return None


def test_a_step_accepting_stop_event() -> None:
    message = build_error(AcceptsStop)
    assert "Step 'after' cannot accept StopEvent" in message


# -- events that go nowhere / come from nowhere ----------------------------------------


class ReturnedNotConsumed(Workflow):
    @step
    async def start(self, ev: StartEvent) -> Orphan | StopEvent:
        return StopEvent()


def test_an_event_returned_but_never_consumed() -> None:
    message = build_error(ReturnedNotConsumed)
    assert "Step 'start' returns Orphan but no step accepts it" in message
    assert "ev: Orphan" in message  # add a consumer...
    assert "return annotation" in message  # ...or remove it


class AcceptedNotProduced(Workflow):
    @step
    async def start(self, ev: StartEvent) -> StopEvent:
        return StopEvent()

    @step
    async def waits(self, ev: Orphan) -> StopEvent:
        return StopEvent()


def test_an_event_accepted_but_never_produced() -> None:
    message = build_error(AcceptedNotProduced)
    assert "Step 'waits' accepts Orphan but no step returns it" in message
    assert "Add Orphan to the return annotation" in message


class Unreachable(Workflow):
    @step
    async def start(self, ev: StartEvent) -> StopEvent:
        return StopEvent()

    @step
    async def island_a(self, ev: Ping) -> Pong:
        return Pong()

    @step
    async def island_b(self, ev: Pong) -> Ping:
        return Ping()


def test_steps_that_can_never_run() -> None:
    message = build_error(Unreachable)
    assert "Step 'island_a' can never run" in message
    assert "Step 'island_b' can never run" in message
    assert "StartEvent" in message
    assert "'start'" not in message


class NoPathToStop(Workflow):
    @step
    async def start(self, ev: StartEvent) -> Ping:
        return Ping()

    @step
    async def loop(self, ev: Ping) -> Ping:
        return Ping()

    @step
    async def finish(self, ev: Pong) -> StopEvent | Pong:
        return StopEvent()


def test_no_chain_from_start_to_stop() -> None:
    message = build_error(NoPathToStop)
    assert "No chain of steps leads from StartEvent to a StopEvent" in message
    assert "Step 'finish' can never run" in message


class ManyProblems(Workflow):
    @step
    async def start(self, ev: StartEvent) -> Orphan | StopEvent:
        return StopEvent()

    @step
    async def waits(self, ev: Ping) -> StopEvent:
        return StopEvent()


def test_every_problem_is_reported_at_once() -> None:
    message = build_error(ManyProblems)
    assert "returns Orphan" in message
    assert "accepts Ping" in message
    assert message.count("\n- ") == 2


def test_graph_errors_are_configuration_errors_too() -> None:
    # LlamaIndex raises WorkflowConfigurationError at construction; both names catch it.
    with pytest.raises(WorkflowConfigurationError):
        NoStart()


# -- @catch_error structure --------------------------------------------------------------


class Flaky(Workflow):
    @step
    async def start(self, ev: StartEvent) -> Ping:
        return Ping()

    @step
    async def work(self, ev: Ping) -> StopEvent:
        return StopEvent()


class TwoWildcards(Flaky):
    @catch_error
    async def first(self, ev: StepFailedEvent) -> StopEvent:
        return StopEvent()

    @catch_error
    async def second(self, ev: StepFailedEvent) -> StopEvent:
        return StopEvent()


def test_two_wildcard_catch_error_handlers() -> None:
    message = build_error(TwoWildcards)
    assert "Only one @catch_error handler may cover every step" in message
    assert "first" in message
    assert "second" in message
    assert "for_steps" in message


class UnknownTarget(Flaky):
    @catch_error(for_steps=["wrok"])
    async def handler(self, ev: StepFailedEvent) -> StopEvent:
        return StopEvent()


def test_catch_error_for_an_unknown_step() -> None:
    message = build_error(UnknownTarget)
    assert "'handler' names unknown step 'wrok'" in message
    assert "Known steps:" in message
    assert "work" in message


class CoversHandler(Flaky):
    @catch_error(for_steps=["work"])
    async def inner(self, ev: StepFailedEvent) -> StopEvent:
        return StopEvent()

    @catch_error(for_steps=["inner"])
    async def outer(self, ev: StepFailedEvent) -> StopEvent:
        return StopEvent()


def test_a_handler_cannot_cover_another_handler() -> None:
    message = build_error(CoversHandler)
    assert "'outer' cannot cover another handler ('inner')" in message


class ClaimedTwice(Flaky):
    @catch_error(for_steps=["work"])
    async def one(self, ev: StepFailedEvent) -> StopEvent:
        return StopEvent()

    @catch_error(for_steps=["work", "start"])
    async def two(self, ev: StepFailedEvent) -> StopEvent:
        return StopEvent()


def test_a_step_covered_by_two_handlers() -> None:
    message = build_error(ClaimedTwice)
    assert "Step 'work' is covered by two @catch_error handlers" in message
    assert "'one'" in message
    assert "'two'" in message
    assert "'start' is covered" not in message


class GoodHandlers(Flaky):
    @catch_error(for_steps=["work"])
    async def one(self, ev: StepFailedEvent) -> StopEvent:
        return StopEvent()

    @catch_error
    async def rest(self, ev: StepFailedEvent) -> StopEvent:
        return StopEvent()


def test_one_wildcard_plus_targeted_handlers_are_fine() -> None:
    GoodHandlers()


class HandlerWrongEvent(Flaky):
    @catch_error
    async def handler(self, ev: Ping) -> StopEvent:
        return StopEvent()


def test_a_catch_error_handler_must_take_step_failed_event() -> None:
    message = build_error(HandlerWrongEvent)
    assert "'handler' must accept StepFailedEvent" in message


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_recoveries": 0}, "max_recoveries"),
        ({"max_recoveries": "2"}, "max_recoveries"),
        ({"for_steps": "work"}, "for_steps"),
        ({"for_steps": ["work", 3]}, "for_steps"),
    ],
)
def test_catch_error_rejects_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(WorkflowValidationError, match=match):
        catch_error(**kwargs)


# -- state types -------------------------------------------------------------------------


class NoDefaults(BaseModel):
    required: int
    fine: str = ""


class NeedsDefaults(Workflow):
    @step
    async def start(self, ctx: Context[NoDefaults], ev: StartEvent) -> StopEvent:
        return StopEvent()


def test_typed_state_needs_defaults() -> None:
    message = build_error(NeedsDefaults)
    assert "NoDefaults" in message
    assert "required" in message
    assert "fine" not in message
    assert "default" in message


class StateA(BaseModel):
    a: int = 0


class StateB(BaseModel):
    b: int = 0


class StateA2(StateA):
    a2: int = 0


class Incompatible(Workflow):
    @step
    async def start(self, ctx: Context[StateA], ev: StartEvent) -> Ping:
        return Ping()

    @step
    async def end(self, ctx: Context[StateB], ev: Ping) -> StopEvent:
        return StopEvent()


def test_incompatible_state_types_across_steps() -> None:
    message = build_error(Incompatible)
    assert "StateA" in message
    assert "StateB" in message
    assert "inheritance" in message


class Siblings(Workflow):
    @step
    async def start(self, ctx: Context[StateA2], ev: StartEvent) -> Ping:
        return Ping()

    @step
    async def end(self, ctx: Context[StateB], ev: Ping) -> StopEvent:
        return StopEvent()


def test_state_types_not_in_one_chain_are_rejected() -> None:
    build_error(Siblings)


class Chain(Workflow):
    @step
    async def start(self, ctx: Context[StateA], ev: StartEvent) -> Ping:
        return Ping()

    @step
    async def middle(self, ctx: Context, ev: Ping) -> Pong:
        return Pong()

    @step
    async def end(self, ctx: Context[StateA2], ev: Pong) -> StopEvent:
        return StopEvent()


async def test_the_most_derived_state_type_wins() -> None:
    ctx = Context(Chain())
    assert type(await ctx.store.get_state()) is StateA2


def test_context_state_must_be_a_pydantic_model() -> None:
    class BadState(Workflow):
        @step
        async def start(self, ctx: Context[int], ev: StartEvent) -> StopEvent:  # type: ignore[type-var]
            return StopEvent()

    assert "BaseModel" in build_error(BadState)


# -- disable_validation -------------------------------------------------------------------


def test_disable_validation_skips_graph_checks() -> None:
    for broken in (NoStop, ReturnedNotConsumed, AcceptedNotProduced, Unreachable, TwoWildcards):
        workflow = broken(disable_validation=True)
        with pytest.raises(WorkflowValidationError):
            workflow.validate()  # an explicit validate() still checks


async def test_disable_validation_runs_a_graph_the_checks_would_reject() -> None:
    class SendsOnly(Workflow):
        @step
        async def start(self, ctx: Context, ev: StartEvent) -> None:
            ctx.send_event(Orphan())

        @step
        async def end(self, ev: Orphan) -> StopEvent:
            return StopEvent(result="via send_event")

    build_error(SendsOnly)
    assert await SendsOnly(disable_validation=True).run() == "via send_event"


# -- @step definition errors -------------------------------------------------------------


def test_step_without_an_event_parameter() -> None:
    class W(Workflow):
        @step
        async def start(self, ctx: Context) -> StopEvent:
            return StopEvent()

    message = build_error(W)
    assert "Step 'start' must have exactly one parameter annotated with an Event" in message
    assert "found 0" in message
    assert "ev: MyEvent" in message


def test_step_with_two_event_parameters() -> None:
    class W(Workflow):
        @step
        async def start(self, ev: StartEvent, other: Ping) -> StopEvent:
            return StopEvent()

    message = build_error(W)
    assert "Step 'start'" in message
    assert "found 2: ev, other" in message


def test_step_parameter_that_is_not_event_context_or_resource() -> None:
    class W(Workflow):
        @step
        async def start(self, ev: StartEvent, limit: int) -> StopEvent:
            return StopEvent()

    message = build_error(W)
    assert "Parameter 'limit' of step 'start'" in message
    assert "Resource" in message


def test_step_parameter_with_a_default_is_allowed() -> None:
    class W(Workflow):
        @step
        async def start(self, ev: StartEvent, limit: int = 3) -> StopEvent:
            return StopEvent(result=limit)

    W()


def test_step_without_return_annotation() -> None:
    class W(Workflow):
        @step
        async def start(self, ev: StartEvent):  # type: ignore[no-untyped-def]
            return StopEvent()

    message = build_error(W)
    assert "Step 'start' has no return annotation" in message
    assert "-> StopEvent" in message


@pytest.mark.parametrize("hint", [str, "int | StopEvent", "list[StopEvent]"])
def test_step_returning_a_non_event_type(hint: Any) -> None:
    async def start(self: Any, ev: StartEvent) -> StopEvent:
        return StopEvent()

    start.__annotations__["return"] = hint
    start.__qualname__ = "W.start"
    W = type("W", (Workflow,), {"start": step(start)})
    message = build_error(W)
    assert "Step 'start' is annotated to return" in message
    assert "Event subclasses or None" in message


@pytest.mark.parametrize("value", [0, -1, 1.5, "4", True, None])
def test_num_workers_must_be_a_positive_int(value: Any) -> None:
    with pytest.raises(WorkflowValidationError, match="num_workers must be an integer"):
        step(num_workers=value)


@pytest.mark.parametrize("value", [0, -0.5, "5"])
def test_step_timeout_must_be_positive(value: Any) -> None:
    with pytest.raises(WorkflowValidationError, match="timeout must be a positive number"):
        step(timeout=value)


async def free_step(ev: StartEvent) -> StopEvent:
    return StopEvent(result="free")


def test_free_function_needs_workflow() -> None:
    with pytest.raises(WorkflowValidationError, match="pass a workflow class") as info:
        step(free_step)
    assert "free_step" in str(info.value)
    assert "@step(workflow=" in str(info.value)


def test_step_must_decorate_a_callable() -> None:
    with pytest.raises(WorkflowValidationError, match="must decorate a function"):
        step(5)  # type: ignore[call-overload]


def test_free_function_cannot_join_workflow_itself() -> None:
    with pytest.raises(WorkflowValidationError, match="Workflow subclass"):
        step(workflow=Workflow)(free_step)


async def test_adding_a_step_name_twice() -> None:
    class W(Workflow):
        @step
        async def start(self, ev: StartEvent) -> Ping:
            return Ping()

    async def finish(ev: Ping) -> StopEvent:
        return StopEvent(result="first")

    step(workflow=W)(finish)

    async def start(ev: StartEvent) -> StopEvent:
        return StopEvent()

    with pytest.raises(WorkflowValidationError, match="step start is already part"):
        step(workflow=W)(start)

    async def finish_again(ev: Ping) -> StopEvent:
        return StopEvent(result="second")

    finish_again.__name__ = "finish"
    with pytest.raises(WorkflowValidationError, match="step finish is already part"):
        step(workflow=W)(finish_again)
    # the failed additions changed nothing
    assert await W().run() == "first"


def test_an_annotation_that_does_not_resolve_names_the_step() -> None:
    class W(Workflow):
        @step
        async def start(self, ev: "NotDefinedAnywhere") -> StopEvent:  # type: ignore[name-defined]  # noqa: F821
            return StopEvent()

    message = build_error(W)
    assert "Failed to resolve type annotations for step 'start'" in message
    assert "NotDefinedAnywhere" in message


def test_string_annotations_resolve_from_the_defining_scope() -> None:
    class LocalEvent(Event):
        pass

    class W(Workflow):
        @step
        async def start(self, ev: "StartEvent") -> "LocalEvent":
            return LocalEvent()

        @step
        async def end(self, ev: "LocalEvent") -> "StopEvent":
            return StopEvent()

    assert LocalEvent in W().events


def test_a_broken_step_keeps_failing_on_every_construction() -> None:
    # The specs are cached only once they are valid.
    build_error(NoStart)
    build_error(NoStart)


# -- skip_graph_checks (LlamaIndex's names) ------------------------------------------------


class ReturnsAnOrphan(Workflow):
    @step
    async def start(self, ev: StartEvent) -> StopEvent | Orphan:
        return StopEvent()


class HasAnUnreachableStep(Workflow):
    @step
    async def start(self, ev: StartEvent) -> StopEvent:
        return StopEvent()

    @step
    async def never(self, ev: Orphan) -> StopEvent:  # Orphan is sent from outside
        return StopEvent(result="from outside")


class LoopsForever(Workflow):
    @step
    async def start(self, ev: StartEvent) -> Ping:
        return Ping()

    @step
    async def again(self, ev: Ping) -> Ping:
        return Ping()

    @step
    async def finish(self, ev: Pong) -> Pong | StopEvent:  # never reached from the start
        return StopEvent()


class OtherLoop(Workflow):
    @step
    async def start(self, ev: StartEvent) -> Ping | StopEvent:
        return StopEvent()

    @step(skip_graph_checks=["reachability"])
    async def never(self, ev: Orphan) -> StopEvent:
        return StopEvent()


def test_skip_graph_checks_turns_off_the_named_check_only() -> None:
    assert "returns Orphan but no step accepts it" in build_error(ReturnsAnOrphan)
    assert ReturnsAnOrphan(skip_graph_checks={"terminal_event"})._shape is not None

    assert "accepts Orphan but no step returns it" in build_error(HasAnUnreachableStep)
    assert HasAnUnreachableStep(skip_graph_checks={"reachability"})._shape is not None

    message = build_error(LoopsForever)
    assert "No chain of steps leads from StartEvent to a StopEvent" in message
    assert "Step 'finish' can never run" in message
    assert LoopsForever(skip_graph_checks={"dead_end", "reachability"})._shape is not None
    # the other checks still run, and the class's own (unskipped) validation is unchanged
    message = build_error(LoopsForever, skip_graph_checks={"reachability", "terminal_event"})
    assert "No chain of steps" in message
    assert "can never run" not in message
    assert "returns Orphan" in build_error(ReturnsAnOrphan, skip_graph_checks={"dead_end"})
    assert "returns Orphan" in build_error(ReturnsAnOrphan)


async def test_a_step_can_skip_its_own_reachability_check() -> None:
    # `never` is exempt; `start` returns Ping, which no step takes: still an error
    message = build_error(OtherLoop)
    assert "returns Ping but no step accepts it" in message
    assert "never" not in message

    class Exempt(Workflow):
        @step
        async def start(self, ev: StartEvent) -> StopEvent:
            return StopEvent(result="started")

        @step(skip_graph_checks=["reachability"])
        async def answer(self, ev: Orphan) -> StopEvent:
            return StopEvent(result="answered")

    assert await Exempt().run() == "started"


def test_unknown_graph_check_names_are_refused_with_the_valid_names() -> None:
    message = build_error(Valid, skip_graph_checks={"reachabilty"})
    assert "unknown graph check 'reachabilty'" in message
    assert "'dead_end', 'reachability', 'terminal_event'" in message
    with pytest.raises(WorkflowValidationError, match="'dead_end', 'reachability'"):
        step(skip_graph_checks=["terminal_event"])  # a workflow-wide check only


def test_the_first_five_parameters_are_in_llama_index_order() -> None:
    # LlamaIndex: Workflow(timeout, disable_validation, verbose, resource_manager,
    # num_concurrent_runs); ported code that passes them by position means the same.
    workflow = LoopsForever(60, True, False, None, 3)
    assert workflow._timeout == 60
    assert workflow._shape is None  # validation disabled: this graph never stops
    assert workflow._num_concurrent_runs == 3
