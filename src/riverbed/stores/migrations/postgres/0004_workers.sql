-- Worker processes take runs nobody runs: a run remembers the version of the workflow that
-- started it, so a worker only takes runs whose steps it has. (Same as SQLite version 4.)
ALTER TABLE runs ADD COLUMN workflow_version text;

-- claimable_runs: running runs of one workflow, least recently touched first.
CREATE INDEX runs_running ON runs (workflow, updated_at) WHERE status = 'running';
