//! What is PostgreSQL's own, for multi-node deployments: a connection pool
//! sized by `DbOptions::max_connections`; its error codes; its job claim
//! (`FOR UPDATE SKIP LOCKED`, so any number of workers in any number of
//! processes claim in parallel without sharing a job); and the wake-up of
//! `job_wait` across processes.
//!
//! Whatever queues a job sends `NOTIFY buildpeer_jobs` in its own transaction
//! (delivered at commit); `job_wait` hears it through one `LISTEN` connection
//! per store. The listening connection is not the pool's: it comes from a
//! pool of its own with one connection (`PgListener::connect_with` on the
//! main pool would keep one of its connections forever). A background task,
//! started by the first `job_wait`, owns it, reconnects with a backoff when it
//! fails, and wakes every waiter on each notification and after each
//! (re)connection (a notification may have been missed meanwhile). While it
//! cannot listen, `job_wait` simply sleeps its timeout.

use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use buildpeer_core::StoreError;
use buildpeer_core::error::Conflict;
use buildpeer_core::ports::StoreResult;
use sqlx::Postgres;
use sqlx::error::DatabaseError;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::Notify;

use crate::exec::{Dialect, Pool, Query, SqlxQuery, q};
use crate::queue::{self as jobs, Claim, JobRow};
use crate::sql;
use crate::store::{Store, Wakeup, wake};
use crate::{DbError, DbOptions};

pub(crate) const BACKEND: &str = "postgres";

/// The channel a notification goes to whenever jobs become queued.
const CHANNEL: &str = "buildpeer_jobs";

pub(crate) async fn connect(url: &str, opts: &DbOptions) -> Result<Store, DbError> {
    let options = PgConnectOptions::from_str(url).map_err(DbError::invalid_url(BACKEND))?;
    let listener = Listener::new(options.clone());
    let pool = PgPoolOptions::new()
        .max_connections(opts.max_connections)
        .acquire_timeout(opts.acquire_timeout)
        .connect_with(options)
        .await
        .map_err(DbError::connect(BACKEND))?;
    if opts.run_migrations {
        sqlx::migrate!("migrations/postgres")
            .run(&pool)
            .await
            .map_err(DbError::migrate(BACKEND))?;
    }
    Ok(Store::new(
        BACKEND,
        Pool::Postgres(pool),
        Wakeup::Listen(Box::new(listener)),
    ))
}

impl Dialect for Postgres {
    /// As a `TEXT[]`, for `kind = ANY($1)`.
    fn bind_kinds(query: SqlxQuery<Self>, kinds: &[&str]) -> SqlxQuery<Self> {
        query.bind(kinds)
    }

    fn store_err(e: sqlx::Error) -> StoreError {
        sql::store_error(e, conflict, |db| {
            // Connection exceptions (class 08), an administrator or crash
            // shutting the server down (57P01..57P03), too many connections
            // (53300), and a statement timeout (57014).
            db.code().is_some_and(|c| {
                c.starts_with("08")
                    || matches!(&*c, "57P01" | "57P02" | "57P03" | "53300" | "57014")
            })
        })
    }
}

fn conflict(db: &dyn DatabaseError) -> Option<Conflict> {
    match db.constraint()? {
        "tenants_slug_key" => Some(Conflict::TenantSlug),
        "users_tenant_email_key" => Some(Conflict::UserEmail),
        "projects_tenant_code_key" => Some(Conflict::ProjectCode),
        _ => None,
    }
}

/// One statement, outside any transaction: it locks its candidates, writes
/// the lost runs' history and claims them.
pub(crate) async fn claim(pool: &Pool, claim: &Claim<'_>) -> StoreResult<Vec<JobRow>> {
    claim.query(jobs::PG_CLAIM).fetch_all(pool).await
}

/// The wake-up, to run in a transaction that queues jobs: it goes out at
/// commit, and only if it commits.
pub(crate) fn notify() -> Query<'static> {
    q("SELECT pg_notify($1, '')").bind(CHANNEL)
}

/// The first wait before listening again after a failure; doubles up to
/// `RELISTEN_MAX`.
const RELISTEN_MIN: Duration = Duration::from_millis(500);
const RELISTEN_MAX: Duration = Duration::from_secs(30);

/// What `job_wait` needs: the waiters' signal and the listener task.
pub(crate) struct Listener {
    options: PgConnectOptions,
    ready: Arc<Notify>,
    task: std::sync::OnceLock<tokio::task::AbortHandle>,
}

impl Listener {
    pub(crate) fn new(options: PgConnectOptions) -> Self {
        Self {
            options,
            ready: Arc::new(Notify::new()),
            task: std::sync::OnceLock::new(),
        }
    }

    /// Waits for a notification or `timeout`, starting the listener task
    /// unless it runs.
    pub(crate) async fn wait(&self, timeout: Duration) {
        self.task.get_or_init(|| {
            let options = self.options.clone();
            let ready = Arc::downgrade(&self.ready);
            tokio::spawn(listen_forever(options, ready)).abort_handle()
        });
        let _woken_or_timed_out = tokio::time::timeout(timeout, self.ready.notified()).await;
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(task) = self.task.get() {
            task.abort();
        }
    }
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
    listener.listen(CHANNEL).await?;
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
