//! What the operational endpoints ask of the service: is it ready, how are
//! its pool and queue doing, and the local store's signed-URL endpoint. Named
//! operations, so that no driver reaches past the service to a port.

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::Service;
use crate::blob::SignedEndpoint;
use crate::queue::JobState;

/// How long readiness waits for the database.
const DATABASE_CHECK: Duration = Duration::from_secs(2);
/// How long readiness waits for the cache.
const CACHE_CHECK: Duration = Duration::from_secs(1);
/// How long a scrape waits for the queue counts before the gauges keep
/// their previous values.
const QUEUE_DEPTH_TIMEOUT: Duration = Duration::from_millis(500);

/// Which dependencies answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// The database answered a ping in time.
    pub database: bool,
    /// The cache answered a ping in time.
    pub cache: bool,
    /// Storage's circuit breaker is closed.
    pub storage: bool,
}

impl Service {
    /// Checks the database and the cache at once, each with its own time
    /// limit, and reads the storage breaker.
    pub async fn readiness(&self) -> Readiness {
        let cache = self.caching().port();
        let (database, cache) = tokio::join!(
            tokio::time::timeout(DATABASE_CHECK, self.store.ping()),
            tokio::time::timeout(CACHE_CHECK, cache.ping()),
        );
        Readiness {
            database: matches!(database, Ok(Ok(()))),
            cache: matches!(cache, Ok(Ok(()))),
            storage: self.blobs.circuit_open().is_none(),
        }
    }

    /// Sets the gauges that are read rather than counted: the database
    /// pool's connections, and `queue_depth{kind,state}` with
    /// `queue_dead_letter_size` (one `GROUP BY` on an index, so they are as
    /// fresh as the scrape and cost nothing between scrapes). Every state of
    /// every kind ever seen is set, so a count that drops to zero shows as
    /// zero. If the database is slow or down, the queue gauges keep their
    /// previous values.
    pub async fn refresh_gauges(&self) {
        let stats = self.store.pool_stats();
        let backend = self.store.backend();
        metrics::gauge!("db_pool_connections", "backend" => backend, "state" => "idle")
            .set(f64::from(stats.idle));
        metrics::gauge!("db_pool_connections", "backend" => backend, "state" => "in_use")
            .set(f64::from(stats.size.saturating_sub(stats.idle)));
        metrics::gauge!("db_pool_max_connections", "backend" => backend).set(f64::from(stats.max));
        self.refresh_stored_bytes().await;
        let budget = self.media.budget();
        metrics::gauge!("worker_memory_budget_bytes").set(budget.total() as f64);
        metrics::gauge!("worker_memory_reserved_bytes").set(budget.reserved() as f64);

        // The kinds seen by this process: a kind whose jobs are all gone
        // still reports zeros.
        static KINDS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
        let depth = match tokio::time::timeout(QUEUE_DEPTH_TIMEOUT, self.store.job_depth()).await {
            Ok(Ok(depth)) => depth,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "queue depth not refreshed");
                return;
            }
            Err(_) => {
                tracing::warn!("queue depth not refreshed: the database did not answer in time");
                return;
            }
        };
        let mut kinds = KINDS.lock().unwrap_or_else(PoisonError::into_inner);
        kinds.extend(depth.iter().map(|d| d.kind.clone()));
        let mut dead = 0;
        for kind in kinds.iter() {
            for state in JobState::ALL {
                let count = depth
                    .iter()
                    .find(|d| d.kind == *kind && d.state == state)
                    .map_or(0, |d| d.count);
                if state == JobState::Dead {
                    dead += count;
                }
                metrics::gauge!("queue_depth", "kind" => kind.clone(), "state" => state.as_str())
                    .set(count as f64);
            }
        }
        metrics::gauge!("queue_dead_letter_size").set(dead as f64);
    }

    /// The endpoint that serves the local store's signed URLs; `None` when
    /// storage serves its own (S3).
    pub fn signed_endpoint(&self) -> Option<&dyn SignedEndpoint> {
        self.blobs.signed_endpoint()
    }
}
