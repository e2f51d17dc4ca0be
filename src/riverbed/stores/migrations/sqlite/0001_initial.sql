-- riverbed SQLite schema, version 1.
--
-- Applied by riverbed.stores._sqlite_conn inside one BEGIN IMMEDIATE transaction, statement
-- by statement (never with executescript, which would commit half-way). Times are REAL
-- seconds since the epoch; payloads and state are JSON text made by riverbed.serialization.
-- The events, commits and stream tables are append-only.

-- One row per applied migration; PRAGMA user_version holds the newest version.
CREATE TABLE riverbed_migrations (
    version     INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    applied_at  REAL NOT NULL
);

CREATE TABLE runs (
    run_id           TEXT PRIMARY KEY,
    workflow         TEXT NOT NULL,
    status           TEXT NOT NULL
                     CHECK (status IN ('running', 'completed', 'failed', 'cancelled', 'timed_out')),
    state            TEXT NOT NULL,
    state_type       TEXT NOT NULL,
    -- number of commits that changed the state (conformance invariant 3)
    state_version    INTEGER NOT NULL DEFAULT 0,
    -- next free event sequence number; the owner allocates, commits only move it forward
    next_seq         INTEGER NOT NULL DEFAULT 1,
    -- commit order per run: allocated here under the write lock, so it equals commit order
    next_commit_seq  INTEGER NOT NULL DEFAULT 1,
    -- next durable stream number; the stream is gapless per run from 1
    stream_next      INTEGER NOT NULL DEFAULT 1,
    result           TEXT,
    error            TEXT,
    owner            TEXT,
    owner_heartbeat  REAL,
    deadline         REAL,
    parent_run_id    TEXT,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL,
    finished_at      REAL
);

-- list_runs: newest first, optionally by workflow and status.
CREATE INDEX runs_by_workflow ON runs (workflow, status, created_at);
CREATE INDEX runs_by_created ON runs (created_at);

-- The journal: every event that entered a run.
CREATE TABLE events (
    run_id           TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    seq              INTEGER NOT NULL,
    type_key         TEXT NOT NULL,
    payload          TEXT NOT NULL,
    source_step      TEXT,
    -- idempotent submission from outside the run; NULLs never collide in a UNIQUE index
    client_event_id  TEXT,
    created_at       REAL NOT NULL,
    PRIMARY KEY (run_id, seq),
    UNIQUE (run_id, client_event_id)
);

-- The unit of work: one event routed to one step.
CREATE TABLE deliveries (
    run_id       TEXT NOT NULL,
    event_seq    INTEGER NOT NULL,
    step         TEXT NOT NULL,
    status       TEXT NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'running', 'done', 'waiting')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    claim_token  TEXT,
    -- pending: not before (retry backoff); running: lease expiry
    visible_at   REAL NOT NULL,
    lineage      INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    PRIMARY KEY (run_id, event_seq, step),
    FOREIGN KEY (run_id, event_seq) REFERENCES events (run_id, seq) ON DELETE CASCADE
);

-- Resuming a run reads its unfinished deliveries; done rows leave this index.
CREATE INDEX deliveries_open ON deliveries (run_id) WHERE status != 'done';

-- Exactly one commit per delivery, totally ordered per run.
CREATE TABLE commits (
    run_id        TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    commit_seq    INTEGER NOT NULL,
    event_seq     INTEGER NOT NULL,
    step          TEXT NOT NULL,
    attempt       INTEGER NOT NULL,
    claim_token   TEXT NOT NULL,
    committed_at  REAL NOT NULL,
    PRIMARY KEY (run_id, commit_seq),
    UNIQUE (run_id, event_seq, step)
);

-- Durable stream events, gapless per run, in commit order.
CREATE TABLE stream (
    run_id      TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    commit_seq  INTEGER NOT NULL,
    type_key    TEXT NOT NULL,
    payload     TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);

-- Events held in collect_events buffers (fan-in).
CREATE TABLE collected (
    run_id     TEXT NOT NULL,
    step       TEXT NOT NULL,
    buffer_id  TEXT NOT NULL,
    event_seq  INTEGER NOT NULL,
    PRIMARY KEY (run_id, step, buffer_id, event_seq),
    FOREIGN KEY (run_id, event_seq) REFERENCES events (run_id, seq) ON DELETE CASCADE
);

-- wait_for_event calls; resolved_seq is the event that answered one.
CREATE TABLE waiters (
    run_id        TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    waiter_id     TEXT NOT NULL,
    step          TEXT NOT NULL,
    event_type    TEXT NOT NULL,
    requirements  TEXT NOT NULL,
    resolved_seq  INTEGER,
    created_at    REAL NOT NULL,
    PRIMARY KEY (run_id, waiter_id)
);

-- ctx.memo results, keyed by invocation id and name (not used yet).
CREATE TABLE memos (
    run_id      TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    invocation  TEXT NOT NULL,
    name        TEXT NOT NULL,
    value       TEXT NOT NULL,
    created_at  REAL NOT NULL,
    PRIMARY KEY (run_id, invocation, name)
);
