"""What a durable store keeps, and the operations the engine commits through.

A run is executed by one process at a time (its *owner*); the owner allocates event
sequence numbers. Each operation below is one database transaction. The contract
(``docs/durability.md``): a step attempt's effects (delivery done, produced events and their
deliveries, stream events, state, collect buffers, waiters, run status, result) commit
together in :meth:`DurableStore.commit`, fenced by the attempt's claim token, so at most
one attempt per delivery commits and nothing committed is lost.

Payloads are JSON strings made by :mod:`riverbed.serialization`; stores never import a
class by a name read from their rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from riverbed.stores.base import RunRecord, RunStatus

__all__ = [
    "CollectRow",
    "CommitRow",
    "DeliveryRow",
    "DurableStore",
    "EventRow",
    "OpenWorkRow",
    "ProducedRow",
    "RunSnapshot",
    "StreamRow",
    "TimelineRow",
    "WaiterRow",
]


#: the tables that hold a run's rows besides ``runs``, children first: deleting a run's rows
#: in this order (then its ``runs`` row) needs no foreign-key cascades
RUN_CHILD_TABLES = (
    "attempt_failures",
    "memos",
    "waiters",
    "collected",
    "stream",
    "commits",
    "deliveries",
    "events",
)


@dataclass(frozen=True)
class EventRow:
    """An event that entered a run."""

    seq: int
    type_key: str
    payload: str
    #: the step that produced it, None for the start event and events sent from outside
    source_step: str | None = None
    client_event_id: str | None = None


@dataclass(frozen=True)
class ProducedRow:
    """An event produced by a committing attempt, with the steps it is delivered to."""

    event: EventRow
    targets: tuple[str, ...]
    lineage: int = 0
    #: claim tokens, one per target ("" = not claimed): the committing process claims the
    #: deliveries it will run itself in the same transaction (attempt 1), which saves a
    #: claim transaction per step (the "local fast path")
    claims: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeliveryRow:
    """An event routed to one step."""

    event_seq: int
    step: str
    status: str  # pending | running | done | waiting
    attempts: int
    lineage: int
    #: not-before time (retry backoff) while pending, seconds since the epoch
    visible_at: float
    event: EventRow
    #: set when ``acquire_run(..., claim=True)`` claimed the delivery for the acquirer:
    #: ``status`` is then "running" and ``attempts`` counts that claim
    claim_token: str | None = None


@dataclass(frozen=True)
class StreamRow:
    """One durable stream event; ``seq`` is gapless per run, from 1."""

    seq: int
    commit_seq: int
    type_key: str
    payload: str


@dataclass(frozen=True)
class TimelineRow:
    """One line of a run's history, for people reading it (``riverbed runs show``, the
    inspector page). ``kind`` is ``event`` (an event entered the run), ``commit`` (an
    attempt committed) or ``failure`` (an attempt raised)."""

    kind: str
    #: when it happened, seconds since the epoch
    at: float
    event_seq: int
    step: str | None = None
    attempt: int | None = None
    #: the event's type key (``event`` rows)
    type_key: str | None = None
    #: the step that produced the event, None for the start event and outside events
    source_step: str | None = None
    #: when the attempt started (``commit`` and ``failure`` rows), if known
    started_at: float | None = None
    commit_seq: int | None = None
    error: str | None = None
    #: when a failed attempt is retried; None when the step gave up
    retry_at: float | None = None

    @property
    def duration(self) -> float | None:
        """How long the attempt ran, if its start is known."""
        return None if self.started_at is None else max(0.0, self.at - self.started_at)


@dataclass(frozen=True)
class CollectRow:
    """An event held in a ``collect_events`` buffer of a step."""

    step: str
    buffer_id: str
    event: EventRow


@dataclass(frozen=True)
class WaiterRow:
    """A ``wait_for_event`` call; ``resolved`` is the event that answered it, if any."""

    waiter_id: str
    step: str
    event_type: str
    requirements: str  # JSON object
    resolved: EventRow | None = None
    #: when the wait times out, seconds since the epoch (None: no timeout); kept from the
    #: first registration, so a resumed wait goes on with the time that was left
    timeout_at: float | None = None
    #: set by register_waiter: this call recorded the waiter (it was not there before)
    new: bool = False
    #: given to register_waiter: seqs of events on their way to the store (in commits
    #: submitted before this registration) that answer the waiter, in the order the run
    #: hands them out; a new waiter is recorded answered by the first of them that is
    #: committed, in its own transaction (no later write, so no crash, can lose the answer)
    answers: tuple[int, ...] = ()


@dataclass(frozen=True)
class OpenWorkRow:
    """A delivery not done yet: a step still to run (``pending``, maybe after a retry
    backoff) or running (``running``, claimed by an attempt)."""

    event_seq: int
    step: str
    status: str
    #: attempts started so far
    attempts: int
    #: pending: not before this time (a retry backoff); running: the claim's lease expiry
    visible_at: float
    #: the type key of the event the step takes
    type_key: str


@dataclass(frozen=True)
class CommitRow:
    """Everything one successful attempt changes, written in one transaction."""

    event_seq: int
    step: str
    attempt: int
    claim_token: str
    produced: tuple[ProducedRow, ...] = ()
    stream: tuple[tuple[str, str], ...] = ()  # (type_key, payload), numbered by the store
    #: the whole state as JSON, if the attempt changed it
    state: str | None = None
    collect_add: tuple[tuple[str, str, int], ...] = ()  # (step, buffer_id, event_seq)
    collect_remove: tuple[tuple[str, str, int], ...] = ()
    #: the run's next free event sequence number after this commit
    next_seq: int = 0
    #: how long pre-claimed deliveries (ProducedRow.claims) stay claimed without a commit
    lease_seconds: float = 30.0
    #: when the attempt started (wall clock), kept for inspecting the run
    started_at: float | None = None
    #: set when this commit ends the run
    status: RunStatus | None = None
    result: str | None = None
    error: str | None = None
    #: (event seq, waiter id): waiters of the run that a produced event answers; each
    #: gets the first answer recorded (as an answer from outside would be), so a step
    #: that waits for it again after a restart gets it at once
    resolves: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True)
class SentBeforeWait:
    """What a step did before it waits, committed with its waiter: the events it sent
    (``ctx.send_event`` then ``ctx.wait_for_event``), so the steps they go to can run (and
    answer) while it waits, and the state it changed (``state``, JSON), so other steps
    can change the state while it waits. Fenced like a commit: only the attempt holding
    the delivery's claim writes them."""

    event_seq: int
    step: str
    claim_token: str
    produced: tuple[ProducedRow, ...]
    lease_seconds: float = 30.0
    state: str | None = None


@dataclass(frozen=True)
class RunSnapshot:
    """What resuming a run needs, read in one transaction."""

    record: RunRecord
    state: str
    state_type: str
    next_seq: int
    deliveries: tuple[DeliveryRow, ...]
    collected: tuple[CollectRow, ...]
    waiters: tuple[WaiterRow, ...]
    stream_len: int
    deadline: float | None = None
    owner: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    #: the durable stream, read in the same transaction (None: not read, ask read_stream)
    stream: tuple[StreamRow, ...] | None = None


class DurableStore(Protocol):
    """A store whose runs survive the process. Every method is one transaction."""

    durable: bool

    async def open(self) -> None:
        """Create or open the database and apply pending migrations."""
        ...

    async def close(self) -> None: ...

    async def create_run(
        self,
        record: RunRecord,
        start: EventRow,
        targets: tuple[str, ...],
        state: str,
        state_type: str,
        owner: str,
        deadline: float | None,
        claims: tuple[str, ...] = (),
    ) -> None:
        """Insert a new run, its start event and the start event's deliveries.
        Raises ``RunExistsError`` if the id is taken.

        ``claims`` (one token per target, or empty) claims the deliveries for ``owner``
        in the same transaction, as a commit claims the deliveries it produces: running,
        attempt 1, leased for the store's ``lease_seconds``. The creating process then
        starts the first step without a claim transaction of its own."""
        ...

    async def submit_event(
        self,
        run_id: str,
        event: EventRow,
        targets: tuple[str, ...],
        resolves: tuple[str, ...],
    ) -> tuple[int, bool]:
        """An event from outside the run: insert it with its deliveries and mark the
        waiters it answers. With a ``client_event_id`` already seen, nothing is written.
        Returns ``(seq, applied)``. Raises ``RunNotFoundError``, or ``RunFinishedError``
        for a terminal run."""
        ...

    async def claim(
        self, run_id: str, event_seq: int, step: str, token: str, lease_seconds: float
    ) -> int:
        """Start an attempt: the delivery becomes running under ``token`` and its attempt
        count grows by one (durably, before the body runs). Returns the attempt number.
        Raises ``FencedError`` if the delivery is done or the run is terminal."""
        ...

    async def commit(self, run_id: str, commit: CommitRow) -> int:
        """Apply an attempt's effects atomically; returns the commit's sequence number.
        Raises ``FencedError`` (and writes nothing) if ``claim_token`` no longer owns the
        delivery."""
        ...

    async def fail_attempt(
        self,
        run_id: str,
        event_seq: int,
        step: str,
        token: str,
        error: str,
        retry_at: float | None,
        attempt: int = 0,
        started_at: float | None = None,
    ) -> None:
        """An attempt raised. With ``retry_at`` the delivery goes back to pending until
        then; without, it stays running for the give-up commit that follows. The failure
        (attempt number, start time, error) is kept for :meth:`read_timeline`."""
        ...

    async def register_waiter(
        self,
        run_id: str,
        waiter: WaiterRow,
        announce: Sequence[tuple[str, str]] = (),
        sent: SentBeforeWait | None = None,
    ) -> WaiterRow:
        """Record a waiter (idempotent by id); returns the stored row, whose ``resolved``
        is set if the answer already arrived. ``announce``, (type key, payload) pairs, is
        what the waiting step streamed before it waits and the question it asks: appended
        to the durable stream, in order, in the same transaction when the waiter is new.
        ``sent``, the events the step sent before it waits, are inserted with their
        deliveries (claimed as a commit claims them) in the same transaction when the
        waiter is new; ``FencedError`` if the attempt no longer holds its claim."""
        ...

    async def record_answers(self, run_id: str, answers: Sequence[tuple[int, str]]) -> None:
        """Mark waiters answered by events that are already committed: ``(event seq,
        waiter id)`` pairs. A waiter already answered keeps its answer, and a pair whose
        event is not in the run's journal is ignored. For a waiter registered while the
        commit of the event that answers it was already on its way (the commit could not
        name it in ``CommitRow.resolves``)."""
        ...

    async def finish_run(
        self, run_id: str, status: RunStatus, result: str | None, error: str | None
    ) -> None:
        """Mark the run terminal outside a step commit (timeout, cancel, failure) and
        release its owner; a commit with a ``status`` does both too."""
        ...

    async def acquire_run(self, run_id: str, owner: str, *, claim: bool = False) -> RunSnapshot:
        """Become the run's owner and read everything needed to continue it. Raises
        ``RunNotFoundError``, ``RunFinishedError``, or ``RunOwnedError`` if a live process
        owns it.

        With ``claim``, the same transaction also claims, for the acquirer, every delivery
        that is due now (pending past its backoff, or left running by a process that is
        gone), so continuing the run needs no claim transaction per delivery: those rows
        come back with a ``claim_token``."""
        ...

    async def release_run(
        self, run_id: str, owner: str, unclaim: Sequence[tuple[int, str, str]] = ()
    ) -> None:
        """Give up ownership (the process is exiting, or the run waits for input).

        ``unclaim`` lists ``(event_seq, step, claim_token)`` of deliveries claimed for this
        owner that never started here (by ``acquire_run(claim=True)`` or a commit's local
        fast path): they go back to pending, due now, and that claim is not counted as an
        attempt. A token that no longer holds its delivery is ignored."""
        ...

    async def get_memo(self, run_id: str, invocation: str, name: str) -> str | None:
        """The JSON value ``ctx.memo`` stored for a delivery, if any."""
        ...

    async def put_memo(self, run_id: str, invocation: str, name: str, value: str) -> str:
        """Store a memo in its own transaction (first value wins); returns the stored one."""
        ...

    async def get_run(self, run_id: str) -> RunRecord: ...

    async def list_runs(
        self,
        workflow: str | None = None,
        status: RunStatus | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[RunRecord]:
        """Runs, newest first; ``offset`` skips that many (pagination)."""
        ...

    async def claimable_runs(self, workflows: Sequence[tuple[str, str]], limit: int) -> list[str]:
        """Ids of running runs of the given ``(workflow name, version)`` pairs that no live
        process runs (no owner, or its lease lapsed) and that have work due: a delivery
        not parked on an unanswered wait, a timed-out wait, or a passed run deadline.
        Worker processes poll this, then ``acquire_run``; oldest first."""
        ...

    async def read_waiters(self, run_id: str) -> list[WaiterRow]:
        """The run's ``wait_for_event`` waiters, answered or not, oldest first. Raises
        ``RunNotFoundError``."""
        ...

    async def read_timeline(self, run_id: str) -> list[TimelineRow]:
        """The run's history in time order: events entering it, attempts committing and
        failing. Raises ``RunNotFoundError``."""
        ...

    async def read_open_work(self, run_id: str) -> list[OpenWorkRow]:
        """The run's deliveries not done yet, by event then step. Raises
        ``RunNotFoundError``."""
        ...

    async def delete_runs(self, finished_before: float) -> int:
        """Delete every run that ended before ``finished_before`` (seconds since the
        epoch) with all its rows; running runs are never deleted. Returns how many."""
        ...

    async def read_stream(self, run_id: str, after: int = 0, limit: int = 1000) -> list[StreamRow]:
        """Durable stream rows with ``seq > after``, in order."""
        ...

    async def read_events(self, run_id: str) -> list[EventRow]:
        """Every event that entered the run, in order."""
        ...

    async def read_state(self, run_id: str) -> tuple[str, str]:
        """The run's committed state JSON and its state type key."""
        ...
