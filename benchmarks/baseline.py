"""S6: the shapes of S1-S5 hand-written with plain asyncio, the baseline of every ratio.

Each run starts a worker task per step (``workers`` tasks for a pooled step), each draining
its own ``asyncio.Queue``, and cancels them when the run ends, as an engine would. Events are
plain pydantic models with the same fields as the engine scenarios' events, built at the same
places, so a ratio against this baseline measures the engine's own overhead (routing, step
dispatch, state, streaming and its event classes' extra cost), not the cost of pydantic.

Builders return the same ``Job`` type as ``scenarios``.
"""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel
from scenarios import CHAIN_STEPS, CounterState, Job

Handler = Callable[[Any], Awaitable[Any]]
Emit = Callable[[Any], None]


class Start(BaseModel):
    """Stands for StartEvent; carries the run input like ``wf.run(n=...)``."""

    n: int = 0


class Stop(BaseModel):
    """Stands for StopEvent."""

    result: Any = None


class Hop(BaseModel):
    hops: int


class Item(BaseModel):
    i: int


class Done(BaseModel):
    i: int


class Tick(BaseModel):
    i: int


async def _drain(inbox: asyncio.Queue[Any], handler: Handler, emit: Emit) -> None:
    while True:
        out = await handler(await inbox.get())
        if out is not None:
            emit(out)


class _Run:
    """The tasks of one run; ``stop`` receives the final event."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[None]] = []
        self.stop: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def step(self, handler: Handler, emit: Emit, workers: int = 1) -> asyncio.Queue[Any]:
        inbox: asyncio.Queue[Any] = asyncio.Queue()
        for _ in range(workers):
            self.tasks.append(asyncio.create_task(_drain(inbox, handler, emit)))
        return inbox

    async def result(self) -> Any:
        try:
            return (await self.stop).result
        finally:
            self.close()

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()


def s1_chain(runs: int) -> Job:
    """S1 baseline: a chain of 10 step tasks linked by queues, set up anew for every run."""

    async def first(ev: Start) -> Hop:
        return Hop(hops=1)

    async def middle(ev: Hop) -> Hop:
        return Hop(hops=ev.hops + 1)

    async def last(ev: Hop) -> Stop:
        return Stop(result=ev.hops + 1)

    handlers = [first] + [middle] * (CHAIN_STEPS - 2) + [last]

    async def one_run() -> Any:
        run = _Run()
        emit: Emit = run.stop.set_result
        for handler in reversed(handlers):
            emit = run.step(handler, emit).put_nowait
        emit(Start())
        return await run.result()

    async def job() -> str | None:
        for i in range(runs):
            hops = await one_run()
            if hops != CHAIN_STEPS:
                return f"run {i} went through {hops!r} steps, expected {CHAIN_STEPS}"
        return None

    return job


def s2_fan_out(events: int, workers: int) -> Job:
    """S2 baseline: scatter task, a pool of ``workers`` tasks on one queue, a collector task."""

    async def one_run() -> Any:
        run = _Run()
        collected: list[Done] = []

        async def gather(ev: Done) -> Stop | None:
            collected.append(ev)
            if len(collected) < events:
                return None
            return Stop(result=(len(collected), sum(d.i for d in collected)))

        async def work(ev: Item) -> Done:
            return Done(i=ev.i)

        async def scatter(ev: Start) -> None:
            for i in range(events):
                pool.put_nowait(Item(i=i))

        collector = run.step(gather, run.stop.set_result)
        pool = run.step(work, collector.put_nowait, workers)
        run.step(scatter, run.stop.set_result).put_nowait(Start())
        return await run.result()

    want = (events, events * (events - 1) // 2)

    async def job() -> str | None:
        got = await one_run()
        if tuple(got) != want:
            return f"(count, sum of i) = {got!r}, expected {want!r}"
        return None

    return job


def s3_state(workers: int, increments: int, *, atomic: bool = True) -> Job:
    """S3 baseline: ``workers`` tasks increment one counter under an ``asyncio.Lock``.

    ``atomic=False`` drops the lock but keeps the read, ``sleep(0)``, write sequence: the
    self-check that shows the result check does catch lost updates.
    """

    class Work(BaseModel):
        worker: int

    class Finished(BaseModel):
        worker: int

    class NoLock:
        async def __aenter__(self) -> None:
            return None

        async def __aexit__(self, *exc: object) -> None:
            return None

    async def one_run() -> Any:
        run = _Run()
        state = CounterState()
        lock: Any = asyncio.Lock() if atomic else NoLock()
        finished: list[Finished] = []

        async def finish(ev: Finished) -> Stop | None:
            finished.append(ev)
            if len(finished) < workers:
                return None
            async with lock:
                return Stop(result=state.counter)

        async def bump(ev: Work) -> Finished:
            for _ in range(increments):
                async with lock:
                    value = state.counter
                    await asyncio.sleep(0)
                    state.counter = value + 1
            return Finished(worker=ev.worker)

        async def start(ev: Start) -> None:
            for w in range(workers):
                pool.put_nowait(Work(worker=w))

        collector = run.step(finish, run.stop.set_result)
        pool = run.step(bump, collector.put_nowait, workers)
        run.step(start, run.stop.set_result).put_nowait(Start())
        return await run.result()

    want = workers * increments

    async def job() -> str | None:
        got = await one_run()
        if got != want:
            return f"counter = {got!r}, expected {want} ({want - got} updates lost)"
        return None

    return job


def s4_many_runs(runs: int) -> Job:
    """S4 baseline: ``runs`` concurrent runs of 3 step tasks; the middle one sleeps 10 ms."""

    class Fetch(BaseModel):
        n: int

    class Reply(BaseModel):
        n: int

    async def receive(ev: Start) -> Fetch:
        return Fetch(n=ev.n)

    async def fetch(ev: Fetch) -> Reply:
        await asyncio.sleep(0.01)
        return Reply(n=ev.n)

    async def respond(ev: Reply) -> Stop:
        return Stop(result=ev.n)

    async def one(n: int) -> Any:
        run = _Run()
        emit: Emit = run.stop.set_result
        for handler in (respond, fetch, receive):
            emit = run.step(handler, emit).put_nowait
        emit(Start(n=n))
        return await run.result()

    async def job() -> str | None:
        results = await asyncio.gather(*(one(n) for n in range(runs)))
        wrong = [n for n, got in enumerate(results) if got != n]
        if wrong:
            return f"{len(wrong)} of {runs} runs returned a wrong value (first: run {wrong[0]})"
        return None

    return job


def s5_stream(events: int) -> Job:
    """S5 baseline: a step task puts ``events`` events on a stream queue the caller drains."""

    async def job() -> str | None:
        run = _Run()
        stream: asyncio.Queue[Any] = asyncio.Queue()

        async def emit_all(ev: Start) -> Stop:
            for i in range(events):
                stream.put_nowait(Tick(i=i))
            # Like handler.stream_events(), the stream ends with the stop event itself.
            stop = Stop(result=events)
            stream.put_nowait(stop)
            return stop

        run.step(emit_all, run.stop.set_result).put_nowait(Start())
        seen = 0
        try:
            while not isinstance(ev := await stream.get(), Stop):
                if ev.i != seen:
                    return f"stream event {seen} carries i={ev.i}: out of order"
                seen += 1
            result = await run.result()
        finally:
            run.close()
        if seen != events or result != events:
            return f"streamed {seen} events, result {result!r}, expected {events}"
        return None

    return job
