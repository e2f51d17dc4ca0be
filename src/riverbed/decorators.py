"""``@step`` and ``@catch_error``: how functions become steps of a workflow."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, overload

from riverbed.errors import WorkflowValidationError
from riverbed.step import STEP_ATTR, StepConfig
from riverbed.validation import STEP_GRAPH_CHECKS, graph_checks

__all__ = ["catch_error", "step"]

F = TypeVar("F", bound=Callable[..., Any])


def _caller_locals(depth: int) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The caller's namespace and, when the caller is a class body, the namespace of the
    function the class is defined in (``None`` when there is none)."""
    try:
        frame = sys._getframe(depth + 1)
    except ValueError:  # pragma: no cover - shallow stack
        return None, None
    # A class body's f_locals is the namespace being built, so later names are seen too.
    local = frame.f_locals
    outer: dict[str, Any] | None = None
    enclosing = frame.f_back
    is_class_body = "__module__" in local and "__qualname__" in local
    # A workflow class defined inside a function (tests, factories) names events defined in
    # that function; with string annotations they are only found in its locals.
    if is_class_body and enclosing is not None and enclosing.f_locals is not enclosing.f_globals:
        outer = enclosing.f_locals
    return local, outer


def _check_options(num_workers: Any, timeout: Any) -> None:
    if not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 1:
        raise WorkflowValidationError(
            f"num_workers must be an integer greater than 0, got {num_workers!r}."
        )
    if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
        raise WorkflowValidationError(
            f"timeout must be a positive number of seconds, got {timeout!r}."
        )


def _attach(fn: F, config: StepConfig, workflow: Any) -> F:
    if not callable(fn):
        raise WorkflowValidationError(f"@step must decorate a function, got {fn!r}.")
    setattr(fn, STEP_ATTR, config)
    if workflow is not None:
        workflow.add_step(fn)
    return fn


@overload
def step(func: F, /) -> F: ...


@overload
def step(
    *,
    workflow: Any = None,
    num_workers: int = 4,
    retry_policy: Any = None,
    timeout: float | None = None,
    skip_graph_checks: Iterable[str] | None = None,
) -> Callable[[F], F]: ...


def step(
    func: F | None = None,
    /,
    *,
    workflow: Any = None,
    num_workers: int = 4,
    retry_policy: Any = None,
    timeout: float | None = None,
    skip_graph_checks: Iterable[str] | None = None,
) -> F | Callable[[F], F]:
    """Make a method (or, with ``workflow=``, a free function) a step of a workflow.

    The event parameter's annotation says which events start the step (unions allowed); the
    return annotation says which events it emits. ``num_workers`` caps how many deliveries
    of this step run at once in one run; ``retry_policy`` retries failed attempts;
    ``timeout`` (seconds) bounds each attempt; ``skip_graph_checks`` (``"reachability"``,
    ``"dead_end"``) exempts this step from those checks of the workflow's graph::

        class Flow(Workflow):
            @step(num_workers=8, timeout=30)
            async def fetch(self, ctx: Context, ev: UrlEvent) -> PageEvent: ...
    """
    _check_options(num_workers, timeout)
    skipped = graph_checks(skip_graph_checks, STEP_GRAPH_CHECKS, "@step(skip_graph_checks=...)")
    localns, outerns = _caller_locals(1)

    def decorate(fn: F) -> F:
        if not callable(fn):  # checked first: the message below reads fn.__name__
            raise WorkflowValidationError(f"@step must decorate a function, got {fn!r}.")
        if workflow is None and not _looks_like_method(fn):
            raise WorkflowValidationError(
                f"To decorate {fn.__name__} please pass a workflow class to the @step "
                f"decorator: @step(workflow=MyWorkflow)."
            )
        config = StepConfig(
            num_workers=num_workers,
            retry_policy=retry_policy,
            timeout=timeout,
            localns=localns,
            outerns=outerns,
            is_method=workflow is None,
            skip_graph_checks=skipped,
        )
        return _attach(fn, config, workflow)

    return decorate(func) if func is not None else decorate


def _looks_like_method(fn: Callable[..., Any]) -> bool:
    # Methods are defined in a class body: their qualname has a dot before the name.
    qualname = getattr(fn, "__qualname__", "")
    return "." in qualname and not qualname.endswith(f"<locals>.{fn.__name__}")


@overload
def catch_error(func: F, /) -> F: ...


@overload
def catch_error(
    *, for_steps: list[str] | None = None, max_recoveries: int = 1
) -> Callable[[F], F]: ...


def catch_error(
    func: F | None = None,
    /,
    *,
    for_steps: list[str] | None = None,
    max_recoveries: int = 1,
) -> F | Callable[[F], F]:
    """Handle steps that failed for good (retries exhausted) instead of failing the run.

    The handler takes a :class:`~riverbed.events.StepFailedEvent` and may return any event,
    e.g. a ``StopEvent`` to end the run with a fallback. Without ``for_steps`` it covers
    every step. ``max_recoveries`` bounds how many times one chain of events may be
    recovered, so a handler that routes back into a failing step cannot loop forever.
    """
    if not isinstance(max_recoveries, int) or max_recoveries < 1:
        raise WorkflowValidationError(
            f"max_recoveries must be an integer >= 1, got {max_recoveries!r}."
        )
    if for_steps is not None and (
        isinstance(for_steps, str) or not all(isinstance(s, str) for s in for_steps)
    ):
        raise WorkflowValidationError(
            f"for_steps must be None or a list of step name strings, got {for_steps!r}."
        )
    localns, outerns = _caller_locals(1)

    def decorate(fn: F) -> F:
        config = StepConfig(
            num_workers=1,
            catch_error=True,
            catch_for_steps=tuple(for_steps) if for_steps is not None else None,
            max_recoveries=max_recoveries,
            localns=localns,
            outerns=outerns,
        )
        return _attach(fn, config, None)

    return decorate(func) if func is not None else decorate
