"""Workflows for the server tests: a human approval, a streaming counter, a slow one."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

from riverbed import (
    ConstantDelayRetryPolicy,
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
    Workflow,
    step,
)


class Ask(StartEvent):
    """The input: what to ask approval for."""

    topic: str
    ticks: int = 3


class Tick(Event):
    """One step of progress, written to the stream."""

    n: int


class Question(InputRequiredEvent):
    """The question a human answers."""

    prompt: str


class Answer(HumanResponseEvent):
    """The human's answer."""

    approved: bool
    note: str = ""


class Decision(StopEvent):
    """The output."""

    topic: str
    approved: bool
    note: str


class Ledger(BaseModel):
    """The run's state."""

    topic: str = ""
    ticks: int = 0
    answered: bool = False


class Approval(Workflow):
    """Writes ``ticks`` Tick events, asks a question, ends with the answer."""

    @step
    async def prepare(self, ctx: Context[Ledger], ev: Ask) -> Question:
        for n in range(1, ev.ticks + 1):
            ctx.write_event_to_stream(Tick(n=n))
        async with ctx.store.edit_state() as state:
            state.topic = ev.topic
            state.ticks = ev.ticks
        return Question(prompt=f"Approve {ev.topic}?")

    @step
    async def decide(self, ctx: Context[Ledger], ev: Answer) -> Decision:
        async with ctx.store.edit_state() as state:
            state.answered = True
        topic = await ctx.store.get("topic")
        return Decision(topic=topic, approved=ev.approved, note=ev.note)


class Count(StartEvent):
    """How far to count, and how long each number takes."""

    upto: int = 5
    delay: float = 0.0


class Number(Event):
    """A counted number."""

    n: int


class Counter(Workflow):
    """Counts one step per number, streaming each; the result is the total."""

    @step
    async def begin(self, ev: Count) -> Number:
        return Number(n=1, upto=ev.upto, delay=ev.delay)

    @step
    async def count(self, ctx: Context, ev: Number) -> Number | StopEvent:
        ctx.write_event_to_stream(Number(n=ev.n))
        if ev.get("delay"):
            await asyncio.sleep(ev.get("delay"))
        if ev.n >= ev.get("upto"):
            return StopEvent(result={"total": ev.n})
        return Number(n=ev.n + 1, upto=ev.get("upto"), delay=ev.get("delay"))


class Boom(Workflow):
    """Fails at once."""

    @step
    async def explode(self, ev: StartEvent) -> StopEvent:
        raise RuntimeError("the fuse was short")


class Flaky(Workflow):
    """Fails its first attempt, then succeeds (the timeline shows both)."""

    @step(retry_policy=ConstantDelayRetryPolicy(delay=0.01, maximum_attempts=3))
    async def shaky(self, ctx: Context, ev: StartEvent) -> StopEvent:
        if ctx.attempt == 1:
            raise ConnectionError("the network blinked")
        return StopEvent(result=ctx.attempt)
