-- What inspecting a run needs: when each committed attempt started, and every failed
-- attempt (the deliveries table keeps only the last error).
ALTER TABLE commits ADD COLUMN started_at REAL;

CREATE TABLE attempt_failures (
    run_id      TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    event_seq   INTEGER NOT NULL,
    step        TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    started_at  REAL,
    failed_at   REAL NOT NULL,
    error       TEXT NOT NULL,
    -- when the retry is due; NULL when the step gave up
    retry_at    REAL,
    PRIMARY KEY (run_id, event_seq, step, attempt)
);

-- prune: terminal runs by age.
CREATE INDEX runs_by_finished ON runs (finished_at) WHERE finished_at IS NOT NULL;
