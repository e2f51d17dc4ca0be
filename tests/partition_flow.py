"""The workflow of the network-partition test (``tests/test_partition_postgres.py``).

``slow`` appends ``<pid> <attempt>`` to the file named by ``RIVERBED_PARTITION_LOG`` when it
starts (an external effect the test reads), then takes ``RIVERBED_PARTITION_SECONDS``.
"""

from __future__ import annotations

import asyncio
import os

from riverbed import Context, Event, StartEvent, StopEvent, Workflow, step


class Job(StartEvent):
    n: int


class Slowed(Event):
    n: int


def _record(line: str) -> None:
    with open(os.environ["RIVERBED_PARTITION_LOG"], "a") as log:
        log.write(line + "\n")


class PartitionFlow(Workflow):
    @step
    async def slow(self, ctx: Context, ev: Job) -> Slowed:
        _record(f"{os.getpid()} {ctx.attempt}")
        await asyncio.sleep(float(os.environ.get("RIVERBED_PARTITION_SECONDS", "4")))
        await ctx.store.set("slowed", ev.n)
        return Slowed(n=ev.n * 10)

    @step
    async def finish(self, ctx: Context, ev: Slowed) -> StopEvent:
        return StopEvent(result=ev.n + 1)


workflow = PartitionFlow(workflow_name="partition-flow")
