//! What is SQLite's own, for single-node deployments: one database file in
//! WAL mode, a few pooled connections, writes serialised by SQLite's own
//! lock; its error codes; and its job claim.

use std::str::FromStr;
use std::time::Duration;

use buildpeer_core::StoreError;
use buildpeer_core::error::Conflict;
use buildpeer_core::ports::StoreResult;
use sqlx::Sqlite;
use sqlx::error::DatabaseError;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::exec::{Dialect, Pool, SqlxQuery, WRITE};
use crate::queue::{self as jobs, Claim, JobRow};
use crate::sql;
use crate::store::{Store, Wakeup};
use crate::{DbError, DbOptions};

pub(crate) const BACKEND: &str = "sqlite";
/// Enough for concurrent readers; writers queue on the database lock anyway.
const POOL_SIZE: u32 = 4;

pub(crate) async fn connect(url: &str, opts: &DbOptions) -> Result<Store, DbError> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(DbError::invalid_url(BACKEND))?
        .create_if_missing(true)
        // WAL lets readers proceed while one connection writes; with it,
        // NORMAL sync survives a process crash and risks only the latest
        // commits on power loss, for far fewer fsyncs than FULL.
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5));
    let mut pool = SqlitePoolOptions::new()
        .max_connections(POOL_SIZE)
        .acquire_timeout(opts.acquire_timeout);
    // An in-memory database lives only as long as a connection to it, so
    // keep exactly one, forever.
    if url.contains(":memory:") || url.contains("mode=memory") {
        pool = pool
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None);
    }
    let pool = pool
        .connect_with(options)
        .await
        .map_err(DbError::connect(BACKEND))?;
    if opts.run_migrations {
        sqlx::migrate!("migrations/sqlite")
            .run(&pool)
            .await
            .map_err(DbError::migrate(BACKEND))?;
    }
    Ok(Store::new(
        BACKEND,
        Pool::Sqlite(pool),
        Wakeup::Local(Default::default()),
    ))
}

impl Dialect for Sqlite {
    /// As a JSON array, which `json_each` reads.
    fn bind_kinds(query: SqlxQuery<Self>, kinds: &[&str]) -> SqlxQuery<Self> {
        query.bind(kinds_json(kinds))
    }

    fn store_err(e: sqlx::Error) -> StoreError {
        sql::store_error(e, conflict, |db| {
            // SQLITE_BUSY and SQLITE_LOCKED, possibly extended: another writer
            // held the lock past the busy timeout.
            db.code()
                .and_then(|c| c.parse::<i32>().ok())
                .is_some_and(|c| matches!(c & 0xff, 5 | 6))
        })
    }
}

/// SQLite reports no constraint name for unique violations, only
/// "UNIQUE constraint failed: " followed by the table-qualified columns.
fn conflict(db: &dyn DatabaseError) -> Option<Conflict> {
    const RULES: [(&str, Conflict); 3] = [
        (": tenants.slug", Conflict::TenantSlug),
        (": users.tenant_id, users.email", Conflict::UserEmail),
        (": projects.tenant_id, projects.code", Conflict::ProjectCode),
    ];
    RULES
        .into_iter()
        .find(|(columns, _)| db.message().ends_with(columns))
        .map(|(_, c)| c)
}

/// Every claim is one write transaction, so claimers (in this process or
/// another on the same file) take turns and never share a job; in it the
/// lost runs among the due jobs go to the history, then the same query (it
/// finds the same rows) claims them.
pub(crate) async fn claim(pool: &Pool, claim: &Claim<'_>) -> StoreResult<Vec<JobRow>> {
    let mut tx = pool.begin(WRITE).await?;
    claim
        .query(jobs::SQLITE_LOST_HISTORY)
        .execute(&mut tx)
        .await?;
    let rows = claim.query(jobs::SQLITE_CLAIM).fetch_all(&mut tx).await?;
    tx.commit().await?;
    Ok(rows)
}

/// The kinds as SQLite's `json_each` reads them.
fn kinds_json(kinds: &[&str]) -> String {
    let quoted: Vec<String> = kinds
        .iter()
        .map(|k| {
            let mut s = String::with_capacity(k.len() + 2);
            s.push('"');
            for c in k.chars() {
                match c {
                    '"' => s.push_str("\\\""),
                    '\\' => s.push_str("\\\\"),
                    c if u32::from(c) < 0x20 => s.push_str(&format!("\\u{:04x}", u32::from(c))),
                    c => s.push(c),
                }
            }
            s.push('"');
            s
        })
        .collect();
    format!("[{}]", quoted.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_a_json_array() {
        assert_eq!(kinds_json(&[]), "[]");
        assert_eq!(
            kinds_json(&["process_upload", "a\"b\\c\n"]),
            r#"["process_upload","a\"b\\c\u000a"]"#
        );
    }
}
