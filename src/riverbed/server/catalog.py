"""The workflows a server serves, by name, with the event types a client may send them.

A request names an event type by its class name (``"Answer"``) or its type key
(``"myapp.flows.Answer"``); the name is looked up only among the workflow's own event
classes, never imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from riverbed.events import Event, HumanResponseEvent, StartEvent, StopEvent
from riverbed.serialization import type_key
from riverbed.server.errors import ServerConfigError
from riverbed.server.problems import Problem
from riverbed.workflow import Workflow

__all__ = ["Catalog", "Entry"]


@dataclass
class Entry:
    """One served workflow and the event classes it takes from outside."""

    workflow: Workflow
    #: class name or type key -> class; names shared by two classes map only by key
    inputs: dict[str, type[Event]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.workflow.workflow_name

    def describe(self) -> dict[str, Any]:
        """The workflow's summary: name, input and output types, the events it takes."""
        wf = self.workflow
        return {
            "name": self.name,
            "class": type(wf).__name__,
            "start_event": wf.start_event_class.__name__,
            "stop_event": wf.stop_event_class.__name__,
            "accepts": sorted({cls.__name__ for cls in self.inputs.values()}),
            "human_input": any(issubclass(c, HumanResponseEvent) for c in self.inputs.values()),
        }

    def schema(self) -> dict[str, Any]:
        """JSON schemas of the input, the output and each event a client may send."""
        wf = self.workflow
        return {
            "name": self.name,
            "input": wf.start_event_class.model_json_schema(),
            "output": wf.stop_event_class.model_json_schema(),
            "events": {
                cls.__name__: cls.model_json_schema()
                for key, cls in sorted(self.inputs.items())
                if "." not in key
            },
        }

    def event_class(self, name: str) -> type[Event]:
        """The class a request names; a 422 problem naming the accepted ones otherwise."""
        cls = self.inputs.get(name)
        if cls is None:
            accepted = ", ".join(sorted(k for k in self.inputs if "." not in k)) or "none"
            raise Problem(
                422,
                "unknown-event-type",
                f"Workflow {self.name} takes no event of type {name!r} from outside. It "
                f"accepts: {accepted}.",
            )
        return cls


def _inputs(workflow: Workflow) -> dict[str, type[Event]]:
    # What a step takes (except the StartEvent and StopEvents, which only the engine
    # sends), plus HumanResponseEvent, the usual answer to ctx.wait_for_event.
    found: dict[type[Event], None] = {HumanResponseEvent: None}
    for spec in workflow._step_specs().values():
        for cls in spec.accepted:
            if not issubclass(cls, (StartEvent, StopEvent)):
                found[cls] = None
    for cls in workflow.events:
        if issubclass(cls, HumanResponseEvent):
            found[cls] = None
    by_name: dict[str, list[type[Event]]] = {}
    for cls in found:
        by_name.setdefault(cls.__name__, []).append(cls)
    table: dict[str, type[Event]] = {type_key(cls): cls for cls in found}
    for name, classes in by_name.items():
        if len(classes) == 1:
            table[name] = classes[0]
    return table


class Catalog:
    """Workflows by name (``Workflow.workflow_name``)."""

    def __init__(self, workflows: Sequence[Workflow]) -> None:
        self.entries: dict[str, Entry] = {}
        for wf in workflows:
            if not isinstance(wf, Workflow):
                raise ServerConfigError(f"create_app() takes Workflow instances, got {wf!r}.")
            if not getattr(wf.store, "durable", False):
                raise ServerConfigError(
                    f"{wf.workflow_name} keeps its runs in memory; the server needs durable "
                    f"runs. Create it with {type(wf).__name__}(store='sqlite:///runs.db'), or "
                    "pass --store to `riverbed serve`."
                )
            if wf.workflow_name in self.entries:
                raise ServerConfigError(f"Two workflows are named {wf.workflow_name!r}.")
            self.entries[wf.workflow_name] = Entry(wf, _inputs(wf))

    def get(self, name: str) -> Entry:
        """The entry for ``name``; a 404 problem listing the served names otherwise."""
        entry = self.entries.get(name)
        if entry is None:
            served = ", ".join(sorted(self.entries)) or "none"
            raise Problem(
                404,
                "workflow-not-found",
                f"This server serves no workflow named {name!r}. It serves: {served}.",
            )
        return entry

    def stores(self) -> list[Any]:
        """The distinct stores of the served workflows."""
        seen: dict[int, Any] = {}
        for entry in self.entries.values():
            seen.setdefault(id(entry.workflow.store), entry.workflow.store)
        return list(seen.values())
