//! A circuit breaker in front of any `BlobStore` (the seed's numbers by
//! default): it opens when at least `failure_ratio` of the calls in a sliding
//! window (the last `window` calls within `window_time`) failed, once at
//! least `min_calls` were made; while open every call fails at once with
//! `BlobError::Unavailable(CircuitOpen)`; after `open_for` one trial call goes
//! through (half-open): success closes the breaker, failure opens it again.
//! Every call that does not stream a body has a `call_timeout`.
//!
//! Written here rather than taken from a crate: the breakers on crates.io
//! (failsafe, recloser) count consecutive failures or use a ring without a
//! time bound, not "the last N calls within T seconds with a minimum", and
//! none tells the caller how long until it half-opens, which the API needs
//! for `Retry-After` and the worker for deferring jobs without spending an
//! attempt.
//!
//! Only unavailability counts as failure (`BlobError::Unavailable` and
//! timeouts): `NotFound`, a refused signature or bad parts are the store
//! answering. Streaming calls (`put`, `staging_append`) have no overall
//! timeout: a large file legitimately takes longer than any fixed bound;
//! their outcome still counts.

use std::collections::VecDeque;
use std::future::Future;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use buildpeer_core::blob::{
    BlobError, BlobStore, ByteStream, CircuitOpen, CompletedPart, GetSpec, ObjectKey, ObjectMeta,
    PutSpec, SignedEndpoint, SignedUrl, StagedWrite,
};
use bytes::Bytes;
use chrono::{DateTime, Utc};

/// The breaker's policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// How many recent calls the window holds.
    pub window: usize,
    /// How old a call may be and still count.
    pub window_time: Duration,
    /// No verdict on fewer calls than this.
    pub min_calls: usize,
    /// The share of failed calls that opens the breaker.
    pub failure_ratio: f64,
    /// How long it stays open before a trial call.
    pub open_for: Duration,
    /// The limit on each call that does not stream a body.
    pub call_timeout: Duration,
}

impl Default for BreakerConfig {
    /// The seed's numbers.
    fn default() -> Self {
        Self {
            window: 20,
            window_time: Duration::from_secs(10),
            min_calls: 5,
            failure_ratio: 0.5,
            open_for: Duration::from_secs(30),
            call_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed,
    Open {
        until: Instant,
    },
    /// One trial call is out.
    HalfOpen,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Closed => "closed",
            Phase::Open { .. } => "open",
            Phase::HalfOpen => "half_open",
        }
    }

    /// `storage_circuit_state`: 0 closed, 1 half-open, 2 open.
    fn gauge(self) -> f64 {
        match self {
            Phase::Closed => 0.0,
            Phase::HalfOpen => 1.0,
            Phase::Open { .. } => 2.0,
        }
    }
}

/// The state machine, on an explicit clock so it can be tested without
/// sleeping.
#[derive(Debug)]
struct Breaker {
    config: BreakerConfig,
    backend: &'static str,
    phase: Phase,
    /// (when, failed) of the recent calls, oldest first.
    calls: VecDeque<(Instant, bool)>,
}

/// What `admit` lets a call do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    Go,
    /// The half-open trial: its outcome decides.
    Trial,
}

impl Breaker {
    fn new(config: BreakerConfig, backend: &'static str) -> Self {
        metrics::gauge!("storage_circuit_state", "backend" => backend).set(0.0);
        Self {
            config,
            backend,
            phase: Phase::Closed,
            calls: VecDeque::new(),
        }
    }

    fn set(&mut self, phase: Phase) {
        if std::mem::discriminant(&phase) != std::mem::discriminant(&self.phase) {
            metrics::counter!("storage_circuit_transitions_total", "backend" => self.backend, "to" => phase.name())
                .increment(1);
            metrics::gauge!("storage_circuit_state", "backend" => self.backend).set(phase.gauge());
            tracing::warn!(
                backend = self.backend,
                to = phase.name(),
                "storage circuit breaker"
            );
        }
        self.phase = phase;
    }

    fn admit(&mut self, now: Instant) -> Result<Admission, Duration> {
        match self.phase {
            Phase::Closed => Ok(Admission::Go),
            Phase::Open { until } if now < until => Err(until - now),
            Phase::Open { .. } => {
                self.set(Phase::HalfOpen);
                Ok(Admission::Trial)
            }
            // Everything else waits for the trial; a second short wait.
            Phase::HalfOpen => Err(Duration::from_secs(1)),
        }
    }

    fn record(&mut self, admission: Admission, failed: bool, now: Instant) {
        if admission == Admission::Trial {
            self.calls.clear();
            if failed {
                self.set(Phase::Open {
                    until: now + self.config.open_for,
                });
            } else {
                self.set(Phase::Closed);
            }
            return;
        }
        if self.phase != Phase::Closed {
            // A call admitted before the breaker opened: its verdict is in.
            return;
        }
        self.calls.push_back((now, failed));
        while self.calls.len() > self.config.window {
            self.calls.pop_front();
        }
        while self
            .calls
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > self.config.window_time)
        {
            self.calls.pop_front();
        }
        let total = self.calls.len();
        let failures = self.calls.iter().filter(|(_, f)| *f).count();
        if total >= self.config.min_calls
            && failures as f64 >= self.config.failure_ratio * total as f64
        {
            self.calls.clear();
            self.set(Phase::Open {
                until: now + self.config.open_for,
            });
        }
    }

    /// How long calls are still refused: `None` once a trial may go (or
    /// is out), so signing and the worker's check never hold it open.
    fn open_for(&self, now: Instant) -> Option<Duration> {
        match self.phase {
            Phase::Open { until } if now < until => Some(until - now),
            _ => None,
        }
    }
}

fn is_failure(e: &BlobError) -> bool {
    matches!(e, BlobError::Unavailable(_))
}

fn refused(retry_after: Duration) -> BlobError {
    BlobError::Unavailable(Box::new(CircuitOpen { retry_after }))
}

#[derive(Debug, thiserror::Error)]
#[error("storage call timed out after {0:?}")]
struct TimedOut(Duration);

/// A `BlobStore` behind a circuit breaker.
pub struct CircuitBreaker {
    inner: Arc<dyn BlobStore>,
    breaker: Mutex<Breaker>,
}

impl CircuitBreaker {
    pub fn new(inner: Arc<dyn BlobStore>, config: BreakerConfig) -> Self {
        let backend = inner.backend();
        Self {
            inner,
            breaker: Mutex::new(Breaker::new(config, backend)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Breaker> {
        // The state stays consistent under a panic elsewhere: take it back.
        self.breaker.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn config(&self) -> BreakerConfig {
        self.lock().config
    }

    fn admit(&self) -> Result<Admission, BlobError> {
        self.lock().admit(Instant::now()).map_err(refused)
    }

    fn record<T>(&self, admission: Admission, result: &Result<T, BlobError>) {
        let failed = result.as_ref().err().is_some_and(is_failure);
        self.lock().record(admission, failed, Instant::now());
    }

    /// A call with the timeout.
    async fn call<T>(
        &self,
        fut: impl Future<Output = Result<T, BlobError>>,
    ) -> Result<T, BlobError> {
        let admission = self.admit()?;
        let limit = self.config().call_timeout;
        let result = match tokio::time::timeout(limit, fut).await {
            Ok(r) => r,
            Err(_) => Err(BlobError::Unavailable(Box::new(TimedOut(limit)))),
        };
        self.record(admission, &result);
        result
    }

    /// A call that streams a body: no overall timeout.
    async fn streaming<T>(
        &self,
        fut: impl Future<Output = Result<T, BlobError>>,
    ) -> Result<T, BlobError> {
        let admission = self.admit()?;
        let result = fut.await;
        self.record(admission, &result);
        result
    }

    /// Signing does not call storage, but a URL to a store that is down is
    /// no use: while open it is refused like a call (the API answers 503).
    fn signing<T>(&self, f: impl FnOnce() -> Result<T, BlobError>) -> Result<T, BlobError> {
        match self.lock().open_for(Instant::now()) {
            Some(left) => Err(refused(left)),
            None => f(),
        }
    }
}

#[async_trait]
impl BlobStore for CircuitBreaker {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn put(
        &self,
        key: &ObjectKey,
        content_type: &str,
        body: ByteStream,
    ) -> Result<ObjectMeta, BlobError> {
        self.streaming(self.inner.put(key, content_type, body))
            .await
    }

    async fn get(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
    ) -> Result<(ObjectMeta, ByteStream), BlobError> {
        // The timeout covers getting the answer going, not reading it.
        self.call(self.inner.get(key, range)).await
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, BlobError> {
        self.call(self.inner.head(key)).await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), BlobError> {
        self.call(self.inner.delete(key)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(ObjectKey, ObjectMeta)>, BlobError> {
        self.call(self.inner.list(prefix)).await
    }

    async fn multipart_create(
        &self,
        key: &ObjectKey,
        content_type: &str,
    ) -> Result<String, BlobError> {
        self.call(self.inner.multipart_create(key, content_type))
            .await
    }

    async fn multipart_put_part(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        number: u32,
        body: Bytes,
    ) -> Result<String, BlobError> {
        self.streaming(self.inner.multipart_put_part(key, upload_id, number, body))
            .await
    }

    async fn multipart_complete(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<ObjectMeta, BlobError> {
        self.call(self.inner.multipart_complete(key, upload_id, parts))
            .await
    }

    async fn multipart_abort(&self, key: &ObjectKey, upload_id: &str) -> Result<(), BlobError> {
        self.call(self.inner.multipart_abort(key, upload_id)).await
    }

    fn sign_put(
        &self,
        key: &ObjectKey,
        spec: &PutSpec,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<SignedUrl, BlobError> {
        self.signing(|| self.inner.sign_put(key, spec, now, expires_at))
    }

    fn sign_part(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        number: u32,
        content_length: u64,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<SignedUrl, BlobError> {
        self.signing(|| {
            self.inner
                .sign_part(key, upload_id, number, content_length, now, expires_at)
        })
    }

    fn sign_get(
        &self,
        key: &ObjectKey,
        spec: &GetSpec,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<SignedUrl, BlobError> {
        self.signing(|| self.inner.sign_get(key, spec, now, expires_at))
    }

    fn supports_staging(&self) -> bool {
        self.inner.supports_staging()
    }

    async fn staging_append(
        &self,
        staging: &ObjectKey,
        offset: u64,
        body: ByteStream,
    ) -> Result<StagedWrite, BlobError> {
        self.streaming(self.inner.staging_append(staging, offset, body))
            .await
    }

    async fn staging_finish(
        &self,
        staging: &ObjectKey,
        length: u64,
        dest: &ObjectKey,
    ) -> Result<ObjectMeta, BlobError> {
        self.streaming(self.inner.staging_finish(staging, length, dest))
            .await
    }

    async fn staging_delete(&self, staging: &ObjectKey) -> Result<(), BlobError> {
        self.call(self.inner.staging_delete(staging)).await
    }

    fn circuit_open(&self) -> Option<Duration> {
        self.lock().open_for(Instant::now())
    }

    fn signed_endpoint(&self) -> Option<&dyn SignedEndpoint> {
        self.inner.signed_endpoint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig::default()
    }

    #[test]
    fn opens_at_half_failures_after_min_calls() {
        let mut b = Breaker::new(config(), "test");
        let t = Instant::now();
        // Four failures: below the minimum of five calls, still closed.
        for i in 0..4 {
            assert_eq!(b.admit(t), Ok(Admission::Go));
            b.record(Admission::Go, true, t + Duration::from_millis(i));
        }
        assert_eq!(b.open_for(t), None);
        b.record(Admission::Go, true, t + Duration::from_millis(5));
        assert!(b.open_for(t).is_some());
        assert!(b.admit(t + Duration::from_secs(29)).is_err());
    }

    #[test]
    fn stays_closed_below_the_ratio() {
        let mut b = Breaker::new(config(), "test");
        let t = Instant::now();
        for i in 0..20u64 {
            // The last 9 of 20 fail: 45% at most, at the end.
            b.record(Admission::Go, i >= 11, t + Duration::from_millis(i));
        }
        assert_eq!(b.open_for(t), None);
    }

    #[test]
    fn forgets_calls_older_than_the_window() {
        let mut b = Breaker::new(config(), "test");
        let t = Instant::now();
        for i in 0..4 {
            b.record(Admission::Go, true, t + Duration::from_millis(i));
        }
        // Eleven seconds later the old failures are gone: one more failure
        // among a few successes does not open it.
        let later = t + Duration::from_secs(11);
        for _ in 0..4 {
            b.record(Admission::Go, false, later);
        }
        b.record(Admission::Go, true, later);
        assert_eq!(b.open_for(later), None);
    }

    #[test]
    fn half_opens_after_the_open_time_and_decides_on_the_trial() {
        let mut b = Breaker::new(config(), "test");
        let t = Instant::now();
        for _ in 0..5 {
            b.record(Admission::Go, true, t);
        }
        let retry = match b.admit(t + Duration::from_secs(10)) {
            Err(d) => d,
            Ok(a) => panic!("admitted {a:?} while open"),
        };
        assert_eq!(retry, Duration::from_secs(20));
        let half = t + Duration::from_secs(30);
        assert_eq!(b.admit(half), Ok(Admission::Trial));
        // Only one trial at a time.
        assert!(b.admit(half).is_err());
        // The trial fails: open for another 30 s.
        b.record(Admission::Trial, true, half);
        assert!(b.admit(half + Duration::from_secs(29)).is_err());
        let again = half + Duration::from_secs(30);
        assert_eq!(b.admit(again), Ok(Admission::Trial));
        b.record(Admission::Trial, false, again);
        assert_eq!(b.admit(again), Ok(Admission::Go));
        assert_eq!(b.open_for(again), None);
    }
}
