"""Reading what a request carries: JSON bodies checked against their models, and query
parameters checked for type and range. Every failure is a 4xx problem naming the field."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request

from riverbed.server.problems import Problem
from riverbed.server.service import validation_problem

__all__ = ["EventBody", "StartBody", "query_bool", "query_int", "query_number", "read_body"]

M = TypeVar("M", bound=BaseModel)

_ID = r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$"


class StartBody(BaseModel):
    """``POST /api/workflows/{name}/runs``: the start event's fields, and an optional id."""

    model_config = ConfigDict(extra="forbid")

    input: dict[str, Any] = Field(default_factory=dict)
    run_id: str | None = Field(default=None, min_length=1, max_length=200, pattern=_ID)


class EventBody(BaseModel):
    """``POST /api/runs/{run_id}/events``: an event for the run."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, max_length=300)
    data: dict[str, Any] = Field(default_factory=dict)
    client_event_id: str | None = Field(default=None, min_length=1, max_length=200)
    step: str | None = Field(default=None, min_length=1, max_length=200)


async def read_body(request: Request, model: type[M]) -> M:
    """The request's JSON body as ``model``; an empty body is ``{}``."""
    raw = await request.body()
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if raw.strip() and kind.lower() not in ("application/json", "") and not kind.endswith("+json"):
        raise Problem(
            415, "unsupported-media-type", f"Send the body as application/json, not {kind!r}."
        )
    try:
        data = json.loads(raw) if raw.strip() else {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise Problem(400, "malformed-json", f"The request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise Problem(
            422, "invalid-input", f"The request body must be a JSON object, not {_kind(data)}."
        )
    unknown = sorted(set(data) - set(model.model_fields))
    if unknown and model is StartBody:
        # The start event's fields at the top level (a common first try): say where they go.
        fields = ", ".join(map(repr, unknown))
        raise Problem(
            422,
            "invalid-input",
            f"Unknown key {fields} in the request body: put the start event's fields under "
            '"input", e.g. {"input": {' + f"{json.dumps(unknown[0])}: ..." + "}}.",
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_problem(exc, "The request body") from None


def _kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within ``[low, high]``."""
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise Problem(422, "invalid-query", f"{name} must be an integer, got {text!r}.") from None
    if not low <= value <= high:
        raise Problem(
            422, "invalid-query", f"{name} must be between {low} and {high}, got {value}."
        )
    return value


def query_number(request: Request, name: str, low: float, high: float) -> float | None:
    """A number query parameter within ``[low, high]``, or None when absent."""
    text = request.query_params.get(name)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise Problem(422, "invalid-query", f"{name} must be a number, got {text!r}.") from None
    if not low <= value <= high:  # also refuses nan
        raise Problem(422, "invalid-query", f"{name} must be between {low} and {high}, got {text}.")
    return value


def query_bool(request: Request, name: str) -> bool:
    """A boolean query parameter: true/false, 1/0, yes/no."""
    text = request.query_params.get(name)
    if text is None:
        return False
    value = text.lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no", ""):
        return False
    raise Problem(422, "invalid-query", f"{name} must be true or false, got {text!r}.")
