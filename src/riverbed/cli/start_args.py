"""Build a workflow's start event from ``--arg key=value`` and ``--json '{...}'``.

A value is parsed as JSON when the field's declared type is not text (``--arg angles=3``,
``--arg tags='["a","b"]'``, ``--arg strict=true``) and taken as text otherwise; a field the
StartEvent does not declare (plain ``StartEvent`` takes any) is text. ``--json`` gives
typed values for any field; ``--arg`` wins over ``--json`` for the same key. Errors are
:class:`~riverbed.cli.common.UsageError` naming the field and the expected type.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from riverbed.cli.common import UsageError
from riverbed.events import StartEvent

__all__ = ["build_start_event", "parse_args"]


def _takes_text(annotation: Any) -> bool:
    members = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return any(_takes_text(m) for m in members)
    if origin is typing.Literal:
        return all(isinstance(m, str) for m in members)
    if origin is typing.Annotated:
        return _takes_text(members[0])
    return annotation is str or annotation is Any


def _parse_value(start_cls: type[StartEvent], key: str, text: str) -> Any:
    field = start_cls.model_fields.get(key)
    if field is None or _takes_text(field.annotation):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text  # let validation say what was expected (e.g. a date, an enum member)


def parse_args(
    start_cls: type[StartEvent], pairs: Sequence[str], json_object: str | None
) -> dict[str, Any]:
    """The keyword arguments for ``start_cls`` from ``--json`` and ``--arg`` values."""
    values: dict[str, Any] = {}
    if json_object is not None:
        try:
            loaded = json.loads(json_object)
        except ValueError as exc:
            raise UsageError(f"--json is not valid JSON: {exc}.") from exc
        if not isinstance(loaded, dict):
            raise UsageError(
                f"--json must be a JSON object like '{{\"key\": 1}}', got {type(loaded).__name__}."
            )
        values.update(loaded)
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--arg takes key=value, got {pair!r}.")
        values[key] = _parse_value(start_cls, key, text)
    fields = start_cls.model_fields
    if fields:
        known = set(fields) | {f.alias for f in fields.values() if f.alias}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UsageError(
                f"{start_cls.__name__} has no field {', '.join(map(repr, unknown))}; its "
                f"fields are: {', '.join(sorted(fields))}."
            )
    return values


def _describe(error: Any, start_cls: type[StartEvent]) -> str:
    loc = ".".join(str(part) for part in error.get("loc", ())) or "?"
    if error.get("type") == "missing":
        return f"{start_cls.__name__} needs {loc!r}: pass --arg {loc}=VALUE."
    annotation = start_cls.model_fields.get(loc.split(".")[0])
    expected = ""
    if annotation is not None:
        expected = f" (type {_type_name(annotation.annotation)})"
    return f"--arg {loc}{expected}: {error.get('msg', 'invalid')}, got {error.get('input')!r}."


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def build_start_event(
    start_cls: type[StartEvent], pairs: Sequence[str], json_object: str | None
) -> StartEvent:
    """A validated ``start_cls`` from the command line, or a one-line ``UsageError``."""
    values = parse_args(start_cls, pairs, json_object)
    try:
        return start_cls(**values)
    except ValidationError as exc:
        raise UsageError(" ".join(_describe(e, start_cls) for e in exc.errors())) from exc
