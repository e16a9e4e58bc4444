//! The job queue port: durable jobs in the metadata store's own database.
//!
//! Why our own tables rather than a queue crate (apalis 1.0 was looked at):
//! a job must be enqueued in the same transaction as the state change that
//! causes it (an upload's `UPLOADED` transition writes its processing job;
//! see `UploadStore::upload_mark_uploaded`), so neither a lost job nor a
//! phantom one is possible. apalis cannot enqueue inside our transaction, keeps
//! no dead-letter table and holds backoff in memory; here the backoff lives in
//! `run_at`, the dead-letter queue is `state = 'dead'` with its error history,
//! and a worker that died is replaced when its lease runs out.
//!
//! Fencing: a claim increments `attempts`; every later call for that run
//! (`job_heartbeat`, `job_complete`, `job_fail`, `job_defer`, `job_bury`) names the
//! attempt it holds and changes nothing if the job has moved on (its lease
//! expired and another worker claimed it, or an admin touched it), so two
//! workers never both finish one job.
//!
//! Tenancy: the worker's calls (claim and the calls that name a claimed
//! job's attempt) are the documented tenant-less exception; every admin call
//! takes the `TenantId` first, like every other tenant-owned query.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::ids::{JobId, TenantId, UploadId};
use crate::pagination::PageRequest;
use crate::ports::StoreResult;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Waiting for `run_at` (new, or retrying after a backoff).
    Queued,
    /// Claimed by a worker whose lease runs until `lease_until`.
    Running,
    Done,
    /// Out of attempts, or failed permanently: the dead-letter queue.
    Dead,
}

impl JobState {
    pub const ALL: [JobState; 4] = [
        JobState::Queued,
        JobState::Running,
        JobState::Done,
        JobState::Dead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: JobId,
    pub tenant_id: TenantId,
    pub upload_id: Option<UploadId>,
    pub kind: String,
    /// JSON.
    pub payload: String,
    pub state: JobState,
    /// Claims so far, the current one included.
    pub attempts: u32,
    pub max_attempts: u32,
    pub run_at: DateTime<Utc>,
    pub lease_until: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// W3C `traceparent` of the request that enqueued it.
    pub trace_context: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One failed run of a job, kept for the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFailure {
    pub attempt: u32,
    pub error: String,
    pub at: DateTime<Utc>,
}

/// What `job_fail` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Queued again for `run_at`.
    Retrying,
    /// Dead-lettered: no attempts left, or the failure was permanent.
    Dead,
    /// The caller no longer held the job (fenced off); nothing changed.
    Lost,
}

/// Jobs of one kind in one state, for the `queue_depth` gauge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDepth {
    pub kind: String,
    pub state: JobState,
    pub count: u64,
}

#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Claims up to `limit` jobs of `kinds` that are due: queued with
    /// `run_at <= now`, or running with an expired lease (their worker died)
    /// on any attempt, oldest `run_at` first. Each becomes running with
    /// `attempts + 1` and `lease_until = now + lease`. Concurrent claimers
    /// never get the same job (PostgreSQL: `FOR UPDATE SKIP LOCKED`).
    ///
    /// A run whose lease expired is recorded in the job's failures ("lease
    /// expired") for the attempt it held before the job is claimed again.
    /// The claim does not judge: a job whose worker died on its last attempt
    /// comes back with `attempts = max_attempts + 1`, and the caller decides
    /// what to do with it (normally `job_bury`).
    async fn job_claim(
        &self,
        kinds: &[&str],
        now: DateTime<Utc>,
        lease: Duration,
        limit: u32,
    ) -> StoreResult<Vec<Job>>;

    /// Extends the lease of a running job's `attempt`; false if it is no
    /// longer held (the worker should stop working on it).
    async fn job_heartbeat(
        &self,
        id: JobId,
        attempt: u32,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Marks the run `attempt` done; false if it was no longer held.
    async fn job_complete(&self, id: JobId, attempt: u32, now: DateTime<Utc>) -> StoreResult<bool>;

    /// Records a failed run (`error` goes to the history and `last_error`).
    /// With `retry_at` and attempts left, the job is queued again for then;
    /// otherwise (no attempts left, or `retry_at` is `None` for a permanent
    /// failure) it is dead.
    async fn job_fail(
        &self,
        id: JobId,
        attempt: u32,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> StoreResult<FailOutcome>;

    /// Gives the run `attempt` back without counting it (`attempts - 1`),
    /// queued for `run_at`: for an outage of a dependency (storage's breaker
    /// open) and for a worker shutting down. False if no longer held.
    async fn job_defer(
        &self,
        id: JobId,
        attempt: u32,
        run_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Dead-letters a job whose worker died on each of its attempts (a poison
    /// job): the caller has already given up on its subject. For the run
    /// `attempt` it holds (a claim past `max_attempts`): the job becomes dead
    /// with that claim taken back (`attempts - 1`, as it was no real run),
    /// `last_error` saying its lease expired, and no history row of its own
    /// (the claim wrote the lost run's). False if no longer held.
    async fn job_bury(&self, id: JobId, attempt: u32, now: DateTime<Utc>) -> StoreResult<bool>;

    /// A tenant's jobs, newest first, optionally in one state (keyset
    /// pagination on the UUIDv7 id, `id < before`, as the other lists).
    async fn job_list(
        &self,
        tenant: TenantId,
        state: Option<JobState>,
        page: PageRequest,
    ) -> StoreResult<Vec<Job>>;

    /// A tenant's job with its failures, oldest first.
    async fn job_get(
        &self,
        tenant: TenantId,
        id: JobId,
    ) -> StoreResult<Option<(Job, Vec<JobFailure>)>>;

    /// Queues a dead job again from the start (`attempts = 0`, due now).
    /// `None` if the tenant has no such job; a job that is not dead is
    /// returned unchanged.
    async fn job_retry(
        &self,
        tenant: TenantId,
        id: JobId,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Job>>;

    /// `job_retry` for every dead job of the tenant; returns how many.
    async fn job_retry_dead(&self, tenant: TenantId, now: DateTime<Utc>) -> StoreResult<u64>;

    /// Jobs by kind and state across all tenants (the scaling signal).
    async fn job_depth(&self) -> StoreResult<Vec<QueueDepth>>;

    /// Waits until a job may have become due (a new or re-queued job was
    /// written, by this process or, on PostgreSQL, any other: LISTEN/NOTIFY)
    /// or `timeout` passes. Spurious wake-ups are allowed. A job queued for
    /// a later `run_at` (a backoff) wakes nobody when it falls due, so the
    /// timeout is also the worker's polling interval.
    async fn job_wait(&self, timeout: Duration);
}
