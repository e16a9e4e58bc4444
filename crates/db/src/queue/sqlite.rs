//! `JobQueue` on SQLite. Every claim is one `BEGIN IMMEDIATE` transaction,
//! so claimers (in this process or another on the same file) take turns and
//! never share a job. `job_wait` wakes on this process's own writes that
//! queue a job (`SqliteStore::jobs_ready`); another process's are seen when
//! the timeout passes.

use std::time::Duration;

use async_trait::async_trait;
use buildpeer_core::ids::{JobId, TenantId};
use buildpeer_core::pagination::PageRequest;
use buildpeer_core::ports::StoreResult;
use buildpeer_core::queue::{FailOutcome, Job, JobFailure, JobQueue, JobState, QueueDepth};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{SqliteStore, store_err};
use crate::queue::{self as q, DepthRow, FailureRow, JobRow};
use crate::sql;

impl SqliteStore {
    /// Wakes every `job_wait` of this process, and the next one to start
    /// (spurious wake-ups are allowed; a lost one would cost a timeout).
    pub(super) fn jobs_queued(&self) {
        self.jobs_ready.notify_waiters();
        self.jobs_ready.notify_one();
    }
}

fn lease_end(now: DateTime<Utc>, lease: Duration) -> StoreResult<DateTime<Utc>> {
    chrono::TimeDelta::from_std(lease)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .ok_or_else(|| buildpeer_core::StoreError::Other("lease out of range".into()))
}

#[async_trait]
impl JobQueue for SqliteStore {
    async fn job_claim(
        &self,
        kinds: &[&str],
        now: DateTime<Utc>,
        lease: Duration,
        limit: u32,
    ) -> StoreResult<Vec<Job>> {
        let until = lease_end(now, lease)?;
        let kinds = q::kinds_json(kinds);
        let limit = i64::from(limit);
        let mut tx = self.write().await?;
        sqlx::query(q::SQLITE_REAP_HISTORY)
            .bind(&kinds)
            .bind(now)
            .bind(q::LEASE_EXPIRED)
            .execute(&mut *tx)
            .await
            .map_err(store_err)?;
        sqlx::query(q::SQLITE_REAP)
            .bind(&kinds)
            .bind(now)
            .bind(q::LEASE_EXPIRED)
            .execute(&mut *tx)
            .await
            .map_err(store_err)?;
        sqlx::query(q::SQLITE_LOST_HISTORY)
            .bind(&kinds)
            .bind(now)
            .bind(q::LEASE_EXPIRED)
            .bind(limit)
            .execute(&mut *tx)
            .await
            .map_err(store_err)?;
        let rows = sqlx::query_as::<_, JobRow>(q::SQLITE_CLAIM)
            .bind(&kinds)
            .bind(now)
            .bind(until)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await
            .map_err(store_err)?;
        tx.commit().await.map_err(store_err)?;
        q::claimed(rows)
    }

    async fn job_heartbeat(
        &self,
        id: JobId,
        attempt: u32,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let done = sqlx::query(q::HEARTBEAT)
            .bind(id.as_uuid())
            .bind(sql::int::<i32, _>(attempt)?)
            .bind(lease_until)
            .execute(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn job_complete(&self, id: JobId, attempt: u32, now: DateTime<Utc>) -> StoreResult<bool> {
        let done = sqlx::query(q::COMPLETE)
            .bind(id.as_uuid())
            .bind(sql::int::<i32, _>(attempt)?)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn job_fail(
        &self,
        id: JobId,
        attempt: u32,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> StoreResult<FailOutcome> {
        let attempt: i32 = sql::int(attempt)?;
        let mut tx = self.write().await?;
        let failed: Option<(Uuid, String)> = sqlx::query_as(q::FAIL)
            .bind(id.as_uuid())
            .bind(attempt)
            .bind(error)
            .bind(retry_at)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(store_err)?;
        let Some((tenant, state)) = failed else {
            return Ok(FailOutcome::Lost);
        };
        sqlx::query(q::FAILURE_INSERT)
            .bind(id.as_uuid())
            .bind(tenant)
            .bind(attempt)
            .bind(error)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(store_err)?;
        tx.commit().await.map_err(store_err)?;
        if q::state(&state)? == JobState::Queued {
            self.jobs_queued();
            Ok(FailOutcome::Retrying)
        } else {
            Ok(FailOutcome::Dead)
        }
    }

    async fn job_defer(
        &self,
        id: JobId,
        attempt: u32,
        run_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let done = sqlx::query(q::DEFER)
            .bind(id.as_uuid())
            .bind(sql::int::<i32, _>(attempt)?)
            .bind(run_at)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(store_err)?;
        let deferred = done.rows_affected() == 1;
        if deferred {
            self.jobs_queued();
        }
        Ok(deferred)
    }

    async fn job_list(
        &self,
        tenant: TenantId,
        state: Option<JobState>,
        page: PageRequest,
    ) -> StoreResult<Vec<Job>> {
        let text = if state.is_some() {
            q::LIST_STATE
        } else {
            q::LIST
        };
        let mut query = sqlx::query_as::<_, JobRow>(text)
            .bind(tenant.as_uuid())
            .bind(sql::before(page))
            .bind(sql::limit(page));
        if let Some(state) = state {
            query = query.bind(state.as_str());
        }
        let rows = query.fetch_all(&self.pool).await.map_err(store_err)?;
        sql::convert(rows)
    }

    async fn job_get(
        &self,
        tenant: TenantId,
        id: JobId,
    ) -> StoreResult<Option<(Job, Vec<JobFailure>)>> {
        // One read transaction, so the job and its history agree.
        let mut tx = self.pool.begin().await.map_err(store_err)?;
        let row = sqlx::query_as::<_, JobRow>(q::GET)
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .fetch_optional(&mut *tx)
            .await
            .map_err(store_err)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let failures = sqlx::query_as::<_, FailureRow>(q::FAILURES)
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .fetch_all(&mut *tx)
            .await
            .map_err(store_err)?;
        tx.commit().await.map_err(store_err)?;
        Ok(Some((row.try_into()?, sql::convert(failures)?)))
    }

    async fn job_retry(
        &self,
        tenant: TenantId,
        id: JobId,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Job>> {
        let retried = sqlx::query_as::<_, JobRow>(q::RETRY)
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .bind(now)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_err)?;
        let row = match retried {
            Some(row) => {
                self.jobs_queued();
                Some(row)
            }
            None => sqlx::query_as::<_, JobRow>(q::GET)
                .bind(tenant.as_uuid())
                .bind(id.as_uuid())
                .fetch_optional(&self.pool)
                .await
                .map_err(store_err)?,
        };
        row.map(Job::try_from).transpose()
    }

    async fn job_retry_dead(&self, tenant: TenantId, now: DateTime<Utc>) -> StoreResult<u64> {
        let done = sqlx::query(q::RETRY_DEAD)
            .bind(tenant.as_uuid())
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(store_err)?;
        if done.rows_affected() > 0 {
            self.jobs_queued();
        }
        Ok(done.rows_affected())
    }

    async fn job_depth(&self) -> StoreResult<Vec<QueueDepth>> {
        let rows = sqlx::query_as::<_, DepthRow>(q::DEPTH)
            .fetch_all(&self.pool)
            .await
            .map_err(store_err)?;
        sql::convert(rows)
    }

    async fn job_wait(&self, timeout: Duration) {
        let _woken_or_timed_out = tokio::time::timeout(timeout, self.jobs_ready.notified()).await;
    }
}
