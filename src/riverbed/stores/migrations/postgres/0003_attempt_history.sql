-- What inspecting a run needs: when each committed attempt started, and every failed
-- attempt (the deliveries table keeps only the last error). (Same as SQLite version 3.)
ALTER TABLE commits ADD COLUMN started_at double precision;

CREATE TABLE attempt_failures (
    run_id      text NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    event_seq   bigint NOT NULL,
    step        text NOT NULL,
    attempt     integer NOT NULL,
    started_at  double precision,
    failed_at   double precision NOT NULL,
    error       text NOT NULL,
    -- when the retry is due; NULL when the step gave up
    retry_at    double precision,
    PRIMARY KEY (run_id, event_seq, step, attempt)
);

-- prune: terminal runs by age.
CREATE INDEX runs_by_finished ON runs (finished_at) WHERE finished_at IS NOT NULL;
