"""Run-level writes of :class:`~riverbed.stores.postgres.PostgresStore`: waiters, owners
(acquire, release, heartbeat), ending runs and deleting old ones. Each function runs in one
transaction; the step-level writes (claims, commits, outside events) are in
:mod:`riverbed.stores._pg_writes`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from riverbed.errors import RunOwnedError
from riverbed.stores._ownership import check_takeover
from riverbed.stores._pg_conn import PgConn
from riverbed.stores._pg_reads import (
    not_found,
    read_waiters,
    run_status,
    take_snapshot,
)
from riverbed.stores._pg_writes import count, insert_sent, notify_if_claimable
from riverbed.stores.base import RunStatus
from riverbed.stores.durable import RUN_CHILD_TABLES, RunSnapshot, SentBeforeWait, WaiterRow


async def register_waiter(
    conn: PgConn,
    run_id: str,
    waiter: WaiterRow,
    now: float,
    announce: Sequence[tuple[str, str]] = (),
    sent: SentBeforeWait | None = None,
) -> WaiterRow:
    # Locked like a commit: the announced question takes the run's next stream number.
    row = await conn.fetchrow(
        "SELECT next_commit_seq, stream_next FROM runs WHERE run_id = $1 FOR UPDATE", run_id
    )
    if row is None:
        raise not_found(run_id)
    inserted = count(
        await conn.execute(
            "INSERT INTO waiters (run_id, waiter_id, step, event_type, requirements,"
            " created_at, timeout_at) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            " ON CONFLICT (run_id, waiter_id) DO NOTHING",
            run_id,
            waiter.waiter_id,
            waiter.step,
            waiter.event_type,
            waiter.requirements,
            now,
            waiter.timeout_at,
        )
    )
    if inserted == 1 and announce:
        # What the step streamed before waiting, and its question, join the durable
        # stream with the waiter, tagged with the next commit (the waiting step's own), so
        # a reader who connects later sees them.
        await conn.executemany(
            "INSERT INTO stream (run_id, seq, commit_seq, type_key, payload)"
            " VALUES ($1, $2, $3, $4, $5)",
            [
                (run_id, int(row[1]) + i, int(row[0]), key, payload)
                for i, (key, payload) in enumerate(announce)
            ],
        )
        await conn.execute(
            "UPDATE runs SET stream_next = stream_next + $2 WHERE run_id = $1",
            run_id,
            len(announce),
        )
    if inserted == 1 and sent is not None and (sent.produced or sent.state is not None):
        await insert_sent(conn, run_id, sent, now)
    if inserted == 1 and waiter.answers:
        # The first of them that is committed answers it.
        first = await conn.fetchval(
            "SELECT a.seq FROM unnest($2::bigint[]) WITH ORDINALITY AS a (seq, i)"
            " WHERE EXISTS (SELECT 1 FROM events e WHERE e.run_id = $1 AND e.seq = a.seq)"
            " ORDER BY a.i LIMIT 1",
            run_id,
            list(waiter.answers),
        )
        if first is not None:
            await record_answers(conn, run_id, [(int(first), waiter.waiter_id)])
    stored = (await read_waiters(conn, run_id, waiter.waiter_id))[0]
    return dataclasses.replace(stored, new=inserted == 1)


# -- owners ----------------------------------------------------------------------------


async def finish_run(
    conn: PgConn,
    run_id: str,
    status: RunStatus,
    result: str | None,
    error: str | None,
    now: float,
) -> None:
    # A run finishes once: a late timeout or cancel does not overwrite the real outcome.
    changed = await conn.execute(
        "UPDATE runs SET status = $2, result = $3, error = $4, finished_at = $5,"
        " updated_at = $5, owner = NULL WHERE run_id = $1 AND status = 'running'",
        run_id,
        status.value,
        result,
        error,
        now,
    )
    if count(changed) == 0:
        await run_status(conn, run_id)


async def take_over(
    conn: PgConn, run_id: str, owner: str, now: float, lease_seconds: float, claim: bool = False
) -> RunSnapshot:
    """Take a run whose owner ``take_snapshot`` could not displace (a process of this host
    that is gone, but whose lease has not lapsed), in the caller's transaction: the row is
    locked and checked, the owner replaced, then ``take_snapshot`` (which now matches, the
    owner being ``owner``) claims and reads the snapshot."""
    row = await conn.fetchrow(
        "SELECT status, owner, owner_heartbeat FROM runs WHERE run_id = $1 FOR UPDATE", run_id
    )
    if row is None:
        raise not_found(run_id)
    check_takeover(run_id, RunStatus(row[0]), row[1], row[2], owner, now, lease_seconds)
    await conn.execute(
        "UPDATE runs SET owner = $2, owner_heartbeat = $3, updated_at = $3 WHERE run_id = $1",
        run_id,
        owner,
        now,
    )
    snapshot = await take_snapshot(conn, run_id, owner, now, lease_seconds, claim)
    assert snapshot is not None  # the row is ours and locked by this transaction
    return snapshot


async def release_run(
    conn: PgConn,
    run_id: str,
    owner: str,
    now: float,
    channel: str | None = None,
    unclaim: tuple[tuple[int, str, str], ...] = (),
) -> None:
    if unclaim:
        await conn.execute(
            "UPDATE deliveries d SET status = 'pending', attempts = greatest(d.attempts - 1, 0),"
            " claim_token = NULL, visible_at = $2 FROM unnest($3::bigint[], $4::text[],"
            " $5::text[]) AS u (s, st, tok) WHERE d.run_id = $1 AND d.event_seq = u.s"
            " AND d.step = u.st AND d.status = 'running' AND d.claim_token = u.tok",
            run_id,
            now,
            [item[0] for item in unclaim],
            [item[1] for item in unclaim],
            [item[2] for item in unclaim],
        )
    changed = await conn.execute(
        "UPDATE runs SET owner = NULL, owner_heartbeat = NULL, updated_at = $3"
        " WHERE run_id = $1 AND owner = $2",
        run_id,
        owner,
        now,
    )
    if count(changed) == 0:
        await run_status(conn, run_id)
    elif channel is not None:
        # Submitted (created, then released), parked with work due, or given up at
        # shutdown: wake a worker. A run parked on a human's answer has none due.
        await notify_if_claimable(conn, run_id, channel, now, 0.0)


async def heartbeat(conn: PgConn, run_id: str, owner: str, now: float) -> None:
    changed = await conn.execute(
        "UPDATE runs SET owner_heartbeat = $3 WHERE run_id = $1 AND owner = $2",
        run_id,
        owner,
        now,
    )
    if count(changed) != 1:
        await run_status(conn, run_id)
        raise RunOwnedError(
            f"Run {run_id!r} is no longer owned by {owner!r} (another process took it over "
            "or it was released); stop executing it here."
        )


async def delete_runs(conn: PgConn, finished_before: float) -> int:
    """Delete ended runs and every row that belongs to them (children first, so this does
    not depend on foreign-key cascades). Running runs are never deleted."""
    doomed = "SELECT run_id FROM runs WHERE status <> 'running' AND finished_at < $1 FOR UPDATE"
    run_ids = [row[0] for row in await conn.fetch(doomed, finished_before)]
    if not run_ids:
        return 0
    for table in (*RUN_CHILD_TABLES, "runs"):
        await conn.execute(f"DELETE FROM {table} WHERE run_id = ANY($1::text[])", run_ids)
    return len(run_ids)


async def record_answers(conn: PgConn, run_id: str, answers: Sequence[tuple[int, str]]) -> None:
    # Only an event that is in the journal can answer; the first answer wins.
    await conn.execute(
        "UPDATE waiters w SET resolved_seq = a.seq"
        " FROM unnest($2::bigint[], $3::text[]) AS a (seq, waiter_id)"
        " WHERE w.run_id = $1 AND w.waiter_id = a.waiter_id AND w.resolved_seq IS NULL"
        " AND EXISTS (SELECT 1 FROM events e WHERE e.run_id = $1 AND e.seq = a.seq)",
        run_id,
        [seq for seq, _ in answers],
        [waiter_id for _, waiter_id in answers],
    )
