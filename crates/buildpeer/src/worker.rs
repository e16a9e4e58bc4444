//! The worker: a thin driver that claims jobs from the queue port and runs
//! them through the core (`Service::run_job`).
//!
//! - Up to `concurrency` jobs run at once, each in its own task; a panic in
//!   one fails that run (and is retried like a transient failure), never
//!   the worker.
//! - A running job's lease is renewed by a heartbeat every third of the lease;
//!   if the heartbeat finds the job taken away (its lease had expired and
//!   another worker claimed it), the run is abandoned.
//! - Failed runs are retried with exponential backoff and full jitter,
//!   persisted in the job's `run_at`, so a restart keeps the schedule.
//! - Idle, it waits on the queue's wake-up (LISTEN/NOTIFY on PostgreSQL) with
//!   a poll interval as the fallback.
//! - On shutdown it stops claiming, lets running jobs finish within the
//!   grace period, and gives back (`job_defer`, not counted as an attempt)
//!   those that did not.

use std::sync::Arc;
use std::time::{Duration, Instant};

use buildpeer_core::Service;
use buildpeer_core::queue::{FailOutcome, Job};
use buildpeer_core::service::{JobResult, PROCESS_UPLOAD};
use chrono::Utc;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument as _;

/// How the worker runs.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Jobs at once.
    pub concurrency: usize,
    /// How long a claim holds a job without a heartbeat.
    pub lease: Duration,
    /// First retry delay; doubles per attempt, up to `max_backoff`.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// Idle poll interval when no wake-up arrives.
    pub poll_interval: Duration,
    /// On shutdown, how long running jobs may take to finish.
    pub grace: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            concurrency: std::thread::available_parallelism().map_or(2, |n| n.get()),
            lease: Duration::from_secs(60),
            base_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(300),
            poll_interval: Duration::from_secs(5),
            grace: Duration::from_secs(30),
        }
    }
}

/// The job kinds this worker runs.
const KINDS: &[&str] = &[PROCESS_UPLOAD];

/// Runs until `stop` turns true (or its sender is dropped), then drains as
/// described in the module doc.
pub async fn run(service: Service, settings: WorkerSettings, mut stop: watch::Receiver<bool>) {
    let settings = Arc::new(settings);
    let permits = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    let mut running = JoinSet::new();
    tracing::info!(concurrency = settings.concurrency, "worker started");
    while !*stop.borrow() {
        // Reap finished runs so the set does not grow.
        while running.try_join_next().is_some() {}
        let free = permits.available_permits();
        if free == 0 {
            tokio::select! {
                _ = running.join_next() => {}
                changed = stop.changed() => if changed.is_err() { break },
            }
            continue;
        }
        let limit = u32::try_from(free).unwrap_or(u32::MAX);
        let claimed = service
            .store()
            .job_claim(KINDS, Utc::now(), settings.lease, limit)
            .await;
        let jobs = match claimed {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::warn!(error = %e, "claiming jobs failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(settings.poll_interval) => {}
                    changed = stop.changed() => if changed.is_err() { break },
                }
                continue;
            }
        };
        if jobs.is_empty() {
            let store = service.store().clone();
            tokio::select! {
                () = store.job_wait(settings.poll_interval) => {}
                changed = stop.changed() => if changed.is_err() { break },
            }
            continue;
        }
        for job in jobs {
            if job.attempts > job.max_attempts {
                bury(&service, &job).await;
                continue;
            }
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                // Cannot happen (we claimed no more than were free); give it back.
                release(&service, &job).await;
                continue;
            };
            let service = service.clone();
            let settings = settings.clone();
            let stop = stop.clone();
            running.spawn(async move {
                run_one(service, settings, job, stop).await;
                drop(permit);
            });
        }
    }
    tracing::info!(running = running.len(), "worker stopping");
    while running.join_next().await.is_some() {}
    tracing::info!("worker stopped");
}

/// One claimed job, from heartbeat to the queue's record of the outcome.
async fn run_one(
    service: Service,
    settings: Arc<WorkerSettings>,
    job: Job,
    mut stop: watch::Receiver<bool>,
) {
    let span = tracing::info_span!(
        "job",
        jobId = %job.id,
        tenantId = %job.tenant_id,
        uploadId = job.upload_id.map(|u| u.to_string()),
        kind = %job.kind,
        attempt = job.attempts,
        traceparent = job.trace_context.as_deref(),
    );
    async move {
        let started = Instant::now();
        let work = {
            let service = service.clone();
            let job = job.clone();
            // Its own task: a panic in it is caught by the JoinHandle.
            tokio::spawn(async move { service.run_job(&job).await })
        };
        let abort = work.abort_handle();
        let mut work = std::pin::pin!(work);
        let mut beat = tokio::time::interval(settings.lease / 3);
        beat.tick().await; // the first tick is immediate
        let mut stopping_since = (*stop.borrow()).then(Instant::now);
        let result = loop {
            let grace_left = stopping_since
                .map(|t| settings.grace.saturating_sub(t.elapsed()))
                .unwrap_or(Duration::MAX);
            tokio::select! {
                joined = &mut work => {
                    break match joined {
                        Ok(result) => Some(result),
                        Err(e) if e.is_panic() => Some(JobResult::Retry {
                            error: format!("the job panicked: {}", panic_message(e.into_panic())),
                        }),
                        Err(_) => None,
                    };
                }
                _ = beat.tick() => {
                    let until = Utc::now() + settings.lease;
                    match service.store().job_heartbeat(job.id, job.attempts, until).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!("lost the job's lease; abandoning this run");
                            abort.abort();
                            return;
                        }
                        // The database may be back before the lease runs out.
                        Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
                    }
                }
                _ = stop.changed(), if stopping_since.is_none() => {
                    stopping_since = Some(Instant::now());
                }
                () = tokio::time::sleep(grace_left), if stopping_since.is_some() => {
                    tracing::warn!("shutdown grace period over; giving the job back");
                    abort.abort();
                    break None;
                }
            }
        };
        let elapsed = started.elapsed().as_secs_f64();
        let kind = job.kind.clone();
        match result {
            None => release(&service, &job).await,
            Some(JobResult::Done) => {
                metrics::histogram!("worker_duration_seconds", "kind" => kind, "outcome" => "done")
                    .record(elapsed);
                if let Err(e) = service
                    .store()
                    .job_complete(job.id, job.attempts, Utc::now())
                    .await
                {
                    // The lease runs out and the job runs again: processing
                    // is idempotent.
                    tracing::warn!(error = %e, "could not record the job done");
                }
                tracing::info!(elapsed_ms = (elapsed * 1000.0) as u64, "job done");
            }
            Some(JobResult::Retry { error }) => {
                let retry_at = Utc::now() + backoff(&settings, job.attempts);
                record_failure(&service, &job, &error, Some(retry_at), elapsed).await;
            }
            Some(JobResult::Dead { error }) => {
                record_failure(&service, &job, &error, None, elapsed).await;
            }
            Some(JobResult::Defer { delay }) => {
                metrics::counter!("worker_deferred_total", "kind" => kind).increment(1);
                tracing::info!(
                    delay_ms = delay.as_millis() as u64,
                    "storage unavailable; job deferred without using an attempt"
                );
                let now = Utc::now();
                let run_at = now
                    + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::seconds(30));
                if let Err(e) = service
                    .store()
                    .job_defer(job.id, job.attempts, run_at, now)
                    .await
                {
                    tracing::warn!(job_id = %job.id, error = %e, "could not defer the job");
                }
            }
        }
    }
    .instrument(span)
    .await;
}

async fn record_failure(
    service: &Service,
    job: &Job,
    error: &str,
    retry_at: Option<chrono::DateTime<Utc>>,
    elapsed: f64,
) {
    let reason = error.split(':').next().unwrap_or("error").to_owned();
    metrics::histogram!("worker_duration_seconds", "kind" => job.kind.clone(), "outcome" => "failed")
        .record(elapsed);
    metrics::counter!("worker_errors_total", "kind" => job.kind.clone(), "reason" => reason)
        .increment(1);
    match service
        .store()
        .job_fail(job.id, job.attempts, error, retry_at, Utc::now())
        .await
    {
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

/// A job claimed past its last attempt: its worker died on every one (a
/// poison job), so it is dead-lettered instead of run again.
async fn bury(service: &Service, job: &Job) {
    match service
        .store()
        .job_bury(job.id, job.attempts, Utc::now())
        .await
    {
        Ok(_) => {
            metrics::counter!("worker_dead_lettered_total", "kind" => job.kind.clone())
                .increment(1);
            tracing::warn!(job_id = %job.id, "job's worker died on every attempt; moved to the dead-letter queue");
        }
        // Its lease runs out and the next claim finds it again.
        Err(e) => tracing::warn!(job_id = %job.id, error = %e, "could not bury the job"),
    }
}

/// Gives a claimed job back without counting the attempt.
async fn release(service: &Service, job: &Job) {
    let now = Utc::now();
    if let Err(e) = service
        .store()
        .job_defer(job.id, job.attempts, now, now)
        .await
    {
        // Its lease runs out and another worker picks it up.
        tracing::warn!(job_id = %job.id, error = %e, "could not give the job back");
    }
}

/// Exponential backoff with jitter: a random delay between half and all of
/// `base × 2^(attempt-1)`, capped (half: a retry storm still spreads out,
/// and no retry comes back at once).
fn backoff(settings: &WorkerSettings, attempt: u32) -> chrono::Duration {
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
        let settings = WorkerSettings {
            base_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(60),
            ..WorkerSettings::default()
        };
        for _ in 0..100 {
            let first = backoff(&settings, 1).num_milliseconds();
            assert!((1000..=2000).contains(&first), "{first}");
            let tiny = WorkerSettings {
                base_backoff: Duration::from_millis(100),
                ..settings.clone()
            };
            let quick = backoff(&tiny, 1).num_milliseconds();
            assert!((50..=100).contains(&quick), "{quick}");
            let third = backoff(&settings, 3).num_milliseconds();
            assert!((4000..=8000).contains(&third), "{third}");
            let late = backoff(&settings, 30).num_milliseconds();
            assert!((30_000..=60_000).contains(&late), "{late}");
        }
    }
}
