//! A job's life, from claim to done or dead, in one place: the worker only
//! decides how many run at once and when to stop.
//!
//! - **Claim** (`Service::claim_jobs`): due jobs of the kinds this release
//!   runs. A job whose lease ran out comes back with its lost run in the
//!   history; one whose worker died on every attempt (a file that kills the
//!   decoder, an OOM kill) is **buried** here: its handler gives up on its
//!   subject (`processing_crashed`) and it goes to the dead-letter queue.
//! - **Run** (`Service::run_job`): the handler runs while a heartbeat renews
//!   the lease every third of it; a heartbeat that finds the job taken over
//!   (another worker claimed it after the lease ran out) abandons the run. A
//!   panic in the handler is a failed run, not a dead worker.
//! - **Record**: done; a transient failure retried after an exponential
//!   backoff with jitter (kept in the job's `run_at`, so a restart keeps the
//!   schedule), and on the last attempt given up on; a permanent failure
//!   dead-lettered at once; a deferral (a dependency known to be down)
//!   queued again without using an attempt; a run the driver wants back
//!   (shutdown) returned the same way.
//!
//! Every call after the claim names the attempt it holds, so a run that was
//! taken over changes nothing (the queue's fencing, `queue.rs`).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::FutureExt as _;
use tracing::Instrument as _;

use super::spec::{JobSpec, SpecError};
use crate::error::CoreError;
use crate::queue::{FailOutcome, Job};
use crate::service::Service;

/// How jobs are retried and leased.
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// How long a claim holds a job without a heartbeat: after that, its
    /// worker is taken for dead and the job runs again.
    pub lease: Duration,
    /// Runs a new job gets, the first included.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt, up to `max_backoff`.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for JobSettings {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(60),
            max_attempts: 3,
            base_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(300),
        }
    }
}

/// What one run of a job came to: a handler's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Done,
    /// A transient failure (`code` names what was unavailable): run again
    /// after a backoff, or give up if that was the last attempt.
    Retry {
        code: &'static str,
        error: String,
    },
    /// A permanent failure, already recorded on the job's subject:
    /// dead-letter now, retrying cannot help.
    Dead {
        error: String,
    },
    /// A dependency is known to be down (storage's breaker is open): run
    /// again after `delay` without using an attempt, so an outage of any
    /// length dead-letters nothing.
    Defer {
        delay: Duration,
    },
}

/// The work a job kind does: one per `JobSpec` variant, over its payload.
pub(crate) trait Handler {
    /// One attempt.
    async fn run(&self, service: &Service, job: &Job) -> Outcome;

    /// No attempt will follow (the last one failed, or every worker that
    /// ran it died): record why on the job's subject, `code` saying which
    /// (`processing_crashed`, or a `Retry`'s code).
    async fn give_up(&self, service: &Service, job: &Job, code: &str, message: &str);
}

impl JobSpec {
    async fn run(&self, service: &Service, job: &Job) -> Outcome {
        match self {
            JobSpec::ProcessUpload(h) => h.run(service, job).await,
        }
    }

    async fn give_up(&self, service: &Service, job: &Job, code: &str, message: &str) {
        match self {
            JobSpec::ProcessUpload(h) => h.give_up(service, job, code, message).await,
        }
    }
}

const CRASHED: &str = "processing_crashed";
const CRASHED_MESSAGE: &str = "processing stopped before it finished on every attempt (the \
                               file may crash or exhaust the processor); an administrator \
                               can retry it";
const UNAVAILABLE_MESSAGE: &str = "processing could not finish: a service it needs was \
                                   unavailable; an administrator can retry it";

impl Service {
    /// Uses `settings` for the jobs this service enqueues and runs.
    pub fn with_jobs(mut self, settings: JobSettings) -> Self {
        self.jobs = std::sync::Arc::new(settings);
        self
    }

    pub(crate) fn job_settings(&self) -> &JobSettings {
        &self.jobs
    }

    /// Claims up to `limit` due jobs for this worker. Poison jobs found
    /// among them are buried (see the module doc) and not returned.
    pub async fn claim_jobs(&self, limit: u32) -> Result<Vec<Job>, CoreError> {
        let claimed = self
            .store
            .job_claim(JobSpec::KINDS, self.clock.now(), self.jobs.lease, limit)
            .await?;
        let mut runnable = Vec::with_capacity(claimed.len());
        for job in claimed {
            if job.attempts > job.max_attempts {
                self.bury(&job).await;
            } else {
                runnable.push(job);
            }
        }
        Ok(runnable)
    }

    /// Waits until a job may have become due, or `timeout` (the idle poll).
    pub async fn wait_for_jobs(&self, timeout: Duration) {
        self.store.job_wait(timeout).await;
    }

    /// Runs one claimed job to its end and records the outcome. If
    /// `give_back` completes first (the driver is shutting down and its
    /// grace period is over), the run is dropped and the job returned to
    /// the queue without using an attempt.
    pub async fn run_job(&self, job: Job, give_back: impl Future<Output = ()>) {
        let span = tracing::info_span!(
            "job",
            jobId = %job.id,
            tenantId = %job.tenant_id,
            uploadId = job.upload_id.map(|u| u.to_string()),
            kind = %job.kind,
            attempt = job.attempts,
            traceparent = job.trace_context.as_deref(),
        );
        self.run_claimed(job, give_back).instrument(span).await;
    }

    async fn run_claimed(&self, job: Job, give_back: impl Future<Output = ()>) {
        let spec = match JobSpec::parse(&job.kind, &job.payload) {
            Ok(spec) => spec,
            Err(e @ SpecError::Newer { .. }) => {
                tracing::warn!(error = %e, "handing the job back for a newer worker");
                let run_at = self.clock.now() + to_chrono(self.jobs.lease);
                self.give_back(&job, run_at).await;
                return;
            }
            Err(e) => {
                self.record_failure(&job, &e.to_string(), None, 0.0).await;
                return;
            }
        };
        let started = Instant::now();
        let Some(outcome) = self.attempt(&spec, &job, give_back).await else {
            return;
        };
        let elapsed = started.elapsed().as_secs_f64();
        let kind = spec.kind();
        match outcome {
            Outcome::Done => {
                metrics::histogram!("worker_duration_seconds", "kind" => kind, "outcome" => "done")
                    .record(elapsed);
                let done = self
                    .store
                    .job_complete(job.id, job.attempts, self.clock.now())
                    .await;
                if let Err(e) = done {
                    // The lease runs out and the job runs again: every
                    // handler is idempotent.
                    tracing::warn!(error = %e, "could not record the job done");
                }
                tracing::info!(elapsed_ms = (elapsed * 1000.0) as u64, "job done");
            }
            Outcome::Retry { code, error } => {
                let retry_at = if job.attempts >= job.max_attempts {
                    spec.give_up(self, &job, code, UNAVAILABLE_MESSAGE).await;
                    None
                } else {
                    Some(self.clock.now() + backoff(&self.jobs, job.attempts))
                };
                self.record_failure(&job, &error, retry_at, elapsed).await;
            }
            Outcome::Dead { error } => self.record_failure(&job, &error, None, elapsed).await,
            Outcome::Defer { delay } => {
                metrics::counter!("worker_deferred_total", "kind" => kind).increment(1);
                tracing::info!(
                    delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "a dependency is unavailable; job deferred without using an attempt"
                );
                self.give_back(&job, self.clock.now() + to_chrono(delay))
                    .await;
            }
        }
    }

    /// The handler's run beside the heartbeat. `None`: the run was
    /// abandoned (lease lost, or given back; already recorded).
    async fn attempt(
        &self,
        spec: &JobSpec,
        job: &Job,
        give_back: impl Future<Output = ()>,
    ) -> Option<Outcome> {
        // A panic fails this run like a transient error would; the worker
        // and its other jobs go on.
        let work = AssertUnwindSafe(spec.run(self, job)).catch_unwind();
        let mut work = std::pin::pin!(work);
        let mut give_back = std::pin::pin!(give_back);
        let mut beat = tokio::time::interval(self.jobs.lease / 3);
        beat.tick().await; // the first tick is immediate
        loop {
            tokio::select! {
                ran = &mut work => {
                    return Some(ran.unwrap_or_else(|panic| Outcome::Retry {
                        code: "panicked",
                        error: format!("the job panicked: {}", panic_message(panic)),
                    }));
                }
                _ = beat.tick() => {
                    let until = self.clock.now() + to_chrono(self.jobs.lease);
                    match self.store.job_heartbeat(job.id, job.attempts, until).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!("lost the job's lease; abandoning this run");
                            return None;
                        }
                        // The database may be back before the lease runs out.
                        Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
                    }
                }
                () = &mut give_back => {
                    tracing::warn!("the worker is stopping; giving the job back");
                    self.give_back(job, self.clock.now()).await;
                    return None;
                }
            }
        }
    }

    /// Returns a held job to the queue for `run_at` without using its attempt.
    async fn give_back(&self, job: &Job, run_at: DateTime<Utc>) {
        let now = self.clock.now();
        if let Err(e) = self
            .store
            .job_defer(job.id, job.attempts, run_at, now)
            .await
        {
            // Its lease runs out and another worker picks it up.
            tracing::warn!(job_id = %job.id, error = %e, "could not give the job back");
        }
    }

    /// A job whose worker died on each of its attempts: its subject fails
    /// and it goes to the dead-letter queue with its history (one "lease
    /// expired" per attempt), where an admin can retry it.
    async fn bury(&self, job: &Job) {
        match JobSpec::parse(&job.kind, &job.payload) {
            Ok(spec) => spec.give_up(self, job, CRASHED, CRASHED_MESSAGE).await,
            Err(e) => tracing::warn!(job_id = %job.id, error = %e, "burying an unreadable job"),
        }
        match self
            .store
            .job_bury(job.id, job.attempts, self.clock.now())
            .await
        {
            Ok(true) => {
                metrics::counter!("worker_dead_lettered_total", "kind" => job.kind.clone())
                    .increment(1);
                tracing::error!(
                    job_id = %job.id,
                    kind = %job.kind,
                    attempts = job.max_attempts,
                    "every run of the job died before finishing; moved to the dead-letter queue"
                );
            }
            Ok(false) => {}
            // Still held by this claim: the lease runs out and the next
            // claim buries it.
            Err(e) => tracing::warn!(job_id = %job.id, error = %e, "could not bury the job"),
        }
    }

    async fn record_failure(
        &self,
        job: &Job,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
        elapsed: f64,
    ) {
        let reason = error.split(':').next().unwrap_or("error").to_owned();
        metrics::histogram!("worker_duration_seconds", "kind" => job.kind.clone(), "outcome" => "failed")
            .record(elapsed);
        metrics::counter!("worker_errors_total", "kind" => job.kind.clone(), "reason" => reason)
            .increment(1);
        let failed = self
            .store
            .job_fail(job.id, job.attempts, error, retry_at, self.clock.now())
            .await;
        match failed {
            Ok(FailOutcome::Retrying) => {
                tracing::warn!(error, retry_at = ?retry_at, "job failed; will retry");
            }
            Ok(FailOutcome::Dead) => {
                metrics::counter!("worker_dead_lettered_total", "kind" => job.kind.clone())
                    .increment(1);
                tracing::warn!(error, "job failed; moved to the dead-letter queue");
            }
            Ok(FailOutcome::Lost) => tracing::warn!(error, "job failed after its lease was lost"),
            Err(e) => {
                tracing::warn!(error = %e, job_error = error, "could not record the job's failure")
            }
        }
    }
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// Exponential backoff with jitter: a random delay between half and all of
/// `base × 2^(attempt-1)`, capped (half: a retry storm still spreads out,
/// and no retry comes back at once).
fn backoff(settings: &JobSettings, attempt: u32) -> chrono::Duration {
    let exp = attempt.saturating_sub(1).min(20);
    let ceiling = settings
        .base_backoff
        .saturating_mul(1 << exp)
        .min(settings.max_backoff);
    let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    let jittered = rand::random_range(millis / 2..=millis.max(1));
    chrono::Duration::milliseconds(i64::try_from(jittered).unwrap_or(i64::MAX))
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let settings = JobSettings {
            base_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(60),
            ..JobSettings::default()
        };
        let tiny = JobSettings {
            base_backoff: Duration::from_millis(100),
            ..settings.clone()
        };
        for _ in 0..100 {
            let first = backoff(&settings, 1).num_milliseconds();
            assert!((1000..=2000).contains(&first), "{first}");
            let quick = backoff(&tiny, 1).num_milliseconds();
            assert!((50..=100).contains(&quick), "{quick}");
            let third = backoff(&settings, 3).num_milliseconds();
            assert!((4000..=8000).contains(&third), "{third}");
            let late = backoff(&settings, 30).num_milliseconds();
            assert!((30_000..=60_000).contains(&late), "{late}");
        }
    }
}
