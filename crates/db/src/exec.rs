//! The executor seam: one way to run a statement on either backend, so that
//! every query, row mapping and transaction shape above it is written once.
//!
//! A statement is built with `q(SQL).bind(..)`; its arguments are kept as
//! [`Arg`]s (borrowed, inline, no allocation) and handed to sqlx only when it
//! runs, on whichever backend the [`Pool`] or [`Tx`] it runs on belongs to.
//! sqlx still prepares each text once per connection and caches it (`query()`
//! is persistent). Rows decode into `FromRow` structs derived for any row
//! type, so one struct serves `SqliteRow` and `PgRow` alike. The few texts
//! that really differ are an [`Sql`] pair.

use buildpeer_core::StoreError;
use buildpeer_core::ports::{PoolStats, StoreResult};
use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{Database, Encode, FromRow, Postgres, Sqlite, Transaction, Type};
use uuid::Uuid;

/// The most arguments a statement takes (the upload insert has 14).
const MAX_ARGS: usize = 16;

/// SQL text for both backends: the same (`From<&'static str>`; sqlx binds
/// `$N` by number on SQLite as well) or a pair where the dialects differ.
#[derive(Clone, Copy)]
pub(crate) struct Sql {
    sqlite: &'static str,
    postgres: &'static str,
}

impl Sql {
    pub(crate) const fn pair(sqlite: &'static str, postgres: &'static str) -> Self {
        Self { sqlite, postgres }
    }
}

impl From<&'static str> for Sql {
    fn from(both: &'static str) -> Self {
        Self::pair(both, both)
    }
}

/// Opens a transaction that will write: SQLite takes the write lock up front
/// (a deferred transaction that reads and then writes fails with SQLITE_BUSY,
/// without waiting, when another connection wrote in between); PostgreSQL's
/// READ COMMITTED is enough, as conditional updates and row locks carry the
/// concurrency rules, so nothing needs serialisable retries.
pub(crate) const WRITE: Sql = Sql::pair("BEGIN IMMEDIATE", "BEGIN");
/// Opens a read-only transaction whose statements all see one snapshot.
pub(crate) const SNAPSHOT: Sql =
    Sql::pair("BEGIN", "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");

/// A bindable value. Each variant is nullable, since a NULL must still carry
/// its SQL type on PostgreSQL.
#[derive(Clone, Copy)]
pub(crate) enum Arg<'a> {
    Uuid(Option<Uuid>),
    Text(Option<&'a str>),
    Bytes(&'a [u8]),
    I64(Option<i64>),
    I32(Option<i32>),
    Bool(Option<bool>),
    Time(Option<DateTime<Utc>>),
    /// A set of job kinds: a JSON array on SQLite (`json_each`), a `TEXT[]`
    /// on PostgreSQL (`= ANY`).
    Kinds(&'a [&'a str]),
}

/// `Arg::$variant` from a value and from an optional one.
macro_rules! arg_from {
    ($($t:ty => $variant:ident),+ $(,)?) => {$(
        impl<'a> From<$t> for Arg<'a> {
            fn from(v: $t) -> Self {
                Arg::$variant(Some(v))
            }
        }
        impl<'a> From<Option<$t>> for Arg<'a> {
            fn from(v: Option<$t>) -> Self {
                Arg::$variant(v)
            }
        }
    )+};
}

arg_from!(
    Uuid => Uuid,
    &'a str => Text,
    i64 => I64,
    i32 => I32,
    bool => Bool,
    DateTime<Utc> => Time,
);

impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Arg::Text(Some(v))
    }
}

impl<'a> From<&'a [u8]> for Arg<'a> {
    fn from(v: &'a [u8]) -> Self {
        Arg::Bytes(v)
    }
}

/// A statement with its arguments, not yet bound to a backend.
#[must_use = "a query does nothing until it runs"]
pub(crate) struct Query<'a> {
    sql: Sql,
    args: [Arg<'a>; MAX_ARGS],
    /// How many `bind` calls there were; more than `MAX_ARGS` is refused
    /// when the query runs.
    len: usize,
}

/// A query of `sql`, to which `bind` adds `$1`, `$2`, … in order.
pub(crate) fn q<'a>(sql: impl Into<Sql>) -> Query<'a> {
    Query {
        sql: sql.into(),
        args: [Arg::Bool(None); MAX_ARGS],
        len: 0,
    }
}

/// A row type both backends' rows decode into.
pub(crate) trait Decode:
    for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}

impl<T> Decode for T where
    T: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}

pub(crate) type SqlxQuery<DB> = sqlx::query::Query<'static, DB, <DB as Database>::Arguments>;

/// What a backend does its own way below the store: implemented in
/// `sqlite.rs` and `postgres.rs`.
pub(crate) trait Dialect: Database {
    /// Binds a set of job kinds (`Arg::Kinds`).
    fn bind_kinds(query: SqlxQuery<Self>, kinds: &[&str]) -> SqlxQuery<Self>;
    /// Maps a driver error into the port's.
    fn store_err(e: sqlx::Error) -> StoreError;
}

impl<'a> Query<'a> {
    #[inline]
    pub(crate) fn bind(mut self, value: impl Into<Arg<'a>>) -> Self {
        if let Some(slot) = self.args.get_mut(self.len) {
            *slot = value.into();
        }
        self.len += 1;
        self
    }

    /// The sqlx query for `DB`, with the arguments bound.
    fn build<DB>(&self, sql: &'static str) -> StoreResult<SqlxQuery<DB>>
    where
        DB: Dialect,
        for<'t> Option<Uuid>: Encode<'t, DB> + Type<DB>,
        for<'t> Option<&'t str>: Encode<'t, DB> + Type<DB>,
        for<'t> &'t [u8]: Encode<'t, DB> + Type<DB>,
        for<'t> Option<i64>: Encode<'t, DB> + Type<DB>,
        for<'t> Option<i32>: Encode<'t, DB> + Type<DB>,
        for<'t> Option<bool>: Encode<'t, DB> + Type<DB>,
        for<'t> Option<DateTime<Utc>>: Encode<'t, DB> + Type<DB>,
    {
        let args = self.args.get(..self.len).ok_or_else(|| {
            StoreError::Other(format!("{} query arguments, at most {MAX_ARGS}", self.len).into())
        })?;
        Ok(args
            .iter()
            .fold(sqlx::query::<DB>(sql), |query, arg| match *arg {
                Arg::Uuid(v) => query.bind(v),
                Arg::Text(v) => query.bind(v),
                Arg::Bytes(v) => query.bind(v),
                Arg::I64(v) => query.bind(v),
                Arg::I32(v) => query.bind(v),
                Arg::Bool(v) => query.bind(v),
                Arg::Time(v) => query.bind(v),
                Arg::Kinds(v) => DB::bind_kinds(query, v),
            }))
    }

    pub(crate) async fn fetch_optional<'c, R: Decode>(
        self,
        on: impl Into<On<'c>>,
    ) -> StoreResult<Option<R>> {
        let mut held = on.into().hold().await?;
        match held.conn() {
            Conn::Sqlite(c) => {
                let row = self.build::<Sqlite>(self.sql.sqlite)?;
                decode_optional::<Sqlite, R>(row.fetch_optional(c).await)
            }
            Conn::Postgres(c) => {
                let row = self.build::<Postgres>(self.sql.postgres)?;
                decode_optional::<Postgres, R>(row.fetch_optional(c).await)
            }
        }
    }

    pub(crate) async fn fetch_one<'c, R: Decode>(self, on: impl Into<On<'c>>) -> StoreResult<R> {
        self.fetch_optional(on)
            .await?
            .ok_or_else(|| StoreError::Other(Box::new(sqlx::Error::RowNotFound)))
    }

    pub(crate) async fn fetch_all<'c, R: Decode>(
        self,
        on: impl Into<On<'c>>,
    ) -> StoreResult<Vec<R>> {
        let mut held = on.into().hold().await?;
        match held.conn() {
            Conn::Sqlite(c) => {
                let rows = self.build::<Sqlite>(self.sql.sqlite)?;
                decode_all::<Sqlite, R>(rows.fetch_all(c).await)
            }
            Conn::Postgres(c) => {
                let rows = self.build::<Postgres>(self.sql.postgres)?;
                decode_all::<Postgres, R>(rows.fetch_all(c).await)
            }
        }
    }

    /// Runs the statement; returns how many rows it changed.
    pub(crate) async fn execute<'c>(self, on: impl Into<On<'c>>) -> StoreResult<u64> {
        let mut held = on.into().hold().await?;
        match held.conn() {
            Conn::Sqlite(c) => {
                let done = self.build::<Sqlite>(self.sql.sqlite)?.execute(c).await;
                done.map(|d| d.rows_affected()).map_err(Sqlite::store_err)
            }
            Conn::Postgres(c) => {
                let done = self.build::<Postgres>(self.sql.postgres)?.execute(c).await;
                done.map(|d| d.rows_affected()).map_err(Postgres::store_err)
            }
        }
    }
}

fn decode_optional<DB: Dialect, R>(
    row: Result<Option<DB::Row>, sqlx::Error>,
) -> StoreResult<Option<R>>
where
    R: for<'r> FromRow<'r, DB::Row>,
{
    row.and_then(|row| row.map(|r| R::from_row(&r)).transpose())
        .map_err(DB::store_err)
}

fn decode_all<DB: Dialect, R>(rows: Result<Vec<DB::Row>, sqlx::Error>) -> StoreResult<Vec<R>>
where
    R: for<'r> FromRow<'r, DB::Row>,
{
    rows.and_then(|rows| rows.iter().map(R::from_row).collect())
        .map_err(DB::store_err)
}

/// The connection pool of either backend.
pub(crate) enum Pool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Pool {
    /// Opens a transaction with `how` (`WRITE` or `SNAPSHOT`).
    pub(crate) async fn begin(&self, how: Sql) -> StoreResult<Tx> {
        match self {
            Pool::Sqlite(p) => p
                .begin_with(how.sqlite)
                .await
                .map(Tx::Sqlite)
                .map_err(Sqlite::store_err),
            Pool::Postgres(p) => p
                .begin_with(how.postgres)
                .await
                .map(Tx::Postgres)
                .map_err(Postgres::store_err),
        }
    }

    pub(crate) fn stats(&self) -> PoolStats {
        match self {
            Pool::Sqlite(p) => stats(p),
            Pool::Postgres(p) => stats(p),
        }
    }
}

fn stats<DB: Database>(pool: &sqlx::Pool<DB>) -> PoolStats {
    PoolStats {
        size: pool.size(),
        idle: u32::try_from(pool.num_idle()).unwrap_or(u32::MAX),
        max: pool.options().get_max_connections(),
    }
}

/// A transaction of either backend; dropped without `commit`, it rolls back.
pub(crate) enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

impl Tx {
    pub(crate) async fn commit(self) -> StoreResult<()> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await.map_err(Sqlite::store_err),
            Tx::Postgres(tx) => tx.commit().await.map_err(Postgres::store_err),
        }
    }

    /// Takes the row locks `query` selects (`… FOR UPDATE`) on PostgreSQL,
    /// where concurrent writers run side by side. Nothing on SQLite: its
    /// write transaction already excludes every other writer.
    pub(crate) async fn lock(&mut self, query: Query<'_>) -> StoreResult<()> {
        if let Tx::Postgres(_) = self {
            query.execute(self).await?;
        }
        Ok(())
    }
}

/// Where a query runs: on a pooled connection of its own, or in a
/// transaction.
pub(crate) enum On<'c> {
    Pool(&'c Pool),
    Tx(&'c mut Tx),
}

impl<'c> From<&'c Pool> for On<'c> {
    fn from(pool: &'c Pool) -> Self {
        On::Pool(pool)
    }
}

impl<'c> From<&'c mut Tx> for On<'c> {
    fn from(tx: &'c mut Tx) -> Self {
        On::Tx(tx)
    }
}

/// The connection a query runs on, held for as long as it runs (what sqlx
/// does itself when a query runs on a pool).
enum Held<'c> {
    Sqlite(PoolConnection<Sqlite>),
    Postgres(PoolConnection<Postgres>),
    Tx(&'c mut Tx),
}

enum Conn<'c> {
    Sqlite(&'c mut SqliteConnection),
    Postgres(&'c mut PgConnection),
}

impl<'c> On<'c> {
    async fn hold(self) -> StoreResult<Held<'c>> {
        match self {
            On::Pool(Pool::Sqlite(p)) => p
                .acquire()
                .await
                .map(Held::Sqlite)
                .map_err(Sqlite::store_err),
            On::Pool(Pool::Postgres(p)) => p
                .acquire()
                .await
                .map(Held::Postgres)
                .map_err(Postgres::store_err),
            On::Tx(tx) => Ok(Held::Tx(tx)),
        }
    }
}

impl Held<'_> {
    fn conn(&mut self) -> Conn<'_> {
        match self {
            Held::Sqlite(c) => Conn::Sqlite(c),
            Held::Postgres(c) => Conn::Postgres(c),
            Held::Tx(Tx::Sqlite(tx)) => Conn::Sqlite(tx),
            Held::Tx(Tx::Postgres(tx)) => Conn::Postgres(tx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_many_arguments_are_refused() {
        let query = (0..=MAX_ARGS).fold(q("SELECT 1"), |query, n| query.bind(n as i64));
        assert!(query.build::<Sqlite>("SELECT 1").is_err());
        let query = (0..MAX_ARGS).fold(q("SELECT 1"), |query, n| query.bind(n as i64));
        assert!(query.build::<Sqlite>("SELECT 1").is_ok());
    }
}
