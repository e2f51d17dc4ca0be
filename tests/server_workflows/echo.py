"""A workflow that ends at once, for fuzzing the API (no run of it ever waits)."""

from __future__ import annotations

from riverbed import HumanResponseEvent, StartEvent, StopEvent, Workflow, step


class Say(StartEvent):
    """What to echo."""

    text: str
    times: int = 1


class Extra(HumanResponseEvent):
    """An event the workflow takes from outside (it is never waiting for one)."""

    note: str


class Echo(Workflow):
    """Returns the text, repeated."""

    @step
    async def echo(self, ev: Say) -> StopEvent:
        return StopEvent(result=ev.text * max(0, min(ev.times, 10)))

    @step
    async def extra(self, ev: Extra) -> StopEvent:
        return StopEvent(result=ev.note)
