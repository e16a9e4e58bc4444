//! The local tier: decoded copies of a shared cache's entries, kept in this
//! process so that a hot read (the status poll, the actor of every request)
//! costs no round trip to Redis and no decoding.
//!
//! A copy may only be served while this process hears every invalidation:
//! the shared cache's announcement feed must be live. When it breaks, every
//! copy is dropped and none is served or kept until it is live again.
//!
//! A read races the invalidations announced while it loads: it notes the
//! key's *fence* before it reads anything, and keeps its copy only if no
//! invalidation of that key (nor a lost feed) came in the meantime. The
//! check runs again after the insert, so an invalidation between the check
//! and the insert cannot leave an old copy behind.

use std::any::Any;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::CacheKey;
use super::expiring::Expiring;

/// Fences are counters in a fixed table indexed by the key's hash: two keys
/// sharing a slot only cost each other a skipped insert now and then.
const FENCE_SLOTS: usize = 4096;

/// What a read noted before it started: see the module documentation.
#[derive(Debug, Clone, Copy)]
pub(super) struct Fence {
    epoch: u64,
    slot: usize,
    count: u64,
}

pub(super) struct LocalTier {
    entries: Expiring<CacheKey, Arc<dyn Any + Send + Sync>>,
    live: AtomicBool,
    /// Bumped when the feed is lost: fences every key at once.
    epoch: AtomicU64,
    fences: Box<[AtomicU64]>,
    hasher: RandomState,
}

impl LocalTier {
    pub(super) fn new(capacity: u64) -> Self {
        Self {
            entries: Expiring::new(usize::try_from(capacity).unwrap_or(usize::MAX)),
            live: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            fences: (0..FENCE_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            hasher: RandomState::new(),
        }
    }

    pub(super) fn get<T: Clone + 'static>(&self, key: &CacheKey) -> Option<T> {
        if !self.live.load(Ordering::SeqCst) {
            return None;
        }
        self.entries.get(key)?.downcast_ref::<T>().cloned()
    }

    pub(super) fn fence(&self, key: &CacheKey) -> Fence {
        let slot = self.slot(key);
        Fence {
            epoch: self.epoch.load(Ordering::SeqCst),
            slot,
            count: self.fences[slot].load(Ordering::SeqCst),
        }
    }

    /// Keeps a copy read under `fence`, unless the key was invalidated since.
    pub(super) fn put<T: Send + Sync + 'static>(
        &self,
        key: &CacheKey,
        value: T,
        ttl: Duration,
        fence: Fence,
    ) {
        if !self.unchanged(fence) {
            return;
        }
        self.entries.insert(key.clone(), Arc::new(value), ttl);
        if !self.unchanged(fence) {
            self.entries.remove(key);
        }
    }

    /// `key` changed (here or in another process).
    pub(super) fn changed(&self, key: &CacheKey) {
        let slot = self.slot(key);
        self.fences[slot].fetch_add(1, Ordering::SeqCst);
        self.entries.remove(key);
    }

    pub(super) fn is_live(&self) -> bool {
        self.live.load(Ordering::SeqCst)
    }

    /// The feed hears every invalidation (again).
    pub(super) fn live(&self) {
        self.live.store(true, Ordering::SeqCst);
        metrics::gauge!("cache_local_tier_live").set(1.0);
    }

    /// The feed broke: invalidations may be missed from now on.
    pub(super) fn lost(&self) {
        self.live.store(false, Ordering::SeqCst);
        metrics::gauge!("cache_local_tier_live").set(0.0);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.entries.clear();
    }

    fn unchanged(&self, fence: Fence) -> bool {
        self.live.load(Ordering::SeqCst)
            && self.epoch.load(Ordering::SeqCst) == fence.epoch
            && self.fences[fence.slot].load(Ordering::SeqCst) == fence.count
    }

    fn slot(&self, key: &CacheKey) -> usize {
        // The modulo keeps the index in range whatever the hash.
        usize::try_from(self.hasher.hash_one(key) % FENCE_SLOTS as u64).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::TenantId;

    fn key(rest: &str) -> CacheKey {
        CacheKey::tenant("bp", TenantId::new(), "x", rest)
    }

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn serves_copies_only_while_live() {
        let tier = LocalTier::new(100);
        let k = key("a");
        tier.put(&k, 1u32, TTL, tier.fence(&k));
        assert_eq!(tier.get::<u32>(&k), None, "not live: nothing kept");
        tier.live();
        tier.put(&k, 1u32, TTL, tier.fence(&k));
        assert_eq!(tier.get::<u32>(&k), Some(1));
        assert_eq!(tier.get::<String>(&k), None, "another type is a miss");
        tier.lost();
        assert_eq!(tier.get::<u32>(&k), None);
        tier.live();
        assert_eq!(tier.get::<u32>(&k), None, "dropped when the feed was lost");
    }

    #[test]
    fn an_invalidation_during_a_read_keeps_its_copy_out() {
        let tier = LocalTier::new(100);
        tier.live();
        let k = key("a");
        let fence = tier.fence(&k);
        tier.changed(&k);
        tier.put(&k, 1u32, TTL, fence);
        assert_eq!(tier.get::<u32>(&k), None);
        // A loss of the feed fences every key.
        let other = key("b");
        let fence = tier.fence(&other);
        tier.lost();
        tier.live();
        tier.put(&other, 2u32, TTL, fence);
        assert_eq!(tier.get::<u32>(&other), None);
        // A read started after the invalidation keeps its copy.
        tier.put(&k, 3u32, TTL, tier.fence(&k));
        assert_eq!(tier.get::<u32>(&k), Some(3));
        tier.changed(&k);
        assert_eq!(tier.get::<u32>(&k), None);
    }
}
