//! Adapters for the cache and rate-limiter ports of `buildpeer-core`:
//!
//! - [`RedisCache`]: Redis through `redis`'s `ConnectionManager` (reconnects
//!   by itself), or Redis Cluster (`redis+cluster://host:port,host:port`).
//!   Implements both ports; the limiter is GCRA in one Lua script, so every
//!   replica shares the counts. Every call has a short timeout, and after a
//!   failure calls fail at once for a moment instead of each waiting.
//! - [`MemoryCache`]: moka, in this process only (the embedded default).
//! - [`LocalLimiter`]: governor, in this process only.
//! - [`FallbackLimiter`]: Redis, and the local limiter while Redis fails.
//!
//! [`open`] picks by URL.

mod limiter;
mod memory;
mod redis_store;

use std::sync::Arc;
use std::time::Duration;

use buildpeer_core::cache::{Cache, CacheError, RateLimiter};

pub use limiter::{FallbackLimiter, LocalLimiter};
pub use memory::MemoryCache;
pub use redis_store::RedisCache;

/// Tuning of the adapters.
#[derive(Debug, Clone)]
pub struct CacheOptions {
    /// Longest a Redis call may take before it counts as failed.
    pub timeout: Duration,
    /// After a failure, how long calls fail at once without trying Redis.
    pub retry_after_failure: Duration,
    /// Entries the in-memory cache holds at most.
    pub memory_capacity: u64,
    /// The Redis pub/sub channel of invalidation announcements (one per
    /// deployment sharing a Redis).
    pub channel: String,
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(250),
            retry_after_failure: Duration::from_millis(500),
            memory_capacity: 100_000,
            channel: "bp:announcements".into(),
        }
    }
}

/// The cache and the limiter for a deployment: Redis for both when `url` is
/// set (the limiter falling back to governor while Redis fails), else the
/// in-process ones.
pub async fn open(
    url: Option<&str>,
    opts: &CacheOptions,
) -> Result<(Arc<dyn Cache>, Arc<dyn RateLimiter>), CacheError> {
    match url {
        Some(url) => {
            let redis = Arc::new(RedisCache::connect(url, opts).await?);
            let limiter = Arc::new(FallbackLimiter::new(Arc::clone(&redis)));
            Ok((redis, limiter))
        }
        None => Ok((
            Arc::new(MemoryCache::new(opts.memory_capacity)),
            Arc::new(LocalLimiter::new()),
        )),
    }
}
