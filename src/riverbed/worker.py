"""Worker processes: run whatever durable runs need a process, from a shared store.

Any process can start a run without running it (``await workflow.submit(...)``) or answer
one (``workflow.send_event(run_id, ev, continue_here=False)``); workers sharing the store
take those runs and run them. A worker owns a run while it executes it (the run's writer
lease: its state edits stay atomic), parks a run that only waits for a human or a backoff
(releasing it, so it holds no memory), and on shutdown releases every run at once, so
another worker continues them without waiting for a lease to lapse.

    worker = Worker([MyWorkflow()], store="sqlite:///runs.db", slots=8)
    await worker.run()          # until worker.stop()

``riverbed worker MODULE:WORKFLOW --store URL`` runs one from the command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from riverbed._engine.durable import DurableRun, owner_id, unclaimed
from riverbed.errors import (
    RunFinishedError,
    RunNotFoundError,
    RunOwnedError,
    StoreError,
    WorkflowConfigurationError,
)
from riverbed.handler import WorkflowHandler

if TYPE_CHECKING:
    from riverbed.stores.durable import DurableStore
    from riverbed.workflow import Workflow

__all__ = ["Worker", "run_worker"]

logger = logging.getLogger("riverbed.worker")

#: longest pause between polls after store errors
_MAX_BACKOFF = 5.0
#: below this share of named runs won, a worker queries for free runs instead
_MIN_HINT_WINS = 0.5


class Worker:
    """Takes runs of ``workflows`` that no process runs, from their shared durable store.

    ``slots`` bounds how many runs this worker executes at once; ``poll_interval`` is how
    often it looks for work when the store cannot wake it; ``park_after`` is how long a run
    may only wait (for a human, a backoff) before the worker releases it.
    """

    def __init__(
        self,
        workflows: Sequence[Workflow],
        *,
        store: DurableStore | str | None = None,
        slots: int = 8,
        poll_interval: float = 0.5,
        park_after: float = 2.0,
    ) -> None:
        if not workflows:
            raise WorkflowConfigurationError("A worker needs at least one workflow to run.")
        if slots < 1:
            raise WorkflowConfigurationError(f"slots must be >= 1, got {slots}.")
        if store is not None:
            for workflow in workflows:
                workflow.use_store(store)
                store = workflow.store  # one store object shared by every workflow
        self._store: Any = workflows[0].store
        if not getattr(self._store, "durable", False):
            raise WorkflowConfigurationError(
                "A worker needs a durable store shared with the processes that start runs: "
                "pass store='sqlite:///runs.db' or a postgresql:// URL."
            )
        by_name: dict[str, Workflow] = {}
        for workflow in workflows:
            if workflow.store is not self._store:
                raise WorkflowConfigurationError(
                    f"{workflow.workflow_name} uses another store than "
                    f"{workflows[0].workflow_name}; a worker serves one store."
                )
            if workflow.workflow_name in by_name:
                raise WorkflowConfigurationError(
                    f"Two workflows are named {workflow.workflow_name!r}; give one another "
                    "workflow_name."
                )
            by_name[workflow.workflow_name] = workflow
        self._workflows = by_name
        self._slots = slots
        self._poll = poll_interval
        self._park_after = park_after
        self._runs: dict[str, WorkflowHandler] = {}
        self._idle_since: dict[str, float] = {}
        #: when claimable_runs last ran (monotonic)
        self._polled = 0.0
        #: how often runs a notification named were still free when this worker tried to
        #: take them (a moving average): every worker hears every notification, and when
        #: many compete, querying for free runs wastes less than racing for each one
        self._hint_wins = 1.0
        self._stopping: asyncio.Event | None = None
        #: set when a run ends while every slot was taken: look for work at once
        self._freed: asyncio.Event | None = None
        #: how many runs this worker took, finished and parked (for logs and tests)
        self.taken = 0
        self.finished = 0
        self.parked = 0

    @property
    def running(self) -> list[str]:
        """Ids of the runs this worker executes now."""
        return list(self._runs)

    def stop(self) -> None:
        """Ask :meth:`run` to return: it takes no more runs and releases the ones it has."""
        if self._stopping is not None:
            self._stopping.set()

    async def run(self) -> None:
        """Take and run work until :meth:`stop`; then release every run still going."""
        self._stopping, self._freed = asyncio.Event(), asyncio.Event()
        store = self._store
        if not getattr(store, "is_open", False):
            await store.open()
        pairs = [(name, wf.workflow_version) for name, wf in self._workflows.items()]
        logger.info(
            "riverbed worker %s serving %s",
            owner_id(),
            ", ".join(f"{n} (version {v})" for n, v in pairs),
        )
        backoff = self._poll
        try:
            while not self._stopping.is_set():
                try:
                    await self._fill(pairs)
                    await self._park_waiting()
                    backoff = self._poll
                except StoreError as exc:
                    backoff = min(_MAX_BACKOFF, backoff * 2)
                    logger.warning(
                        "riverbed worker: the store failed (%s); trying again in %.1f s",
                        exc,
                        backoff,
                    )
                # A run this worker holds may come to only wait: look again in time to
                # park it, however long the store lets us wait for work.
                pause = min(backoff, self._park_after / 2) if self._runs else backoff
                await self._pause(max(pause, 0.01))
        finally:
            await self._release_all()

    async def _pause(self, seconds: float) -> None:
        assert self._stopping is not None
        assert self._freed is not None
        if self._freed.is_set():
            self._freed.clear()
            return
        wait_for_work = getattr(self._store, "wait_for_work", None)
        waiters: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(self._stopping.wait()),
            asyncio.ensure_future(self._freed.wait()),
        ]
        if wait_for_work is not None:
            waiters.append(asyncio.ensure_future(wait_for_work(seconds)))
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._freed.clear()
            for future in waiters:
                future.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)

    async def _fill(self, pairs: list[tuple[str, str]]) -> None:
        free = self._slots - len(self._runs)
        if free <= 0:
            return
        # Runs a notification named are taken at once (no query); the query still runs
        # every poll interval, for runs no notification names (a backoff or a wait's
        # timeout came due, a notification was lost).
        notified = getattr(self._store, "notified_runs", None)
        hinted = notified(pairs, free) if notified is not None else []
        if self._hint_wins < _MIN_HINT_WINS:
            # Other workers took most named runs first: query for free ones instead (the
            # hints are dropped), and trust hints a little more each time.
            self._hint_wins = min(1.0, self._hint_wins + 0.05)
            hinted = []
        for run_id in hinted:
            if run_id not in self._runs:
                won = await self._take(run_id)
                self._hint_wins = 0.8 * self._hint_wins + (0.2 if won else 0.0)
        now = time.monotonic()
        if hinted and now - self._polled < self._poll:
            return
        self._polled = now
        free = self._slots - len(self._runs)
        if free <= 0:
            return
        for run_id in await self._store.claimable_runs(pairs, free):
            if run_id not in self._runs:
                await self._take(run_id)

    async def _take(self, run_id: str) -> bool:
        """Take and start the run; False when another process has it or it ended."""
        store = self._store
        try:
            snapshot = await store.acquire_run(run_id, owner_id(), claim=True)
        except (RunOwnedError, RunFinishedError, RunNotFoundError):
            return False  # another worker was faster, or the run ended meanwhile
        workflow = self._workflows.get(snapshot.record.workflow)
        version = snapshot.record.workflow_version
        if workflow is None or version not in (None, workflow.workflow_version):
            await store.release_run(run_id, owner_id(), unclaimed(snapshot))  # not ours
            return False
        try:
            handler = await workflow._continue(snapshot)
        except Exception:
            logger.exception("riverbed worker: could not continue run %s", run_id)
            return False
        self.taken += 1
        self._runs[run_id] = handler
        logger.info("riverbed worker took run %s of %s", run_id, workflow.workflow_name)
        handler._run.result.add_done_callback(lambda _: self._forget(run_id, handler))
        return True

    def _forget(self, run_id: str, handler: WorkflowHandler) -> None:
        outcome = handler._run.result
        if not outcome.cancelled():
            outcome.exception()  # the store has the outcome; nobody awaits it here
        if self._runs.get(run_id) is handler:
            if len(self._runs) >= self._slots and self._freed is not None:
                self._freed.set()  # a full worker has room again: take more work now
            del self._runs[run_id]
            self._idle_since.pop(run_id, None)
            run = handler._run
            if run.status.is_terminal and isinstance(run, DurableRun) and run._owns_row:
                self.finished += 1

    async def _park_waiting(self) -> None:
        now = time.monotonic()
        for run_id, handler in list(self._runs.items()):
            run = handler._run
            if not isinstance(run, DurableRun) or not run.parkable():
                self._idle_since.pop(run_id, None)
                continue
            since = self._idle_since.setdefault(run_id, now)
            if now - since >= self._park_after and await run.abandon():
                self.parked += 1
                logger.info("riverbed worker parked run %s (it waits)", run_id)

    async def _release_all(self) -> None:
        for handler in list(self._runs.values()):
            run = handler._run
            if isinstance(run, DurableRun):
                with contextlib.suppress(Exception):
                    await run.abandon()
        self._runs.clear()


def run_worker(
    workflows: list[Workflow], store_url: str, slots: int = 8, poll_interval: float = 0.5
) -> None:
    """Run a worker in this process until SIGTERM or SIGINT (what ``riverbed worker`` does).

    The signal makes it release its runs at once, so other workers continue them.
    """
    worker = Worker(workflows, store=store_url, slots=slots, poll_interval=poll_interval)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):  # not on Windows
                loop.add_signal_handler(sig, worker.stop)
        use_running_loop = getattr(worker._store, "use_running_loop", None)
        if use_running_loop is not None and not worker._store.is_open:
            # This process serves one store from this loop: keep the store's connections
            # here too, so no store call crosses to another thread and back.
            use_running_loop()
        try:
            await worker.run()
        finally:
            await worker._store.close()

    asyncio.run(main())
