"""Checks a workflow's graph when it is constructed, so mistakes show before any run.

Every problem found is reported at once, each naming the step and the event and saying how
to fix it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import BaseModel, ValidationError

from riverbed.errors import WorkflowConfigurationError, WorkflowValidationError
from riverbed.events import (
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StepFailedEvent,
    StopEvent,
)
from riverbed.state import DictState
from riverbed.step import StepSpec

__all__ = ["WorkflowShape", "infer_state_type", "validate_steps"]


@dataclass(frozen=True)
class WorkflowShape:
    """What validation learns about a workflow."""

    start_event: type[StartEvent]
    stop_event: type[StopEvent]
    uses_human_input: bool


#: Graph checks a workflow may skip (``Workflow(skip_graph_checks=...)``), named as in
#: LlamaIndex: "reachability" (every step can run: what it accepts is produced, on a path
#: from the start event), "terminal_event" (every event a step returns is taken by a step,
#: unless it is a StopEvent or an InputRequiredEvent) and "dead_end" (a chain of steps
#: leads from the start event to a StopEvent).
WORKFLOW_GRAPH_CHECKS = frozenset({"reachability", "terminal_event", "dead_end"})
#: The checks one step may be exempted from (``@step(skip_graph_checks=...)``).
STEP_GRAPH_CHECKS = frozenset({"reachability", "dead_end"})


def graph_checks(
    names: Iterable[str] | None, allowed: frozenset[str], where: str
) -> frozenset[str]:
    """``names`` as a set, or a clear error for a name that is not a check."""
    if names is None:
        return frozenset()
    if isinstance(names, str):
        names = [names]
    given = frozenset(names)
    unknown = sorted(given - allowed)
    if unknown:
        raise WorkflowValidationError(
            f"{where}: unknown graph check {', '.join(map(repr, unknown))}. The checks are "
            f"{', '.join(map(repr, sorted(allowed)))}."
        )
    return given


def _names(types: Iterable[type]) -> str:
    return ", ".join(sorted(t.__name__ for t in types))


def _consumers(event_type: type[Event], steps: list[StepSpec]) -> list[StepSpec]:
    return [s for s in steps if s.accepts(event_type)]


def _is_produced(accepted: type[Event], steps: list[StepSpec]) -> bool:
    if issubclass(accepted, (StartEvent, HumanResponseEvent, StepFailedEvent)):
        return True  # from run(), from a human, from the engine
    return any(issubclass(e, accepted) or issubclass(accepted, e) for s in steps for e in s.emitted)


def _reachable(start: type[Event], steps: list[StepSpec]) -> tuple[set[str], set[type[Event]]]:
    seen_steps: set[str] = set()
    seen_events: set[type[Event]] = set()
    frontier: list[type[Event]] = [start, HumanResponseEvent]
    frontier += [a for s in steps for a in s.accepted if issubclass(a, HumanResponseEvent)]
    while frontier:
        event = frontier.pop()
        if event in seen_events:
            continue
        seen_events.add(event)
        for spec in _consumers(event, steps):
            if spec.name not in seen_steps:
                seen_steps.add(spec.name)
                frontier.extend(spec.emitted)
    return seen_steps, seen_events


def _start_stop_problems(
    name: str, steps: list[StepSpec], problems: list[str]
) -> tuple[type[StartEvent] | None, type[StopEvent] | None]:
    starts = {a for s in steps for a in s.accepted if issubclass(a, StartEvent)}
    stops = {e for s in steps for e in s.emitted if issubclass(e, StopEvent)}
    if not starts:
        problems.append(
            f"At least one Event of type StartEvent must be received by any step. (Workflow "
            f"{name!r} has no @step that accepts StartEvent.) Add a step with `ev: StartEvent`."
        )
    elif len(starts) > 1:
        problems.append(
            f"Only one type of StartEvent is allowed per workflow, found {len(starts)}: "
            f"{_names(starts)} in workflow {name!r}. Use one StartEvent subclass for the input."
        )
    if not stops:
        problems.append(
            f"At least one Event of type StopEvent must be returned by any step. (Workflow "
            f"{name!r} has no @step returning StopEvent.) Annotate a step `-> StopEvent`."
        )
    elif len(stops) > 1:
        problems.append(
            f"Only one type of StopEvent is allowed per workflow, found {len(stops)}: "
            f"{_names(stops)} in workflow {name!r}. Return one StopEvent subclass."
        )
    start = next(iter(starts)) if len(starts) == 1 else None
    stop = next(iter(stops)) if len(stops) == 1 else None
    return start, stop


def _catch_error_problems(steps: list[StepSpec], problems: list[str]) -> None:
    handlers = [s for s in steps if s.config.catch_error]
    names = {s.name for s in steps}
    wildcards = [h.name for h in handlers if h.config.catch_for_steps is None]
    if len(wildcards) > 1:
        problems.append(
            f"Only one @catch_error handler may cover every step, found {len(wildcards)}: "
            f"{', '.join(wildcards)}. Give the others for_steps=[...]."
        )
    claimed: dict[str, str] = {}
    for handler in handlers:
        for target in handler.config.catch_for_steps or ():
            if target not in names:
                problems.append(
                    f"@catch_error handler {handler.name!r} names unknown step {target!r} in "
                    f"for_steps. Known steps: {', '.join(sorted(names))}."
                )
            elif target in {h.name for h in handlers}:
                problems.append(
                    f"@catch_error handler {handler.name!r} cannot cover another handler "
                    f"({target!r})."
                )
            elif target in claimed:
                problems.append(
                    f"Step {target!r} is covered by two @catch_error handlers: "
                    f"{claimed[target]!r} and {handler.name!r}. Keep one."
                )
            else:
                claimed[target] = handler.name


def validate_steps(
    name: str, specs: dict[str, StepSpec], skip: frozenset[str] = frozenset()
) -> WorkflowShape:
    """Check the graph of ``specs``; raise one error listing every problem. ``skip`` names
    graph checks not to apply (see ``WORKFLOW_GRAPH_CHECKS``)."""
    steps = list(specs.values())
    regular = [s for s in steps if not s.config.catch_error]
    problems: list[str] = []
    start, stop = _start_stop_problems(name, regular, problems)
    for spec in steps:
        for accepted in spec.accepted:
            if issubclass(accepted, StopEvent):
                problems.append(
                    f"Step {spec.name!r} cannot accept StopEvent ({accepted.__name__}): a "
                    "StopEvent ends the run. Return a different event to continue."
                )
            elif not _is_produced(accepted, steps) and not _skips(spec, "reachability", skip):
                problems.append(
                    f"Step {spec.name!r} accepts {accepted.__name__} but no step returns it. "
                    f"Add {accepted.__name__} to the return annotation of the step that "
                    "sends it, or remove the step."
                )
        for emitted in spec.emitted:
            if issubclass(emitted, (StopEvent, InputRequiredEvent)):
                continue  # ends the run / goes to a human through the stream
            if not _consumers(emitted, regular) and "terminal_event" not in skip:
                problems.append(
                    f"Step {spec.name!r} returns {emitted.__name__} but no step accepts it. "
                    f"Add a step with `ev: {emitted.__name__}`, or remove it from "
                    f"{spec.name!r}'s return annotation."
                )
    _catch_error_problems(steps, problems)
    if start is not None and stop is not None and not problems:
        reached_steps, reached_events = _reachable(start, regular)
        dead_end_exempt = "dead_end" in skip or any(
            "dead_end" in s.config.skip_graph_checks for s in regular
        )
        if not dead_end_exempt and not any(issubclass(e, StopEvent) for e in reached_events):
            problems.append(
                f"No chain of steps leads from {start.__name__} to a StopEvent in workflow "
                f"{name!r}."
            )
        for spec in regular:
            if spec.name not in reached_steps and not _skips(spec, "reachability", skip):
                problems.append(
                    f"Step {spec.name!r} can never run: no step reachable from "
                    f"{start.__name__} returns {' | '.join(t.__name__ for t in spec.accepted)}."
                )
    if problems:
        # The peer's name for graph errors found at construction; it is a
        # WorkflowValidationError, so either `except` clause catches it.
        raise WorkflowConfigurationError(
            f"Workflow {name!r} is not valid:\n" + "\n".join(f"- {p}" for p in problems)
        )
    assert start is not None
    assert stop is not None
    uses_human = any(
        issubclass(t, (InputRequiredEvent, HumanResponseEvent))
        for s in steps
        for t in (*s.accepted, *s.emitted)
    )
    return WorkflowShape(start, stop, uses_human)


def _skips(spec: StepSpec, check: str, skip: frozenset[str]) -> bool:
    return check in skip or check in spec.config.skip_graph_checks


def infer_state_type(name: str, specs: dict[str, StepSpec]) -> type[BaseModel]:
    """The state model named by the steps' ``Context[...]`` (the most derived one), checked
    to have a default for every field."""
    found = {s.state_type for s in specs.values() if s.state_type is not None}
    if not found:
        return DictState
    chosen = next(iter(found))
    for candidate in found:
        if issubclass(candidate, chosen):
            chosen = candidate
    unrelated = [t for t in found if not issubclass(chosen, t)]
    if unrelated:
        raise WorkflowValidationError(
            f"Steps of workflow {name!r} name state types that are not one inheritance "
            f"chain: {_names(found)}. Use one state model (subclasses of it are fine)."
        )
    try:
        chosen()
    except ValidationError as exc:
        missing = sorted({str(err["loc"][0]) for err in exc.errors() if err.get("loc")} or {"?"})
        raise WorkflowValidationError(
            f"State model {chosen.__name__} must have a default for every field, so a run "
            f"can start from its defaults; missing: {', '.join(missing)}. Add `= ...` "
            "defaults or Field(default_factory=...)."
        ) from exc
    return chosen
