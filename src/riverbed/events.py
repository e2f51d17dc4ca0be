"""Events: the typed messages that start, connect and end the steps of a workflow.

An :class:`Event` is a pydantic model. Fields declared on a subclass are validated as usual;
keyword arguments that are not declared are kept too (LlamaIndex's "extra" data) and can be
read as attributes, with ``ev["key"]`` and with ``ev.get("key", default)``::

    class Query(Event):
        text: str

    ev = Query(text="hi", user="ana")
    ev.text, ev.user, ev["user"], ev.get("missing", 0)
"""

from __future__ import annotations

from collections.abc import ItemsView, KeysView, ValuesView
from typing import TYPE_CHECKING, Any, ClassVar

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "Event",
    "HumanResponseEvent",
    "InputRequiredEvent",
    "StartEvent",
    "StepFailedEvent",
    "StopEvent",
    "WorkflowCancelledEvent",
    "WorkflowFailedEvent",
    "WorkflowTimedOutEvent",
]

_MISSING: Any = object()


def _merge_peer_data(obj: Any) -> Any:
    # LlamaIndex dumps undeclared fields under a "_data" key; riverbed keeps them at the top
    # level. Top-level keys win, as they do in LlamaIndex's constructor.
    if type(obj) is dict and isinstance(obj.get("_data"), dict):
        merged = dict(obj["_data"])
        merged.update((k, v) for k, v in obj.items() if k != "_data")
        return merged
    return obj


class Event(BaseModel):
    """Base class of every event. Undeclared keyword arguments are kept as extra data."""

    model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True)

    #: True on InputRequiredEvent and its subclasses. Read per streamed event, where it is
    #: cheaper than isinstance() against a pydantic class.
    _asks_for_input: ClassVar[bool] = False

    def _extra(self) -> dict[str, Any]:
        extra = self.__pydantic_extra__
        return extra if extra is not None else {}

    def __getitem__(self, key: str) -> Any:
        extra = self._extra()
        if key in extra:
            return extra[key]
        if key in type(self).model_fields:
            return getattr(self, key)
        raise KeyError(key)

    def __setitem__(self, key: str, value: Any) -> None:
        setattr(self, key, value)

    def __contains__(self, key: object) -> bool:
        return key in self._extra() or key in type(self).model_fields

    def get(self, key: str, default: Any = None) -> Any:
        """The value of field or extra ``key``, or ``default`` when there is none."""
        try:
            return self[key]
        except KeyError:
            return default

    def keys(self) -> KeysView[str]:
        """Names of the extra (undeclared) data, like a dict."""
        return self._extra().keys()

    def values(self) -> ValuesView[Any]:
        """Values of the extra data, like a dict."""
        return self._extra().values()

    def items(self) -> ItemsView[str, Any]:
        """Pairs of the extra data, like a dict."""
        return self._extra().items()

    def __len__(self) -> int:
        """How many extra (undeclared) data items the event holds, like ``len(ev.keys())``."""
        return len(self._extra())

    def to_dict(self) -> dict[str, Any]:
        """Fields and extra data as a plain dict (LlamaIndex returns the extra data only)."""
        return self.model_dump()

    def __bool__(self) -> bool:
        # An event with no data must still be truthy: `if ev:` means "there is an event".
        return True

    # LlamaIndex's JSON nests the extra data under "_data"; reading it merges that dict into
    # the extras. The check sits in the validate entry points, not in a model validator,
    # which would slow every `Event(...)` by 15-20%. Output keeps riverbed's flat shape.

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Self:
        """Validate ``obj``; a ``"_data"`` dict (LlamaIndex's dump shape) becomes extra data."""
        return super().model_validate(_merge_peer_data(obj), **kwargs)

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, **kwargs: Any) -> Self:
        """Validate JSON; a ``"_data"`` object (LlamaIndex's dump shape) becomes extra data."""
        key: Any = '"_data"' if isinstance(json_data, str) else b'"_data"'
        if key in json_data:
            try:
                parsed = pydantic_core.from_json(json_data)
            except ValueError:
                parsed = None  # invalid JSON: let pydantic raise its ValidationError
            merged = _merge_peer_data(parsed)
            if merged is not parsed:
                json_data = pydantic_core.to_json(merged)
        return super().model_validate_json(json_data, **kwargs)

    @classmethod
    def model_validate_strings(cls, obj: Any, **kwargs: Any) -> Self:
        """Validate string data; a ``"_data"`` dict becomes extra data."""
        return super().model_validate_strings(_merge_peer_data(obj), **kwargs)


class StartEvent(Event):
    """Starts a run. Subclass it with fields to give the workflow a typed input::

    class Ask(StartEvent):
        question: str

    await MyWorkflow().run(question="why?")
    """


class StopEvent(Event):
    """Ends a run. Awaiting the handler returns ``result`` for this class itself, and the
    event instance for a subclass (so custom stop events keep their fields)."""

    result: Any = None

    _returns_instance: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._returns_instance = True


class InputRequiredEvent(Event):
    """A step asks a human for input. It is written to the stream automatically and needs no
    consuming step; answer it with a :class:`HumanResponseEvent` through
    ``handler.send_event``."""

    _asks_for_input: ClassVar[bool] = True


class HumanResponseEvent(Event):
    """A human's answer to an :class:`InputRequiredEvent`, sent with ``handler.send_event``."""


class StepFailedEvent(Event):
    """Delivered to a ``@catch_error`` handler when a step has failed for good (its retries
    are exhausted)."""

    step_name: str
    input_event: Event
    exception: BaseException
    attempts: int
    elapsed_seconds: float
    failed_at: float


class WorkflowTimedOutEvent(StopEvent):
    """Last event on the stream of a run that exceeded its timeout."""

    timeout: float = 0.0
    active_steps: list[str] = Field(default_factory=list)


class WorkflowCancelledEvent(StopEvent):
    """Last event on the stream of a run cancelled with ``handler.cancel_run()``."""


class WorkflowFailedEvent(StopEvent):
    """Last event on the stream of a run that failed because a step raised."""

    step_name: str = ""
    exception: BaseException | None = None
    attempts: int = 0
    elapsed_seconds: float = 0.0
