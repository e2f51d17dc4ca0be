"""Workflows for the CLI tests: typed input, failure, timeout, human input, error handler.

Loaded by the ``riverbed`` command from a file path, as a user would.
"""

from __future__ import annotations

import asyncio

from pydantic import Field

from riverbed import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StepFailedEvent,
    StopEvent,
    Workflow,
    catch_error,
    step,
)


class Greet(StartEvent):
    name: str
    times: int = 1
    tags: list[str] = Field(default_factory=list)
    shout: bool = False


class Greeting(Event):
    text: str


class Greeter(Workflow):
    """Greet.name -> "hello NAME" (times, tags, shout change it)."""

    @step
    async def compose(self, ctx: Context, ev: Greet) -> Greeting:
        text = " ".join(["hello " + ev.name] * ev.times)
        if ev.tags:
            text += " #" + " #".join(ev.tags)
        ctx.write_event_to_stream(Greeting(text="composed"))
        return Greeting(text=text.upper() if ev.shout else text)

    @step
    async def finish(self, ev: Greeting) -> StopEvent:
        return StopEvent(result={"greeting": ev.text})


def make_greeter() -> Greeter:
    """A zero-argument factory."""
    return Greeter()


def needs_arguments(name: str) -> Greeter:
    return Greeter()


greeter = Greeter()
not_a_workflow = 42


class Boom(Workflow):
    @step
    async def explode(self, ev: StartEvent) -> StopEvent:
        raise ValueError("the flux capacitor is empty")


class Slow(Workflow):
    @step
    async def crawl(self, ev: StartEvent) -> StopEvent:
        await asyncio.sleep(30)
        return StopEvent(result="never")


slow = Slow(timeout=0.3)


class Reply(HumanResponseEvent):
    response: str


class Interview(Workflow):
    """Asks for a name twice (a returned question, then a wait_for_event one)."""

    @step
    async def ask(self, ev: StartEvent) -> InputRequiredEvent:
        return InputRequiredEvent(prefix="Your name?")

    @step
    async def answer(self, ctx: Context, ev: Reply) -> StopEvent:
        again = await ctx.wait_for_event(
            HumanResponseEvent, waiter_event=InputRequiredEvent(prefix="Your city?")
        )
        return StopEvent(result=f"{ev.response} from {again.response}")


class Guarded(Workflow):
    """A failing step whose error a @catch_error handler turns into a result."""

    @step
    async def risky(self, ev: StartEvent) -> StopEvent:
        raise RuntimeError("nope")

    @catch_error
    async def recover(self, ev: StepFailedEvent) -> StopEvent:
        return StopEvent(result=f"recovered from {ev.step_name}")


class Ping(Event):
    n: int


class Waits(Workflow):
    """Pings itself slowly until cancelled (for `runs cancel`)."""

    @step
    async def begin(self, ev: StartEvent) -> Ping:
        return Ping(n=0)

    @step
    async def again(self, ev: Ping) -> Ping | StopEvent:
        await asyncio.sleep(0.05)
        return Ping(n=ev.n + 1) if ev.n < 10_000 else StopEvent(result=ev.n)


class Impatient(Workflow):
    """Asks, but the run times out before anyone answers."""

    @step
    async def ask(self, ev: StartEvent) -> InputRequiredEvent:
        return InputRequiredEvent(prefix="Quick, your name?")

    @step
    async def answer(self, ev: HumanResponseEvent) -> StopEvent:
        return StopEvent(result=ev.response)


impatient = Impatient(timeout=0.4)
