//! The in-process cache (moka): the embedded default. Each process has its
//! own, so an invalidation reaches only this process: run several replicas
//! (or a separate `buildpeer worker`) with `BUILDPEER_REDIS_URL`.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use buildpeer_core::cache::{Cache, CacheError, CacheKey, SetMode};
use bytes::Bytes;
use moka::Expiry;
use moka::future::Cache as Moka;

#[derive(Clone)]
struct Entry {
    value: Bytes,
    ttl: Duration,
}

struct PerEntryTtl;

impl Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _: &String, entry: &Entry, _: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }

    fn expire_after_update(
        &self,
        _: &String,
        entry: &Entry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

pub struct MemoryCache {
    entries: Moka<String, Entry>,
}

impl MemoryCache {
    pub fn new(capacity: u64) -> Self {
        Self {
            entries: Moka::builder()
                .max_capacity(capacity)
                .expire_after(PerEntryTtl)
                .build(),
        }
    }
}

#[async_trait]
impl Cache for MemoryCache {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, key: &CacheKey) -> Result<Option<Bytes>, CacheError> {
        Ok(self.entries.get(key.as_str()).await.map(|e| e.value))
    }

    async fn set(
        &self,
        key: &CacheKey,
        value: Bytes,
        ttl: Duration,
        mode: SetMode,
    ) -> Result<(), CacheError> {
        let entry = Entry { value, ttl };
        match mode {
            SetMode::Always => self.entries.insert(key.as_str().to_owned(), entry).await,
            SetMode::IfAbsent => {
                self.entries
                    .entry_by_ref(key.as_str())
                    .or_insert(entry)
                    .await;
            }
        }
        Ok(())
    }

    async fn delete(&self, key: &CacheKey) -> Result<(), CacheError> {
        self.entries.invalidate(key.as_str()).await;
        Ok(())
    }

    async fn ping(&self) -> Result<(), CacheError> {
        Ok(())
    }
}
