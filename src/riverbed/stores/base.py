"""The ``Store`` protocol: every transition of a run that durability needs goes through it.

The engine calls these methods in the same order for every store, so the in-memory store and
the durable ones see exactly the same sequence:

``run_started`` -> (``step_started`` -> ``step_committed`` | ``step_failed``)* ... ->
``run_finished``, with ``event_accepted`` for events sent from outside the run,
``waiter_registered`` for ``ctx.wait_for_event`` and ``timer_fired`` for timers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

from pydantic import BaseModel

from riverbed.events import Event

__all__ = [
    "JournalEntry",
    "RunRecord",
    "RunStatus",
    "StepCommit",
    "Store",
]


class RunStatus(str, enum.Enum):
    """Where a run is in its life."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def is_terminal(self) -> bool:
        """True once the run has ended (completed, failed, cancelled or timed out)."""
        return self is not RunStatus.RUNNING


@dataclass(slots=True)
class RunRecord:
    """What a store knows about one run."""

    run_id: str
    workflow: str
    status: RunStatus
    started_at: float
    finished_at: float | None = None
    result: Any = None
    error: str | None = None
    parent_run_id: str | None = None
    #: the version of the workflow's steps that started the run (see
    #: ``Workflow.workflow_version``); workers only take runs of versions they have
    workflow_version: str | None = None
    #: the process executing the run (``host:pid:random``), and when it last said it is
    #: alive (seconds since the epoch, the store's clock); None when no process holds it.
    #: Read by ``get_run`` and ``list_runs`` of durable stores.
    owner: str | None = None
    owner_heartbeat: float | None = None


class StepCommit(NamedTuple):
    """The effects of one successful step attempt, committed together."""

    step: str
    event_seq: int
    attempt: int
    #: events the attempt produced (returned or sent), each with its sequence number
    produced: tuple[tuple[int, Event], ...] = ()
    #: events the attempt wrote to the stream
    stream: tuple[Event, ...] = ()
    #: the run's state after the attempt, if the attempt changed it
    state: BaseModel | None = None


class JournalEntry(NamedTuple):
    """One line of a run's history as a store records it."""

    kind: str  # accepted | started | committed | failed | waiter | timer
    step: str | None = None
    event_seq: int | None = None
    event: Event | None = None
    attempt: int | None = None
    detail: dict[str, Any] | None = None


@runtime_checkable
class Store(Protocol):
    """Where runs are recorded. See :class:`riverbed.stores.memory.MemoryStore`.

    A store whose ``records_steps`` attribute is False is told only of runs starting and
    finishing and of events from outside; the engine then skips the per-step calls.
    """

    async def run_started(self, record: RunRecord, start_event: Event, event_seq: int) -> None:
        """A run was accepted with its start event."""
        ...

    async def event_accepted(self, run_id: str, event_seq: int, event: Event) -> None:
        """An event sent from outside the run (e.g. a human's answer) was accepted."""
        ...

    async def step_started(self, run_id: str, step: str, event_seq: int, attempt: int) -> None:
        """An attempt of a delivery began."""
        ...

    async def step_committed(self, run_id: str, commit: StepCommit) -> None:
        """An attempt finished and its effects are final."""
        ...

    async def step_failed(
        self,
        run_id: str,
        step: str,
        event_seq: int,
        attempt: int,
        error: BaseException,
        retry_in: float | None,
    ) -> None:
        """An attempt raised; ``retry_in`` is the backoff, or None when giving up."""
        ...

    async def waiter_registered(
        self, run_id: str, waiter_id: str, event_type: str, step: str
    ) -> None:
        """A step is waiting for an event (``ctx.wait_for_event``)."""
        ...

    async def timer_fired(self, run_id: str, kind: str, key: str) -> None:
        """A timer (run timeout, wait timeout, retry) went off."""
        ...

    async def run_finished(
        self, run_id: str, status: RunStatus, result: Any = None, error: str | None = None
    ) -> None:
        """The run reached a terminal status."""
        ...

    async def get_run(self, run_id: str) -> RunRecord:
        """The run's record; raises :class:`~riverbed.errors.RunNotFoundError`."""
        ...

    async def list_runs(
        self,
        workflow: str | None = None,
        status: RunStatus | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[RunRecord]:
        """Runs, newest first; ``offset`` skips that many (pagination)."""
        ...

    async def get_journal(self, run_id: str) -> list[JournalEntry]:
        """Every recorded transition of a run, in order."""
        ...
