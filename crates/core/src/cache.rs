//! The cache and rate-limiter ports, and [`Caching`], the typed read-through
//! cache the use-cases use on top of the port.
//!
//! The port stores opaque bytes under a key with a TTL. Adapters: Redis
//! (shared by every replica; Redis Cluster too) and an in-process cache for
//! the embedded default (`buildpeer-cache`). A cache is never the source of
//! truth: every failure of it is a miss (reads) or a no-op (writes), counted,
//! and the request goes on against the database.
//!
//! Keys always carry the tenant in a Redis Cluster hash tag (`{t:<tenant>}`),
//! so a tenant's keys share a slot and no key can name two tenants' data.
//!
//! In front of a cache shared between processes, [`Caching`] keeps decoded
//! copies in this process (the local tier, `local.rs`), dropped when any
//! process announces an invalidation of their key; see [`Cache::announce`].

mod expiring;
mod local;
mod rendered;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;
use tokio::sync::mpsc;

use crate::error::CoreError;
use crate::ids::TenantId;
pub use expiring::Expiring;
use local::LocalTier;
pub use rendered::Renderings;

/// What a cache or limiter adapter may say.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Not reachable, timed out, or reconnecting: a passing condition.
    #[error("cache unavailable: {0}")]
    Unavailable(String),
    #[error("cache error: {0}")]
    Other(String),
}

/// A cache key: `<prefix>:{t:<tenant>}:<kind>:<rest>`, or for the few keys
/// that belong to no tenant (login attempts by IP), `<prefix>:<kind>:<rest>`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CacheKey(String);

impl CacheKey {
    /// A key of tenant-owned data; the tenant is the Redis Cluster hash tag.
    /// (Built by hand into one allocation: every cached read and rate-limit
    /// check builds one, and `format!` growing its string showed in profiles.)
    pub fn tenant(prefix: &str, tenant: TenantId, kind: &str, rest: impl fmt::Display) -> Self {
        use fmt::Write as _;
        let mut key = String::with_capacity(prefix.len() + kind.len() + 96);
        key.push_str(prefix);
        key.push_str(":{t:");
        key.push_str(
            tenant
                .as_uuid()
                .hyphenated()
                .encode_lower(&mut uuid::Uuid::encode_buffer()),
        );
        key.push_str("}:");
        key.push_str(kind);
        key.push(':');
        // Writing to a String cannot fail.
        let _ = write!(key, "{rest}");
        Self(key)
    }

    /// A key outside any tenant.
    pub fn global(prefix: &str, kind: &str, rest: impl fmt::Display) -> Self {
        Self(format!("{prefix}:{kind}:{rest}"))
    }

    /// A key as an announcement feed carries it: built by some process with
    /// one of the constructors above.
    pub fn announced(raw: String) -> Self {
        Self(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the announcement feed of a shared cache delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announcement {
    /// These keys changed (announced by some process, this one included).
    Changed(Vec<CacheKey>),
    /// The feed delivers every announcement (again).
    Live,
    /// The feed broke: announcements may be missed until it is live again.
    Lost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetMode {
    Always,
    /// Only if the key holds nothing (Redis `SET … NX`): how a read fills the
    /// cache, so that it never overwrites an invalidation's tombstone.
    IfAbsent,
}

/// The cache port: opaque bytes per key, with a TTL.
#[async_trait]
pub trait Cache: Send + Sync + 'static {
    /// `redis`, `redis-cluster` or `memory`.
    fn backend(&self) -> &'static str;
    async fn get(&self, key: &CacheKey) -> Result<Option<Bytes>, CacheError>;
    async fn set(
        &self,
        key: &CacheKey,
        value: Bytes,
        ttl: Duration,
        mode: SetMode,
    ) -> Result<(), CacheError>;
    async fn delete(&self, key: &CacheKey) -> Result<(), CacheError>;
    /// Whether the cache answers (for `/readyz`).
    async fn ping(&self) -> Result<(), CacheError>;

    /// Tells every process that shares this cache that `keys` changed, so
    /// they drop their local copies. A cache that lives in this process has
    /// no one to tell.
    async fn announce(&self, _keys: &[CacheKey]) -> Result<(), CacheError> {
        Ok(())
    }

    /// For a cache shared between processes: the feed of every process's
    /// announcements, this one's included (Redis pub/sub). `None` for a cache
    /// in this process, which needs no local copies in front of it. Called
    /// from within a Tokio runtime (an adapter may spawn its subscriber).
    fn announcements(&self) -> Option<mpsc::Receiver<Announcement>> {
        None
    }
}

/// A cache that holds nothing: every read misses. What a `Service` has until
/// it is given a real one (operator commands, unit tests).
pub struct NoCache;

#[async_trait]
impl Cache for NoCache {
    fn backend(&self) -> &'static str {
        "none"
    }
    async fn get(&self, _: &CacheKey) -> Result<Option<Bytes>, CacheError> {
        Ok(None)
    }
    async fn set(&self, _: &CacheKey, _: Bytes, _: Duration, _: SetMode) -> Result<(), CacheError> {
        Ok(())
    }
    async fn delete(&self, _: &CacheKey) -> Result<(), CacheError> {
        Ok(())
    }
    async fn ping(&self) -> Result<(), CacheError> {
        Ok(())
    }
}

/// A GCRA quota: `per_minute` sustained, up to `burst` at once. Zero in
/// either turns the limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateQuota {
    pub per_minute: u32,
    pub burst: u32,
}

impl RateQuota {
    pub fn is_off(&self) -> bool {
        self.per_minute == 0 || self.burst == 0
    }

    /// The time one request "costs" (GCRA's emission interval).
    pub fn emission(&self) -> Duration {
        Duration::from_secs(60) / self.per_minute.max(1)
    }
}

/// The answer of a limiter for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    /// Requests that could still be made right now.
    pub remaining: u32,
    /// When refused: how long until one request is allowed again.
    pub retry_after: Duration,
    /// How long until the whole burst is available again.
    pub reset: Duration,
}

/// The rate-limiter port: one GCRA check (and, if allowed, one request
/// counted) against `key`.
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    fn backend(&self) -> &'static str;
    async fn check(&self, key: &CacheKey, quota: RateQuota) -> Result<RateDecision, CacheError>;
}

/// The TTLs of the cached reads (the seed's numbers by default).
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Prefix of every key, so that several deployments (or tests) can share
    /// one Redis.
    pub prefix: String,
    pub upload_ttl: Duration,
    pub project_list_ttl: Duration,
    pub user_ttl: Duration,
    /// Single projects and memberships (the permission checks of every
    /// project-scoped request).
    pub project_ttl: Duration,
    /// How long an invalidation keeps a key from being filled again, so a
    /// read that loaded the old row before the write cannot put it back.
    pub tombstone_ttl: Duration,
    /// Entries this process keeps decoded in front of a shared cache (0: no
    /// local copies; every read asks the shared cache).
    pub local_capacity: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            prefix: "bp".into(),
            upload_ttl: Duration::from_secs(30),
            project_list_ttl: Duration::from_secs(300),
            user_ttl: Duration::from_secs(300),
            project_ttl: Duration::from_secs(300),
            tombstone_ttl: Duration::from_secs(5),
            local_capacity: 20_000,
        }
    }
}

const TOMBSTONE: &[u8] = b"\0tombstone";

/// A named cache (the `cache` label of its metrics), declared as a `static`
/// so that its counters are registered once, on first use, rather than
/// looked up in the recorder (hashing name and labels, and allocating) on
/// every hit, which was a visible share of a cached read. First use comes
/// after the process installed its recorder (`App::build` does that first).
pub struct CacheName {
    name: &'static str,
    counters: std::sync::OnceLock<Counters>,
}

struct Counters {
    local_hits: metrics::Counter,
    shared_hits: metrics::Counter,
    misses: metrics::Counter,
    fallbacks: metrics::Counter,
}

impl CacheName {
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            counters: std::sync::OnceLock::new(),
        }
    }

    fn counters(&self) -> &Counters {
        let name = self.name;
        self.counters.get_or_init(|| Counters {
            local_hits: metrics::counter!("cache_hits_total", "cache" => name, "tier" => "local"),
            shared_hits: metrics::counter!("cache_hits_total", "cache" => name, "tier" => "shared"),
            misses: metrics::counter!("cache_misses_total", "cache" => name),
            fallbacks: metrics::counter!("cache_fallbacks_total", "cache" => name),
        })
    }
}

type Flight = Arc<OnceCell<Bytes>>;

/// The read-through cache over the port: typed values (JSON), hit/miss
/// metrics by cache name, single-flight loading (concurrent misses of one
/// key in this process load once), invalidation by tombstone, and
/// degradation to the loader whenever the cache fails.
///
/// In front of a shared cache it keeps decoded copies in this process (the
/// local tier), valid while the cache's announcement feed is live: a hit
/// there costs no round trip. Every invalidation is announced to every
/// process, which drops its copy.
pub struct Caching {
    cache: Arc<dyn Cache>,
    settings: CacheSettings,
    flights: Mutex<HashMap<CacheKey, Flight>>,
    local: Option<Arc<LocalTier>>,
    /// The task that applies the feed to the local tier.
    feed: Option<tokio::task::AbortHandle>,
}

impl Drop for Caching {
    fn drop(&mut self) {
        if let Some(feed) = &self.feed {
            feed.abort();
        }
    }
}

impl Caching {
    /// Outside a Tokio runtime (nothing to run the feed on), a shared cache
    /// gets no local tier.
    pub fn new(cache: Arc<dyn Cache>, settings: CacheSettings) -> Self {
        let follow_feed = match tokio::runtime::Handle::try_current() {
            Ok(runtime) if settings.local_capacity > 0 => {
                cache.announcements().map(|feed| (runtime, feed))
            }
            _ => None,
        };
        let (local, feed) = match follow_feed {
            Some((runtime, feed)) => {
                let tier = Arc::new(LocalTier::new(settings.local_capacity));
                let task = runtime.spawn(follow(feed, Arc::downgrade(&tier)));
                (Some(tier), Some(task.abort_handle()))
            }
            None => (None, None),
        };
        Self {
            cache,
            settings,
            flights: Mutex::new(HashMap::new()),
            local,
            feed,
        }
    }

    pub fn settings(&self) -> &CacheSettings {
        &self.settings
    }

    pub fn port(&self) -> &Arc<dyn Cache> {
        &self.cache
    }

    /// Whether local copies are being served: `None` without a local tier,
    /// `Some(false)` while the announcement feed is down. (For tests; the
    /// `cache_local_tier_live` gauge says the same to operators.)
    pub fn local_tier_live(&self) -> Option<bool> {
        self.local.as_ref().map(|l| l.is_live())
    }

    pub fn key(&self, tenant: TenantId, kind: &str, rest: impl fmt::Display) -> CacheKey {
        CacheKey::tenant(&self.settings.prefix, tenant, kind, rest)
    }

    /// The cached value of `key`, or `load()`'s, which is then cached for
    /// `ttl` (a `None` is not cached). `name` labels the metrics.
    pub async fn get_or_load<T, F, Fut>(
        &self,
        name: &'static CacheName,
        key: &CacheKey,
        ttl: Duration,
        load: F,
    ) -> Result<Option<T>, CoreError>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, CoreError>>,
    {
        self.lookup(name, key, ttl, None, load).await
    }

    /// As [`Caching::get_or_load`], but while the cache does not answer it
    /// returns `unavailable` instead of loading: for a check that would
    /// otherwise put a query on every request while only the database is
    /// left to answer.
    pub async fn get_or_load_unless_down<T, F, Fut>(
        &self,
        name: &'static CacheName,
        key: &CacheKey,
        ttl: Duration,
        unavailable: T,
        load: F,
    ) -> Result<Option<T>, CoreError>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, CoreError>>,
    {
        self.lookup(name, key, ttl, Some(unavailable), load).await
    }

    async fn lookup<T, F, Fut>(
        &self,
        name: &'static CacheName,
        key: &CacheKey,
        ttl: Duration,
        unavailable: Option<T>,
        load: F,
    ) -> Result<Option<T>, CoreError>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, CoreError>>,
    {
        let local = self.local.as_deref();
        if let Some(v) = local.and_then(|l| l.get::<T>(key)) {
            name.counters().local_hits.increment(1);
            return Ok(Some(v));
        }
        // Noted before anything is read: see `local.rs`.
        let fence = local.map(|l| l.fence(key));
        let keep = |v: &T| {
            if let (Some(l), Some(f)) = (local, fence) {
                l.put(key, v.clone(), ttl, f);
            }
        };
        let cache_ok = match self.cache.get(key).await {
            Ok(Some(bytes)) if bytes.as_ref() != TOMBSTONE => {
                match serde_json::from_slice::<T>(&bytes) {
                    Ok(v) => {
                        name.counters().shared_hits.increment(1);
                        keep(&v);
                        return Ok(Some(v));
                    }
                    Err(e) => {
                        tracing::warn!(key = %key, error = %e, "unreadable cache entry; reloading");
                        true
                    }
                }
            }
            Ok(_) => true,
            Err(e) => {
                name.counters().fallbacks.increment(1);
                if let Some(v) = unavailable {
                    return Ok(Some(v));
                }
                tracing::debug!(key = %key, error = %e, "cache read failed; using the database");
                false
            }
        };
        name.counters().misses.increment(1);
        let flight = {
            let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(flights.entry(key.clone()).or_default())
        };
        let loaded = flight
            .get_or_try_init(|| async {
                let value = load().await?;
                let bytes = Bytes::from(serde_json::to_vec(&value).map_err(internal)?);
                if let Some(v) = &value {
                    if cache_ok {
                        self.fill(key, &bytes, ttl).await;
                    }
                    // Only the loader keeps a copy: a caller that joined the
                    // flight later noted a later fence than the load's.
                    keep(v);
                }
                Ok::<_, CoreError>(bytes)
            })
            .await;
        {
            let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
            if flights.get(key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
                flights.remove(key);
            }
        }
        let bytes = loaded?;
        serde_json::from_slice::<Option<T>>(bytes).map_err(internal)
    }

    async fn fill(&self, key: &CacheKey, bytes: &Bytes, ttl: Duration) {
        if let Err(e) = self
            .cache
            .set(key, bytes.clone(), ttl, SetMode::IfAbsent)
            .await
        {
            tracing::debug!(key = %key, error = %e, "cache fill failed");
        }
    }

    /// Drops cached values after a write. The key is overwritten with a
    /// short-lived tombstone rather than deleted, so a read that loaded the
    /// old row just before the write cannot fill the cache with it; then
    /// every process is told to drop its local copy. A failure is logged and
    /// counted; the TTL bounds the staleness.
    pub async fn invalidate(&self, keys: &[CacheKey]) {
        for key in keys {
            {
                // Later readers start a new load instead of joining one that
                // may have read the old row.
                let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
                flights.remove(key);
            }
            if let Some(local) = &self.local {
                local.changed(key);
            }
            let tombstone = Bytes::from_static(TOMBSTONE);
            if let Err(e) = self
                .cache
                .set(key, tombstone, self.settings.tombstone_ttl, SetMode::Always)
                .await
            {
                invalidation_failed(key, &e);
            }
        }
        self.announce(keys).await;
    }

    async fn announce(&self, keys: &[CacheKey]) {
        if let Err(e) = self.cache.announce(keys).await
            && let Some(key) = keys.first()
        {
            invalidation_failed(key, &e);
        }
    }

    /// A fresh random generation for a family of keys (e.g. every project
    /// list of a tenant): readers build their keys from the current
    /// generation, so replacing it invalidates the whole family at once.
    pub async fn generation(&self, name: &'static CacheName, key: &CacheKey) -> String {
        let local = self.local.as_deref();
        if let Some(g) = local.and_then(|l| l.get::<String>(key)) {
            return g;
        }
        let fence = local.map(|l| l.fence(key));
        let generation = match self.cache.get(key).await {
            Ok(Some(g)) if g.as_ref() != TOMBSTONE => String::from_utf8_lossy(&g).into_owned(),
            Ok(_) => "0".to_owned(),
            Err(_) => {
                name.counters().fallbacks.increment(1);
                // Unreadable: a generation nobody wrote under, so the read
                // misses instead of finding an old family.
                return uuid::Uuid::now_v7().to_string();
            }
        };
        if let (Some(l), Some(f)) = (local, fence) {
            l.put(key, generation.clone(), self.settings.project_list_ttl, f);
        }
        generation
    }

    /// Starts a new generation (see [`Caching::generation`]). It lives longer
    /// than the entries made under the old one.
    pub async fn bump_generation(&self, key: &CacheKey, entries_ttl: Duration) {
        if let Some(local) = &self.local {
            local.changed(key);
        }
        let generation = Bytes::from(uuid::Uuid::now_v7().to_string());
        if let Err(e) = self
            .cache
            .set(key, generation, entries_ttl * 2, SetMode::Always)
            .await
        {
            invalidation_failed(key, &e);
        }
        self.announce(std::slice::from_ref(key)).await;
    }
}

/// Applies a shared cache's announcements to the local tier, until the tier
/// is gone.
async fn follow(mut feed: mpsc::Receiver<Announcement>, tier: std::sync::Weak<LocalTier>) {
    while let Some(announcement) = feed.recv().await {
        let Some(tier) = tier.upgrade() else {
            return;
        };
        match announcement {
            Announcement::Changed(keys) => keys.iter().for_each(|k| tier.changed(k)),
            Announcement::Live => tier.live(),
            Announcement::Lost => tier.lost(),
        }
    }
    // The adapter stopped its feed: nothing will be announced any more.
    if let Some(tier) = tier.upgrade() {
        tier.lost();
    }
}

fn invalidation_failed(key: &CacheKey, e: &CacheError) {
    tracing::warn!(key = %key, error = %e, "cache invalidation failed");
    metrics::counter!("cache_invalidation_failures_total").increment(1);
}

fn internal(e: serde_json::Error) -> CoreError {
    CoreError::Internal(Box::new(e))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static X: CacheName = CacheName::new("x");

    #[test]
    fn keys_carry_the_tenant_as_hash_tag() {
        let t = TenantId::new();
        let k = CacheKey::tenant("bp", t, "upload", "x");
        assert_eq!(k.as_str(), format!("bp:{{t:{t}}}:upload:x"));
        assert_eq!(CacheKey::global("bp", "rl", "ip:1").as_str(), "bp:rl:ip:1");
    }

    #[test]
    fn quotas() {
        let q = RateQuota {
            per_minute: 1200,
            burst: 200,
        };
        assert_eq!(q.emission(), Duration::from_millis(50));
        assert!(!q.is_off());
        assert!(
            RateQuota {
                per_minute: 0,
                burst: 5
            }
            .is_off()
        );
    }

    #[tokio::test]
    async fn concurrent_misses_load_once() {
        let caching = Arc::new(Caching::new(Arc::new(NoCache), CacheSettings::default()));
        let loads = Arc::new(AtomicUsize::new(0));
        let key = caching.key(TenantId::new(), "x", "1");
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let caching = Arc::clone(&caching);
            let loads = Arc::clone(&loads);
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                caching
                    .get_or_load(&X, &key, Duration::from_secs(1), || async {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Ok(Some(7u32))
                    })
                    .await
            }));
        }
        for t in tasks {
            assert!(matches!(t.await, Ok(Ok(Some(7)))));
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }

    /// A shared cache held in a map, counting its reads, with a feed the test
    /// drives and a log of what was announced.
    struct Shared {
        map: Mutex<HashMap<CacheKey, Bytes>>,
        gets: AtomicUsize,
        feed: Mutex<Option<mpsc::Receiver<Announcement>>>,
        announced: Mutex<Vec<CacheKey>>,
    }

    #[async_trait]
    impl Cache for Shared {
        fn backend(&self) -> &'static str {
            "shared"
        }
        async fn get(&self, key: &CacheKey) -> Result<Option<Bytes>, CacheError> {
            self.gets.fetch_add(1, Ordering::SeqCst);
            Ok(self.map.lock().unwrap().get(key).cloned())
        }
        async fn set(
            &self,
            key: &CacheKey,
            value: Bytes,
            _: Duration,
            mode: SetMode,
        ) -> Result<(), CacheError> {
            let mut map = self.map.lock().unwrap();
            if mode == SetMode::Always || !map.contains_key(key) {
                map.insert(key.clone(), value);
            }
            Ok(())
        }
        async fn delete(&self, key: &CacheKey) -> Result<(), CacheError> {
            self.map.lock().unwrap().remove(key);
            Ok(())
        }
        async fn ping(&self) -> Result<(), CacheError> {
            Ok(())
        }
        async fn announce(&self, keys: &[CacheKey]) -> Result<(), CacheError> {
            self.announced.lock().unwrap().extend_from_slice(keys);
            Ok(())
        }
        fn announcements(&self) -> Option<mpsc::Receiver<Announcement>> {
            self.feed.lock().unwrap().take()
        }
    }

    /// Polls `done` until it holds: the feed is read by a task of its own,
    /// which gets to run while this one waits.
    async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done().await {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test]
    async fn local_copies_follow_the_feed() {
        let (tx, rx) = mpsc::channel(16);
        let shared = Arc::new(Shared {
            map: Mutex::new(HashMap::new()),
            gets: AtomicUsize::new(0),
            feed: Mutex::new(Some(rx)),
            announced: Mutex::new(Vec::new()),
        });
        let caching = Caching::new(shared.clone(), CacheSettings::default());
        let key = caching.key(TenantId::new(), "x", "1");
        let read = |v: u32| {
            let caching = &caching;
            let key = key.clone();
            async move {
                caching
                    .get_or_load(&X, &key, Duration::from_secs(60), || async { Ok(Some(v)) })
                    .await
                    .unwrap()
            }
        };
        let gets = || shared.gets.load(Ordering::SeqCst);

        // Not live yet: every read goes to the shared cache.
        assert_eq!(read(1).await, Some(1));
        assert_eq!(read(2).await, Some(1));
        assert_eq!(gets(), 2);
        // Live: the next read keeps a copy, and later ones are served from it.
        tx.send(Announcement::Live).await.unwrap();
        let live = || caching.local_tier_live() == Some(true);
        until("never live", async || live()).await;
        assert_eq!(read(2).await, Some(1));
        assert_eq!((read(2).await, read(2).await), (Some(1), Some(1)));
        assert_eq!(gets(), 3);
        // Another process changed it: the copy goes, the shared cache answers.
        shared
            .map
            .lock()
            .unwrap()
            .insert(key.clone(), Bytes::from_static(b"5"));
        tx.send(Announcement::Changed(vec![key.clone()]))
            .await
            .unwrap();
        // Reads served from the copy meanwhile cost no shared get.
        until("the copy stayed", async || read(2).await == Some(5)).await;
        assert_eq!(gets(), 4);
        // This process changes it: the copy goes at once, and it is announced.
        caching.invalidate(std::slice::from_ref(&key)).await;
        assert_eq!(read(7).await, Some(7));
        assert_eq!(
            shared.announced.lock().unwrap().as_slice(),
            std::slice::from_ref(&key)
        );
        assert_eq!(read(8).await, Some(7), "the reload was kept");
        // (The tombstone expires; the shared cache is filled again.)
        shared
            .map
            .lock()
            .unwrap()
            .insert(key.clone(), Bytes::from_static(b"7"));
        // The feed breaks: no copy is served until it is live again.
        tx.send(Announcement::Lost).await.unwrap();
        until("never lost", async || !live()).await;
        let before = gets();
        assert_eq!(read(9).await, Some(7));
        assert_eq!(gets(), before + 1);
        // A feed that ends for good is a lost one.
        tx.send(Announcement::Live).await.unwrap();
        until("never live again", async || live()).await;
        assert_eq!(read(9).await, Some(7));
        let before = gets();
        assert_eq!(read(9).await, Some(7));
        assert_eq!(gets(), before);
        drop(tx);
        until("an ended feed still live", async || !live()).await;
        assert_eq!(read(9).await, Some(7));
        assert_eq!(gets(), before + 1);
    }
}
