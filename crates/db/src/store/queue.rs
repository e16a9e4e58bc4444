//! `JobQueue`, and how `job_wait` hears of queued jobs. Fencing is in the
//! SQL (`crate::queue`); claiming is each dialect's own.

use std::time::Duration;

use async_trait::async_trait;
use buildpeer_core::StoreError;
use buildpeer_core::ids::{JobId, TenantId};
use buildpeer_core::pagination::PageRequest;
use buildpeer_core::ports::StoreResult;
use buildpeer_core::queue::{FailOutcome, Job, JobFailure, JobQueue, JobState, QueueDepth};
use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use uuid::Uuid;

use super::{Store, owned};
use crate::exec::{Pool, Query, SNAPSHOT, Tx, q};
use crate::queue::{self as jobs, Claim, DepthRow, FailureRow, JobRow};
use crate::{postgres, sql, sqlite};

/// How `job_wait` learns that jobs were queued.
pub(crate) enum Wakeup {
    /// SQLite: this process's own writes signal it after they commit; another
    /// process's are seen when the wait times out.
    Local(Notify),
    /// PostgreSQL: a NOTIFY sent in the queuing transaction, from any process.
    Listen(Box<postgres::Listener>),
}

/// Wakes every current waiter, and the next one to start (spurious wake-ups
/// are allowed; a lost one would cost a timeout).
pub(crate) fn wake(ready: &Notify) {
    ready.notify_waiters();
    ready.notify_one();
}

fn lease_end(now: DateTime<Utc>, lease: Duration) -> StoreResult<DateTime<Utc>> {
    chrono::TimeDelta::from_std(lease)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .ok_or_else(|| StoreError::Other("lease out of range".into()))
}

/// A worker's statement for the run `attempt` of job `id` (`$1`, `$2`).
fn run(text: &'static str, id: JobId, attempt: u32) -> StoreResult<Query<'static>> {
    Ok(q(text)
        .bind(id.as_uuid())
        .bind(sql::int::<i32, _>(attempt)?))
}

impl Store {
    /// Commits a transaction that queued jobs, waking the workers waiting
    /// for them.
    pub(super) async fn commit_queued(&self, mut tx: Tx) -> StoreResult<()> {
        match &self.wakeup {
            Wakeup::Listen(_) => {
                postgres::notify().execute(&mut tx).await?;
                tx.commit().await
            }
            Wakeup::Local(ready) => {
                tx.commit().await?;
                wake(ready);
                Ok(())
            }
        }
    }

    /// Commits, waking the workers if `queued` says jobs were queued.
    async fn commit_if_queued(&self, tx: Tx, queued: bool) -> StoreResult<()> {
        if queued {
            self.commit_queued(tx).await
        } else {
            tx.commit().await
        }
    }
}

#[async_trait]
impl JobQueue for Store {
    async fn job_claim(
        &self,
        kinds: &[&str],
        now: DateTime<Utc>,
        lease: Duration,
        limit: u32,
    ) -> StoreResult<Vec<Job>> {
        let claim = Claim {
            kinds,
            now,
            until: lease_end(now, lease)?,
            limit: i64::from(limit),
        };
        let rows = match &self.pool {
            Pool::Sqlite(_) => sqlite::claim(&self.pool, &claim).await?,
            Pool::Postgres(_) => postgres::claim(&self.pool, &claim).await?,
        };
        jobs::claimed(rows)
    }

    async fn job_heartbeat(
        &self,
        id: JobId,
        attempt: u32,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.one_changed(run(jobs::HEARTBEAT, id, attempt)?.bind(lease_until))
            .await
    }

    async fn job_complete(&self, id: JobId, attempt: u32, now: DateTime<Utc>) -> StoreResult<bool> {
        self.one_changed(run(jobs::COMPLETE, id, attempt)?.bind(now))
            .await
    }

    async fn job_fail(
        &self,
        id: JobId,
        attempt: u32,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> StoreResult<FailOutcome> {
        let mut tx = self.write().await?;
        let failed: Option<(Uuid, String)> = run(jobs::FAIL, id, attempt)?
            .bind(error)
            .bind(retry_at)
            .bind(now)
            .fetch_optional(&mut tx)
            .await?;
        let Some((tenant, state)) = failed else {
            return Ok(FailOutcome::Lost);
        };
        run(jobs::FAILURE_INSERT, id, attempt)?
            .bind(tenant)
            .bind(error)
            .bind(now)
            .execute(&mut tx)
            .await?;
        let retrying = jobs::state(&state)? == JobState::Queued;
        self.commit_if_queued(tx, retrying).await?;
        Ok(if retrying {
            FailOutcome::Retrying
        } else {
            FailOutcome::Dead
        })
    }

    async fn job_defer(
        &self,
        id: JobId,
        attempt: u32,
        run_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        let deferred = run(jobs::DEFER, id, attempt)?
            .bind(run_at)
            .bind(now)
            .execute(&mut tx)
            .await?
            == 1;
        self.commit_if_queued(tx, deferred).await?;
        Ok(deferred)
    }

    async fn job_bury(&self, id: JobId, attempt: u32, now: DateTime<Utc>) -> StoreResult<bool> {
        self.one_changed(
            run(jobs::BURY, id, attempt)?
                .bind(jobs::LEASE_EXPIRED)
                .bind(now),
        )
        .await
    }

    async fn job_list(
        &self,
        tenant: TenantId,
        state: Option<JobState>,
        page: PageRequest,
    ) -> StoreResult<Vec<Job>> {
        let text = if state.is_some() {
            jobs::LIST_STATE
        } else {
            jobs::LIST
        };
        let mut query = q(text)
            .bind(tenant.as_uuid())
            .bind(sql::before(page))
            .bind(sql::limit(page));
        if let Some(state) = state {
            query = query.bind(state.as_str());
        }
        let rows: Vec<JobRow> = query.fetch_all(&self.pool).await?;
        sql::convert(rows)
    }

    async fn job_get(
        &self,
        tenant: TenantId,
        id: JobId,
    ) -> StoreResult<Option<(Job, Vec<JobFailure>)>> {
        // One snapshot, so the job and its history agree.
        let mut tx = self.pool.begin(SNAPSHOT).await?;
        let row: Option<JobRow> = owned(jobs::GET, tenant, id.as_uuid())
            .fetch_optional(&mut tx)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let failures: Vec<FailureRow> = owned(jobs::FAILURES, tenant, id.as_uuid())
            .fetch_all(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(Some((row.try_into()?, sql::convert(failures)?)))
    }

    async fn job_retry(
        &self,
        tenant: TenantId,
        id: JobId,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Job>> {
        let mut tx = self.write().await?;
        let retried: Option<JobRow> = owned(jobs::RETRY, tenant, id.as_uuid())
            .bind(now)
            .fetch_optional(&mut tx)
            .await?;
        let queued = retried.is_some();
        let row = if queued {
            retried
        } else {
            owned(jobs::GET, tenant, id.as_uuid())
                .fetch_optional(&mut tx)
                .await?
        };
        self.commit_if_queued(tx, queued).await?;
        row.map(Job::try_from).transpose()
    }

    async fn job_retry_dead(&self, tenant: TenantId, now: DateTime<Utc>) -> StoreResult<u64> {
        let mut tx = self.write().await?;
        let retried = q(jobs::RETRY_DEAD)
            .bind(tenant.as_uuid())
            .bind(now)
            .execute(&mut tx)
            .await?;
        self.commit_if_queued(tx, retried > 0).await?;
        Ok(retried)
    }

    async fn job_depth(&self) -> StoreResult<Vec<QueueDepth>> {
        let rows: Vec<DepthRow> = q(jobs::DEPTH).fetch_all(&self.pool).await?;
        sql::convert(rows)
    }

    async fn job_wait(&self, timeout: Duration) {
        match &self.wakeup {
            Wakeup::Local(ready) => {
                let _woken_or_timed_out = tokio::time::timeout(timeout, ready.notified()).await;
            }
            Wakeup::Listen(listener) => listener.wait(timeout).await,
        }
    }
}
