"""The crash-test workload: a durable workflow run in a subprocess that may SIGKILL itself.

Run it from the project root as ``python -m tests.crash.workload DBPATH N_RUNS [NORMAL|FULL]``,
usually with ``RIVERBED_CRASHPOINTS`` (and ``RIVERBED_CRASH_SEED``) set.
Each start resumes every run of the file that is still running and starts the runs
``run-00`` .. ``run-{N-1}`` that do not exist yet, then waits for all of them. It exits 0
once every run has completed; a crash point kills it with SIGKILL before that, and the
supervisor (``tests/test_crash_sqlite.py``) starts it again.

Per run (``CHAIN`` = 8, ``ITEMS`` = 10 by default), about 50 step executions:

- ``begin`` -> ``link`` x CHAIN (a chain; each link streams a ``Progress``) -> ``spread``;
- ``spread`` fans out ``ITEMS`` ``Item`` events with ``ctx.send_event``;
- ``work`` (4 workers) turns each ``Item`` into a ``Worked`` and streams a ``Progress``;
- ``tally`` takes each ``Worked`` and, inside ``edit_state``, adds its value to
  ``counter`` and appends its id to ``ids``; it returns ``Tallied``;
- ``audit``, a sibling of ``tally`` on ``Worked``, appends the id to ``audited`` in state
  and returns nothing: it is off the path to the result, so the run may end before it ran;
- ``join`` collects ``ITEMS`` ``Tallied`` events (fan-in) and returns the ``StopEvent``.

The checker in the test file computes what the rows must hold from these rules: keep them in
sync (``CHAIN``, ``ITEMS``, :func:`item_value`).
"""

from __future__ import annotations

import asyncio
import os
import random
import sys

from riverbed import Context, Event, StartEvent, StopEvent, Workflow, WorkflowHandler, step
from riverbed.errors import RunExistsError, RunOwnedError
from riverbed.stores.base import RunStatus

CHAIN = 8
ITEMS = 10
WORKFLOW_NAME = "riverbed-crash-workload"
#: seeds ``random`` (which the crash points draw from) in each started process
SEED_ENV = "RIVERBED_CRASH_SEED"
#: exit codes besides 0 (all runs completed) and -9 (a crash point fired)
EXIT_FAILED = 1
EXIT_RUN_OWNED = 3


def run_ids(n_runs: int) -> list[str]:
    return [f"run-{i:02d}" for i in range(n_runs)]


def item_value(run_index: int, item: int) -> int:
    """A value that differs per run and item, so a lost or doubled edit shows in the sum."""
    return (run_index * 7 + item * 13) % 97 + 1


class Begin(StartEvent):
    run_index: int


class Link(Event):
    run_index: int
    position: int


class Spread(Event):
    run_index: int


class Item(Event):
    item: int
    value: int


class Worked(Event):
    item: int
    value: int


class Tallied(Event):
    item: int


class Progress(Event):
    label: str


class CrashFlow(Workflow):
    @step
    async def begin(self, ev: Begin) -> Link:
        return Link(run_index=ev.run_index, position=0)

    @step
    async def link(self, ctx: Context, ev: Link) -> Link | Spread:
        ctx.write_event_to_stream(Progress(label=f"link-{ev.position}"))
        await asyncio.sleep(0)
        if ev.position + 1 < CHAIN:
            return Link(run_index=ev.run_index, position=ev.position + 1)
        return Spread(run_index=ev.run_index)

    @step
    async def spread(self, ctx: Context, ev: Spread) -> Item | None:
        for item in range(ITEMS):
            ctx.send_event(Item(item=item, value=item_value(ev.run_index, item)))
        ctx.write_event_to_stream(Progress(label="spread"))
        return None

    @step(num_workers=4)
    async def work(self, ctx: Context, ev: Item) -> Worked:
        await asyncio.sleep(0)
        ctx.write_event_to_stream(Progress(label=f"work-{ev.item}"))
        return Worked(item=ev.item, value=ev.value)

    @step(num_workers=2)
    async def tally(self, ctx: Context, ev: Worked) -> Tallied:
        async with ctx.store.edit_state() as state:
            state["counter"] = state.get("counter", 0) + ev.value
            state["ids"] = [*state.get("ids", []), ev.item]
        await asyncio.sleep(0)  # hold the writer lease across a switch
        return Tallied(item=ev.item)

    @step
    async def audit(self, ctx: Context, ev: Worked) -> None:
        await asyncio.sleep(0.002)  # a slow side job: the run may complete before it ran
        async with ctx.store.edit_state() as state:
            state["audited"] = [*state.get("audited", []), ev.item]

    @step
    async def join(self, ctx: Context, ev: Tallied) -> StopEvent | None:
        done = ctx.collect_events(ev, [Tallied] * ITEMS)
        if done is None:
            return None
        return StopEvent(result=sorted(t.item for t in done if isinstance(t, Tallied)))


async def main(db_path: str, n_runs: int, synchronous: str = "NORMAL") -> int:
    seed = os.environ.get(SEED_ENV)
    if seed is not None:
        random.seed(int(seed))  # which crash points fire, reproducibly per start
    wf = CrashFlow(
        store=f"sqlite:///{db_path}?synchronous={synchronous}", workflow_name=WORKFLOW_NAME
    )
    await wf.open_store()
    store = wf.store
    handlers: list[WorkflowHandler] = []
    known = {r.run_id for r in await store.list_runs(limit=100_000)}
    for record in await store.list_runs(status=RunStatus.RUNNING, limit=100_000):
        try:
            handlers.append(await wf.resume(record.run_id))
        except RunOwnedError as exc:
            # Owners are host:pid:uuid and the previous process is dead, so this must
            # not happen; the supervisor reports this exit code as a finding.
            print(f"RunOwnedError resuming {record.run_id}: {exc}", file=sys.stderr)
            return EXIT_RUN_OWNED
    for index, run_id in enumerate(run_ids(n_runs)):
        if run_id not in known:
            handlers.append(wf.run(run_id=run_id, start_event=Begin(run_index=index)))
    failures = 0
    for handler in handlers:
        try:
            result = await handler
        except RunExistsError:
            continue  # an earlier process created it after all (list_runs was read first)
        except Exception as exc:
            failures += 1
            print(f"run {handler.run_id} failed: {exc!r}", file=sys.stderr)
            continue
        if result != list(range(ITEMS)):
            failures += 1
            print(f"run {handler.run_id} returned {result!r}", file=sys.stderr)
    await store.close()
    return EXIT_FAILED if failures else 0


if __name__ == "__main__":
    # Run the module's own copy, not __main__'s: event types are stored under their module's
    # name, and the test process loads this file as tests.crash.workload.
    from tests.crash.workload import main as _main

    sys.exit(asyncio.run(_main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:4])))
