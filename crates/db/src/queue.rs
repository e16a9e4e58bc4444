//! The job queue's SQL text and row shapes (`JobQueue` is implemented once,
//! in `store::queue`; the claim statements are each dialect's own).
//!
//! Fencing is in the SQL: every call a worker makes after its claim matches
//! `id = $1 AND attempts = $2 AND state = 'running'`, so a run that was taken
//! over (its lease expired and another worker claimed the job, which bumped
//! `attempts`) or ended (done, dead, deferred) changes nothing.

use buildpeer_core::StoreError;
use buildpeer_core::ids::{JobId, TenantId, UploadId};
use buildpeer_core::queue::{Job, JobFailure, JobState, QueueDepth};
use chrono::{DateTime, Utc};
use sqlx::FromRow;
use uuid::Uuid;

use crate::exec::{Arg, Query, q};
use crate::sql::int;

/// What the history says of a run whose worker stopped renewing its lease.
pub(crate) const LEASE_EXPIRED: &str =
    "lease expired: the worker stopped (crashed, killed or cut off) before it finished";

/// The payload as text on both backends (JSONB on PostgreSQL).
macro_rules! job_columns {
    () => {
        "id, tenant_id, upload_id, kind, CAST(payload AS TEXT) AS payload, state, attempts, \
         max_attempts, run_at, lease_until, last_error, trace_context, created_at, updated_at"
    };
}

/// Due jobs of the kinds `$kinds` (an SQL expression that is true for a
/// wanted `kind`) at `$2`: queued and due, or running with an expired lease
/// (on any attempt: the caller buries a job claimed past its last one).
macro_rules! due {
    ($kinds:literal) => {
        concat!(
            "SELECT id FROM jobs WHERE ",
            $kinds,
            " AND ((state = 'queued' AND run_at <= $2) ",
            "OR (state = 'running' AND lease_until <= $2)) ORDER BY run_at, id LIMIT $4"
        )
    };
}

/// A claim turns the due rows into runs: `$3` is the new lease's end.
macro_rules! claim_update {
    () => {
        concat!(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_until = $3, ",
            "updated_at = $2 WHERE id IN (SELECT id FROM due) RETURNING ",
            job_columns!()
        )
    };
}

// ---- SQLite: the claim's steps, one write transaction ------------------------

/// The lost runs among the due jobs go to the history before they are
/// claimed again (the same query twice in one write transaction finds the
/// same rows).
pub(crate) const SQLITE_LOST_HISTORY: &str = concat!(
    "INSERT INTO job_failures (job_id, tenant_id, attempt, error, at) ",
    "SELECT id, tenant_id, attempts, $5, $2 FROM jobs WHERE state = 'running' AND id IN (",
    due!("kind IN (SELECT value FROM json_each($1))"),
    ")"
);
pub(crate) const SQLITE_CLAIM: &str = concat!(
    "WITH due AS (",
    due!("kind IN (SELECT value FROM json_each($1))"),
    ") ",
    claim_update!()
);

// ---- PostgreSQL: one statement -----------------------------------------------

/// The candidates are chosen and locked once (materialised), skipping rows
/// a concurrent claimer locked, so no two claimers get one job; the lost
/// runs among them go to the history in the same statement.
pub(crate) const PG_CLAIM: &str = concat!(
    "WITH due AS MATERIALIZED (SELECT id, state AS was, tenant_id, attempts AS held FROM jobs ",
    "WHERE kind = ANY($1) AND ((state = 'queued' AND run_at <= $2) ",
    "OR (state = 'running' AND lease_until <= $2)) ",
    "ORDER BY run_at, id LIMIT $4 FOR UPDATE SKIP LOCKED), ",
    "history AS (INSERT INTO job_failures (job_id, tenant_id, attempt, error, at) ",
    "SELECT id, tenant_id, held, $5, $2 FROM due WHERE was = 'running') ",
    claim_update!()
);

/// What every claim statement binds: `$1` the kinds, `$2` now, `$3` the new
/// lease's end, `$4` the limit, `$5` the history's text for lost runs.
pub(crate) struct Claim<'a> {
    pub(crate) kinds: &'a [&'a str],
    pub(crate) now: DateTime<Utc>,
    pub(crate) until: DateTime<Utc>,
    pub(crate) limit: i64,
}

impl<'a> Claim<'a> {
    pub(crate) fn query(&self, sql: &'static str) -> Query<'a> {
        q(sql)
            .bind(Arg::Kinds(self.kinds))
            .bind(self.now)
            .bind(self.until)
            .bind(self.limit)
            .bind(LEASE_EXPIRED)
    }
}

// ---- Both --------------------------------------------------------------------

pub(crate) const HEARTBEAT: &str = "UPDATE jobs SET lease_until = $3 \
     WHERE id = $1 AND attempts = $2 AND state = 'running'";
pub(crate) const COMPLETE: &str = "UPDATE jobs SET state = 'done', lease_until = NULL, \
     updated_at = $3 WHERE id = $1 AND attempts = $2 AND state = 'running'";
/// Queued again for `$4` if there is one and attempts are left, else dead.
pub(crate) const FAIL: &str = "UPDATE jobs SET \
     state = CASE WHEN $4 IS NOT NULL AND attempts < max_attempts THEN 'queued' ELSE 'dead' END, \
     run_at = CASE WHEN $4 IS NOT NULL AND attempts < max_attempts THEN $4 ELSE run_at END, \
     lease_until = NULL, last_error = $3, updated_at = $5 \
     WHERE id = $1 AND attempts = $2 AND state = 'running' RETURNING tenant_id, state";
/// Numbered as the worker's other statements: `$1` the job, `$2` the attempt.
pub(crate) const FAILURE_INSERT: &str = "INSERT INTO job_failures \
     (job_id, attempt, tenant_id, error, at) VALUES ($1, $2, $3, $4, $5)";
/// The run is handed back uncounted.
pub(crate) const DEFER: &str = "UPDATE jobs SET state = 'queued', attempts = attempts - 1, \
     run_at = $3, lease_until = NULL, updated_at = $4 \
     WHERE id = $1 AND attempts = $2 AND state = 'running'";
/// A poison job's end: the claim that found it past its last attempt was not
/// a run, so it is taken back; its lost run's history row is the claim's.
pub(crate) const BURY: &str = "UPDATE jobs SET state = 'dead', attempts = attempts - 1, \
     lease_until = NULL, last_error = $3, updated_at = $4 \
     WHERE id = $1 AND attempts = $2 AND state = 'running'";
/// Newest first; ids are UUIDv7, so `id < $2` is the keyset cursor as in the
/// other lists (`jobs_tenant_list_idx`).
pub(crate) const LIST: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE tenant_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
);
/// The same in one state (`jobs_tenant_state_list_idx`).
pub(crate) const LIST_STATE: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE tenant_id = $1 AND state = $4 AND id < $2 ORDER BY id DESC LIMIT $3"
);
pub(crate) const GET: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE tenant_id = $1 AND id = $2"
);
pub(crate) const FAILURES: &str = "SELECT attempt, error, at FROM job_failures \
     WHERE tenant_id = $1 AND job_id = $2 ORDER BY id";
/// From the start: no attempts, due at once; `last_error` and the history stay.
pub(crate) const RETRY: &str = concat!(
    "UPDATE jobs SET state = 'queued', attempts = 0, run_at = $3, lease_until = NULL, ",
    "updated_at = $3 WHERE tenant_id = $1 AND id = $2 AND state = 'dead' RETURNING ",
    job_columns!()
);
pub(crate) const RETRY_DEAD: &str = "UPDATE jobs SET state = 'queued', attempts = 0, \
     run_at = $2, lease_until = NULL, updated_at = $2 WHERE tenant_id = $1 AND state = 'dead'";
/// From `jobs_depth_idx` alone.
pub(crate) const DEPTH: &str =
    "SELECT kind, state, COUNT(*) AS count FROM jobs GROUP BY state, kind";

#[derive(FromRow)]
pub(crate) struct JobRow {
    id: Uuid,
    tenant_id: Uuid,
    upload_id: Option<Uuid>,
    kind: String,
    payload: String,
    state: String,
    attempts: i32,
    max_attempts: i32,
    run_at: DateTime<Utc>,
    lease_until: Option<DateTime<Utc>>,
    last_error: Option<String>,
    trace_context: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<JobRow> for Job {
    type Error = StoreError;

    fn try_from(r: JobRow) -> Result<Self, StoreError> {
        Ok(Job {
            id: JobId::from_uuid(r.id),
            tenant_id: TenantId::from_uuid(r.tenant_id),
            upload_id: r.upload_id.map(UploadId::from_uuid),
            kind: r.kind,
            payload: r.payload,
            state: state(&r.state)?,
            attempts: int(r.attempts)?,
            max_attempts: int(r.max_attempts)?,
            run_at: r.run_at,
            lease_until: r.lease_until,
            last_error: r.last_error,
            trace_context: r.trace_context,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

#[derive(FromRow)]
pub(crate) struct FailureRow {
    attempt: i32,
    error: String,
    at: DateTime<Utc>,
}

impl TryFrom<FailureRow> for JobFailure {
    type Error = StoreError;

    fn try_from(r: FailureRow) -> Result<Self, StoreError> {
        Ok(JobFailure {
            attempt: int(r.attempt)?,
            error: r.error,
            at: r.at,
        })
    }
}

#[derive(FromRow)]
pub(crate) struct DepthRow {
    kind: String,
    state: String,
    count: i64,
}

impl TryFrom<DepthRow> for QueueDepth {
    type Error = StoreError;

    fn try_from(r: DepthRow) -> Result<Self, StoreError> {
        Ok(QueueDepth {
            kind: r.kind,
            state: state(&r.state)?,
            count: int(r.count)?,
        })
    }
}

pub(crate) fn state(s: &str) -> Result<JobState, StoreError> {
    JobState::parse(s).ok_or_else(|| StoreError::Other(format!("stored job state {s:?}").into()))
}

/// Claimed rows come back from `RETURNING` in no particular order.
pub(crate) fn claimed(rows: Vec<JobRow>) -> Result<Vec<Job>, StoreError> {
    let mut jobs: Vec<Job> = crate::sql::convert(rows)?;
    jobs.sort_by_key(|j| (j.run_at, j.id));
    Ok(jobs)
}
