//! The sweeper: expires stale pending uploads and purges the trash.

use std::time::Duration;

use buildpeer_core::Service;

/// Uploads one sweep call handles at most.
const BATCH: u32 = 500;

/// Sweeps every `interval`, forever (the caller aborts it). Every replica
/// runs one; the store hands each due upload to one of them.
pub async fn sweep_forever(service: Service, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        loop {
            match service.sweep(BATCH).await {
                // A full batch means there may be more right away.
                Ok(r) if r.expired >= BATCH as usize || r.purged >= BATCH as usize => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "sweep failed; retrying next interval");
                    break;
                }
            }
        }
    }
}
