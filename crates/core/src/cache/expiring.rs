//! A bounded in-process map whose entries expire: the local tier's copies,
//! the remembered access tokens, the API's serialized uploads.
//!
//! quick_cache (S3-FIFO eviction) rather than moka, with the deadline kept in
//! the entry and checked on read. Both sit on the path of every request
//! (four lookups in a cached status read), and moka's per-read bookkeeping
//! (a clock read and a read-log entry per lookup, and its housekeeping of
//! the access-order queues) was most of their cost in profiles; a lookup
//! here is a hash, a shard read lock and one clock read. An expired entry
//! is dropped when it is next read, or evicted by newer ones as the map
//! fills: its memory is bounded by the capacity either way.

use std::borrow::Borrow;
use std::hash::Hash;
use std::time::{Duration, Instant};

use quick_cache::sync::Cache;

pub struct Expiring<K, V> {
    entries: Cache<K, (V, Instant)>,
}

impl<K: Eq + Hash + Clone, V: Clone> Expiring<K, V> {
    /// Holds about `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Cache::new(capacity.max(1)),
        }
    }

    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        Q: Hash + Eq + ?Sized,
        K: Borrow<Q>,
    {
        let (value, until) = self.entries.get(key)?;
        let now = Instant::now();
        if now < until {
            return Some(value);
        }
        // Only if still expired: another thread may have put a fresh one.
        self.entries.remove_if(key, |(_, until)| *until <= now);
        None
    }

    /// Keeps `value` for `ttl` (a zero `ttl` keeps nothing).
    pub fn insert(&self, key: K, value: V, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        self.entries.insert(key, (value, Instant::now() + ttl));
    }

    pub fn remove<Q>(&self, key: &Q)
    where
        Q: Hash + Eq + ?Sized,
        K: Borrow<Q>,
    {
        self.entries.remove(key);
    }

    pub fn clear(&self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_go() {
        let map = Expiring::<String, u32>::new(10);
        map.insert("a".to_owned(), 1, Duration::from_secs(60));
        map.insert("b".to_owned(), 2, Duration::from_millis(20));
        map.insert("z".to_owned(), 3, Duration::ZERO);
        assert_eq!(map.get("a"), Some(1));
        assert_eq!(map.get("b"), Some(2));
        assert_eq!(map.get("z"), None, "a zero TTL keeps nothing");
        // The map reads the system's monotonic clock: poll past the TTL
        // rather than sleep a guess at it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while map.get("b").is_some() {
            assert!(Instant::now() < deadline, "b never expired");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(map.get("a"), Some(1), "a 60 s entry outlived b's 20 ms");
        map.remove("a");
        assert_eq!(map.get("a"), None);
        map.insert("c".to_owned(), 4, Duration::from_secs(60));
        map.clear();
        assert_eq!(map.get("c"), None);
    }

    #[test]
    fn stays_within_its_capacity() {
        let map = Expiring::<u32, u32>::new(100);
        for i in 0..10_000 {
            map.insert(i, i, Duration::from_secs(60));
        }
        let kept = (0..10_000).filter(|i| map.get(i).is_some()).count();
        assert!((1..=200).contains(&kept), "{kept}");
    }
}
