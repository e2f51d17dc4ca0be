"""Scenarios S1-S5, written once against the LlamaIndex Workflows API (and ``self_loop``,
the long single run of ``durable.py``).

Every builder takes an ``api`` namespace (``Workflow``, ``step``, ``Context``, ``Event``,
``StartEvent``, ``StopEvent``) and defines its event and workflow classes inside the call, so
each engine gets classes made with its own base classes and decorators. A builder returns a
``Job``: an async callable that runs the scenario once and returns ``None`` when the result is
right, or a short description of what was wrong.

This module must not use ``from __future__ import annotations``: the engines read the event
types from the step annotations, and string annotations naming classes local to a builder
could not be resolved.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel

Job = Callable[[], Awaitable[str | None]]

CHAIN_STEPS = 10


def s1_chain(api: Any, runs: int, options: dict[str, Any] | None = None) -> Job:
    """S1: ``runs`` sequential runs of a 10-step chain, one event forwarded per step.

    ``options`` are extra ``Workflow(...)`` arguments (``durable.py`` passes ``store=``).
    """
    Workflow, step, Event, StartEvent, StopEvent = (
        api.Workflow, api.step, api.Event, api.StartEvent, api.StopEvent
    )

    class Hop1(Event):
        hops: int

    class Hop2(Event):
        hops: int

    class Hop3(Event):
        hops: int

    class Hop4(Event):
        hops: int

    class Hop5(Event):
        hops: int

    class Hop6(Event):
        hops: int

    class Hop7(Event):
        hops: int

    class Hop8(Event):
        hops: int

    class Hop9(Event):
        hops: int

    class Chain(Workflow):
        @step
        async def step1(self, ev: StartEvent) -> Hop1:
            return Hop1(hops=1)

        @step
        async def step2(self, ev: Hop1) -> Hop2:
            return Hop2(hops=ev.hops + 1)

        @step
        async def step3(self, ev: Hop2) -> Hop3:
            return Hop3(hops=ev.hops + 1)

        @step
        async def step4(self, ev: Hop3) -> Hop4:
            return Hop4(hops=ev.hops + 1)

        @step
        async def step5(self, ev: Hop4) -> Hop5:
            return Hop5(hops=ev.hops + 1)

        @step
        async def step6(self, ev: Hop5) -> Hop6:
            return Hop6(hops=ev.hops + 1)

        @step
        async def step7(self, ev: Hop6) -> Hop7:
            return Hop7(hops=ev.hops + 1)

        @step
        async def step8(self, ev: Hop7) -> Hop8:
            return Hop8(hops=ev.hops + 1)

        @step
        async def step9(self, ev: Hop8) -> Hop9:
            return Hop9(hops=ev.hops + 1)

        @step
        async def step10(self, ev: Hop9) -> StopEvent:
            return StopEvent(result=ev.hops + 1)

    wf = Chain(timeout=None, **(options or {}))

    async def job() -> str | None:
        for i in range(runs):
            hops = await wf.run()
            if hops != CHAIN_STEPS:
                return f"run {i} went through {hops!r} steps, expected {CHAIN_STEPS}"
        return None

    return job


def s2_fan_out(
    api: Any, events: int, workers: int, options: dict[str, Any] | None = None
) -> Job:
    """S2: one step sends ``events`` events, a pool of ``workers`` handles them, one collects.

    ``options`` are extra ``Workflow(...)`` arguments (``durable.py`` passes ``store=``).
    """
    Workflow, step, Context, Event, StartEvent, StopEvent = (
        api.Workflow, api.step, api.Context, api.Event, api.StartEvent, api.StopEvent
    )

    class Item(Event):
        i: int

    class Done(Event):
        i: int

    # Built once: the collector must not pay for building a K-long list on every call.
    expected = [Done] * events

    class FanOut(Workflow):
        @step
        async def scatter(self, ctx: Context, ev: StartEvent) -> Item | None:
            for i in range(events):
                ctx.send_event(Item(i=i))
            return None

        @step(num_workers=workers)
        async def work(self, ev: Item) -> Done:
            return Done(i=ev.i)

        @step
        async def gather(self, ctx: Context, ev: Done) -> StopEvent | None:
            done = ctx.collect_events(ev, expected)
            if done is None:
                return None
            return StopEvent(result=(len(done), sum(d.i for d in done)))

    wf = FanOut(timeout=None, **(options or {}))
    want = (events, events * (events - 1) // 2)

    async def job() -> str | None:
        got = await wf.run()
        if tuple(got) != want:
            return f"(count, sum of i) = {got!r}, expected {want!r}"
        return None

    return job


class CounterState(BaseModel):
    """Typed workflow state for S3: one contended counter."""

    counter: int = 0


def s3_state(api: Any, workers: int, increments: int) -> Job:
    """S3: ``workers`` concurrent step workers each add 1 ``increments`` times in edit_state.

    The start step sends one event per worker to a step with ``num_workers=workers``, so all
    of them are in flight at once; ``sleep(0)`` inside the block lets the others run while a
    worker holds the state, which is where a non-atomic edit would lose updates.
    """
    Workflow, step, Context, Event, StartEvent, StopEvent = (
        api.Workflow, api.step, api.Context, api.Event, api.StartEvent, api.StopEvent
    )
    StateContext = Context[CounterState]

    class Work(Event):
        worker: int

    class Done(Event):
        worker: int

    expected = [Done] * workers

    class Contention(Workflow):
        @step
        async def start(self, ctx: StateContext, ev: StartEvent) -> Work | None:
            for w in range(workers):
                ctx.send_event(Work(worker=w))
            return None

        @step(num_workers=workers)
        async def bump(self, ctx: StateContext, ev: Work) -> Done:
            for _ in range(increments):
                async with ctx.store.edit_state() as state:
                    value = state.counter
                    await asyncio.sleep(0)
                    state.counter = value + 1
            return Done(worker=ev.worker)

        @step
        async def finish(self, ctx: StateContext, ev: Done) -> StopEvent | None:
            if ctx.collect_events(ev, expected) is None:
                return None
            async with ctx.store.edit_state() as state:
                return StopEvent(result=state.counter)

    wf = Contention(timeout=None)
    want = workers * increments

    async def job() -> str | None:
        got = await wf.run()
        if got != want:
            return f"counter = {got!r}, expected {want} ({want - got} updates lost)"
        return None

    return job


def s4_many_runs(api: Any, runs: int) -> Job:
    """S4: ``runs`` runs of a 3-step workflow started at once; the middle step sleeps 10 ms."""
    Workflow, step, Event, StartEvent, StopEvent = (
        api.Workflow, api.step, api.Event, api.StartEvent, api.StopEvent
    )

    class Fetch(Event):
        n: int

    class Reply(Event):
        n: int

    class Service(Workflow):
        @step
        async def receive(self, ev: StartEvent) -> Fetch:
            return Fetch(n=ev.n)

        @step
        async def fetch(self, ev: Fetch) -> Reply:
            await asyncio.sleep(0.01)
            return Reply(n=ev.n)

        @step
        async def respond(self, ev: Reply) -> StopEvent:
            return StopEvent(result=ev.n)

    wf = Service(timeout=None)

    async def one(n: int) -> Any:
        return await wf.run(n=n)

    async def job() -> str | None:
        results = await asyncio.gather(*(one(n) for n in range(runs)))
        wrong = [n for n, got in enumerate(results) if got != n]
        if wrong:
            return f"{len(wrong)} of {runs} runs returned a wrong value (first: run {wrong[0]})"
        return None

    return job


def s5_stream(api: Any, events: int) -> Job:
    """S5: one step writes ``events`` events to the stream; the caller reads them all."""
    Workflow, step, Context, Event, StartEvent, StopEvent = (
        api.Workflow, api.step, api.Context, api.Event, api.StartEvent, api.StopEvent
    )

    class Tick(Event):
        i: int

    class Emitter(Workflow):
        @step
        async def emit(self, ctx: Context, ev: StartEvent) -> StopEvent:
            for i in range(events):
                ctx.write_event_to_stream(Tick(i=i))
            return StopEvent(result=events)

    wf = Emitter(timeout=None)

    async def job() -> str | None:
        handler = wf.run()
        seen = 0
        async for ev in handler.stream_events():
            if not isinstance(ev, Tick):
                continue
            if ev.i != seen:
                return f"stream event {seen} carries i={ev.i}: out of order"
            seen += 1
        result = await handler
        if seen != events or result != events:
            return f"streamed {seen} events, result {result!r}, expected {events}"
        return None

    return job


def self_loop(
    api: Any,
    steps: int,
    options: dict[str, Any] | None = None,
    stamps: list[float] | None = None,
) -> Job:
    """One run whose step returns its own event type ``steps`` times (``durable.py``).

    ``stamps``, when given, receives ``time.perf_counter()`` at the start of every loop step,
    so the cost of any window of steps of the run can be read afterwards.
    """
    Workflow, step, Event, StartEvent, StopEvent = (
        api.Workflow, api.step, api.Event, api.StartEvent, api.StopEvent
    )

    class Tick(Event):
        i: int

    class SelfLoop(Workflow):
        @step
        async def begin(self, ev: StartEvent) -> Tick:
            return Tick(i=1)

        @step
        async def spin(self, ev: Tick) -> Tick | StopEvent:
            if stamps is not None:
                stamps.append(time.perf_counter())
            if ev.i >= steps:
                return StopEvent(result=ev.i)
            return Tick(i=ev.i + 1)

    wf = SelfLoop(timeout=None, **(options or {}))

    async def job() -> str | None:
        got = await wf.run()
        if got != steps:
            return f"the loop step ran {got!r} times, expected {steps}"
        return None

    return job
