//! Background drivers over the core: the worker (`run`), which runs queued
//! jobs, and the sweeper (`sweep_forever`), which expires stale pending
//! uploads and purges the trash. Both are thin: what a job or a sweep does,
//! and a job's whole life (claim, heartbeat, retries, dead-letter), is the
//! core's (`buildpeer_core::service::jobs`); here is only how many run at
//! once, how often to look, and how to stop.

mod sweep;

pub use sweep::sweep_forever;

use std::sync::Arc;
use std::time::Duration;

use buildpeer_core::Service;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// How the worker runs.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Jobs at once.
    pub concurrency: usize,
    /// Idle poll interval when no wake-up arrives (a job whose backoff ends
    /// wakes nobody, so this is also how late a retry may start).
    pub poll_interval: Duration,
    /// On shutdown, how long running jobs may take to finish before they
    /// are given back to the queue.
    pub grace: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            concurrency: std::thread::available_parallelism().map_or(2, |n| n.get()),
            poll_interval: Duration::from_secs(5),
            grace: Duration::from_secs(30),
        }
    }
}

/// Runs jobs until `stop` turns true (or its sender is dropped): up to
/// `concurrency` at once, each in its own task, claiming as many as there
/// are free slots. Then it stops claiming, lets running jobs finish within
/// the grace period, has the core give back those that did not, and returns.
pub async fn run(service: Service, settings: WorkerSettings, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    let mut running = JoinSet::new();
    tracing::info!(concurrency = settings.concurrency, "worker started");
    while !*stop.borrow() {
        // Collect finished runs so the set does not grow.
        while running.try_join_next().is_some() {}
        let free = slots.available_permits();
        if free == 0 {
            tokio::select! {
                _ = running.join_next() => {}
                changed = stop.changed() => if changed.is_err() { break },
            }
            continue;
        }
        let limit = u32::try_from(free).unwrap_or(u32::MAX);
        let jobs = match service.claim_jobs(limit).await {
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
            tokio::select! {
                () = service.wait_for_jobs(settings.poll_interval) => {}
                changed = stop.changed() => if changed.is_err() { break },
            }
            continue;
        }
        for job in jobs {
            // No more were claimed than there were free slots and only this
            // loop takes them, so this does not wait; the semaphore is never
            // closed, so it does not fail either.
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                break;
            };
            let service = service.clone();
            let give_back = stopped_for(stop.clone(), settings.grace);
            running.spawn(async move {
                service.run_job(job, give_back).await;
                drop(permit);
            });
        }
    }
    tracing::info!(running = running.len(), "worker stopping");
    while running.join_next().await.is_some() {}
    tracing::info!("worker stopped");
}

/// Completes `grace` after `stop` turns true (or its sender is dropped).
async fn stopped_for(mut stop: watch::Receiver<bool>, grace: Duration) {
    // An error means the sender is gone: stopping as well.
    let _ = stop.wait_for(|stopping| *stopping).await;
    tokio::time::sleep(grace).await;
}
