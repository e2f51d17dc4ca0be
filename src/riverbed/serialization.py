"""Turning events and state into JSON and back, with their types, safely.

Types are looked up by name in a registry built from the workflow's own event and state
classes. Nothing is ever imported by a name read from stored data, so a database or an
HTTP payload cannot make riverbed load arbitrary code.

``PickleSerializer`` exists for values JSON cannot hold; it is opt-in, and only for data
you trust.
"""

from __future__ import annotations

import base64
import json
import pickle
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ValidationError

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

__all__ = ["BaseSerializer", "JsonSerializer", "PickleSerializer", "TypeRegistry", "type_key"]

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


def type_key(cls: type[Any]) -> str:
    """The name a type is stored under: ``module.QualifiedName``."""
    return f"{cls.__module__}.{cls.__qualname__}"


class TypeRegistry:
    """The event and state classes a workflow may store, by :func:`type_key`."""

    def __init__(self, types: Iterable[type[BaseModel]] = ()) -> None:
        self._types: dict[str, type[BaseModel]] = {}
        builtins: tuple[type[BaseModel], ...] = (*_BUILTIN_EVENTS, DictState)
        for cls in (*builtins, *types):
            self.add(cls)

    def add(self, cls: type[BaseModel]) -> None:
        self._types[type_key(cls)] = cls
        # Subclasses of registered events may be sent at run time (e.g. a richer
        # HumanResponseEvent); they are registered when first serialized.

    def resolve(self, key: str) -> type[BaseModel]:
        cls = self._types.get(key)
        if cls is None:
            raise ContextSerdeError(
                f"Stored data names type {key!r}, which this workflow does not know. The "
                "class may have been renamed or removed since the data was written; restore "
                "it, or register it with the workflow (declare it in a step's signature)."
            )
        return cls

    def __contains__(self, key: str) -> bool:
        return key in self._types


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
