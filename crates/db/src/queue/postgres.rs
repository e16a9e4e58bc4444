//! `JobQueue` on PostgreSQL. Claims lock their candidates with
//! `FOR UPDATE SKIP LOCKED`, so any number of workers in any number of
//! processes claim in parallel without sharing a job. Whatever queues a job
//! sends `NOTIFY buildpeer_jobs` in its own transaction (delivered at
//! commit); `job_wait` hears it through one `LISTEN` connection per store.
//!
//! The listening connection is not the pool's: it comes from a pool of its
//! own with one connection (`PgListener::connect_with` on the main pool
//! would keep one of its connections forever). A background task, started
//! by the first `job_wait`, owns it, reconnects with a backoff when it
//! fails, and wakes every waiter on each notification and after each
//! (re)connection (a notification may have been missed meanwhile). While it
//! cannot listen, `job_wait` simply sleeps its timeout.

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use buildpeer_core::ids::{JobId, TenantId};
use buildpeer_core::pagination::PageRequest;
use buildpeer_core::ports::StoreResult;
use buildpeer_core::queue::{FailOutcome, Job, JobFailure, JobQueue, JobState, QueueDepth};
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::Notify;
use uuid::Uuid;

use super::{PgStore, store_err};
use crate::queue::{self as q, DepthRow, FailureRow, JobRow};
use crate::sql;

/// The first wait before listening again after a failure; doubles up to
/// `RELISTEN_MAX`.
const RELISTEN_MIN: Duration = Duration::from_millis(500);
const RELISTEN_MAX: Duration = Duration::from_secs(30);

/// What `job_wait` needs: the waiters' signal and the listener task.
pub(crate) struct Wakeup {
    options: PgConnectOptions,
    ready: Arc<Notify>,
    task: std::sync::OnceLock<tokio::task::AbortHandle>,
}

impl Wakeup {
    pub(crate) fn new(options: PgConnectOptions) -> Self {
        Self {
            options,
            ready: Arc::new(Notify::new()),
            task: std::sync::OnceLock::new(),
        }
    }

    /// Starts the listener task unless it runs.
    fn start(&self) {
        self.task.get_or_init(|| {
            let options = self.options.clone();
            let ready = Arc::downgrade(&self.ready);
            tokio::spawn(listen_forever(options, ready)).abort_handle()
        });
    }
}

impl Drop for Wakeup {
    fn drop(&mut self) {
        if let Some(task) = self.task.get() {
            task.abort();
        }
    }
}

/// Every current waiter, and the next one to start (spurious wake-ups are
/// allowed; a lost one would cost a timeout).
fn wake(ready: &Notify) {
    ready.notify_waiters();
    ready.notify_one();
}

async fn listen_forever(options: PgConnectOptions, ready: Weak<Notify>) {
    let mut backoff = RELISTEN_MIN;
    loop {
        match listen(&options, &ready, &mut backoff).await {
            Ok(()) => return,
            Err(e) => tracing::warn!(
                error = %e,
                retry_in_ms = backoff.as_millis() as u64,
                "job queue: cannot listen for notifications; workers poll meanwhile"
            ),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RELISTEN_MAX);
        if ready.strong_count() == 0 {
            return;
        }
    }
}

/// Listens until an error, or until the store is gone (`Ok`).
async fn listen(
    options: &PgConnectOptions,
    ready: &Weak<Notify>,
    backoff: &mut Duration,
) -> Result<(), sqlx::Error> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_lazy_with(options.clone());
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen(q::CHANNEL).await?;
    *backoff = RELISTEN_MIN;
    loop {
        // Connected (again): anything may have been queued meanwhile.
        let Some(ready) = ready.upgrade() else {
            return Ok(());
        };
        wake(&ready);
        drop(ready);
        // `None`: the connection dropped and was made again.
        let _notification = listener.try_recv().await?;
    }
}

/// Sends the wake-up inside a transaction that queues jobs (the upload's
/// `UPLOADED` transition, a retry, a deferral), so it goes out at commit,
/// and only if it commits.
pub(super) async fn notify(conn: &mut PgConnection) -> StoreResult<()> {
    sqlx::query(q::PG_NOTIFY)
        .bind(q::CHANNEL)
        .execute(conn)
        .await
        .map_err(store_err)?;
    Ok(())
}

fn lease_end(now: DateTime<Utc>, lease: Duration) -> StoreResult<DateTime<Utc>> {
    chrono::TimeDelta::from_std(lease)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .ok_or_else(|| buildpeer_core::StoreError::Other("lease out of range".into()))
}

#[async_trait]
impl JobQueue for PgStore {
    async fn job_claim(
        &self,
        kinds: &[&str],
        now: DateTime<Utc>,
        lease: Duration,
        limit: u32,
    ) -> StoreResult<Vec<Job>> {
        let until = lease_end(now, lease)?;
        let kinds: Vec<String> = kinds.iter().map(|k| (*k).to_owned()).collect();
        sqlx::query(q::PG_REAP)
            .bind(&kinds)
            .bind(now)
            .bind(q::LEASE_EXPIRED)
            .execute(&self.pool)
            .await
            .map_err(store_err)?;
        let rows = sqlx::query_as::<_, JobRow>(q::PG_CLAIM)
            .bind(&kinds)
            .bind(now)
            .bind(until)
            .bind(i64::from(limit))
            .bind(q::LEASE_EXPIRED)
            .fetch_all(&self.pool)
            .await
            .map_err(store_err)?;
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
        let outcome = if q::state(&state)? == JobState::Queued {
            notify(&mut tx).await?;
            FailOutcome::Retrying
        } else {
            FailOutcome::Dead
        };
        tx.commit().await.map_err(store_err)?;
        Ok(outcome)
    }

    async fn job_defer(
        &self,
        id: JobId,
        attempt: u32,
        run_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        let done = sqlx::query(q::DEFER)
            .bind(id.as_uuid())
            .bind(sql::int::<i32, _>(attempt)?)
            .bind(run_at)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(store_err)?;
        let deferred = done.rows_affected() == 1;
        if deferred {
            notify(&mut tx).await?;
        }
        tx.commit().await.map_err(store_err)?;
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
        // REPEATABLE READ: the job and its history from one snapshot.
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(store_err)?;
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
        let mut tx = self.write().await?;
        let retried = sqlx::query_as::<_, JobRow>(q::RETRY)
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(store_err)?;
        let row = match retried {
            Some(row) => {
                notify(&mut tx).await?;
                Some(row)
            }
            None => sqlx::query_as::<_, JobRow>(q::GET)
                .bind(tenant.as_uuid())
                .bind(id.as_uuid())
                .fetch_optional(&mut *tx)
                .await
                .map_err(store_err)?,
        };
        tx.commit().await.map_err(store_err)?;
        row.map(Job::try_from).transpose()
    }

    async fn job_retry_dead(&self, tenant: TenantId, now: DateTime<Utc>) -> StoreResult<u64> {
        let mut tx = self.write().await?;
        let done = sqlx::query(q::RETRY_DEAD)
            .bind(tenant.as_uuid())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(store_err)?;
        if done.rows_affected() > 0 {
            notify(&mut tx).await?;
        }
        tx.commit().await.map_err(store_err)?;
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
        self.wakeup.start();
        let _woken_or_timed_out = tokio::time::timeout(timeout, self.wakeup.ready.notified()).await;
    }
}
