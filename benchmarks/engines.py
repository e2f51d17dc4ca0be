"""The engines a benchmark run can compare, and how each one is loaded.

``asyncio`` is the hand-written baseline (``baseline.py``, S6). The others are workflow
engines with the LlamaIndex Workflows API; their names are gathered into an ``api`` namespace
that ``scenarios.py`` builds its classes from. An engine that cannot be imported is skipped
with the reason, so the harness runs before riverbed's engine exists.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from dataclasses import dataclass
from types import SimpleNamespace

BASELINE = "asyncio"
ENGINE_NAMES = ("asyncio", "riverbed", "llama")

# (module holding Workflow/step/Context, module holding the event classes, distribution)
_SOURCES = {
    "riverbed": ("riverbed", "riverbed", "riverbed"),
    "llama": ("workflows", "workflows.events", "llama-index-workflows"),
}
_API_NAMES = ("Workflow", "step", "Context", "Event", "StartEvent", "StopEvent")


class EngineUnavailable(Exception):
    """The engine's API could not be imported; the message says why."""


@dataclass(frozen=True)
class Engine:
    """One engine under test. ``api`` is ``None`` for the asyncio baseline."""

    name: str
    label: str
    api: SimpleNamespace | None

    @property
    def is_baseline(self) -> bool:
        return self.api is None


def load(name: str) -> Engine:
    """Import engine ``name``; raise ``EngineUnavailable`` when it cannot be used."""
    if name == BASELINE:
        return Engine(name, "asyncio (S6)", None)
    if name not in _SOURCES:
        raise EngineUnavailable(f"unknown engine {name!r} (known: {', '.join(ENGINE_NAMES)})")
    core, events, dist = _SOURCES[name]
    names: dict[str, object] = {}
    try:
        for module_name, wanted in ((core, _API_NAMES[:3]), (events, _API_NAMES[3:])):
            module = importlib.import_module(module_name)
            for attr in wanted:
                names[attr] = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise EngineUnavailable(f"cannot import its API: {type(exc).__name__}: {exc}") from exc
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    return Engine(name, f"{dist} {version}", SimpleNamespace(**names))
