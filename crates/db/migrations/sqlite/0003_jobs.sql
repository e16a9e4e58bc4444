-- The job queue's error history and the indexes of its queries; SQLite
-- flavour. Keep it in step with ../postgres/0003_jobs.sql: the adapters share
-- their SQL text.

-- One row per failed run of a job (the admin API shows them). Kept when an
-- admin retries a dead job, so the history spans every round; the surrogate
-- key orders it, since attempt numbers start again after a retry.
CREATE TABLE job_failures (
    id        INTEGER NOT NULL PRIMARY KEY,
    job_id    BLOB NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    tenant_id BLOB NOT NULL REFERENCES tenants (id),
    attempt   INTEGER NOT NULL CONSTRAINT job_failures_attempt_check CHECK (attempt >= 0),
    error     TEXT NOT NULL,
    at        TEXT NOT NULL
) STRICT;

-- A job's history, and the cascade when its job goes.
CREATE INDEX job_failures_job_idx ON job_failures (job_id, id);

-- Claim: running jobs by lease expiry (their worker died). Queued jobs by
-- `run_at` use jobs_dequeue_idx (state, run_at) of 0002.
CREATE INDEX jobs_lease_idx ON jobs (lease_until) WHERE state = 'running';
-- The admin list, newest first (ids are UUIDv7), with or without a state;
-- the second also serves the per-tenant depth that jobs_tenant_state_idx did.
CREATE INDEX jobs_tenant_list_idx ON jobs (tenant_id, id);
CREATE INDEX jobs_tenant_state_list_idx ON jobs (tenant_id, state, id);
DROP INDEX jobs_tenant_state_idx;
-- Queue depth by kind and state, counted from the index alone.
CREATE INDEX jobs_depth_idx ON jobs (state, kind);
