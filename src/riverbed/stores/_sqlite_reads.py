"""The read side of :class:`~riverbed.stores.sqlite.SqliteStore`: SQL that turns rows
back into the row types of :mod:`riverbed.stores.durable`.

Each function runs inside a transaction opened by
:class:`~riverbed.stores._sqlite_conn.SqliteConnections`, so multi-statement reads see one
consistent snapshot.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from typing import Any

from riverbed.errors import RunNotFoundError
from riverbed.stores.base import RunRecord, RunStatus
from riverbed.stores.durable import (
    CollectRow,
    DeliveryRow,
    EventRow,
    OpenWorkRow,
    RunSnapshot,
    StreamRow,
    TimelineRow,
    WaiterRow,
)

_RUN_COLUMNS = (
    "run_id, workflow, status, created_at, finished_at, result, error, parent_run_id,"
    " workflow_version"
)
#: what get_run and list_runs read: the record and who executes the run
_RECORD_COLUMNS = f"{_RUN_COLUMNS}, owner, owner_heartbeat"
_EVENT_COLUMNS = "e.seq, e.type_key, e.payload, e.source_step, e.client_event_id"


def not_found(run_id: str) -> RunNotFoundError:
    return RunNotFoundError(
        f"No run with id {run_id!r} in this SQLite store. Check the id and the database "
        "path; list the runs with `await store.list_runs()`."
    )


def run_status(conn: sqlite3.Connection, run_id: str) -> RunStatus:
    row = conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    if row is None:
        raise not_found(run_id)
    return RunStatus(row[0])


def event_row(row: Any, offset: int = 0) -> EventRow:
    seq, type_key, payload, source_step, client_event_id = row[offset : offset + 5]
    return EventRow(seq, type_key, payload, source_step, client_event_id)


def run_record(row: Any) -> RunRecord:
    run_id, workflow, status, created, finished, result, error, parent, version = row[:9]
    return RunRecord(
        run_id, workflow, RunStatus(status), created, finished, result, error, parent, version
    )


def listed_record(row: Any) -> RunRecord:
    """A run record with its owner (a row of ``_RECORD_COLUMNS``)."""
    owner, heartbeat = tuple(row)[9:11]
    return dataclasses.replace(run_record(row), owner=owner, owner_heartbeat=heartbeat)


def read_snapshot(
    conn: sqlite3.Connection, run_id: str, claims: dict[tuple[int, str], str] | None = None
) -> RunSnapshot:
    """What resuming the run needs; ``claims`` are the tokens of the deliveries the caller
    has just claimed, by ``(event_seq, step)``."""
    claims = claims or {}
    row = conn.execute(
        f"SELECT {_RUN_COLUMNS}, state, state_type, state_version, next_seq, stream_next,"
        " deadline, owner FROM runs WHERE run_id = ?",
        (run_id,),
    ).fetchone()
    if row is None:
        raise not_found(run_id)
    state, state_type, version, next_seq, stream_next, deadline, owner = row[9:]
    deliveries = tuple(
        DeliveryRow(d[0], d[1], d[2], d[3], d[4], d[5], event_row(d, 6), claims.get((d[0], d[1])))
        for d in conn.execute(
            "SELECT d.event_seq, d.step, d.status, d.attempts, d.lineage, d.visible_at,"
            f" {_EVENT_COLUMNS} FROM deliveries d JOIN events e"
            " ON e.run_id = d.run_id AND e.seq = d.event_seq"
            " WHERE d.run_id = ? AND d.status != 'done' ORDER BY d.event_seq, d.step",
            (run_id,),
        )
    )
    collected = tuple(
        CollectRow(c[0], c[1], event_row(c, 2))
        for c in conn.execute(
            f"SELECT c.step, c.buffer_id, {_EVENT_COLUMNS} FROM collected c JOIN events e"
            " ON e.run_id = c.run_id AND e.seq = c.event_seq"
            " WHERE c.run_id = ? ORDER BY c.step, c.buffer_id, c.event_seq",
            (run_id,),
        )
    )
    return RunSnapshot(
        record=run_record(row[:9]),
        state=state,
        state_type=state_type,
        next_seq=next_seq,
        deliveries=deliveries,
        collected=collected,
        waiters=tuple(read_waiters(conn, run_id)),
        stream_len=stream_next - 1,
        deadline=deadline,
        owner=owner,
        extra={"state_version": str(version)},
        stream=tuple(
            StreamRow(*r)
            for r in conn.execute(
                "SELECT seq, commit_seq, type_key, payload FROM stream WHERE run_id = ?"
                " ORDER BY seq",
                (run_id,),
            )
        ),
    )


def read_waiters(
    conn: sqlite3.Connection, run_id: str, waiter_id: str | None = None
) -> list[WaiterRow]:
    if waiter_id is None:
        run_status(conn, run_id)  # RunNotFoundError for an unknown run
    rows = conn.execute(
        f"SELECT w.waiter_id, w.step, w.event_type, w.requirements, {_EVENT_COLUMNS},"
        " w.timeout_at"
        " FROM waiters w LEFT JOIN events e ON e.run_id = w.run_id AND e.seq = w.resolved_seq"
        " WHERE w.run_id = ? AND (? IS NULL OR w.waiter_id = ?) ORDER BY w.created_at, w.rowid",
        (run_id, waiter_id, waiter_id),
    )
    return [
        WaiterRow(r[0], r[1], r[2], r[3], None if r[4] is None else event_row(r, 4), r[9])
        for r in rows
    ]


def get_run(conn: sqlite3.Connection, run_id: str) -> RunRecord:
    row = conn.execute(f"SELECT {_RECORD_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    if row is None:
        raise not_found(run_id)
    return listed_record(row)


def list_runs(
    conn: sqlite3.Connection,
    workflow: str | None,
    status: RunStatus | None,
    limit: int,
    offset: int = 0,
) -> list[RunRecord]:
    wanted = status.value if status is not None else None
    rows = conn.execute(
        f"SELECT {_RECORD_COLUMNS} FROM runs WHERE (? IS NULL OR workflow = ?)"
        " AND (? IS NULL OR status = ?) ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
        (workflow, workflow, wanted, wanted, limit, offset),
    )
    return [listed_record(row) for row in rows]


# Rows of one transaction share its time: a commit's produced events follow the commit.
_KIND_ORDER = {"failure": 0, "commit": 1, "event": 2}


def read_timeline(conn: sqlite3.Connection, run_id: str) -> list[TimelineRow]:
    run_status(conn, run_id)
    rows: list[TimelineRow] = [
        TimelineRow("event", at, seq, type_key=key, source_step=source)
        for seq, key, source, at in conn.execute(
            "SELECT seq, type_key, source_step, created_at FROM events WHERE run_id = ?",
            (run_id,),
        )
    ]
    rows.extend(
        TimelineRow("commit", at, seq, step, attempt, started_at=started, commit_seq=cseq)
        for cseq, seq, step, attempt, at, started in conn.execute(
            "SELECT commit_seq, event_seq, step, attempt, committed_at, started_at"
            " FROM commits WHERE run_id = ?",
            (run_id,),
        )
    )
    rows.extend(
        TimelineRow(
            "failure", at, seq, step, attempt, started_at=started, error=err, retry_at=retry
        )
        for seq, step, attempt, started, at, err, retry in conn.execute(
            "SELECT event_seq, step, attempt, started_at, failed_at, error, retry_at"
            " FROM attempt_failures WHERE run_id = ?",
            (run_id,),
        )
    )
    rows.sort(key=lambda r: (r.at, _KIND_ORDER[r.kind], r.event_seq, r.commit_seq or 0))
    return rows


def read_open_work(conn: sqlite3.Connection, run_id: str) -> list[OpenWorkRow]:
    run_status(conn, run_id)  # RunNotFoundError for an unknown run
    rows = conn.execute(
        "SELECT d.event_seq, d.step, d.status, d.attempts, d.visible_at, e.type_key"
        " FROM deliveries d JOIN events e ON e.run_id = d.run_id AND e.seq = d.event_seq"
        " WHERE d.run_id = ? AND d.status != 'done' ORDER BY d.event_seq, d.step",
        (run_id,),
    )
    return [OpenWorkRow(*row) for row in rows]


def read_stream(conn: sqlite3.Connection, run_id: str, after: int, limit: int) -> list[StreamRow]:
    run_status(conn, run_id)
    rows = conn.execute(
        "SELECT seq, commit_seq, type_key, payload FROM stream WHERE run_id = ? AND seq > ?"
        " ORDER BY seq LIMIT ?",
        (run_id, after, limit),
    )
    return [StreamRow(*row) for row in rows]


def read_events(conn: sqlite3.Connection, run_id: str) -> list[EventRow]:
    run_status(conn, run_id)
    rows = conn.execute(
        f"SELECT {_EVENT_COLUMNS} FROM events e WHERE e.run_id = ? ORDER BY e.seq", (run_id,)
    )
    return [event_row(row) for row in rows]


def read_state(conn: sqlite3.Connection, run_id: str) -> tuple[str, str]:
    row = conn.execute("SELECT state, state_type FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    if row is None:
        raise not_found(run_id)
    return str(row[0]), str(row[1])


# A run needs a process when nobody runs it (no owner, or the owner's heartbeat lapsed) and it
# has work: a delivery due (pending past its backoff, or left running by a process that is
# gone) whose step is not parked on an unanswered wait_for_event, a wait that timed out, or
# its run deadline.
_CLAIMABLE = """
SELECT r.run_id FROM runs r
WHERE r.status = 'running' AND r.workflow = ?
  AND (r.workflow_version IS NULL OR r.workflow_version = ?)
  AND (r.owner IS NULL OR r.owner_heartbeat IS NULL OR r.owner_heartbeat < ?)
  AND (
    (r.deadline IS NOT NULL AND r.deadline <= ?)
    OR EXISTS (
      SELECT 1 FROM waiters w WHERE w.run_id = r.run_id AND w.resolved_seq IS NULL
        AND w.timeout_at IS NOT NULL AND w.timeout_at <= ?)
    OR EXISTS (
      SELECT 1 FROM deliveries d WHERE d.run_id = r.run_id AND d.status != 'done'
        AND (d.status = 'running' OR d.visible_at <= ?)
        AND NOT EXISTS (
          SELECT 1 FROM waiters w WHERE w.run_id = d.run_id AND w.step = d.step
            AND w.resolved_seq IS NULL))
  )
ORDER BY r.updated_at LIMIT ?
"""


def claimable_runs(
    conn: sqlite3.Connection,
    workflows: tuple[tuple[str, str], ...],
    limit: int,
    now: float,
    lease_seconds: float,
) -> list[str]:
    found: list[str] = []
    for name, version in workflows:
        if len(found) >= limit:
            break
        rows = conn.execute(
            _CLAIMABLE, (name, version, now - lease_seconds, now, now, now, limit - len(found))
        )
        found.extend(row[0] for row in rows)
    return found
