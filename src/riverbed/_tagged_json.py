"""JSON for untyped (dict) state values that keeps their Python types.

Plain JSON turns a ``datetime`` into a string, a tuple or a set into a list, ``{1: "a"}``
into ``{"1": "a"}``: a durable run that stored such a value would read back something
else after a restart than the live run had. Values JSON cannot say are written as
``{"__riverbed__": KIND, ...}`` and turned back into what they were:

========================================  ===================================
value                                     stored as
========================================  ===================================
str, int, float, bool, None               itself
list; dict with str keys                  itself, values tagged
tuple, set, frozenset                     ``{"__riverbed__": "tuple", "v": [...]}``
dict with other keys (or our marker key)  ``{"__riverbed__": "dict", "items": [[k, v], ...]}``
datetime, date, time                      ``{"__riverbed__": "datetime", "v": iso}``
timedelta                                 ``{"__riverbed__": "timedelta", "v": [d, s, us]}``
UUID, Decimal, PurePath                   ``{"__riverbed__": "uuid", "v": str}``
bytes                                     ``{"__riverbed__": "bytes", "v": base64}``
a pydantic model (an event too)           ``{"__riverbed__": "model", "type": key, "v": {...}}``
========================================  ===================================

A model comes back as its class when the workflow knows the class (``resolve`` finds it
among classes already defined, never by importing); otherwise as the dict it was before
this module existed. Anything else goes through pydantic's JSON conversion, as before
(an ``Enum`` becomes its value), and what pydantic cannot convert is refused.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import pathlib
import uuid
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

__all__ = ["TAG", "from_tagged", "to_plain", "to_tagged"]

TAG = "__riverbed__"

_NATIVE = frozenset({str, int, float, bool, type(None)})

_STRINGS: dict[str, Callable[[str], Any]] = {
    "uuid": uuid.UUID,
    "decimal": decimal.Decimal,
    "path": pathlib.PurePath,
    "datetime": dt.datetime.fromisoformat,
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
}


def to_tagged(
    value: Any, key_of: Callable[[type[BaseModel]], str], reject: Callable[[Any], Any]
) -> Any:
    """``value`` as JSON-ready data, tagged where JSON would lose its type. ``key_of``
    names a model's class; ``reject`` is pydantic's fallback for what it cannot convert."""
    cls = type(value)
    if cls in _NATIVE:  # the common cases first, by exact type: a large state is walked
        return value
    if cls is list:
        return [v if type(v) in _NATIVE else to_tagged(v, key_of, reject) for v in value]
    if cls is dict and TAG not in value and all(type(k) is str for k in value):
        return {
            k: v if type(v) in _NATIVE else to_tagged(v, key_of, reject) for k, v in value.items()
        }
    if value is None or isinstance(value, (str, int, float)):
        return value  # subclasses (bool is an int, an IntEnum...)
    if isinstance(value, list):
        return [to_tagged(v, key_of, reject) for v in value]
    if isinstance(value, dict):
        if TAG not in value and all(isinstance(k, str) for k in value):
            return {k: to_tagged(v, key_of, reject) for k, v in value.items()}
        items = [
            [to_tagged(k, key_of, reject), to_tagged(v, key_of, reject)] for k, v in value.items()
        ]
        return {TAG: "dict", "items": items}
    if isinstance(value, (tuple, set, frozenset)):
        kind = (
            "tuple"
            if isinstance(value, tuple)
            else "frozenset"
            if isinstance(value, frozenset)
            else "set"
        )
        return {TAG: kind, "v": [to_tagged(v, key_of, reject) for v in value]}
    if isinstance(value, dt.datetime):
        return {TAG: "datetime", "v": value.isoformat()}
    if isinstance(value, dt.date):
        return {TAG: "date", "v": value.isoformat()}
    if isinstance(value, dt.time):
        return {TAG: "time", "v": value.isoformat()}
    if isinstance(value, dt.timedelta):
        return {TAG: "timedelta", "v": [value.days, value.seconds, value.microseconds]}
    if isinstance(value, uuid.UUID):
        return {TAG: "uuid", "v": str(value)}
    if isinstance(value, decimal.Decimal):
        return {TAG: "decimal", "v": str(value)}
    if isinstance(value, pathlib.PurePath):
        return {TAG: "path", "v": str(value)}
    if isinstance(value, (bytes, bytearray)):
        return {TAG: "bytes", "v": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, BaseModel):
        dumped = value.model_dump(mode="json", fallback=reject, serialize_as_any=True)
        return {TAG: "model", "type": key_of(type(value)), "v": dumped}
    return to_jsonable_python(value, fallback=reject)


def from_tagged(raw: Any, resolve: Callable[[str], type[BaseModel] | None]) -> Any:
    """The value :func:`to_tagged` wrote; ``resolve`` finds a model class by its key."""
    if isinstance(raw, list):
        return [from_tagged(v, resolve) for v in raw]
    if not isinstance(raw, dict):
        return raw
    kind = raw.get(TAG)
    if not isinstance(kind, str):
        return {k: from_tagged(v, resolve) for k, v in raw.items()}
    if kind == "dict":
        return {from_tagged(k, resolve): from_tagged(v, resolve) for k, v in raw["items"]}
    if kind in ("tuple", "set", "frozenset"):
        items = [from_tagged(v, resolve) for v in raw["v"]]
        return {"tuple": tuple, "set": set, "frozenset": frozenset}[kind](items)
    if kind in _STRINGS:
        return _STRINGS[kind](raw["v"])
    if kind == "timedelta":
        days, seconds, micro = raw["v"]
        return dt.timedelta(days=days, seconds=seconds, microseconds=micro)
    if kind == "bytes":
        return base64.b64decode(raw["v"])
    if kind == "model":
        cls = resolve(str(raw["type"]))
        data = from_tagged(raw["v"], resolve)
        return cls.model_validate(data) if cls is not None else data
    return {k: from_tagged(v, resolve) for k, v in raw.items()}  # not ours after all


def to_plain(raw: Any) -> Any:
    """Tagged data as plain JSON, for people and HTTP clients: what the value looks like
    in JSON (a datetime as its ISO string, a set as a list, a model as its fields)."""
    if isinstance(raw, list):
        return [to_plain(v) for v in raw]
    if not isinstance(raw, dict):
        return raw
    kind = raw.get(TAG)
    if not isinstance(kind, str):
        return {k: to_plain(v) for k, v in raw.items()}
    if kind == "dict":
        return {str(to_plain(k)): to_plain(v) for k, v in raw["items"]}
    if kind in ("tuple", "set", "frozenset", "model"):
        return to_plain(raw["v"])
    if kind == "timedelta":
        days, seconds, micro = raw["v"]
        return dt.timedelta(days=days, seconds=seconds, microseconds=micro).total_seconds()
    if "v" in raw:
        return raw["v"]
    return {k: to_plain(v) for k, v in raw.items()}
