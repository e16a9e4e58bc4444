//! Renderings of cached values (an upload's JSON, say), kept while the cache
//! still hands out the value they were made from.
//!
//! The cache's local tier hands out the same `Arc` for as long as a value
//! is unchanged, and a new one whenever it changes or is loaded again; a kept
//! rendering pins the `Arc` it was made from, so the allocation cannot be
//! reused, and an identical pointer means an identical value. A rendering is
//! therefore never stale, and a driver that serves one skips serializing,
//! which was a fifth of the cost of a cached read.

use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::Expiring;

pub struct Renderings<K, V> {
    entries: Expiring<K, (Arc<V>, Bytes)>,
    ttl: Duration,
}

impl<K: Eq + Hash + Clone, V> Renderings<K, V> {
    /// Keeps about `capacity` renderings, each for up to `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            entries: Expiring::new(capacity),
            ttl,
        }
    }

    /// The rendering of `current`, if one was kept for this very value.
    pub fn get(&self, key: &K, current: &Arc<V>) -> Option<Bytes> {
        let (seen, rendered) = self.entries.get(key)?;
        Arc::ptr_eq(&seen, current).then_some(rendered)
    }

    /// Keeps `rendered` as the rendering of `value`.
    pub fn keep(&self, key: K, value: Arc<V>, rendered: Bytes) {
        self.entries.insert(key, (value, rendered), self.ttl);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rendering_serves_only_the_value_it_was_made_from() {
        let kept = Renderings::new(10, Duration::from_secs(60));
        let v1 = Arc::new(String::from("v1"));
        kept.keep(1, Arc::clone(&v1), Bytes::from_static(b"\"v1\""));
        assert_eq!(kept.get(&1, &v1), Some(Bytes::from_static(b"\"v1\"")));
        // Equal content in another allocation is a value loaded again.
        let again = Arc::new(String::from("v1"));
        assert_eq!(kept.get(&1, &again), None);
        assert_eq!(kept.get(&2, &v1), None);
    }
}
