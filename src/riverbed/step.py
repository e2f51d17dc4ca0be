"""What a step is: its accepted and emitted events, read once from its signature.

``@step`` (in :mod:`riverbed.decorators`) records a :class:`StepConfig`; when the workflow
class is created the annotations are resolved into a :class:`StepSpec`, which the engine uses
for every call without looking at the function again.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Union

from pydantic import BaseModel

from riverbed.errors import WorkflowValidationError
from riverbed.events import Event, StepFailedEvent

__all__ = ["StepConfig", "StepSpec", "build_spec"]

STEP_ATTR = "__riverbed_step__"


@dataclass(frozen=True)
class StepConfig:
    """Options given to ``@step`` / ``@catch_error``, before annotations are resolved."""

    num_workers: int = 4
    retry_policy: Any = None
    timeout: float | None = None
    #: set for ``@catch_error`` handlers: the steps covered (None = every step)
    catch_error: bool = False
    catch_for_steps: tuple[str, ...] | None = None
    max_recoveries: int = 1
    #: the namespace the decorator was called in, for string annotations
    localns: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    #: the locals of the function a workflow class is defined in (searched after localns)
    outerns: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    #: a free function registered with ``@step(workflow=...)`` has no ``self``
    is_method: bool = True
    #: graph checks not applied to this step (``@step(skip_graph_checks=...)``)
    skip_graph_checks: frozenset[str] = frozenset()


@dataclass(frozen=True)
class StepSpec:
    """A step as the engine sees it."""

    name: str
    fn: Callable[..., Any]
    config: StepConfig
    accepted: tuple[type[Event], ...]
    emitted: tuple[type[Event], ...]
    is_async: bool
    event_param: str
    ctx_param: str | None
    state_type: type[BaseModel] | None
    #: resource parameters: name -> (descriptor, annotated type)
    resources: dict[str, tuple[Any, Any]]
    #: "ctx_event", "event_ctx" or "event" when the method can be called positionally with
    #: just those arguments; "" otherwise (keywords, resources, free functions)
    arg_order: str = ""

    @property
    def plain_async(self) -> bool:
        """An async method taking only (ctx, event) or (event): the engine's fast path."""
        return self.is_async and bool(self.arg_order)

    @property
    def num_workers(self) -> int:
        return self.config.num_workers

    def accepts(self, event_type: type[Event]) -> bool:
        return issubclass(event_type, self.accepted)


def _union_members(hint: Any) -> tuple[Any, ...] | None:
    origin = typing.get_origin(hint)
    if origin is Union or origin is types.UnionType:
        return typing.get_args(hint)
    return None


def _event_types(hint: Any) -> tuple[type[Event], ...] | None:
    """The event classes named by ``hint`` (a class or a union), or None if it names others."""
    members = _union_members(hint) or (hint,)
    found: list[type[Event]] = []
    for member in members:
        if isinstance(member, type) and issubclass(member, Event):
            found.append(member)
        else:
            return None
    return tuple(found)


def _is_context(hint: Any) -> tuple[bool, type[BaseModel] | None]:
    from riverbed.context import Context  # local: context imports the engine

    if hint is Context:
        return True, None
    if typing.get_origin(hint) is Context:
        args = typing.get_args(hint)
        state = args[0] if args else None
        if not (isinstance(state, type) and issubclass(state, BaseModel)):
            raise WorkflowValidationError(
                f"Context[{getattr(state, '__name__', state)!s}]: the state type must be a "
                "pydantic BaseModel subclass."
            )
        return True, state
    return False, None


def resolve_hints(fn: Callable[..., Any], localns: dict[str, Any] | None) -> dict[str, Any]:
    """The function's annotations, resolved; raises a clear error naming what is missing."""
    try:
        return typing.get_type_hints(fn, localns=localns, include_extras=True)
    except Exception as exc:
        raise WorkflowValidationError(
            f"Failed to resolve type annotations for step {fn.__name__!r}: {exc}. Define the "
            "event classes the step names before the workflow class, at module level."
        ) from exc


def _return_types(
    name: str, fn: Callable[..., Any], hints: dict[str, Any]
) -> tuple[type[Event], ...]:
    if "return" not in getattr(fn, "__annotations__", {}):
        raise WorkflowValidationError(
            f"Step {name!r} has no return annotation. Annotate what it returns, e.g. "
            "`-> StopEvent`, `-> MyEvent | None`, or `-> None`."
        )
    hint = hints.get("return")
    members = _union_members(hint) or (hint,)
    emitted: list[type[Event]] = []
    for member in members:
        if member is None or member is type(None):
            continue
        if isinstance(member, type) and issubclass(member, Event):
            emitted.append(member)
            continue
        raise WorkflowValidationError(
            f"Step {name!r} is annotated to return {getattr(member, '__name__', member)!s}; "
            "steps return Event subclasses or None."
        )
    return tuple(emitted)


def _arg_order(
    params: list[inspect.Parameter],
    config: StepConfig,
    resources: dict[str, Any],
    ctx_param: str | None,
    event_param: str,
) -> str:
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if not config.is_method or resources or any(p.kind not in positional for p in params):
        return ""
    names = [p.name for p in params]
    if names == [ctx_param, event_param]:
        return "ctx_event"
    if names == [event_param, ctx_param]:
        return "event_ctx"
    if names == [event_param]:
        return "event"
    return ""


def build_spec(name: str, fn: Callable[..., Any], config: StepConfig) -> StepSpec:
    """Read a step's signature into a :class:`StepSpec`, or raise a clear validation error."""
    from riverbed.resource import find_resource_params

    localns = config.localns
    if config.outerns:
        localns = {**config.outerns, **(localns or {})}
    hints = resolve_hints(fn, localns)
    params = list(inspect.signature(fn).parameters.values())
    if config.is_method:
        params = params[1:]  # self
    resources = dict(find_resource_params(fn, localns=localns))
    event_params: list[tuple[str, tuple[type[Event], ...]]] = []
    ctx_param: str | None = None
    state_type: type[BaseModel] | None = None
    for param in params:
        if param.name in resources:
            continue
        hint = hints.get(param.name, inspect.Parameter.empty)
        is_ctx, state = _is_context(hint)
        if is_ctx:
            ctx_param, state_type = param.name, state
            continue
        accepted = _event_types(hint) if hint is not inspect.Parameter.empty else None
        if accepted:
            event_params.append((param.name, accepted))
            continue
        if param.default is not inspect.Parameter.empty:
            continue
        raise WorkflowValidationError(
            f"Parameter {param.name!r} of step {name!r} is not an event, a Context or a "
            "Resource. Annotate the event parameter with an Event class (e.g. "
            "`ev: StartEvent`), the context with `ctx: Context`, and resources with "
            "`Annotated[T, Resource(factory)]`."
        )
    if len(event_params) != 1:
        found = ", ".join(p for p, _ in event_params) or "none"
        raise WorkflowValidationError(
            f"Step {name!r} must have exactly one parameter annotated with an Event type "
            f"(found {len(event_params)}: {found}). Example: "
            f"`async def {name}(self, ctx: Context, ev: MyEvent) -> StopEvent`."
        )
    event_param, accepted = event_params[0]
    if config.catch_error and accepted != (StepFailedEvent,):
        raise WorkflowValidationError(
            f"@catch_error handler {name!r} must accept StepFailedEvent (`ev: StepFailedEvent`)."
        )
    return StepSpec(
        arg_order=_arg_order(params, config, resources, ctx_param, event_param),
        name=name,
        fn=fn,
        config=config,
        accepted=accepted,
        emitted=_return_types(name, fn, hints),
        is_async=inspect.iscoroutinefunction(fn),
        event_param=event_param,
        ctx_param=ctx_param,
        state_type=state_type,
        resources=resources,
    )
