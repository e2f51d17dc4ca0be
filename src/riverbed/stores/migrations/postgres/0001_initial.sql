-- riverbed PostgreSQL schema, version 1: the same tables and contract as the SQLite schema
-- of the same version (migrations/sqlite/0001_initial.sql).
--
-- Applied by riverbed.stores._pg_conn in one transaction, under an advisory lock, in the
-- store's schema (search_path). Times are double precision seconds since the epoch, as in
-- SQLite. Payloads and state are JSON *text* made by riverbed.serialization, stored as
-- text rather than jsonb: jsonb would reorder the keys of a dict state and refuse NaN, and
-- riverbed must read back exactly what it wrote (cast with ::jsonb to query them).
-- The events, commits and stream tables are append-only.

-- One row per applied migration; the highest version is the schema's version.
CREATE TABLE riverbed_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    applied_at  double precision NOT NULL
);

CREATE TABLE runs (
    run_id           text PRIMARY KEY,
    workflow         text NOT NULL,
    status           text NOT NULL
                     CHECK (status IN ('running', 'completed', 'failed', 'cancelled', 'timed_out')),
    state            text NOT NULL,
    state_type       text NOT NULL,
    -- number of commits that changed the state (conformance invariant 3)
    state_version    bigint NOT NULL DEFAULT 0,
    -- next free event sequence number; the owner allocates, commits only move it forward
    next_seq         bigint NOT NULL DEFAULT 1,
    -- commit order per run, allocated under this row's lock: equals commit order
    next_commit_seq  bigint NOT NULL DEFAULT 1,
    -- next durable stream number, allocated under this row's lock: gapless per run from 1
    stream_next      bigint NOT NULL DEFAULT 1,
    result           text,
    error            text,
    owner            text,
    owner_heartbeat  double precision,
    deadline         double precision,
    parent_run_id    text,
    created_at       double precision NOT NULL,
    updated_at       double precision NOT NULL,
    finished_at      double precision,
    -- insertion order: the tie-breaker of list_runs (SQLite uses its rowid)
    created_order    bigint GENERATED ALWAYS AS IDENTITY
) WITH (fillfactor = 80);

-- list_runs: newest first, optionally by workflow and status.
CREATE INDEX runs_by_workflow ON runs (workflow, status, created_at);
CREATE INDEX runs_by_created ON runs (created_at, created_order);

-- The journal: every event that entered a run.
CREATE TABLE events (
    run_id           text NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    seq              bigint NOT NULL,
    type_key         text NOT NULL,
    payload          text NOT NULL,
    source_step      text,
    -- idempotent submission from outside the run; NULLs never collide in a UNIQUE index
    client_event_id  text,
    created_at       double precision NOT NULL,
    PRIMARY KEY (run_id, seq),
    UNIQUE (run_id, client_event_id)
);

-- The unit of work: one event routed to one step. Updated on every claim and commit,
-- hence the fillfactor (room for HOT updates).
CREATE TABLE deliveries (
    run_id       text NOT NULL,
    event_seq    bigint NOT NULL,
    step         text NOT NULL,
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'running', 'done', 'waiting')),
    attempts     integer NOT NULL DEFAULT 0,
    claim_token  text,
    -- pending: not before (retry backoff); running: lease expiry
    visible_at   double precision NOT NULL,
    lineage      integer NOT NULL DEFAULT 0,
    last_error   text,
    PRIMARY KEY (run_id, event_seq, step),
    FOREIGN KEY (run_id, event_seq) REFERENCES events (run_id, seq) ON DELETE CASCADE
) WITH (fillfactor = 75);

-- Resuming a run reads its unfinished deliveries; done rows leave this index.
CREATE INDEX deliveries_open ON deliveries (run_id) WHERE status <> 'done';

-- Exactly one commit per delivery, totally ordered per run.
CREATE TABLE commits (
    run_id        text NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    commit_seq    bigint NOT NULL,
    event_seq     bigint NOT NULL,
    step          text NOT NULL,
    attempt       integer NOT NULL,
    -- lets a commit whose COMMIT reply was lost find out that it was applied
    claim_token   text NOT NULL,
    committed_at  double precision NOT NULL,
    PRIMARY KEY (run_id, commit_seq),
    UNIQUE (run_id, event_seq, step)
);

-- Durable stream events, gapless per run, in commit order.
CREATE TABLE stream (
    run_id      text NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    seq         bigint NOT NULL,
    commit_seq  bigint NOT NULL,
    type_key    text NOT NULL,
    payload     text NOT NULL,
    PRIMARY KEY (run_id, seq)
);

-- Events held in collect_events buffers (fan-in).
CREATE TABLE collected (
    run_id     text NOT NULL,
    step       text NOT NULL,
    buffer_id  text NOT NULL,
    event_seq  bigint NOT NULL,
    PRIMARY KEY (run_id, step, buffer_id, event_seq),
    FOREIGN KEY (run_id, event_seq) REFERENCES events (run_id, seq) ON DELETE CASCADE
);

-- wait_for_event calls; resolved_seq is the event that answered one.
CREATE TABLE waiters (
    run_id        text NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    waiter_id     text NOT NULL,
    step          text NOT NULL,
    event_type    text NOT NULL,
    requirements  text NOT NULL,
    resolved_seq  bigint,
    created_at    double precision NOT NULL,
    -- insertion order of a run's waiters (SQLite uses its rowid)
    created_order bigint GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (run_id, waiter_id)
);

-- ctx.memo results, keyed by invocation id and name.
CREATE TABLE memos (
    run_id      text NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    invocation  text NOT NULL,
    name        text NOT NULL,
    value       text NOT NULL,
    created_at  double precision NOT NULL,
    PRIMARY KEY (run_id, invocation, name)
);
