"""Reading a durable run back for people: its record, state, history and stream.

``riverbed runs show``, the HTTP server and the inspector page all show a run through
:func:`read_run`, so they agree on what happened. Nothing here imports a class by a name read
from the store: payloads stay JSON, labelled with their type's name.

    details = await read_run(store, run_id)
    print(details.record.status, details.state)
    for attempt in details.attempts:
        print(attempt.step, attempt.outcome, attempt.duration)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from riverbed._tagged_json import to_plain
from riverbed.events import InputRequiredEvent
from riverbed.serialization import defined_subclasses, type_key
from riverbed.stores.base import RunRecord, RunStatus
from riverbed.stores.durable import DurableStore, TimelineRow

__all__ = [
    "AttemptView",
    "EventView",
    "RunDetails",
    "WaitView",
    "WorkView",
    "read_run",
    "waiting_runs",
    "waits_from_outside",
    "record_to_dict",
    "type_name",
]


def type_name(type_key: str) -> str:
    """The class name in a stored type key (``pkg.module.Outer.Name`` -> ``Name``)."""
    return type_key.rsplit(".", 1)[-1]


def _loads(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text  # stored by an older version as plain text: show it as it is


@dataclass(frozen=True)
class EventView:
    """An event of the run (or of its durable stream), with its payload as JSON data."""

    seq: int
    type: str
    type_key: str
    data: Any
    #: the step that produced it; None for the start event and events sent from outside
    source_step: str | None = None
    client_event_id: str | None = None


@dataclass(frozen=True)
class AttemptView:
    """One attempt of a step on one event: committed, or failed (and maybe retried)."""

    step: str
    event_seq: int
    attempt: int | None
    outcome: str  # committed | retrying | failed
    ended_at: float
    started_at: float | None = None
    error: str | None = None
    retry_at: float | None = None

    @property
    def duration(self) -> float | None:
        """Seconds the attempt ran, when its start is known."""
        return None if self.started_at is None else max(0.0, self.ended_at - self.started_at)


@dataclass(frozen=True)
class WaitView:
    """A step waiting in ``ctx.wait_for_event`` for an event nobody has sent yet."""

    waiter_id: str
    step: str
    #: the class name of the event it waits for, and its stored type key
    event_type: str
    event_type_key: str
    #: attribute -> value the event must match
    requirements: Any
    #: when the wait times out (seconds since the epoch), or None
    timeout_at: float | None = None


@dataclass(frozen=True)
class WorkView:
    """A step not done with an event yet: ``running`` (an attempt holds it) or ``pending``
    (to run, after ``not_before`` when a retry backs off)."""

    step: str
    event_seq: int
    event_type: str
    event_type_key: str
    status: str
    #: attempts started so far
    attempts: int
    #: pending: when it may run (a retry backoff); running: when the attempt's claim lapses
    not_before: float


@dataclass(frozen=True)
class RunDetails:
    """Everything a store knows about one run, ready to show."""

    record: RunRecord
    state: Any
    state_type: str
    #: the run's result as JSON data (None while it runs or if it failed)
    result: Any
    timeline: list[TimelineRow]
    events: list[EventView]
    stream: list[EventView]
    #: the waits not answered yet (empty once the run has ended)
    waiting: list[WaitView] = field(default_factory=list)
    #: the steps still to run or running (empty once the run has ended)
    open_work: list[WorkView] = field(default_factory=list)

    @property
    def question(self) -> EventView | None:
        """The last question the run streamed (an ``InputRequiredEvent``), if any."""
        questions = _question_keys()
        for event in reversed(self.stream):
            if event.type_key in questions:
                return event
        return None

    @property
    def waiting_for_input(self) -> bool:
        """The run asked for input and has nothing else to do: a step returned (or
        streamed) an ``InputRequiredEvent`` and no step runs, is due, or waits in
        ``wait_for_event``. The answer (a ``HumanResponseEvent``, usually) continues it."""
        return (
            not self.record.status.is_terminal
            and not self.open_work
            and not self.waiting
            and self.question is not None
        )

    @property
    def given_up(self) -> set[tuple[int, str, int | None]]:
        """(event seq, step, attempt) of attempts that failed for good. Such an attempt
        also has a commit row (it records the failure: the run's end, or the event a
        ``@catch_error`` handler gets), which is not another attempt."""
        return {
            (row.event_seq, row.step or "", row.attempt)
            for row in self.timeline
            if row.kind == "failure" and row.retry_at is None
        }

    @property
    def attempts(self) -> list[AttemptView]:
        """Every recorded attempt, in the order they ended."""
        given_up = self.given_up
        return [
            AttemptView(
                step=row.step or "",
                event_seq=row.event_seq,
                attempt=row.attempt,
                outcome=_outcome(row),
                ended_at=row.at,
                started_at=row.started_at,
                error=row.error,
                retry_at=row.retry_at,
            )
            for row in self.timeline
            if row.kind == "failure"
            or (
                row.kind == "commit"
                and (row.event_seq, row.step or "", row.attempt) not in given_up
            )
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data: ``json.dumps(details.to_dict())`` works."""
        return {
            "run": record_to_dict(self.record),
            "state": self.state,
            "state_type": self.state_type,
            "result": self.result,
            "timeline": [{**asdict(row), "duration": row.duration} for row in self.timeline],
            "attempts": [{**asdict(a), "duration": a.duration} for a in self.attempts],
            "events": [asdict(e) for e in self.events],
            "stream": [asdict(e) for e in self.stream],
            "waiting": [asdict(w) for w in self.waiting],
            "open_work": [asdict(w) for w in self.open_work],
            "waiting_for_input": self.waiting_for_input,
        }


async def waits_from_outside(
    store: DurableStore, run_id: str, record: RunRecord | None = None
) -> bool:
    """Whether a running run needs an event from outside to go on: no step of it is running
    or due, except steps suspended in ``wait_for_event``, and it waits in one of them or
    asked with a returned ``InputRequiredEvent``. (Its process may be gone: the answer,
    sent by run id, continues it.) ``record``: the run's record, if the caller has it."""
    if record is None:
        record = await store.get_run(run_id)
    if record.status.is_terminal:
        return False
    work = await store.read_open_work(run_id)
    if any(item.status != "running" for item in work):
        return False  # a step is due (the usual answer for a busy run: one read)
    waits = {w.step for w in await store.read_waiters(run_id) if w.resolved is None}
    if any(item.step not in waits for item in work):
        return False  # a step runs
    if waits:
        return True
    after, questions = 0, _question_keys()
    while rows := await store.read_stream(run_id, after, 1000):
        if any(row.type_key in questions for row in rows):
            return True
        after = rows[-1].seq
    return False


async def waiting_runs(
    store: DurableStore, workflow: str | None = None, limit: int = 50, offset: int = 0
) -> list[RunRecord]:
    """The running runs that wait for an event from outside (:func:`waits_from_outside`),
    newest first; running runs are read a page at a time and each is looked at."""
    found: list[RunRecord] = []
    skipped, page, start = 0, 200, 0
    while len(found) < limit:
        batch = await store.list_runs(
            workflow=workflow, status=RunStatus.RUNNING, limit=page, offset=start
        )
        for record in batch:
            if len(found) < limit and await waits_from_outside(store, record.run_id, record):
                if skipped < offset:
                    skipped += 1
                else:
                    found.append(record)
        if len(batch) < page:
            break
        start += page
    return found


def _question_keys() -> frozenset[str]:
    """Type keys of ``InputRequiredEvent`` and the subclasses this process has defined (the
    workflow's own question types, when it is loaded; nothing is imported). Computed once
    per reading, then each stored event is a set lookup."""
    return frozenset(type_key(cls) for cls in defined_subclasses(InputRequiredEvent))


def _outcome(row: TimelineRow) -> str:
    if row.kind == "commit":
        return "committed"
    return "retrying" if row.retry_at is not None else "failed"


def record_to_dict(record: RunRecord) -> dict[str, Any]:
    """A run record as JSON data; ``result`` decoded from its stored JSON."""
    return {
        "run_id": record.run_id,
        "workflow": record.workflow,
        "status": record.status.value,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "result": _loads(record.result) if isinstance(record.result, str) else record.result,
        "error": record.error,
        "parent_run_id": record.parent_run_id,
        "owner": record.owner,
        "owner_heartbeat": record.owner_heartbeat,
    }


async def read_run(store: DurableStore, run_id: str, *, stream_limit: int = 10_000) -> RunDetails:
    """Read a run from a durable store without running it. Raises ``RunNotFoundError``.

    The reads are separate transactions: for a run that is still going, later parts may
    include a little more than earlier ones (never less).
    """
    record = await store.get_run(run_id)
    state, state_type = await store.read_state(run_id)
    timeline = await store.read_timeline(run_id)
    events = [
        EventView(
            e.seq,
            type_name(e.type_key),
            e.type_key,
            _loads(e.payload),
            e.source_step,
            e.client_event_id,
        )
        for e in await store.read_events(run_id)
    ]
    stream = [
        EventView(s.seq, type_name(s.type_key), s.type_key, _loads(s.payload))
        for s in await store.read_stream(run_id, 0, stream_limit)
    ]
    result = _loads(record.result) if isinstance(record.result, str) else record.result
    waiting: list[WaitView] = []
    open_work: list[WorkView] = []
    if not record.status.is_terminal:
        waiting = [
            WaitView(
                w.waiter_id,
                w.step,
                type_name(w.event_type),
                w.event_type,
                _loads(w.requirements),
                w.timeout_at,
            )
            for w in await store.read_waiters(run_id)
            if w.resolved is None
        ]
        open_work = [
            WorkView(
                w.step,
                w.event_seq,
                type_name(w.type_key),
                w.type_key,
                w.status,
                w.attempts,
                w.visible_at,
            )
            for w in await store.read_open_work(run_id)
        ]
    return RunDetails(
        record,
        to_plain(_loads(state)),
        state_type,
        result,
        timeline,
        events,
        stream,
        waiting,
        open_work,
    )
