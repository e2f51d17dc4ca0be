"""A durable long run: 20 slow steps on SQLite that survive Ctrl-C.

Each step takes 0.2 s, records its progress in typed state and commits to
``riverbed-long-run.db`` before the next one starts. Press Ctrl-C half-way: the process stops
and the run waits in the file. Continue it, and only the steps that had not committed run::

    python examples/durable_long_run.py                  # prints the run id, then progress
    python examples/durable_long_run.py --resume RUN_ID  # after Ctrl-C: goes on from there

or with the ``riverbed`` command, which loads the module-level ``workflow`` below::

    riverbed run examples/durable_long_run.py:workflow
    riverbed runs resume RUN_ID examples/durable_long_run.py:workflow

Options of the script: ``--db PATH`` (default ``riverbed-long-run.db``), ``--steps N``
(default 20), ``--delay SECONDS`` (default 0.2). Deterministic and offline.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from pydantic import BaseModel, Field

from riverbed import (
    Context,
    Event,
    RunNotFoundError,
    StartEvent,
    StopEvent,
    StoreError,
    Workflow,
    step,
)

DEFAULT_DB = "riverbed-long-run.db"


class Progress(BaseModel):
    total: int = 0
    done: list[int] = Field(default_factory=list)
    checksum: int = 0


class Begin(StartEvent):
    steps: int = 20
    delay: float = 0.2


class Work(Event):
    index: int
    delay: float


class Tick(Event):
    index: int
    total: int


class LongRun(Workflow):
    @step
    async def begin(self, ctx: Context[Progress], ev: Begin) -> Work:
        await ctx.store.set("total", ev.steps)
        return Work(index=1, delay=ev.delay)

    @step(num_workers=1)
    async def work(self, ctx: Context[Progress], ev: Work) -> Work | StopEvent:
        await asyncio.sleep(ev.delay)  # the slow part: a model call, a download...
        async with ctx.store.edit_state() as state:  # write state after the slow call
            state.done.append(ev.index)
            state.checksum += ev.index * ev.index
            total = state.total
        ctx.write_event_to_stream(Tick(index=ev.index, total=total))
        if ev.index < total:
            return Work(index=ev.index + 1, delay=ev.delay)
        state = await ctx.store.get_state()
        return StopEvent(result=f"{len(state.done)} steps done, checksum {state.checksum}")


workflow = LongRun(store=f"sqlite:///{DEFAULT_DB}")


async def main(db: str, resume: str | None, steps: int, delay: float) -> None:
    durable = LongRun(store=f"sqlite:///{db}")
    already = 0
    if resume:
        await durable.open_store()
        state_json, _ = await durable.store.read_state(resume)  # read without running it
        already = len(Progress.model_validate_json(state_json).done)
        handler = await durable.resume(resume)
        print(f"resuming run {resume}: {already} steps were done before", flush=True)
    else:
        handler = durable.run(steps=steps, delay=delay)
        print(f"run {handler.run_id} started; Ctrl-C stops it, then continue it with", flush=True)
        print(f"  python {sys.argv[0]} --db {db} --resume {handler.run_id}", flush=True)
    async for event in handler.stream_events():
        # A resumed handler streams the run from its start: skip what was printed before.
        if isinstance(event, Tick) and event.index > already:
            print(f"step {event.index}/{event.total} done", flush=True)
    print(await handler, flush=True)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default=DEFAULT_DB, help="SQLite file the run is recorded in")
    parser.add_argument("--resume", metavar="RUN_ID", help="continue this run")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--delay", type=float, default=0.2)
    args = parser.parse_args()
    try:
        asyncio.run(main(args.db, args.resume, args.steps, args.delay))
    except KeyboardInterrupt:
        print("interrupted: the run is saved; continue it with --resume RUN_ID", flush=True)
        sys.exit(130)
    except (RunNotFoundError, StoreError) as exc:  # unknown, finished or owned elsewhere
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    # Run this file as the module `durable_long_run` (its folder is on sys.path), not as
    # `__main__`: a durable run stores its workflow's and events' names, module included, and
    # `riverbed runs resume` loads the file under that module name.
    from durable_long_run import cli as _cli

    _cli()
