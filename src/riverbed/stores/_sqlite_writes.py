"""The write side of :class:`~riverbed.stores.sqlite.SqliteStore`, one function per
operation of :class:`~riverbed.stores.durable.DurableStore`.

Each function runs inside one ``BEGIN IMMEDIATE`` transaction opened by
:class:`~riverbed.stores._sqlite_conn.SqliteConnections` on the writer thread, so raising
anywhere rolls back everything the function wrote.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import uuid
from collections.abc import Sequence

from riverbed._engine import crashpoints
from riverbed.errors import FencedError, RunExistsError, RunFinishedError, RunOwnedError
from riverbed.stores._ownership import check_takeover
from riverbed.stores._sqlite_reads import not_found, read_snapshot, read_waiters, run_status
from riverbed.stores.base import RunRecord, RunStatus
from riverbed.stores.durable import (
    RUN_CHILD_TABLES,
    CommitRow,
    EventRow,
    RunSnapshot,
    SentBeforeWait,
    WaiterRow,
)


def _insert_event(conn: sqlite3.Connection, run_id: str, event: EventRow, now: float) -> None:
    conn.execute(
        "INSERT INTO events (run_id, seq, type_key, payload, source_step, client_event_id,"
        " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            run_id,
            event.seq,
            event.type_key,
            event.payload,
            event.source_step,
            event.client_event_id,
            now,
        ),
    )


def _insert_deliveries(
    conn: sqlite3.Connection,
    run_id: str,
    seq: int,
    targets: tuple[str, ...],
    lineage: int,
    now: float,
    claims: tuple[str, ...] = (),
    lease_until: float = 0.0,
) -> None:
    if not any(claims):
        conn.executemany(
            "INSERT INTO deliveries (run_id, event_seq, step, visible_at, lineage)"
            " VALUES (?, ?, ?, ?, ?)",
            [(run_id, seq, step, now, lineage) for step in targets],
        )
        return
    # Claimed by the committing owner for itself: running, attempt 1, its token, a lease.
    conn.executemany(
        "INSERT INTO deliveries (run_id, event_seq, step, visible_at, lineage, status,"
        " attempts, claim_token) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (run_id, seq, step, lease_until, lineage, "running", 1, token)
            if token
            else (run_id, seq, step, now, lineage, "pending", 0, None)
            for step, token in zip(targets, claims, strict=True)
        ],
    )


# -- writes --------------------------------------------------------------------------


def create_run(
    conn: sqlite3.Connection,
    record: RunRecord,
    start: EventRow,
    targets: tuple[str, ...],
    state: str,
    state_type: str,
    owner: str,
    deadline: float | None,
    now: float,
    claims: tuple[str, ...] = (),
    lease_until: float = 0.0,
) -> None:
    inserted = conn.execute(
        "INSERT INTO runs (run_id, workflow, status, state, state_type, next_seq, owner,"
        " owner_heartbeat, deadline, parent_run_id, created_at, updated_at, finished_at,"
        " result, error, workflow_version)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (run_id) DO NOTHING",
        (
            record.run_id,
            record.workflow,
            record.status.value,
            state,
            state_type,
            start.seq + 1,
            owner,
            now,
            deadline,
            record.parent_run_id,
            record.started_at,
            now,
            record.finished_at,
            record.result,
            record.error,
            record.workflow_version,
        ),
    ).rowcount
    if inserted != 1:
        raise RunExistsError(
            f"A run with id {record.run_id!r} already exists in this store. Use a new id, or "
            "resume the existing run instead of starting it again."
        )
    _insert_event(conn, record.run_id, start, now)
    _insert_deliveries(conn, record.run_id, start.seq, targets, 0, now, claims, lease_until)


def submit_event(
    conn: sqlite3.Connection,
    run_id: str,
    event: EventRow,
    targets: tuple[str, ...],
    resolves: tuple[str, ...],
    now: float,
) -> tuple[int, bool]:
    row = conn.execute("SELECT status, next_seq FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    if row is None:
        raise not_found(run_id)
    status, next_seq = RunStatus(row[0]), int(row[1])
    # Dedup before the status check: a retried submission of the event that ended the
    # run must get its original answer, not an error.
    if event.client_event_id is not None:
        seen = conn.execute(
            "SELECT seq FROM events WHERE run_id = ? AND client_event_id = ?",
            (run_id, event.client_event_id),
        ).fetchone()
        if seen is not None:
            return int(seen[0]), False
    if status.is_terminal:
        raise RunFinishedError(
            f"Run {run_id!r} has already finished ({status.value}); it accepts no more "
            "events. Start a new run instead."
        )
    # A submitter that is not the run's owner cannot know the next sequence number; it
    # passes seq <= 0 and the store allocates one.
    seq = event.seq if event.seq > 0 else next_seq
    _insert_event(conn, run_id, _with_seq(event, seq), now)
    _insert_deliveries(conn, run_id, seq, targets, 0, now)
    conn.execute(
        "UPDATE runs SET next_seq = max(next_seq, ?), updated_at = ? WHERE run_id = ?",
        (seq + 1, now, run_id),
    )
    record_answers(conn, run_id, [(seq, waiter_id) for waiter_id in resolves])
    return seq, True


def _with_seq(event: EventRow, seq: int) -> EventRow:
    if event.seq == seq:
        return event
    return EventRow(seq, event.type_key, event.payload, event.source_step, event.client_event_id)


def claim(
    conn: sqlite3.Connection,
    run_id: str,
    event_seq: int,
    step: str,
    token: str,
    visible_at: float,
) -> int:
    # No UPDATE ... RETURNING anywhere: it needs SQLite 3.35, and some Pythons still
    # link older system libraries.
    key = (run_id, event_seq, step)
    # The run's status is checked in the same statement; why a claim failed is looked up
    # only when it did.
    changed = conn.execute(
        "UPDATE deliveries SET status = 'running', attempts = attempts + 1, claim_token = ?,"
        " visible_at = ? WHERE run_id = ? AND event_seq = ? AND step = ? AND status != 'done'"
        " AND EXISTS (SELECT 1 FROM runs WHERE run_id = ? AND status = 'running')",
        (token, visible_at, *key, run_id),
    ).rowcount
    if changed != 1:
        if run_status(conn, run_id).is_terminal:  # RunNotFoundError for an unknown run
            raise FencedError(
                f"Run {run_id!r} has finished; delivery ({event_seq}, {step!r}) cannot be claimed."
            )
        raise FencedError(
            f"Delivery ({event_seq}, {step!r}) of run {run_id!r} is done or does not exist."
        )
    row = conn.execute(
        "SELECT attempts FROM deliveries WHERE run_id = ? AND event_seq = ? AND step = ?", key
    ).fetchone()
    return int(row[0])


def _update_run_sql(state: bool, status: bool) -> str:
    sql = (
        "UPDATE runs SET next_commit_seq = next_commit_seq + 1,"
        " stream_next = stream_next + ?, next_seq = max(next_seq, ?), updated_at = ?"
    )
    if state:
        sql += ", state = ?, state_version = state_version + 1"
    if status:
        sql += ", status = ?, result = ?, error = ?, finished_at = ?, owner = NULL"
    return sql + " WHERE run_id = ?"


#: a commit's UPDATE of its run row, by (changes the state, ends the run)
_UPDATE_RUN = {
    (state, status): _update_run_sql(state, status)
    for state in (False, True)
    for status in (False, True)
}


def commit(conn: sqlite3.Connection, run_id: str, c: CommitRow, now: float) -> int:
    """The step commit of research §4.4: fence, number, then write every effect."""
    # 1. fence: only the attempt holding the current claim token may commit.
    fenced = conn.execute(
        "UPDATE deliveries SET status = 'done', claim_token = NULL WHERE run_id = ?"
        " AND event_seq = ? AND step = ? AND status = 'running' AND claim_token = ?",
        (run_id, c.event_seq, c.step, c.claim_token),
    ).rowcount
    if fenced != 1:
        # Nothing was written yet; the caller's transaction is rolled back anyway.
        raise FencedError(
            f"Attempt {c.attempt} of delivery ({c.event_seq}, {c.step!r}) in run {run_id!r} "
            "no longer holds its claim; its effects were discarded."
        )
    # The owner allocates event numbers; never let next_seq fall behind what it used.
    next_seq = max([c.next_seq, *(p.event.seq + 1 for p in c.produced)])
    # 2. the run row: allocate the commit and stream numbers. The write lock (BEGIN
    # IMMEDIATE) serializes commits, so commit_seq order is commit order and the stream
    # stays gapless.
    row = conn.execute(
        "SELECT next_commit_seq, stream_next FROM runs WHERE run_id = ? AND status = 'running'",
        (run_id,),
    ).fetchone()
    if row is None:
        # Raising rolls the fence update back too: nothing of this attempt is written.
        raise FencedError(
            f"Run {run_id!r} has finished (or is gone); the commit of delivery "
            f"({c.event_seq}, {c.step!r}) was discarded."
        )
    # One UPDATE of the run row, with the state and the ending when the commit has them.
    params: tuple[object, ...] = (len(c.stream), next_seq, now)
    if c.state is not None:
        params += (c.state,)
    if c.status is not None:
        params += (c.status.value, c.result, c.error, now)
    conn.execute(_UPDATE_RUN[c.state is not None, c.status is not None], (*params, run_id))
    commit_seq, stream_base = int(row[0]), int(row[1])
    # 3. journal, routing, stream, buffers.
    conn.execute(
        "INSERT INTO commits (run_id, commit_seq, event_seq, step, attempt, claim_token,"
        " committed_at, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (run_id, commit_seq, c.event_seq, c.step, c.attempt, c.claim_token, now, c.started_at),
    )
    for produced in c.produced:
        _insert_event(conn, run_id, produced.event, now)
        _insert_deliveries(
            conn,
            run_id,
            produced.event.seq,
            produced.targets,
            produced.lineage,
            now,
            produced.claims,
            now + c.lease_seconds,
        )
    # executemany prepares its statement even for no rows; most commits have none.
    if c.stream:
        conn.executemany(
            "INSERT INTO stream (run_id, seq, commit_seq, type_key, payload)"
            " VALUES (?, ?, ?, ?, ?)",
            [(run_id, stream_base + i, commit_seq, t, p) for i, (t, p) in enumerate(c.stream)],
        )
    if c.collect_add:
        conn.executemany(
            "INSERT OR IGNORE INTO collected (run_id, step, buffer_id, event_seq)"
            " VALUES (?, ?, ?, ?)",
            [(run_id, *item) for item in c.collect_add],
        )
    if c.collect_remove:
        conn.executemany(
            "DELETE FROM collected WHERE run_id = ? AND step = ? AND buffer_id = ?"
            " AND event_seq = ?",
            [(run_id, *item) for item in c.collect_remove],
        )
    if c.resolves:
        record_answers(conn, run_id, c.resolves)
    # Crash tests: die with every effect written but the transaction not yet committed;
    # SQLite must then roll all of it back (the attempt runs again after a restart).
    crashpoints.hit("in_commit")
    return commit_seq


def fail_attempt(
    conn: sqlite3.Connection,
    run_id: str,
    event_seq: int,
    step: str,
    token: str,
    error: str,
    retry_at: float | None,
    attempt: int,
    started_at: float | None,
    now: float,
) -> None:
    # Fenced like a commit: a stale attempt must not reset a newer attempt's delivery.
    changed = conn.execute(
        "UPDATE deliveries SET last_error = ?,"
        " status = CASE WHEN ? IS NULL THEN status ELSE 'pending' END,"
        " claim_token = CASE WHEN ? IS NULL THEN claim_token ELSE NULL END,"
        " visible_at = coalesce(?, visible_at)"
        " WHERE run_id = ? AND event_seq = ? AND step = ? AND status = 'running'"
        " AND claim_token = ?",
        (error, retry_at, retry_at, retry_at, run_id, event_seq, step, token),
    ).rowcount
    if changed != 1:
        run_status(conn, run_id)  # RunNotFoundError for an unknown run
        raise FencedError(
            f"Delivery ({event_seq}, {step!r}) of run {run_id!r} is no longer claimed by this "
            "attempt; its failure was not recorded."
        )
    conn.execute(
        "INSERT OR REPLACE INTO attempt_failures (run_id, event_seq, step, attempt, started_at,"
        " failed_at, error, retry_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (run_id, event_seq, step, attempt, started_at, now, error, retry_at),
    )


def delete_runs(conn: sqlite3.Connection, finished_before: float) -> int:
    """Delete ended runs and every row that belongs to them (children first, so this does
    not depend on foreign-key cascades)."""
    doomed = "SELECT run_id FROM runs WHERE status != 'running' AND finished_at < ?"
    for table in RUN_CHILD_TABLES:
        conn.execute(f"DELETE FROM {table} WHERE run_id IN ({doomed})", (finished_before,))
    return int(
        conn.execute(
            "DELETE FROM runs WHERE status != 'running' AND finished_at < ?", (finished_before,)
        ).rowcount
    )


def register_waiter(
    conn: sqlite3.Connection,
    run_id: str,
    waiter: WaiterRow,
    now: float,
    announce: Sequence[tuple[str, str]] = (),
    sent: SentBeforeWait | None = None,
) -> WaiterRow:
    run_status(conn, run_id)
    inserted = conn.execute(
        "INSERT INTO waiters (run_id, waiter_id, step, event_type, requirements, created_at,"
        " timeout_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, waiter_id) DO NOTHING",
        (
            run_id,
            waiter.waiter_id,
            waiter.step,
            waiter.event_type,
            waiter.requirements,
            now,
            waiter.timeout_at,
        ),
    ).rowcount
    if inserted == 1 and announce:
        # What the step streamed before waiting, and its question, join the durable
        # stream with the waiter, after the rows of the commits so far and tagged with the
        # next commit (the waiting step's own), so a reader who connects later, or after a
        # restart, sees them.
        row = conn.execute(
            "SELECT next_commit_seq, stream_next FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        conn.executemany(
            "INSERT INTO stream (run_id, seq, commit_seq, type_key, payload)"
            " VALUES (?, ?, ?, ?, ?)",
            [
                (run_id, int(row[1]) + i, int(row[0]), key, payload)
                for i, (key, payload) in enumerate(announce)
            ],
        )
        conn.execute(
            "UPDATE runs SET stream_next = stream_next + ? WHERE run_id = ?",
            (len(announce), run_id),
        )
    if inserted == 1 and sent is not None and (sent.produced or sent.state is not None):
        fenced = conn.execute(
            "SELECT 1 FROM deliveries WHERE run_id = ? AND event_seq = ? AND step = ?"
            " AND status = 'running' AND claim_token = ?",
            (run_id, sent.event_seq, sent.step, sent.claim_token),
        ).fetchone()
        if fenced is None:
            raise FencedError(
                f"Delivery ({sent.event_seq}, {sent.step!r}) of run {run_id!r} is no longer "
                "claimed by this attempt; the events it sent before waiting were discarded."
            )
        if sent.state is not None:
            conn.execute(
                "UPDATE runs SET state = ?, state_version = state_version + 1 WHERE run_id = ?",
                (sent.state, run_id),
            )
        for produced in sent.produced:
            _insert_event(conn, run_id, produced.event, now)
            _insert_deliveries(
                conn,
                run_id,
                produced.event.seq,
                produced.targets,
                produced.lineage,
                now,
                produced.claims,
                now + sent.lease_seconds,
            )
        if sent.produced:
            conn.execute(
                "UPDATE runs SET next_seq = max(next_seq, ?) WHERE run_id = ?",
                (max(p.event.seq for p in sent.produced) + 1, run_id),
            )
    if inserted == 1 and waiter.answers:
        # The first committed one wins: record_answers leaves an answered waiter alone.
        record_answers(conn, run_id, [(seq, waiter.waiter_id) for seq in waiter.answers])
    stored = read_waiters(conn, run_id, waiter.waiter_id)[0]
    return dataclasses.replace(stored, new=inserted == 1)


def finish_run(
    conn: sqlite3.Connection,
    run_id: str,
    status: RunStatus,
    result: str | None,
    error: str | None,
    now: float,
) -> None:
    run_status(conn, run_id)
    # A run finishes once: a late timeout or cancel does not overwrite the real outcome.
    conn.execute(
        "UPDATE runs SET status = ?, result = ?, error = ?, finished_at = ?, updated_at = ?,"
        " owner = NULL WHERE run_id = ? AND status = 'running'",
        (status.value, result, error, now, now, run_id),
    )


def acquire_run(
    conn: sqlite3.Connection,
    run_id: str,
    owner: str,
    now: float,
    lease_seconds: float,
    claim: bool = False,
) -> RunSnapshot:
    row = conn.execute(
        "SELECT status, owner, owner_heartbeat FROM runs WHERE run_id = ?", (run_id,)
    ).fetchone()
    if row is None:
        raise not_found(run_id)
    check_takeover(run_id, RunStatus(row[0]), row[1], row[2], owner, now, lease_seconds)
    conn.execute(
        "UPDATE runs SET owner = ?, owner_heartbeat = ?, updated_at = ? WHERE run_id = ?",
        (owner, now, now, run_id),
    )
    tokens: dict[tuple[int, str], str] = {}
    if claim:
        # The deliveries due now (pending past their backoff, or left running by a process
        # that is gone) are claimed for the new owner, as claim() would one by one.
        due = conn.execute(
            "SELECT event_seq, step FROM deliveries WHERE run_id = ?"
            " AND status IN ('pending', 'running') AND (status = 'running' OR visible_at <= ?)",
            (run_id, now),
        ).fetchall()
        tokens = {(seq, step): uuid.uuid4().hex for seq, step in due}
        conn.executemany(
            "UPDATE deliveries SET status = 'running', attempts = attempts + 1,"
            " claim_token = ?, visible_at = ? WHERE run_id = ? AND event_seq = ? AND step = ?",
            [(t, now + lease_seconds, run_id, seq, step) for (seq, step), t in tokens.items()],
        )
    return read_snapshot(conn, run_id, tokens)


def release_run(
    conn: sqlite3.Connection,
    run_id: str,
    owner: str,
    now: float,
    unclaim: tuple[tuple[int, str, str], ...] = (),
) -> None:
    run_status(conn, run_id)
    conn.executemany(
        "UPDATE deliveries SET status = 'pending', attempts = max(attempts - 1, 0),"
        " claim_token = NULL, visible_at = ? WHERE run_id = ? AND event_seq = ? AND step = ?"
        " AND status = 'running' AND claim_token = ?",
        [(now, run_id, seq, step, token) for seq, step, token in unclaim],
    )
    conn.execute(
        "UPDATE runs SET owner = NULL, owner_heartbeat = NULL, updated_at = ?"
        " WHERE run_id = ? AND owner = ?",
        (now, run_id, owner),
    )


def heartbeat(conn: sqlite3.Connection, run_id: str, owner: str, now: float) -> None:
    changed = conn.execute(
        "UPDATE runs SET owner_heartbeat = ? WHERE run_id = ? AND owner = ?",
        (now, run_id, owner),
    ).rowcount
    if changed != 1:
        run_status(conn, run_id)
        raise RunOwnedError(
            f"Run {run_id!r} is no longer owned by {owner!r} (another process took it over "
            "or it was released); stop executing it here."
        )


def record_answers(
    conn: sqlite3.Connection, run_id: str, answers: Sequence[tuple[int, str]]
) -> None:
    """Mark waiters answered: ``(event seq, waiter id)`` pairs. The first answer wins (a
    waiter already answered keeps its event), and only an event in the journal answers."""
    conn.executemany(
        "UPDATE waiters SET resolved_seq = ? WHERE run_id = ? AND waiter_id = ?"
        " AND resolved_seq IS NULL"
        " AND EXISTS (SELECT 1 FROM events WHERE run_id = waiters.run_id AND seq = ?)",
        [(seq, run_id, waiter_id, seq) for seq, waiter_id in answers],
    )
