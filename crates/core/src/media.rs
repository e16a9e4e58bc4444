//! The media port: what the worker needs to turn an original into metadata
//! and derivatives. The adapter (`buildpeer-media-adapter`, over the pure-CPU
//! `buildpeer-media` crate) runs it off the async workers with a time cap.
//!
//! Memory is budgeted, not only capped: the port says how much one file will
//! hold ([`MediaProcessor::plan`], from its header, before anything is
//! decoded), and every job of the process takes that much (plus the original's
//! bytes) from one [`MemoryBudget`] before it decodes, so the sum of what the
//! jobs of a process hold at once stays under the budget whatever the files.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::upload::MediaMetadata;

/// A derivative to store next to the original.
#[derive(Debug, Clone)]
pub struct Derivative {
    pub name: String,
    pub width: u32,
    pub height: u32,
    /// A JPEG without metadata segments.
    pub jpeg: Bytes,
}

#[derive(Debug, Clone)]
pub struct MediaOutput {
    /// The type sniffed from the content, as a MIME type.
    pub detected_type: String,
    pub metadata: MediaMetadata,
    pub derivatives: Vec<Derivative>,
}

/// The content cannot be processed, and trying again will not change that
/// (corrupt, unsupported, over a limit, over the time cap).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct MediaFailure {
    /// Stable machine code, e.g. `unsupported_type`, `corrupt_file`.
    pub code: String,
    pub message: String,
}

#[async_trait]
pub trait MediaProcessor: Send + Sync + 'static {
    /// Originals above this size are not read into memory: they are
    /// completed with the type sniffed from their first bytes only.
    fn max_input_bytes(&self) -> u64;
    /// The type of content starting with `head`, if it is one we accept.
    fn sniff(&self, head: &[u8]) -> Option<String>;
    /// The process-wide budget every file's processing takes its memory from.
    fn budget(&self) -> &MemoryBudget;
    /// The bytes processing `content` will allocate beyond `content` itself,
    /// read from its header without decoding; a failure (over a limit,
    /// corrupt, unsupported) is final.
    fn plan(&self, content: &[u8]) -> Result<u64, MediaFailure>;
    /// Processes `content`, holding `reservation` (taken from [`Self::budget`]
    /// for the original and its plan) until the work is really over: a decode
    /// past the time cap keeps its memory, and its reservation, until it ends.
    async fn process(
        &self,
        content: Bytes,
        reservation: Reservation,
    ) -> Result<MediaOutput, MediaFailure>;
}

/// Memory is counted in KiB: a semaphore's permits are `u32`, and KiB keep
/// a budget of up to 4 TiB exact enough.
const UNIT: u64 = 1024;

/// A process-wide memory budget in bytes, shared by every job: FIFO, so a
/// large file waiting for memory is not overtaken forever by small ones.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    units: u32,
    semaphore: Arc<Semaphore>,
}

/// Memory held from a [`MemoryBudget`]; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    permit: OwnedSemaphorePermit,
}

impl MemoryBudget {
    pub fn new(bytes: u64) -> Self {
        let units = u32::try_from(bytes / UNIT)
            .unwrap_or(u32::MAX)
            .min(u32::try_from(Semaphore::MAX_PERMITS).unwrap_or(u32::MAX))
            .max(1);
        Self {
            units,
            semaphore: Arc::new(Semaphore::new(units as usize)),
        }
    }

    /// The whole budget, in bytes.
    pub fn total(&self) -> u64 {
        u64::from(self.units) * UNIT
    }

    /// Bytes currently reserved by running jobs.
    pub fn reserved(&self) -> u64 {
        let free = u64::try_from(self.semaphore.available_permits()).unwrap_or(0);
        (u64::from(self.units).saturating_sub(free)) * UNIT
    }

    fn units_for(&self, bytes: u64) -> Option<u32> {
        let units = u32::try_from(bytes.div_ceil(UNIT)).ok()?.max(1);
        (units <= self.units).then_some(units)
    }

    /// Waits until `bytes` are free and takes them; `None` if they never
    /// could be (more than the whole budget).
    pub async fn reserve(&self, bytes: u64) -> Option<Reservation> {
        let units = self.units_for(bytes)?;
        let permit = self
            .semaphore
            .clone()
            .acquire_many_owned(units)
            .await
            .ok()?;
        Some(Reservation { permit })
    }

    /// Takes `bytes` more for `reservation` if they are free now; never waits
    /// (a job waiting while it holds memory could wait for another that does
    /// the same).
    pub fn try_grow(&self, reservation: &mut Reservation, bytes: u64) -> bool {
        let Some(units) = self.units_for(bytes) else {
            return false;
        };
        match self.semaphore.clone().try_acquire_many_owned(units) {
            Ok(more) => {
                reservation.permit.merge(more);
                true
            }
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => false,
        }
    }
}

impl Reservation {
    /// The bytes held.
    pub fn bytes(&self) -> u64 {
        u64::try_from(self.permit.num_permits()).unwrap_or(0) * UNIT
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[tokio::test]
    async fn budget_waits_grows_and_refuses() {
        let budget = MemoryBudget::new(10 * UNIT);
        assert!(budget.reserve(11 * UNIT).await.is_none(), "never fits");
        let mut a = budget.reserve(4 * UNIT).await.expect("fits");
        assert!(budget.try_grow(&mut a, 4 * UNIT));
        assert_eq!(a.bytes(), 8 * UNIT);
        assert_eq!(budget.reserved(), 8 * UNIT);
        assert!(!budget.try_grow(&mut a, 3 * UNIT), "only 2 KiB free");
        let waiting = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.reserve(5 * UNIT).await.map(|r| r.bytes()) })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(a);
        assert_eq!(waiting.await.ok().flatten(), Some(5 * UNIT));
        assert_eq!(budget.reserved(), 0);
    }
}
