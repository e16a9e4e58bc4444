//! Test support for the other crates' test suites (the `testing` feature,
//! which only dev-dependencies turn on): the few things a test does to a
//! database that the `MetadataStore` port rightly does not offer, each named
//! for what it means. Creating and dropping a test's own PostgreSQL
//! database, looking at rows behind the app's back, moving an expiry into
//! the past, and interfering with PostgreSQL sessions to see the app cope.
//!
//! Everything goes through sqlx by URL and plain SQL on the migrated schema,
//! never through this crate's adapters, so that tests neither depend on nor
//! constrain how the adapters are written.

use sqlx::{AssertSqlSafe, Connection as _, PgConnection, SqliteConnection};
use uuid::Uuid;

pub type Result<T> = std::result::Result<T, sqlx::Error>;

fn is_sqlite(url: &str) -> bool {
    url.starts_with("sqlite:")
}

/// `name` quoted as a PostgreSQL identifier (database and table names
/// cannot be bound as parameters).
fn identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `admin_url` with its database replaced by `name`.
fn database_url(admin_url: &str, name: &str) -> String {
    let (base, query) = admin_url
        .split_once('?')
        .map_or((admin_url, None), |(b, q)| (b, Some(q)));
    let authority = base.find("://").map_or(0, |i| i + 3);
    let path = base[authority..]
        .find('/')
        .map_or(base.len(), |i| authority + i);
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    format!("{}/{name}{query}", &base[..path])
}

/// Runs one statement on a fresh connection to `url` (PostgreSQL).
async fn pg_execute(url: &str, sql: String) -> Result<()> {
    let mut conn = PgConnection::connect(url).await?;
    sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut conn).await?;
    conn.close().await
}

/// Creates the empty PostgreSQL database `name` on the server of
/// `admin_url`; returns its URL.
pub async fn create_database(admin_url: &str, name: &str) -> Result<String> {
    pg_execute(admin_url, format!("CREATE DATABASE {}", identifier(name))).await?;
    Ok(database_url(admin_url, name))
}

/// Drops the PostgreSQL database `name`, ending its sessions; no error if
/// it is gone already.
pub async fn drop_database(admin_url: &str, name: &str) -> Result<()> {
    let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", identifier(name));
    pg_execute(admin_url, sql).await
}

/// How many processing jobs the upload has, in the store at `url` (SQLite
/// or PostgreSQL).
pub async fn count_jobs_of_upload(url: &str, upload: Uuid) -> Result<i64> {
    if is_sqlite(url) {
        let mut conn = SqliteConnection::connect(url).await?;
        let n = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE upload_id = ?1")
            .bind(upload)
            .fetch_one(&mut conn)
            .await?;
        conn.close().await?;
        Ok(n)
    } else {
        let mut conn = PgConnection::connect(url).await?;
        let n = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE upload_id = $1")
            .bind(upload)
            .fetch_one(&mut conn)
            .await?;
        conn.close().await?;
        Ok(n)
    }
}

/// Makes the tenant's upload due to expire now (its expiry set to its
/// creation time, in the column's own type on either database), as if its
/// lifetime had passed on a clock the app does not let tests move. False if
/// there is no such upload.
pub async fn expire_upload(url: &str, tenant: Uuid, upload: Uuid) -> Result<bool> {
    let changed = if is_sqlite(url) {
        let mut conn = SqliteConnection::connect(url).await?;
        let done = sqlx::query(
            "UPDATE uploads SET expires_at = created_at WHERE tenant_id = ?1 AND id = ?2",
        )
        .bind(tenant)
        .bind(upload)
        .execute(&mut conn)
        .await?;
        conn.close().await?;
        done.rows_affected()
    } else {
        let mut conn = PgConnection::connect(url).await?;
        let done = sqlx::query(
            "UPDATE uploads SET expires_at = created_at WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant)
        .bind(upload)
        .execute(&mut conn)
        .await?;
        conn.close().await?;
        done.rows_affected()
    };
    Ok(changed == 1)
}

/// Ends every session on the PostgreSQL database `db` (as a server restart
/// or a failover would), from the server of `admin_url`.
pub async fn end_sessions(admin_url: &str, db: &str) -> Result<()> {
    let mut conn = PgConnection::connect(admin_url).await?;
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(db)
    .execute(&mut conn)
    .await?;
    conn.close().await
}

/// Ends the one PostgreSQL session `pid` (as
/// [`sessions_waiting_on_a_lock`] names them).
pub async fn end_session(admin_url: &str, pid: i32) -> Result<()> {
    let mut conn = PgConnection::connect(admin_url).await?;
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&mut conn)
        .await?;
    conn.close().await
}

/// Lets the PostgreSQL database `db` accept new connections or refuse them
/// all (sessions already open stay; see [`end_sessions`]).
pub async fn allow_connections(admin_url: &str, db: &str, allow: bool) -> Result<()> {
    let sql = format!(
        "ALTER DATABASE {} ALLOW_CONNECTIONS {allow}",
        identifier(db)
    );
    pg_execute(admin_url, sql).await
}

/// The PostgreSQL sessions on `db` that wait on a lock (queries blocked
/// behind a [`TableLock`]).
pub async fn sessions_waiting_on_a_lock(admin_url: &str, db: &str) -> Result<Vec<i32>> {
    let mut conn = PgConnection::connect(admin_url).await?;
    let pids = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
    )
    .bind(db)
    .fetch_all(&mut conn)
    .await?;
    conn.close().await?;
    Ok(pids)
}

/// `ACCESS EXCLUSIVE` on one table, held in an open transaction: every
/// query on the table waits (holding its connection) until
/// [`release`](Self::release).
pub struct TableLock {
    conn: PgConnection,
}

/// Locks `table` of the PostgreSQL database at `url`.
pub async fn lock_table(url: &str, table: &str) -> Result<TableLock> {
    let mut conn = PgConnection::connect(url).await?;
    let sql = format!(
        "BEGIN; LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
        identifier(table)
    );
    sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut conn).await?;
    Ok(TableLock { conn })
}

impl TableLock {
    /// Ends the transaction, and with it the lock.
    pub async fn release(mut self) -> Result<()> {
        sqlx::raw_sql("COMMIT").execute(&mut self.conn).await?;
        self.conn.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::database_url;

    #[test]
    fn database_url_replaces_only_the_database() {
        assert_eq!(
            database_url("postgres://u@h:5432/postgres", "t1"),
            "postgres://u@h:5432/t1"
        );
        assert_eq!(
            database_url("postgres://u@h/postgres?sslmode=disable", "t1"),
            "postgres://u@h/t1?sslmode=disable"
        );
        assert_eq!(database_url("postgres://u@h", "t1"), "postgres://u@h/t1");
    }
}
