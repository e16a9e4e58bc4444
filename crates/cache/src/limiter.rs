//! In-process GCRA (governor), and the limiter that uses Redis while it
//! answers and this one while it does not.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use buildpeer_core::cache::{CacheError, CacheKey, RateDecision, RateLimiter, RateQuota};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter as Governor};
use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;

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

/// How far ahead a process leases: enough requests for this long at the rate
/// it has just seen for the key.
const LEASE_HORIZON: Duration = Duration::from_millis(50);

/// Leases not used for this long are forgotten (their few tokens are lost:
/// they were counted in Redis already, so this errs on the strict side).
const LEASE_IDLE: Duration = Duration::from_secs(60);

/// Requests of one key taken from Redis ahead of use.
struct Lease {
    /// Taken and not used yet.
    tokens: u32,
    /// What Redis said was left after the last take, and when it said it.
    remaining: u32,
    reset: Duration,
    taken_at: Instant,
    /// Requests of this key here since the last take: the rate that sizes
    /// the next one.
    since_take: u32,
    last_used: Instant,
    /// A request is taking the next lease. Others that find the lease empty
    /// meanwhile wait for it (`refilled`), then take one request each if it
    /// was not enough, so concurrent requests cannot each take a lease.
    refilling: bool,
    refilled: Arc<Notify>,
    /// Redis refused until then: nothing can change that (GCRA only refills
    /// with time), so requests are refused here without asking.
    refused: Option<(Instant, RateDecision)>,
}

/// What to ask Redis for when the lease had nothing.
struct Take {
    want: u32,
    /// This is the one request taking the next lease.
    refill: bool,
}

/// What the lease says about a request.
enum Leased {
    Decided(RateDecision),
    Ask(Take),
    /// Another request is taking the next lease.
    Wait(OwnedNotified),
}

/// Redis while it answers (counts shared by every replica); this process's
/// own governor while it fails, so limits keep holding per replica.
///
/// A busy key does not cost a round trip per request: the process takes
/// requests from Redis in leases sized on the rate it sees (what
/// [`LEASE_HORIZON`] needs at that rate, at most a tenth of the burst; one
/// lease at a time per key) and admits from the lease locally. Every leased
/// request is counted in Redis when taken, so all replicas together never
/// admit more than the quota; what a replica holds unused may get another
/// replica refused early, by at most a tenth of the burst per replica. A
/// quiet key (under 1 request per horizon) and a quota whose burst is under
/// 20 take one request at a time, exactly as without leases.
pub struct FallbackLimiter {
    redis: Arc<RedisCache>,
    local: LocalLimiter,
    leases: Mutex<HashMap<String, Lease>>,
    checks: AtomicU64,
}

impl FallbackLimiter {
    pub fn new(redis: Arc<RedisCache>) -> Self {
        Self {
            redis,
            local: LocalLimiter::new(),
            leases: Mutex::new(HashMap::new()),
            checks: AtomicU64::new(0),
        }
    }

    fn leases(&self) -> std::sync::MutexGuard<'_, HashMap<String, Lease>> {
        self.leases.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits from the key's lease if it holds a request (or refuses if Redis
    /// refused lately); else says what to take from Redis, or to wait for
    /// the lease being taken (unless `waited` already).
    fn take_leased(&self, key: &CacheKey, cap: u32, waited: bool) -> Leased {
        let now = Instant::now();
        let mut leases = self.leases();
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            leases.retain(|_, l| now.duration_since(l.last_used) < LEASE_IDLE);
        }
        let single = Leased::Ask(Take {
            want: 1,
            refill: false,
        });
        let Some(lease) = leases.get_mut(key.as_str()) else {
            return single;
        };
        lease.since_take = lease.since_take.saturating_add(1);
        lease.last_used = now;
        if lease.tokens > 0 {
            lease.tokens -= 1;
            return Leased::Decided(RateDecision {
                allowed: true,
                remaining: lease.remaining.saturating_add(lease.tokens),
                retry_after: Duration::ZERO,
                reset: lease
                    .reset
                    .saturating_sub(now.duration_since(lease.taken_at)),
            });
        }
        if let Some((until, refusal)) = lease.refused {
            if now < until {
                return Leased::Decided(RateDecision {
                    retry_after: until - now,
                    ..refusal
                });
            }
            lease.refused = None;
        }
        if lease.refilling {
            return if waited {
                single
            } else {
                Leased::Wait(Arc::clone(&lease.refilled).notified_owned())
            };
        }
        let elapsed = now.duration_since(lease.taken_at).as_secs_f64().max(1e-3);
        let want = f64::from(lease.since_take) / elapsed * LEASE_HORIZON.as_secs_f64();
        // Saturating float-to-int conversion; the clamp bounds it anyway.
        let want = (want.ceil() as u32).clamp(1, cap);
        lease.refilling = want > 1;
        Leased::Ask(Take {
            want,
            refill: want > 1,
        })
    }

    /// Keeps what Redis gave beyond the request being decided; returns how
    /// many the lease holds now.
    fn record(&self, key: &CacheKey, take: &Take, taken: u32, decision: &RateDecision) -> u32 {
        let now = Instant::now();
        let mut leases = self.leases();
        let lease = leases
            .entry(key.as_str().to_owned())
            .or_insert_with(|| Lease {
                tokens: 0,
                remaining: 0,
                reset: Duration::ZERO,
                taken_at: now,
                since_take: 0,
                last_used: now,
                refilling: false,
                refilled: Arc::new(Notify::new()),
                refused: None,
            });
        if taken == 0 {
            lease.refused = Some((now + decision.retry_after, *decision));
            return lease.tokens;
        }
        lease.tokens = lease.tokens.saturating_add(taken.saturating_sub(1));
        lease.remaining = decision.remaining;
        lease.reset = decision.reset;
        lease.last_used = now;
        // A request taken alone while a lease was being taken does not start
        // a new rate window.
        if take.refill || !lease.refilling {
            lease.taken_at = now;
            lease.since_take = 0;
        }
        lease.tokens
    }
}

/// Clears a key's `refilling` however the lease's request ends (answered,
/// failed, or dropped with its client).
struct Refilling<'a> {
    limiter: &'a FallbackLimiter,
    key: &'a CacheKey,
}

impl Drop for Refilling<'_> {
    fn drop(&mut self) {
        if let Some(lease) = self.limiter.leases().get_mut(self.key.as_str()) {
            lease.refilling = false;
            lease.refilled.notify_waiters();
        }
    }
}

#[async_trait]
impl RateLimiter for FallbackLimiter {
    fn backend(&self) -> &'static str {
        self.redis.backend_name()
    }

    async fn check(&self, key: &CacheKey, quota: RateQuota) -> Result<RateDecision, CacheError> {
        let cap = (quota.burst / 10).max(1);
        let take = if cap == 1 {
            Take {
                want: 1,
                refill: false,
            }
        } else {
            let mut waited = false;
            loop {
                match self.take_leased(key, cap, waited) {
                    Leased::Decided(decision) => return Ok(decision),
                    Leased::Ask(take) => break take,
                    Leased::Wait(refilled) => {
                        // Bounded by what the refill's own Redis call may take.
                        let _ = tokio::time::timeout(self.redis.timeout(), refilled).await;
                        waited = true;
                    }
                }
            }
        };
        // (`then`, not `then_some`: a guard built and dropped at once would
        // clear another request's refill.)
        let _refilling = take.refill.then(|| Refilling { limiter: self, key });
        match self.redis.gcra(key, quota, take.want).await {
            Ok((taken, mut decision)) => {
                if cap > 1 {
                    let held = self.record(key, &take, taken, &decision);
                    if decision.allowed {
                        decision.remaining = decision.remaining.saturating_add(held);
                    } else if held > 0 {
                        // Redis is out, but a refill that came back meanwhile
                        // left requests here.
                        if let Leased::Decided(d) = self.take_leased(key, cap, true) {
                            return Ok(d);
                        }
                    }
                }
                Ok(decision)
            }
            Err(e) => {
                tracing::debug!(error = %e, "rate limiter falls back to this process");
                metrics::counter!("cache_fallbacks_total", "cache" => "rate_limit").increment(1);
                self.local.check(key, quota).await
            }
        }
    }
}
