//! The metadata store: one implementation of the core's `MetadataStore`
//! port (`store`) over SQLite or PostgreSQL, with their embedded migrations.
//! Queries run through one executor seam (`exec`); what the two databases
//! really do differently lives in `sqlite` and `postgres`. This is the only
//! crate that knows SQL; everything above it sees the port.

mod exec;
mod postgres;
mod queue;
mod sql;
mod sqlite;
mod store;
#[cfg(feature = "testing")]
pub mod testing;

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use buildpeer_core::ports::MetadataStore;

type BoxError = Box<dyn StdError + Send + Sync>;

/// How to open the store.
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// PostgreSQL pool size. SQLite uses a small fixed pool: it serialises
    /// writers anyway, so more connections only add contention.
    pub max_connections: u32,
    /// How long a query waits for a free connection before it fails as
    /// unavailable.
    pub acquire_timeout: Duration,
    /// Applies pending migrations while connecting.
    pub run_migrations: bool,
}

impl Default for DbOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            run_migrations: true,
        }
    }
}

/// Why the store could not be opened. Messages never repeat the database URL,
/// which may carry a password.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("unsupported database URL: expected sqlite:, postgres:// or postgresql://")]
    UnsupportedScheme,
    #[error("invalid {backend} database URL")]
    InvalidUrl {
        backend: &'static str,
        #[source]
        source: BoxError,
    },
    #[error("cannot connect to the {backend} database")]
    Connect {
        backend: &'static str,
        #[source]
        source: BoxError,
    },
    #[error("cannot migrate the {backend} database")]
    Migrate {
        backend: &'static str,
        #[source]
        source: BoxError,
    },
}

impl DbError {
    fn invalid_url<E: StdError + Send + Sync + 'static>(
        backend: &'static str,
    ) -> impl FnOnce(E) -> Self {
        move |e| DbError::InvalidUrl {
            backend,
            source: Box::new(e),
        }
    }

    fn connect<E: StdError + Send + Sync + 'static>(
        backend: &'static str,
    ) -> impl FnOnce(E) -> Self {
        move |e| DbError::Connect {
            backend,
            source: Box::new(e),
        }
    }

    fn migrate<E: StdError + Send + Sync + 'static>(
        backend: &'static str,
    ) -> impl FnOnce(E) -> Self {
        move |e| DbError::Migrate {
            backend,
            source: Box::new(e),
        }
    }
}

/// Opens the store the URL names (`sqlite:path`, `sqlite://path`,
/// `sqlite::memory:`, `postgres://…` or `postgresql://…`), applying pending
/// migrations when `opts.run_migrations` is set. Only one connection is opened
/// up front, so a restart on an existing database is quick.
pub async fn connect(url: &str, opts: &DbOptions) -> Result<Arc<dyn MetadataStore>, DbError> {
    let store: Arc<dyn MetadataStore> = if url.starts_with("sqlite:") {
        Arc::new(sqlite::connect(url, opts).await?)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Arc::new(postgres::connect(url, opts).await?)
    } else {
        return Err(DbError::UnsupportedScheme);
    };
    tracing::info!(
        backend = store.backend(),
        max_connections = store.pool_stats().max,
        "metadata store connected"
    );
    Ok(store)
}
