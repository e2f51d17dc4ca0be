"""Turning events and state into JSON and back, with their types, safely.

Types are looked up by name in a registry built from the workflow's own event and state
classes. Nothing is ever imported by a name read from stored data, so a database or an
HTTP payload cannot make riverbed load arbitrary code.

``PickleSerializer`` exists for values JSON cannot hold; it is opt-in, and only for data
you trust.
"""

from __future__ import annotations

import base64
import functools
import json
import pickle
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import to_jsonable_python

from riverbed._tagged_json import from_tagged, to_tagged
from riverbed.errors import ContextSerdeError
from riverbed.events import (
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StepFailedEvent,
    StopEvent,
    WorkflowCancelledEvent,
    WorkflowFailedEvent,
    WorkflowTimedOutEvent,
)
from riverbed.state import DictState

__all__ = [
    "BaseSerializer",
    "JsonSerializer",
    "PickleSerializer",
    "TypeRegistry",
    "defined_subclasses",
    "type_key",
]

T = TypeVar("T")

_BUILTIN_EVENTS: tuple[type[Event], ...] = (
    Event,
    StartEvent,
    StopEvent,
    InputRequiredEvent,
    HumanResponseEvent,
    StepFailedEvent,
    WorkflowTimedOutEvent,
    WorkflowCancelledEvent,
    WorkflowFailedEvent,
)


def stored_module(module: str) -> str:
    """The module name stored for classes of ``module``: for ``__main__`` (a script run as
    ``python app.py`` or ``python -m pkg.app``), the name the module has when imported
    (``app``, ``pkg.app``), so a run started by the script can be continued by a process
    that imports it (``riverbed runs resume ... app.py:Flow``) and the other way round."""
    if module != "__main__":
        return module
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and getattr(spec, "name", None):
        return str(spec.name)
    path = getattr(main, "__file__", None)
    return Path(path).stem if path else module


def type_key(cls: type[Any]) -> str:
    """The name a type is stored under: ``module.QualifiedName``."""
    return f"{stored_module(cls.__module__)}.{cls.__qualname__}"


@functools.cache
def _builtin_types() -> dict[str, type[BaseModel]]:
    builtins: tuple[type[BaseModel], ...] = (*_BUILTIN_EVENTS, DictState)
    return {type_key(cls): cls for cls in builtins}


class TypeRegistry:
    """The event and state classes a workflow may store, by :func:`type_key`."""

    def __init__(self, types: Iterable[type[BaseModel]] = ()) -> None:
        # A durable run builds one per run: the built-in types' keys are computed once.
        self._types: dict[str, type[BaseModel]] = dict(_builtin_types())
        for cls in types:
            self.add(cls)

    def add(self, cls: type[BaseModel]) -> str:
        """Register ``cls``; returns its :func:`type_key`."""
        key = type_key(cls)
        self._types[key] = cls
        # Subclasses of registered events may be sent at run time (e.g. a richer
        # HumanResponseEvent); they are registered when first serialized.
        return key

    def resolve(self, key: str) -> type[BaseModel]:
        cls = self._types.get(key) or self._loaded_event(key)
        if cls is None:
            raise ContextSerdeError(
                f"Stored data names type {key!r}, which this workflow does not know. The "
                "class may have been renamed or removed since the data was written; restore "
                "it, or register it with the workflow (declare it in a step's signature)."
            )
        return cls

    def _loaded_event(self, key: str) -> type[BaseModel] | None:
        # Events a step writes to the stream need not appear in any signature. They are
        # looked up among the Event classes this process has already defined (never
        # imported), so stored data still cannot choose what code is loaded.
        cls = next((c for c in defined_subclasses(Event) if type_key(c) == key), None)
        if cls is not None:
            self.add(cls)
        return cls

    def find(self, key: str) -> type[BaseModel] | None:
        """The class of ``key`` among the workflow's types and the event and model classes
        this process has defined (never imported), or None."""
        cls = self._types.get(key) or self._loaded_event(key)
        if cls is None:
            cls = next((c for c in defined_subclasses(BaseModel) if type_key(c) == key), None)
            if cls is not None:
                self.add(cls)
        return cls

    def __contains__(self, key: str) -> bool:
        return key in self._types or self._loaded_event(key) is not None


def defined_subclasses(base: type[T]) -> Iterator[type[T]]:
    """``base`` and every subclass of it this process has defined (each once), without
    importing anything: how a type key read from stored data finds its class."""
    pending: list[type[T]] = [base]
    seen: set[type[T]] = set()
    while pending:
        cls = pending.pop()
        if cls not in seen:
            seen.add(cls)
            yield cls
            pending.extend(cls.__subclasses__())


class BaseSerializer:
    """Turns one value into a string and back."""

    def serialize(self, value: Any) -> str:
        raise NotImplementedError

    def deserialize(self, data: str) -> Any:
        raise NotImplementedError


class JsonSerializer(BaseSerializer):
    """JSON through pydantic. Pydantic models are stored with their type key and rebuilt
    only from the ``registry`` (never imported by name)."""

    def __init__(self, registry: TypeRegistry | None = None) -> None:
        self.registry = registry or TypeRegistry()

    def serialize(self, value: Any) -> str:
        try:
            return json.dumps(self.to_jsonable(value))
        except (TypeError, ValueError) as exc:
            raise ContextSerdeError(
                f"Cannot serialize a {type(value).__name__} to JSON: {exc}. Use JSON-friendly "
                "values, a pydantic model, or PickleSerializer for trusted data."
            ) from exc

    def to_jsonable(self, value: Any) -> Any:
        if isinstance(value, BaseModel):
            self.registry.add(type(value))
            return {"__model__": type_key(type(value)), "value": value.model_dump(mode="json")}
        json.dumps(value)  # raises TypeError with the offending type
        return value

    def deserialize(self, data: str) -> Any:
        try:
            raw = json.loads(data)
        except ValueError as exc:
            raise ContextSerdeError(f"Stored value is not valid JSON: {exc}") from exc
        return self.from_jsonable(raw)

    def from_jsonable(self, raw: Any) -> Any:
        if isinstance(raw, dict) and set(raw) == {"__model__", "value"}:
            cls = self.registry.resolve(raw["__model__"])
            try:
                return cls.model_validate(raw["value"])
            except ValidationError as exc:
                raise ContextSerdeError(
                    f"Stored {cls.__name__} no longer matches its class: {exc}"
                ) from exc
        return raw


class PickleSerializer(JsonSerializer):
    """JSON when possible, pickle (base64) otherwise. Opt-in: unpickling runs code chosen
    by whoever wrote the data, so use it only for data you wrote yourself."""

    def serialize(self, value: Any) -> str:
        try:
            return super().serialize(value)
        except ContextSerdeError:
            return json.dumps({"__pickle__": base64.b64encode(pickle.dumps(value)).decode()})

    def from_jsonable(self, raw: Any) -> Any:
        if isinstance(raw, dict) and set(raw) == {"__pickle__"}:
            return pickle.loads(base64.b64decode(raw["__pickle__"]))
        return super().from_jsonable(raw)


class RecordedError(Exception):
    """An exception read back from a store. Its type name and message survive; its class is
    not imported (stored data never chooses what code runs)."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.type_name = type_name

    def __str__(self) -> str:
        return f"{self.type_name}: {self.args[0]}"


def _fallback(value: Any) -> Any:
    if isinstance(value, RecordedError):
        # Read back from a store and stored again (a resumed step forwards the event):
        # keep the original type name and message, not "RecordedError: Type: message".
        return {"__exception__": value.type_name, "message": str(value.args[0])}
    if isinstance(value, BaseException):
        return {"__exception__": type(value).__name__, "message": str(value)}
    raise TypeError(f"a {type(value).__module__}.{type(value).__qualname__}")


def _revive(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"__exception__", "message"}:
        return RecordedError(str(value["__exception__"]), str(value["message"]))
    return value


class EventCodec:
    """Events and state to JSON strings and back, for durable stores."""

    def __init__(self, registry: TypeRegistry) -> None:
        self.registry = registry

    def dump(self, event: BaseModel) -> tuple[str, str]:
        """``(type key, JSON payload)``; raises ContextSerdeError naming what cannot be
        stored."""
        cls = type(event)
        key = self.registry.add(cls)
        try:
            # serialize_as_any: a field typed with a base class (StepFailedEvent.input_event
            # is an ``Event``) holding a subclass keeps the subclass's fields; pydantic
            # would otherwise dump only the declared class's, losing them in the store.
            data = event.model_dump(mode="json", fallback=_fallback, serialize_as_any=True)
            return key, json.dumps(data)
        except (TypeError, ValueError) as exc:
            raise ContextSerdeError(
                f"{cls.__name__} cannot be stored in a durable run: it holds {exc}, which is "
                "not JSON. Use JSON-friendly fields (str, numbers, lists, dicts, pydantic "
                "models)."
            ) from exc

    def load(self, key: str, payload: str) -> Event:
        cls = self.registry.resolve(key)
        try:
            raw = json.loads(payload)
            if isinstance(raw, dict):
                raw = {name: _revive(value) for name, value in raw.items()}
            event = cls.model_validate(raw)
        except (ValueError, ValidationError) as exc:
            raise ContextSerdeError(
                f"A stored {cls.__name__} no longer matches its class ({exc}). Restore the "
                "fields it had, or give new fields defaults."
            ) from exc
        if not isinstance(event, Event):
            raise ContextSerdeError(f"Stored type {key!r} is not an event.")
        return event

    def dump_state(self, state: BaseModel) -> str:
        """The state as JSON; raises StateValidationError naming the key that cannot be
        stored (so a durable run rejects it when it is set, not later). Untyped state
        keeps its values' types (``riverbed._tagged_json``): a run reads back after a
        restart the datetimes, tuples and sets it had."""
        try:
            if isinstance(state, DictState):
                return json.dumps(
                    {k: to_tagged(v, self.registry.add, _reject) for k, v in state.data.items()}
                )
            return json.dumps(state.model_dump(mode="json", fallback=_reject))
        except (TypeError, ValueError) as exc:
            from riverbed.errors import StateValidationError

            raise StateValidationError(
                f"State key {self._bad_key(state)!r} holds {exc}, which cannot be stored in "
                "a durable run. Store JSON-friendly values (or a pydantic model with a "
                "field_serializer), and keep clients and connections out of the state."
            ) from exc

    @staticmethod
    def _bad_key(state: BaseModel) -> str:
        items = dict(state.__pydantic_extra__ or {})
        items.update({name: getattr(state, name) for name in type(state).model_fields})
        for key, value in items.items():
            try:
                json.dumps(to_jsonable_python(value, fallback=_reject))
            except (TypeError, ValueError):
                return key
        return "?"

    def load_state(self, state_type: type[BaseModel], payload: str) -> BaseModel:
        try:
            if issubclass(state_type, DictState):
                raw = json.loads(payload)
                return state_type.model_validate(
                    {k: from_tagged(v, self.registry.find) for k, v in raw.items()}
                )
            return state_type.model_validate_json(payload)
        except ValidationError as exc:
            name = state_type.__name__
            raise ContextSerdeError(
                f"The stored state no longer fits {name} (the class changed after it was "
                f"stored). Make {name} accept the stored values: give new fields defaults, "
                "map old field names or types in a model_validator(mode='before'), or finish "
                f"the run with the code that started it. Pydantic says: {exc}"
            ) from exc


def _reject(value: Any) -> Any:
    raise TypeError(f"a {type(value).__module__}.{type(value).__qualname__}")
