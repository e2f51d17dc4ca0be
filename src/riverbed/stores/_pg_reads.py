"""The read side of :class:`~riverbed.stores.postgres.PostgresStore`: SQL that turns rows
back into the row types of :mod:`riverbed.stores.durable`, and the memo table.

Reads that take several statements run in a read-only ``REPEATABLE READ`` transaction (one
snapshot); inside a write transaction they see what that transaction locked and wrote.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from riverbed.errors import RunNotFoundError
from riverbed.stores._ownership import check_takeover
from riverbed.stores._pg_conn import PgConn
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
        f"No run with id {run_id!r} in this PostgreSQL store. Check the id, the database and "
        "the schema (?schema=... in the URL); list the runs with `await store.list_runs()`."
    )


async def run_status(conn: PgConn, run_id: str) -> RunStatus:
    status = await conn.fetchval("SELECT status FROM runs WHERE run_id = $1", run_id)
    if status is None:
        raise not_found(run_id)
    return RunStatus(status)


def event_row(row: Any, offset: int = 0) -> EventRow:
    seq, type_key, payload, source_step, client_event_id = tuple(row)[offset : offset + 5]
    return EventRow(seq, type_key, payload, source_step, client_event_id)


def run_record(row: Any) -> RunRecord:
    run_id, workflow, status, created, finished, result, error, parent, version = tuple(row)[:9]
    return RunRecord(
        run_id, workflow, RunStatus(status), created, finished, result, error, parent, version
    )


def listed_record(row: Any) -> RunRecord:
    """A run record with its owner (a row of ``_RECORD_COLUMNS``)."""
    owner, heartbeat = tuple(row)[9:11]
    return dataclasses.replace(run_record(row), owner=owner, owner_heartbeat=heartbeat)


#: the run row's columns a snapshot needs
SNAPSHOT_COLUMNS = (
    f"{_RUN_COLUMNS}, state, state_type, state_version, next_seq, stream_next, deadline, owner"
)


#: a worker taking a run nobody runs (the usual case), in one statement and one round trip:
#: take the run's row, claim its due deliveries ($5: lease end, or null: claim none), and
#: read the rest of the snapshot as JSON arrays. When the run cannot be taken this way, the
#: row has only the run's status, owner and heartbeat as they were (all null: no such run),
#: so a worker that lost the race learns it without another round trip. The take need not
#: wait for the WAL flush (see acquire_run).
_TAKE_SNAPSHOT = f"""
WITH taken AS (
  UPDATE runs SET owner = $2, owner_heartbeat = $3, updated_at = $3
  WHERE run_id = $1 AND status = 'running'
    AND (owner IS NULL OR owner = $2 OR owner_heartbeat IS NULL
         OR owner_heartbeat <= $3::float8 - $4::float8)
  RETURNING {SNAPSHOT_COLUMNS}
), claimed AS (
  UPDATE deliveries SET status = 'running', attempts = attempts + 1,
    claim_token = gen_random_uuid()::text, visible_at = $5
  WHERE $5::float8 IS NOT NULL AND run_id = $1 AND EXISTS (SELECT 1 FROM taken)
    AND status IN ('pending', 'running') AND (status = 'running' OR visible_at <= $3)
  RETURNING event_seq, step, attempts, visible_at, claim_token
)
SELECT t.*,
  CASE WHEN t.run_id IS NULL THEN NULL
       ELSE set_config('synchronous_commit', 'off', true) END,
  (SELECT json_agg(json_build_array(
     d.event_seq, d.step, CASE WHEN c.step IS NULL THEN d.status ELSE 'running' END,
     coalesce(c.attempts, d.attempts), d.lineage, coalesce(c.visible_at, d.visible_at),
     {_EVENT_COLUMNS}, c.claim_token) ORDER BY d.event_seq, d.step)
   FROM deliveries d JOIN events e ON e.run_id = d.run_id AND e.seq = d.event_seq
   LEFT JOIN claimed c ON c.event_seq = d.event_seq AND c.step = d.step
   WHERE t.run_id IS NOT NULL AND d.run_id = $1 AND d.status <> 'done'),
  (SELECT json_agg(json_build_array(c.step, c.buffer_id, {_EVENT_COLUMNS})
     ORDER BY c.step, c.buffer_id, c.event_seq)
   FROM collected c JOIN events e ON e.run_id = c.run_id AND e.seq = c.event_seq
   WHERE t.run_id IS NOT NULL AND c.run_id = $1),
  (SELECT json_agg(json_build_array(w.waiter_id, w.step, w.event_type, w.requirements,
     {_EVENT_COLUMNS}, w.timeout_at) ORDER BY w.created_at, w.created_order)
   FROM waiters w LEFT JOIN events e ON e.run_id = w.run_id AND e.seq = w.resolved_seq
   WHERE t.run_id IS NOT NULL AND w.run_id = $1),
  (SELECT json_agg(json_build_array(s.seq, s.commit_seq, s.type_key, s.payload)
     ORDER BY s.seq)
   FROM stream s WHERE t.run_id IS NOT NULL AND s.run_id = $1),
  r.status, r.owner, r.owner_heartbeat
FROM (SELECT 1) AS one LEFT JOIN taken t ON true LEFT JOIN runs r ON r.run_id = $1
"""


async def take_snapshot(
    conn: PgConn, run_id: str, owner: str, now: float, lease_seconds: float, claim: bool
) -> RunSnapshot | None:
    """Take a run nobody runs and read its snapshot in one statement (``_TAKE_SNAPSHOT``).
    Raises ``RunNotFoundError``, ``RunFinishedError`` or ``RunOwnedError`` (a live owner);
    returns None when the run can be taken only over a dead owner of this host (that
    takes a transaction). Safe to run again after a lost reply."""
    until = now + lease_seconds if claim else None
    row = tuple(await conn.fetchrow(_TAKE_SNAPSHOT, run_id, owner, now, lease_seconds, until))
    if row[0] is None:
        status, current, heartbeat = row[21:24]
        if status is None:
            raise not_found(run_id)
        check_takeover(run_id, RunStatus(status), current, heartbeat, owner, now, lease_seconds)
        return None
    state, state_type, version, next_seq, stream_next, deadline, owner_ = row[9:16]
    deliveries, collected, waiters, stream = (json.loads(v or "[]") for v in row[17:21])
    return RunSnapshot(
        record=run_record(row),
        state=state,
        state_type=state_type,
        next_seq=next_seq,
        deliveries=tuple(
            DeliveryRow(d[0], d[1], d[2], d[3], d[4], d[5], event_row(d, 6), d[11])
            for d in deliveries
        ),
        collected=tuple(CollectRow(c[0], c[1], event_row(c, 2)) for c in collected),
        waiters=tuple(
            WaiterRow(w[0], w[1], w[2], w[3], None if w[4] is None else event_row(w, 4), w[9])
            for w in waiters
        ),
        stream_len=stream_next - 1,
        deadline=deadline,
        owner=owner_,
        extra={"state_version": str(version)},
        stream=tuple(StreamRow(*r) for r in stream),
    )


async def read_waiters(
    conn: PgConn, run_id: str, waiter_id: str | None = None, checked: bool = False
) -> list[WaiterRow]:
    """The run's waiters (``waiter_id``: that one). Raises ``RunNotFoundError`` for an
    unknown run, unless the caller ``checked`` that it exists."""
    if waiter_id is None and not checked:
        await run_status(conn, run_id)  # RunNotFoundError for an unknown run
    rows = await conn.fetch(
        f"SELECT w.waiter_id, w.step, w.event_type, w.requirements, {_EVENT_COLUMNS},"
        " w.timeout_at"
        " FROM waiters w LEFT JOIN events e ON e.run_id = w.run_id AND e.seq = w.resolved_seq"
        " WHERE w.run_id = $1 AND ($2::text IS NULL OR w.waiter_id = $2)"
        " ORDER BY w.created_at, w.created_order",
        run_id,
        waiter_id,
    )
    return [
        WaiterRow(r[0], r[1], r[2], r[3], None if r[4] is None else event_row(r, 4), r[9])
        for r in rows
    ]


async def read_open_work(conn: PgConn, run_id: str) -> list[OpenWorkRow]:
    await run_status(conn, run_id)  # RunNotFoundError for an unknown run
    rows = await conn.fetch(
        "SELECT d.event_seq, d.step, d.status, d.attempts, d.visible_at, e.type_key"
        " FROM deliveries d JOIN events e ON e.run_id = d.run_id AND e.seq = d.event_seq"
        " WHERE d.run_id = $1 AND d.status != 'done' ORDER BY d.event_seq, d.step",
        run_id,
    )
    return [OpenWorkRow(*row) for row in rows]


async def get_run(conn: PgConn, run_id: str) -> RunRecord:
    row = await conn.fetchrow(f"SELECT {_RECORD_COLUMNS} FROM runs WHERE run_id = $1", run_id)
    if row is None:
        raise not_found(run_id)
    return listed_record(row)


async def list_runs(
    conn: PgConn, workflow: str | None, status: RunStatus | None, limit: int, offset: int = 0
) -> list[RunRecord]:
    wanted = status.value if status is not None else None
    rows = await conn.fetch(
        f"SELECT {_RECORD_COLUMNS} FROM runs WHERE ($1::text IS NULL OR workflow = $1)"
        " AND ($2::text IS NULL OR status = $2)"
        " ORDER BY created_at DESC, created_order DESC LIMIT $3 OFFSET $4",
        workflow,
        wanted,
        limit,
        offset,
    )
    return [listed_record(row) for row in rows]


# A run needs a process when nobody runs it (no owner, or the owner's heartbeat lapsed) and it
# has work: a delivery due (pending past its backoff, or left running by a process that is
# gone) whose step is not parked on an unanswered wait_for_event, a wait that timed out, or
# its run deadline. The same rule as SQLite's; taking one is acquire_run's job (row lock).
#: a run of alias ``r`` has work due at ``{now}``: a passed deadline, a timed-out wait, or
#: a delivery not done and not parked on an unanswered wait (running ones were cut short)
WORK_DUE = """(
    (r.deadline IS NOT NULL AND r.deadline <= {now})
    OR EXISTS (
      SELECT 1 FROM waiters w WHERE w.run_id = r.run_id AND w.resolved_seq IS NULL
        AND w.timeout_at IS NOT NULL AND w.timeout_at <= {now})
    OR EXISTS (
      SELECT 1 FROM deliveries d WHERE d.run_id = r.run_id AND d.status <> 'done'
        AND (d.status = 'running' OR d.visible_at <= {now})
        AND NOT EXISTS (
          SELECT 1 FROM waiters w WHERE w.run_id = d.run_id AND w.step = d.step
            AND w.resolved_seq IS NULL)))"""

_CLAIMABLE = f"""
SELECT r.run_id FROM runs r
WHERE r.status = 'running'
  AND EXISTS (
    SELECT 1 FROM unnest($1::text[], $2::text[]) AS w (name, version)
    WHERE r.workflow = w.name AND (r.workflow_version IS NULL OR r.workflow_version = w.version))
  AND (r.owner IS NULL OR r.owner_heartbeat IS NULL OR r.owner_heartbeat < $3)
  AND {WORK_DUE.format(now="$4")}
ORDER BY r.updated_at, r.created_order LIMIT $5
"""


async def claimable_runs(
    conn: PgConn,
    workflows: tuple[tuple[str, str], ...],
    limit: int,
    now: float,
    lease_seconds: float,
) -> list[str]:
    if not workflows or limit <= 0:
        return []
    rows = await conn.fetch(
        _CLAIMABLE,
        [name for name, _ in workflows],
        [version for _, version in workflows],
        now - lease_seconds,
        now,
        limit,
    )
    return [str(row[0]) for row in rows]


# Rows of one transaction share its time: a commit's produced events follow the commit.
_KIND_ORDER = {"failure": 0, "commit": 1, "event": 2}


async def read_timeline(conn: PgConn, run_id: str) -> list[TimelineRow]:
    await run_status(conn, run_id)
    rows: list[TimelineRow] = [
        TimelineRow("event", at, seq, type_key=key, source_step=source)
        for seq, key, source, at in await conn.fetch(
            "SELECT seq, type_key, source_step, created_at FROM events WHERE run_id = $1",
            run_id,
        )
    ]
    rows.extend(
        TimelineRow("commit", at, seq, step, attempt, started_at=started, commit_seq=cseq)
        for cseq, seq, step, attempt, at, started in await conn.fetch(
            "SELECT commit_seq, event_seq, step, attempt, committed_at, started_at"
            " FROM commits WHERE run_id = $1",
            run_id,
        )
    )
    rows.extend(
        TimelineRow(
            "failure", at, seq, step, attempt, started_at=started, error=err, retry_at=retry
        )
        for seq, step, attempt, started, at, err, retry in await conn.fetch(
            "SELECT event_seq, step, attempt, started_at, failed_at, error, retry_at"
            " FROM attempt_failures WHERE run_id = $1",
            run_id,
        )
    )
    rows.sort(key=lambda r: (r.at, _KIND_ORDER[r.kind], r.event_seq, r.commit_seq or 0))
    return rows


async def read_stream(conn: PgConn, run_id: str, after: int, limit: int) -> list[StreamRow]:
    await run_status(conn, run_id)
    rows = await conn.fetch(
        "SELECT seq, commit_seq, type_key, payload FROM stream WHERE run_id = $1 AND seq > $2"
        " ORDER BY seq LIMIT $3",
        run_id,
        after,
        limit,
    )
    return [StreamRow(*row) for row in rows]


async def read_events(conn: PgConn, run_id: str) -> list[EventRow]:
    await run_status(conn, run_id)
    rows = await conn.fetch(
        f"SELECT {_EVENT_COLUMNS} FROM events e WHERE e.run_id = $1 ORDER BY e.seq", run_id
    )
    return [event_row(row) for row in rows]


async def read_state(conn: PgConn, run_id: str) -> tuple[str, str]:
    row = await conn.fetchrow("SELECT state, state_type FROM runs WHERE run_id = $1", run_id)
    if row is None:
        raise not_found(run_id)
    return str(row[0]), str(row[1])


# -- memos (ctx.memo) ------------------------------------------------------------------


async def get_memo(conn: PgConn, run_id: str, invocation: str, name: str) -> str | None:
    value = await conn.fetchval(
        "SELECT value FROM memos WHERE run_id = $1 AND invocation = $2 AND name = $3",
        run_id,
        invocation,
        name,
    )
    return None if value is None else str(value)


async def put_memo(
    conn: PgConn, run_id: str, invocation: str, name: str, value: str, now: float
) -> str:
    await run_status(conn, run_id)
    # The first value written wins: a concurrent or zombie attempt gets the same answer.
    stored = await conn.fetchval(
        "INSERT INTO memos (run_id, invocation, name, value, created_at)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (run_id, invocation, name) DO NOTHING"
        " RETURNING value",
        run_id,
        invocation,
        name,
        value,
        now,
    )
    if stored is None:
        stored = await get_memo(conn, run_id, invocation, name)
    assert stored is not None
    return str(stored)
