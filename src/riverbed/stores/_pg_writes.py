"""Step-level writes of :class:`~riverbed.stores.postgres.PostgresStore`: creating runs,
outside events, claims, commits and failed attempts, one function per operation of
:class:`~riverbed.stores.durable.DurableStore`, each run in one transaction (waiters and
owners are in :mod:`riverbed.stores._pg_runs`).

Ordering and locks: everything that allocates a run's numbers (event ``seq`` from outside,
``commit_seq``, stream ``seq``) does so under that run's row lock (an ``UPDATE`` or
``SELECT ... FOR UPDATE`` of ``runs``), so commits of one run are serialized, ``commit_seq``
order is commit order, and the stream is gapless even with many committers. A global
sequence would not be: ids are taken at insert and become visible out of order.

Functions whose transaction may be retried after an ambiguous ``COMMIT`` have a
``*_replay`` twin that tells whether the first try was applied (see
:meth:`~riverbed.stores._pg_conn.PgConnections.transaction`).
"""

from __future__ import annotations

from riverbed._engine import crashpoints
from riverbed.errors import FencedError, RunExistsError, RunFinishedError
from riverbed.stores._pg_conn import PgConn
from riverbed.stores._pg_reads import WORK_DUE, not_found, run_status
from riverbed.stores.base import RunRecord, RunStatus
from riverbed.stores.durable import CommitRow, EventRow, SentBeforeWait


def count(status: str) -> int:
    """Rows touched, from a command tag such as ``UPDATE 1`` or ``INSERT 0 1``."""
    return int(status.rsplit(" ", 1)[-1])


async def _insert_events(conn: PgConn, run_id: str, events: list[EventRow], now: float) -> None:
    await conn.execute(
        "INSERT INTO events (run_id, seq, type_key, payload, source_step, client_event_id,"
        " created_at) SELECT $1, s, t, p, src, cid, $7"
        " FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[])"
        " AS u (s, t, p, src, cid)",
        run_id,
        [e.seq for e in events],
        [e.type_key for e in events],
        [e.payload for e in events],
        [e.source_step for e in events],
        [e.client_event_id for e in events],
        now,
    )


async def _insert_deliveries(
    conn: PgConn,
    run_id: str,
    rows: list[tuple[int, str, int, str]],
    now: float,
    lease_until: float = 0.0,
) -> None:
    """``rows`` are ``(event_seq, step, lineage, claim_token)``; a token ("" = none)
    means the committing owner claimed the delivery for itself: running, attempt 1."""
    if not rows:
        return
    await conn.execute(
        "INSERT INTO deliveries (run_id, event_seq, step, lineage, status, attempts,"
        " claim_token, visible_at)"
        " SELECT $1, s, st, l, CASE WHEN tok = '' THEN 'pending' ELSE 'running' END,"
        " CASE WHEN tok = '' THEN 0 ELSE 1 END, nullif(tok, ''),"
        " CASE WHEN tok = '' THEN $6::float8 ELSE $7::float8 END"
        " FROM unnest($2::bigint[], $3::text[], $4::integer[], $5::text[]) AS u (s, st, l, tok)",
        run_id,
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [r[3] for r in rows],
        now,
        lease_until,
    )


_NOTIFY_IF_CLAIMABLE = f"""
SELECT pg_notify($2, json_build_object(
  'run', r.run_id, 'workflow', r.workflow, 'version', r.workflow_version)::text) FROM runs r
WHERE r.run_id = $1 AND r.status = 'running'
  AND (r.owner IS NULL OR r.owner_heartbeat IS NULL OR r.owner_heartbeat < $3)
  AND {WORK_DUE.format(now="$4")}
"""


async def notify_if_claimable(
    conn: PgConn, run_id: str, channel: str, now: float, lease_seconds: float
) -> None:
    """Wake idle workers (``NOTIFY``, sent when this transaction commits) if the run has
    work due and no live owner: it waits in ``claimable_runs`` for one of them. Only for
    work left unclaimed (a submitted, released or answered run), never in a step commit,
    whose follow-on work its own process runs."""
    await conn.execute(_NOTIFY_IF_CLAIMABLE, run_id, channel, now - lease_seconds, now)


# -- runs and outside events -----------------------------------------------------------


async def create_run(
    conn: PgConn,
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
    inserted = await conn.execute(
        "INSERT INTO runs (run_id, workflow, status, state, state_type, next_seq, owner,"
        " owner_heartbeat, deadline, parent_run_id, created_at, updated_at, finished_at,"
        " result, error, workflow_version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,"
        " $11, $12, $13, $14, $15, $16) ON CONFLICT (run_id) DO NOTHING",
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
    )
    if count(inserted) != 1:
        raise RunExistsError(
            f"A run with id {record.run_id!r} already exists in this store. Use a new id, or "
            "resume the existing run instead of starting it again."
        )
    await _insert_events(conn, record.run_id, [start], now)
    tokens = claims or ("",) * len(targets)
    rows = [(start.seq, t, 0, tok) for t, tok in zip(targets, tokens, strict=True)]
    await _insert_deliveries(conn, record.run_id, rows, now, lease_until)


async def create_run_replay(
    conn: PgConn, record: RunRecord, start: EventRow, owner: str
) -> bool | None:
    """True if a lost COMMIT of this create_run was applied (same run, start and owner)."""
    row = await conn.fetchrow(
        "SELECT r.owner, e.payload FROM runs r JOIN events e ON e.run_id = r.run_id"
        " AND e.seq = $2 WHERE r.run_id = $1",
        record.run_id,
        start.seq,
    )
    if row is not None and row[0] == owner and row[1] == start.payload:
        return True
    return None


async def submit_event(
    conn: PgConn,
    run_id: str,
    event: EventRow,
    targets: tuple[str, ...],
    resolves: tuple[str, ...],
    now: float,
    channel: str | None = None,
    lease_seconds: float = 30.0,
) -> tuple[int, bool]:
    # The row lock serializes submissions and commits of this run: the seq allocated here
    # is the run's next, and a client_event_id is checked and inserted atomically.
    row = await conn.fetchrow(
        "SELECT status, next_seq FROM runs WHERE run_id = $1 FOR UPDATE", run_id
    )
    if row is None:
        raise not_found(run_id)
    status, next_seq = RunStatus(row[0]), int(row[1])
    # Dedup before the status check: a retried submission of the event that ended the
    # run must get its original answer, not an error.
    if event.client_event_id is not None:
        seen = await conn.fetchval(
            "SELECT seq FROM events WHERE run_id = $1 AND client_event_id = $2",
            run_id,
            event.client_event_id,
        )
        if seen is not None:
            return int(seen), False
    if status.is_terminal:
        raise RunFinishedError(
            f"Run {run_id!r} has already finished ({status.value}); it accepts no more "
            "events. Start a new run instead."
        )
    seq = event.seq if event.seq > 0 else next_seq
    if seq != event.seq:
        event = EventRow(
            seq, event.type_key, event.payload, event.source_step, event.client_event_id
        )
    await _insert_events(conn, run_id, [event], now)
    await _insert_deliveries(conn, run_id, [(seq, t, 0, "") for t in targets], now)
    await conn.execute(
        "UPDATE runs SET next_seq = greatest(next_seq, $2), updated_at = $3 WHERE run_id = $1",
        run_id,
        seq + 1,
        now,
    )
    if resolves:
        # The first answer wins; a waiter already answered keeps its event.
        await conn.execute(
            "UPDATE waiters SET resolved_seq = $2 WHERE run_id = $1"
            " AND waiter_id = ANY($3::text[]) AND resolved_seq IS NULL",
            run_id,
            seq,
            list(resolves),
        )
    if channel is not None:
        # A run nobody runs (a parked one answered from outside) waits for a worker.
        await notify_if_claimable(conn, run_id, channel, now, lease_seconds)
    return seq, True


async def submit_event_replay(
    conn: PgConn, run_id: str, client_event_id: str
) -> tuple[int, bool] | None:
    """``(seq, True)`` if a lost COMMIT of this submission was applied."""
    seq = await conn.fetchval(
        "SELECT seq FROM events WHERE run_id = $1 AND client_event_id = $2",
        run_id,
        client_event_id,
    )
    return None if seq is None else (int(seq), True)


# -- attempts --------------------------------------------------------------------------


async def claim(
    conn: PgConn, run_id: str, event_seq: int, step: str, token: str, visible_at: float
) -> int:
    attempts = await conn.fetchval(
        "UPDATE deliveries d SET status = 'running', attempts = d.attempts + 1,"
        " claim_token = $4, visible_at = $5 FROM runs r"
        " WHERE r.run_id = d.run_id AND r.status = 'running' AND d.run_id = $1"
        " AND d.event_seq = $2 AND d.step = $3 AND d.status <> 'done' RETURNING d.attempts",
        run_id,
        event_seq,
        step,
        token,
        visible_at,
    )
    if attempts is None:
        if (await run_status(conn, run_id)).is_terminal:
            raise FencedError(
                f"Run {run_id!r} has finished; delivery ({event_seq}, {step!r}) cannot be claimed."
            )
        raise FencedError(
            f"Delivery ({event_seq}, {step!r}) of run {run_id!r} is done or does not exist."
        )
    return int(attempts)


async def claim_replay(
    conn: PgConn, run_id: str, event_seq: int, step: str, token: str
) -> int | None:
    """The attempt number if a lost COMMIT of this claim was applied."""
    attempts = await conn.fetchval(
        "SELECT attempts FROM deliveries WHERE run_id = $1 AND event_seq = $2 AND step = $3"
        " AND claim_token = $4",
        run_id,
        event_seq,
        step,
        token,
    )
    return None if attempts is None else int(attempts)


#: a step's commit (research §4.4) as one statement in its transaction (three round trips
#: with BEGIN and COMMIT, whatever the commit holds): the fence (only the attempt holding
#: the current claim token may commit; the delivery becomes done), the run row (locked: it
#: allocates the commit's number and its stream numbers, takes the state, maybe ends the
#: run), the commits row, then the produced events, their deliveries, the stream events and
#: the collect buffers. Everything after the fence reads ``r``, so when the fence or the
#: run's status fails, no row comes back, and the caller raises, which rolls back the fence
#: too (it may have matched while the run's row did not, e.g. a run cancelled meanwhile).
#: Foreign keys are checked at the statement's end.
_COMMIT = """
WITH fence AS (
  UPDATE deliveries SET status = 'done', claim_token = NULL WHERE run_id = $1
    AND event_seq = $2 AND step = $3 AND status = 'running' AND claim_token = $4
  RETURNING 1
), r AS (
  UPDATE runs SET next_commit_seq = next_commit_seq + 1,
    stream_next = stream_next + $5::bigint, next_seq = greatest(next_seq, $6::bigint),
    updated_at = $7::float8,
    state = coalesce($8, state),
    state_version = state_version + CASE WHEN $8::text IS NULL THEN 0 ELSE 1 END,
    status = CASE WHEN $9::bool THEN $10::text ELSE status END,
    result = CASE WHEN $9 THEN $11 ELSE result END,
    error = CASE WHEN $9 THEN $12 ELSE error END,
    finished_at = CASE WHEN $9 THEN $7 ELSE finished_at END,
    owner = CASE WHEN $9 THEN NULL ELSE owner END
  WHERE run_id = $1 AND status = 'running' AND EXISTS (SELECT 1 FROM fence)
  RETURNING next_commit_seq - 1 AS commit_seq, stream_next - $5 AS stream_base
), c AS (
  INSERT INTO commits (run_id, commit_seq, event_seq, step, attempt, claim_token,
    committed_at, started_at)
  SELECT $1, commit_seq, $2, $3, $13, $4, $7, $14 FROM r
), ev AS (
  INSERT INTO events (run_id, seq, type_key, payload, source_step, client_event_id,
    created_at)
  SELECT $1, u.s, u.t, u.p, u.src, u.cid, $7 FROM r,
    unnest($15::bigint[], $16::text[], $17::text[], $18::text[], $19::text[])
      AS u (s, t, p, src, cid)
), dl AS (
  INSERT INTO deliveries (run_id, event_seq, step, lineage, status, attempts, claim_token,
    visible_at)
  SELECT $1, u.s, u.st, u.l, CASE WHEN u.tok = '' THEN 'pending' ELSE 'running' END,
    CASE WHEN u.tok = '' THEN 0 ELSE 1 END, nullif(u.tok, ''),
    CASE WHEN u.tok = '' THEN $7::float8 ELSE $24::float8 END
  FROM r, unnest($20::bigint[], $21::text[], $22::integer[], $23::text[])
    AS u (s, st, l, tok)
), st AS (
  INSERT INTO stream (run_id, seq, commit_seq, type_key, payload)
  SELECT $1, r.stream_base + u.o - 1, r.commit_seq, u.t, u.p
  FROM r, unnest($25::text[], $26::text[]) WITH ORDINALITY AS u (t, p, o)
), ca AS (
  INSERT INTO collected (run_id, step, buffer_id, event_seq)
  SELECT $1, u.st, u.b, u.s FROM r, unnest($27::text[], $28::text[], $29::bigint[])
    AS u (st, b, s)
  ON CONFLICT DO NOTHING
), cr AS (
  DELETE FROM collected x USING r, unnest($30::text[], $31::text[], $32::bigint[])
    AS u (st, b, s)
  WHERE x.run_id = $1 AND x.step = u.st AND x.buffer_id = u.b AND x.event_seq = u.s
), wr AS (
  UPDATE waiters w SET resolved_seq = u.s FROM r, unnest($33::bigint[], $34::text[])
    AS u (s, wid)
  WHERE w.run_id = $1 AND w.waiter_id = u.wid AND w.resolved_seq IS NULL
)
SELECT commit_seq, stream_base FROM r
"""


async def commit(conn: PgConn, run_id: str, c: CommitRow, now: float) -> int:
    """A step's commit in one statement (``_COMMIT``) of the caller's transaction."""
    next_seq = max([c.next_seq, *(p.event.seq + 1 for p in c.produced)])
    events = [p.event for p in c.produced]
    deliveries = [
        (p.event.seq, target, p.lineage, token)
        for p in c.produced
        for target, token in zip(p.targets, p.claims or ("",) * len(p.targets), strict=True)
    ]
    # An event added to a buffer and taken from it by the same attempt was never stored:
    # one statement cannot insert a row and delete it again, so neither is sent.
    both = set(c.collect_add) & set(c.collect_remove)
    added = [item for item in c.collect_add if item not in both]
    taken = [item for item in c.collect_remove if item not in both]
    row = await conn.fetchrow(
        _COMMIT,
        run_id,
        c.event_seq,
        c.step,
        c.claim_token,
        len(c.stream),
        next_seq,
        now,
        c.state,
        c.status is not None,
        c.status.value if c.status is not None else None,
        c.result,
        c.error,
        c.attempt,
        c.started_at,
        [e.seq for e in events],
        [e.type_key for e in events],
        [e.payload for e in events],
        [e.source_step for e in events],
        [e.client_event_id for e in events],
        [d[0] for d in deliveries],
        [d[1] for d in deliveries],
        [d[2] for d in deliveries],
        [d[3] for d in deliveries],
        now + c.lease_seconds,
        [t for t, _ in c.stream],
        [p for _, p in c.stream],
        [a[0] for a in added],
        [a[1] for a in added],
        [a[2] for a in added],
        [t[0] for t in taken],
        [t[1] for t in taken],
        [t[2] for t in taken],
        [seq for seq, _ in c.resolves],
        [waiter_id for _, waiter_id in c.resolves],
    )
    if row is None:
        # Raising rolls back the fence too: nothing of this attempt is written.
        if (await run_status(conn, run_id)).is_terminal:
            raise FencedError(
                f"Run {run_id!r} has finished; the commit of delivery ({c.event_seq}, "
                f"{c.step!r}) was discarded."
            )
        raise FencedError(
            f"Attempt {c.attempt} of delivery ({c.event_seq}, {c.step!r}) in run {run_id!r} "
            "no longer holds its claim; its effects were discarded."
        )
    # Crash tests: die with every effect written but COMMIT not sent; PostgreSQL must then
    # roll all of it back (the attempt runs again after a restart).
    crashpoints.hit("in_commit")
    return int(row[0])


async def insert_sent(conn: PgConn, run_id: str, sent: SentBeforeWait, now: float) -> None:
    """The events a step sent before it waits, with their deliveries, and the state it
    changed (register_waiter's transaction, the run row locked), fenced by the attempt's
    claim."""
    held = await conn.fetchval(
        "SELECT 1 FROM deliveries WHERE run_id = $1 AND event_seq = $2 AND step = $3"
        " AND status = 'running' AND claim_token = $4",
        run_id,
        sent.event_seq,
        sent.step,
        sent.claim_token,
    )
    if held is None:
        raise FencedError(
            f"Delivery ({sent.event_seq}, {sent.step!r}) of run {run_id!r} is no longer "
            "claimed by this attempt; the events it sent before waiting were discarded."
        )
    if sent.state is not None:
        await conn.execute(
            "UPDATE runs SET state = $2, state_version = state_version + 1 WHERE run_id = $1",
            run_id,
            sent.state,
        )
    if not sent.produced:
        return
    await _insert_events(conn, run_id, [p.event for p in sent.produced], now)
    rows = [
        (p.event.seq, target, p.lineage, token)
        for p in sent.produced
        for target, token in zip(p.targets, p.claims or ("",) * len(p.targets), strict=True)
    ]
    await _insert_deliveries(conn, run_id, rows, now, now + sent.lease_seconds)
    await conn.execute(
        "UPDATE runs SET next_seq = greatest(next_seq, $2::bigint) WHERE run_id = $1",
        run_id,
        max(p.event.seq for p in sent.produced) + 1,
    )


async def commit_replay(conn: PgConn, run_id: str, c: CommitRow) -> int | None:
    """The commit's number if a lost COMMIT of it was applied: its commits row carries
    its claim token, and UNIQUE (run_id, event_seq, step) allows only one."""
    seq = await conn.fetchval(
        "SELECT commit_seq FROM commits WHERE run_id = $1 AND event_seq = $2 AND step = $3"
        " AND claim_token = $4",
        run_id,
        c.event_seq,
        c.step,
        c.claim_token,
    )
    return None if seq is None else int(seq)


async def fail_attempt(
    conn: PgConn,
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
    # With retry_at the claim is released (pending again); without it, it stays running.
    changed = await conn.execute(
        "UPDATE deliveries SET last_error = $5,"
        " status = CASE WHEN $6::float8 IS NULL THEN status ELSE 'pending' END,"
        " claim_token = CASE WHEN $6::float8 IS NULL THEN claim_token ELSE NULL END,"
        " visible_at = coalesce($6, visible_at)"
        " WHERE run_id = $1 AND event_seq = $2 AND step = $3 AND status = 'running'"
        " AND claim_token = $4",
        run_id,
        event_seq,
        step,
        token,
        error,
        retry_at,
    )
    if count(changed) != 1:
        await run_status(conn, run_id)  # RunNotFoundError for an unknown run
        raise FencedError(
            f"Delivery ({event_seq}, {step!r}) of run {run_id!r} is no longer claimed by this "
            "attempt; its failure was not recorded."
        )
    # Kept for read_timeline: the deliveries row holds only the last error.
    await conn.execute(
        "INSERT INTO attempt_failures (run_id, event_seq, step, attempt, started_at,"
        " failed_at, error, retry_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        " ON CONFLICT (run_id, event_seq, step, attempt) DO UPDATE SET"
        " started_at = excluded.started_at, failed_at = excluded.failed_at,"
        " error = excluded.error, retry_at = excluded.retry_at",
        run_id,
        event_seq,
        step,
        attempt,
        started_at,
        now,
        error,
        retry_at,
    )


async def fail_attempt_replay(
    conn: PgConn, run_id: str, event_seq: int, step: str, token: str, error: str
) -> bool | None:
    """True if a lost COMMIT of this failure was applied (the error is recorded and the
    claim is released, or still ours)."""
    row = await conn.fetchrow(
        "SELECT status, claim_token, last_error FROM deliveries WHERE run_id = $1"
        " AND event_seq = $2 AND step = $3",
        run_id,
        event_seq,
        step,
    )
    if row is None or row[2] != error:
        return None
    applied = (row[0] == "pending" and row[1] is None) or (row[0] == "running" and row[1] == token)
    return True if applied else None
