"""Crash points for crash tests: the process SIGKILLs itself at a named point.

``RIVERBED_CRASHPOINTS="after_claim:0.05,before_commit:0.02"`` makes a durable run kill its
own process with that probability each time it passes the point. Points: ``before_claim``,
``after_claim``, ``before_body`` (alias of ``after_claim``), ``before_commit`` (the commit
built, not yet sent), ``in_commit`` (inside the store's transaction, before COMMIT) and
``after_commit``. Unset (the default), each check is one dict lookup.
"""

from __future__ import annotations

import os
import random
import signal

__all__ = ["hit", "parse"]

ENV = "RIVERBED_CRASHPOINTS"


def parse(spec: str) -> dict[str, float]:
    """``"a:0.1,b:0.2"`` -> ``{"a": 0.1, "b": 0.2}``; a bad entry raises ValueError."""
    points: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, probability = part.partition(":")
        value = float(probability) if probability else 1.0
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{ENV}: probability for {name!r} must be in [0, 1], got {value}")
        points[name] = value
        if name == "before_body":
            points["after_claim"] = value
    return points


_POINTS = parse(os.environ.get(ENV, ""))


def hit(point: str) -> None:
    """Maybe kill this process here (only when the environment asks for it)."""
    probability = _POINTS.get(point)
    if probability and random.random() < probability:
        os.kill(os.getpid(), signal.SIGKILL)
