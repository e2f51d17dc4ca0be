"""The default store: runs and their journals in a dict, nothing survives the process."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from riverbed.errors import RunNotFoundError
from riverbed.events import Event
from riverbed.stores.base import JournalEntry, RunRecord, RunStatus, StepCommit

__all__ = ["MemoryStore"]


class _Run:
    __slots__ = ("journal", "record")

    def __init__(self, record: RunRecord) -> None:
        self.record = record
        self.journal: list[JournalEntry] = []


class MemoryStore:
    """Keeps every run of this process in memory.

    Finished runs beyond ``max_finished_runs`` are forgotten, oldest first, so a long-lived
    process does not grow without bound. By default only run records are kept (status,
    result, error); ``journal=True`` also keeps every event and step attempt of each run,
    which :class:`~riverbed.testing.WorkflowTestRunner` uses.
    """

    durable = False

    def __init__(self, max_finished_runs: int = 1000, journal: bool = False) -> None:
        self._runs: dict[str, _Run] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._max_finished = max_finished_runs
        self._journal = journal

    @property
    def records_steps(self) -> bool:
        """Whether the engine should report every step start and commit (the journal)."""
        return self._journal

    def _append(self, run_id: str, entry: JournalEntry) -> None:
        if self._journal:
            run = self._runs.get(run_id)
            if run is not None:
                run.journal.append(entry)

    async def run_started(self, record: RunRecord, start_event: Event, event_seq: int) -> None:
        self._runs[record.run_id] = _Run(record)
        self._append(
            record.run_id, JournalEntry("accepted", event_seq=event_seq, event=start_event)
        )

    async def event_accepted(self, run_id: str, event_seq: int, event: Event) -> None:
        self._append(run_id, JournalEntry("accepted", event_seq=event_seq, event=event))

    async def step_started(self, run_id: str, step: str, event_seq: int, attempt: int) -> None:
        self._append(run_id, JournalEntry("started", step, event_seq, attempt=attempt))

    async def step_committed(self, run_id: str, commit: StepCommit) -> None:
        if not self._journal:
            return
        run = self._runs.get(run_id)
        if run is None:
            return
        journal = run.journal
        journal.append(
            JournalEntry("committed", commit.step, commit.event_seq, attempt=commit.attempt)
        )
        for seq, event in commit.produced:
            journal.append(JournalEntry("accepted", commit.step, seq, event))

    async def step_failed(
        self,
        run_id: str,
        step: str,
        event_seq: int,
        attempt: int,
        error: BaseException,
        retry_in: float | None,
    ) -> None:
        detail = {"error": repr(error), "retry_in": retry_in}
        self._append(run_id, JournalEntry("failed", step, event_seq, None, attempt, detail))

    async def waiter_registered(
        self, run_id: str, waiter_id: str, event_type: str, step: str
    ) -> None:
        detail = {"waiter_id": waiter_id, "event_type": event_type}
        self._append(run_id, JournalEntry("waiter", step, detail=detail))

    async def timer_fired(self, run_id: str, kind: str, key: str) -> None:
        self._append(run_id, JournalEntry("timer", detail={"kind": kind, "key": key}))

    async def run_finished(
        self, run_id: str, status: RunStatus, result: Any = None, error: str | None = None
    ) -> None:
        run = self._runs.get(run_id)
        if run is None:
            return
        record = run.record
        record.status, record.result, record.error = status, result, error
        record.finished_at = time.time()
        self._finished[run_id] = None
        while len(self._finished) > self._max_finished:
            old, _ = self._finished.popitem(last=False)
            self._runs.pop(old, None)

    async def get_run(self, run_id: str) -> RunRecord:
        return self._get(run_id).record

    async def list_runs(
        self,
        workflow: str | None = None,
        status: RunStatus | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[RunRecord]:
        records = [
            r.record
            for r in reversed(self._runs.values())
            if (workflow is None or r.record.workflow == workflow)
            and (status is None or r.record.status is status)
        ]
        return records[offset : offset + limit]

    async def get_journal(self, run_id: str) -> list[JournalEntry]:
        """Every recorded transition of the run (empty unless ``journal=True``)."""
        return list(self._get(run_id).journal)

    def _get(self, run_id: str) -> _Run:
        run = self._runs.get(run_id)
        if run is None:
            raise RunNotFoundError(
                f"No run with id {run_id!r} in this memory store (it may have finished "
                "before the last runs were pruned, or run in another process). "
                "List runs with `await store.list_runs()`."
            )
        return run
