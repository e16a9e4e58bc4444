//! In-process GCRA (governor), and the limiter that uses Redis while it
//! answers and this one while it does not.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use buildpeer_core::cache::{CacheError, CacheKey, RateDecision, RateLimiter, RateQuota};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter as Governor};

use crate::RedisCache;

type Keyed =
    Governor<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// GCRA in this process: one governor limiter per quota, keyed by the
/// port's key. Counts are per process (the embedded default, and the
/// fallback while Redis is down).
#[derive(Default)]
pub struct LocalLimiter {
    limiters: Mutex<HashMap<RateQuota, Arc<Keyed>>>,
    checks: AtomicU64,
}

impl LocalLimiter {
    pub fn new() -> Self {
        Self::default()
    }

    fn limiter(&self, quota: RateQuota) -> Option<Arc<Keyed>> {
        let mut limiters = self.limiters.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(l) = limiters.get(&quota) {
            return Some(Arc::clone(l));
        }
        let burst = NonZeroU32::new(quota.burst)?;
        let q = Quota::with_period(quota.emission())?.allow_burst(burst);
        let l = Arc::new(Governor::keyed(q).with_middleware::<StateInformationMiddleware>());
        limiters.insert(quota, Arc::clone(&l));
        Some(l)
    }
}

#[async_trait]
impl RateLimiter for LocalLimiter {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn check(&self, key: &CacheKey, quota: RateQuota) -> Result<RateDecision, CacheError> {
        let Some(limiter) = self.limiter(quota) else {
            return Ok(RateDecision {
                allowed: true,
                remaining: u32::MAX,
                retry_after: Duration::ZERO,
                reset: Duration::ZERO,
            });
        };
        // Forget keys that are back at a full burst now and then, so the map
        // does not grow with every user ever seen.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            limiter.retain_recent();
        }
        let emission = quota.emission();
        Ok(match limiter.check_key(&key.as_str().to_owned()) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                RateDecision {
                    allowed: true,
                    remaining,
                    retry_after: Duration::ZERO,
                    reset: emission * quota.burst.saturating_sub(remaining),
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(limiter.clock().now());
                RateDecision {
                    allowed: false,
                    remaining: 0,
                    retry_after: wait,
                    reset: emission * quota.burst,
                }
            }
        })
    }
}

/// Redis while it answers (counts shared by every replica); this process's
/// own governor while it fails, so limits keep holding per replica.
pub struct FallbackLimiter {
    redis: Arc<RedisCache>,
    local: LocalLimiter,
}

impl FallbackLimiter {
    pub fn new(redis: Arc<RedisCache>) -> Self {
        Self {
            redis,
            local: LocalLimiter::new(),
        }
    }
}

#[async_trait]
impl RateLimiter for FallbackLimiter {
    fn backend(&self) -> &'static str {
        self.redis.backend_name()
    }

    async fn check(&self, key: &CacheKey, quota: RateQuota) -> Result<RateDecision, CacheError> {
        match self.redis.gcra(key, quota).await {
            Ok(d) => Ok(d),
            Err(e) => {
                tracing::debug!(error = %e, "rate limiter falls back to this process");
                metrics::counter!("cache_fallbacks_total", "cache" => "rate_limit").increment(1);
                self.local.check(key, quota).await
            }
        }
    }
}
