//! Cache and limiter conformance: every scenario runs against the in-memory
//! adapters and against a real Redis (a redis-server of the test's own, on a
//! random port, so that the shared one is never touched and a test may stop
//! it). Without redis-server the Redis variants skip, or fail under
//! `CI=true`.
//!
//! Nothing here asserts how fast something is: waits for a TTL, a refill or
//! an announcement poll until it happened, within a generous deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use buildpeer_cache::{CacheOptions, FallbackLimiter, LocalLimiter, MemoryCache, RedisCache};
use buildpeer_core::cache::{
    Announcement, Cache, CacheKey, CacheName, CacheSettings, Caching, RateLimiter, RateQuota,
    SetMode,
};
use buildpeer_core::ids::TenantId;
use buildpeer_testkit::RedisServer;
use bytes::Bytes;

/// How long a wait for something that takes milliseconds may take on a
/// loaded machine before the test calls it lost.
const PATIENCE: Duration = Duration::from_secs(10);

/// Polls `done` until it holds, failing with `what` after [`PATIENCE`].
async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut done: F) {
    let deadline = Instant::now() + PATIENCE;
    while !done().await {
        assert!(Instant::now() < deadline, "{what} within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn opts() -> CacheOptions {
    CacheOptions {
        timeout: Duration::from_millis(250),
        retry_after_failure: Duration::from_millis(100),
        memory_capacity: 10_000,
        ..CacheOptions::default()
    }
}

static T: CacheName = CacheName::new("t");

fn key(kind: &str) -> CacheKey {
    CacheKey::tenant("test", TenantId::new(), kind, uuid::Uuid::now_v7())
}

/// Runs a scenario on both adapters: `$name::memory` and `$name::redis`.
macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::*;

            #[tokio::test]
            async fn memory() {
                let cache: Arc<dyn Cache> = Arc::new(MemoryCache::new(10_000));
                let limiter: Arc<dyn RateLimiter> = Arc::new(LocalLimiter::new());
                super::$name(cache, limiter).await;
            }

            #[tokio::test]
            async fn redis() {
                let Some(server) = RedisServer::start().await else {
                    return;
                };
                let redis = Arc::new(RedisCache::connect(&server.url(), &opts()).await.unwrap());
                let limiter: Arc<dyn RateLimiter> = Arc::new(FallbackLimiter::new(Arc::clone(&redis)));
                super::$name(redis, limiter).await;
                drop(server);
            }
        }
    )*};
}

scenarios!(
    set_get_delete,
    values_expire,
    if_absent_keeps_the_first_value,
    limiter_allows_the_burst_then_refuses,
    limiter_keys_are_independent,
    read_through_hits_and_invalidation,
    generations_invalidate_a_family,
);

async fn set_get_delete(cache: Arc<dyn Cache>, _: Arc<dyn RateLimiter>) {
    let k = key("x");
    assert_eq!(cache.get(&k).await.unwrap(), None);
    cache
        .set(
            &k,
            Bytes::from_static(b"v1"),
            Duration::from_secs(10),
            SetMode::Always,
        )
        .await
        .unwrap();
    assert_eq!(cache.get(&k).await.unwrap().as_deref(), Some(&b"v1"[..]));
    cache
        .set(
            &k,
            Bytes::from_static(b"v2"),
            Duration::from_secs(10),
            SetMode::Always,
        )
        .await
        .unwrap();
    assert_eq!(cache.get(&k).await.unwrap().as_deref(), Some(&b"v2"[..]));
    cache.delete(&k).await.unwrap();
    assert_eq!(cache.get(&k).await.unwrap(), None);
    cache.delete(&k).await.unwrap();
    cache.ping().await.unwrap();
}

async fn values_expire(cache: Arc<dyn Cache>, _: Arc<dyn RateLimiter>) {
    let short = key("x");
    let long = key("x");
    cache
        .set(
            &short,
            Bytes::from_static(b"v"),
            Duration::from_millis(150),
            SetMode::Always,
        )
        .await
        .unwrap();
    cache
        .set(
            &long,
            Bytes::from_static(b"v"),
            Duration::from_secs(10),
            SetMode::IfAbsent,
        )
        .await
        .unwrap();
    assert!(cache.get(&short).await.unwrap().is_some());
    eventually("the short value did not expire", async || {
        cache.get(&short).await.unwrap().is_none()
    })
    .await;
    assert!(cache.get(&long).await.unwrap().is_some());
}

async fn if_absent_keeps_the_first_value(cache: Arc<dyn Cache>, _: Arc<dyn RateLimiter>) {
    let k = key("x");
    let ttl = Duration::from_secs(10);
    cache
        .set(&k, Bytes::from_static(b"a"), ttl, SetMode::IfAbsent)
        .await
        .unwrap();
    cache
        .set(&k, Bytes::from_static(b"b"), ttl, SetMode::IfAbsent)
        .await
        .unwrap();
    assert_eq!(cache.get(&k).await.unwrap().as_deref(), Some(&b"a"[..]));
}

async fn limiter_allows_the_burst_then_refuses(_: Arc<dyn Cache>, limiter: Arc<dyn RateLimiter>) {
    // 600/min: one every 100 ms, 5 at once.
    let quota = RateQuota {
        per_minute: 600,
        burst: 5,
    };
    let k = key("rl");
    for expected_remaining in (0..5).rev() {
        let d = limiter.check(&k, quota).await.unwrap();
        assert!(d.allowed);
        assert_eq!(d.remaining, expected_remaining);
    }
    let refused = limiter.check(&k, quota).await.unwrap();
    assert!(!refused.allowed);
    assert_eq!(refused.remaining, 0);
    assert!(
        refused.retry_after > Duration::ZERO && refused.retry_after <= Duration::from_millis(100),
        "{refused:?}"
    );
    // One refills (a refused check takes nothing)...
    eventually("no request refilled", async || {
        limiter.check(&k, quota).await.unwrap().allowed
    })
    .await;
    // ...and only one: the next, right after, is refused.
    assert!(!limiter.check(&k, quota).await.unwrap().allowed);
}

async fn limiter_keys_are_independent(_: Arc<dyn Cache>, limiter: Arc<dyn RateLimiter>) {
    let quota = RateQuota {
        per_minute: 60,
        burst: 2,
    };
    let (a, b) = (key("rl"), key("rl"));
    assert!(limiter.check(&a, quota).await.unwrap().allowed);
    assert!(limiter.check(&a, quota).await.unwrap().allowed);
    assert!(!limiter.check(&a, quota).await.unwrap().allowed);
    assert!(limiter.check(&b, quota).await.unwrap().allowed);
    // Another quota on the same key is its own limit only in the sense of
    // its own numbers; what matters is that `b` was untouched by `a`.
    let d = limiter.check(&b, quota).await.unwrap();
    assert!(d.allowed);
    assert_eq!(d.remaining, 0);
}

/// The shared tier alone (no local copies: `local_copies_follow_announcements`
/// covers those).
async fn read_through_hits_and_invalidation(cache: Arc<dyn Cache>, _: Arc<dyn RateLimiter>) {
    let caching = Arc::new(Caching::new(
        cache,
        CacheSettings {
            tombstone_ttl: Duration::from_millis(300),
            local_capacity: 0,
            ..CacheSettings::default()
        },
    ));
    let loads = Arc::new(AtomicUsize::new(0));
    let k = key("row");
    let load = |v: u32| {
        let loads = Arc::clone(&loads);
        move || async move {
            loads.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(Some(v))
        }
    };
    let ttl = Duration::from_secs(10);
    // Concurrent misses load once.
    let (a, b, c) = tokio::join!(
        caching.get_or_load(&T, &k, ttl, load(1)),
        caching.get_or_load(&T, &k, ttl, load(1)),
        caching.get_or_load(&T, &k, ttl, load(1)),
    );
    assert_eq!(
        (a.unwrap(), b.unwrap(), c.unwrap()),
        (Some(1), Some(1), Some(1))
    );
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    // A hit does not load.
    assert_eq!(
        caching.get_or_load(&T, &k, ttl, load(9)).await.unwrap(),
        Some(1)
    );
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    // After an invalidation the next read loads the new value; while the
    // tombstone lives, a read that loaded the old row cannot fill the key.
    caching.invalidate(std::slice::from_ref(&k)).await;
    assert_eq!(
        caching.get_or_load(&T, &k, ttl, load(2)).await.unwrap(),
        Some(2)
    );
    assert_eq!(
        caching.get_or_load(&T, &k, ttl, load(3)).await.unwrap(),
        Some(3)
    );
    // Once the tombstone is gone, a load fills the key: a later read is a
    // hit, answering what an earlier loader offered rather than its own.
    let mut v = 3;
    let mut hit = None;
    eventually("the key was never filled again", async || {
        v += 1;
        let got = caching.get_or_load(&T, &k, ttl, load(v)).await.unwrap();
        hit = got.filter(|g| *g != v);
        hit.is_some()
    })
    .await;
    assert_eq!(
        caching.get_or_load(&T, &k, ttl, load(99)).await.unwrap(),
        hit
    );
    // Nothing found is not cached.
    let none = key("row");
    let got: Option<u32> = caching
        .get_or_load(&T, &none, ttl, || async { Ok(None) })
        .await
        .unwrap();
    assert_eq!(got, None);
    assert_eq!(
        caching.get_or_load(&T, &none, ttl, load(6)).await.unwrap(),
        Some(6)
    );
}

async fn generations_invalidate_a_family(cache: Arc<dyn Cache>, _: Arc<dyn RateLimiter>) {
    let caching = Caching::new(cache, CacheSettings::default());
    let gen_key = key("gen");
    let g0 = caching.generation(&T, &gen_key).await;
    assert_eq!(g0, "0");
    caching
        .bump_generation(&gen_key, Duration::from_secs(10))
        .await;
    let g1 = caching.generation(&T, &gen_key).await;
    assert_ne!(g1, g0);
    caching
        .bump_generation(&gen_key, Duration::from_secs(10))
        .await;
    assert_ne!(caching.generation(&T, &gen_key).await, g1);
}

/// Redis stops: every call fails (at its timeout, not after a hang), the
/// limiter keeps deciding
/// in this process, and once Redis is back the same adapter works again
/// without being rebuilt.
#[tokio::test]
async fn redis_down_fails_fast_and_recovers() {
    let Some(mut server) = RedisServer::start().await else {
        return;
    };
    let redis = Arc::new(RedisCache::connect(&server.url(), &opts()).await.unwrap());
    let limiter = FallbackLimiter::new(Arc::clone(&redis));
    let k = key("x");
    redis
        .set(
            &k,
            Bytes::from_static(b"v"),
            Duration::from_secs(60),
            SetMode::Always,
        )
        .await
        .unwrap();
    server.stop().await;
    let quota = RateQuota {
        per_minute: 60,
        burst: 2,
    };
    let rl = key("rl");
    for _ in 0..20 {
        let got = tokio::time::timeout(PATIENCE, redis.get(&k)).await;
        assert!(got.expect("a call hung while Redis was down").is_err());
    }
    assert!(redis.ping().await.is_err());
    // The fallback limiter still limits.
    assert!(limiter.check(&rl, quota).await.unwrap().allowed);
    assert!(limiter.check(&rl, quota).await.unwrap().allowed);
    assert!(!limiter.check(&rl, quota).await.unwrap().allowed);

    server.restart().await;
    eventually("did not reconnect", async || redis.ping().await.is_ok()).await;
    // A fresh server (no persistence): the old value is gone, new ones work.
    assert_eq!(redis.get(&k).await.unwrap(), None);
    redis
        .set(
            &k,
            Bytes::from_static(b"w"),
            Duration::from_secs(60),
            SetMode::Always,
        )
        .await
        .unwrap();
    assert_eq!(redis.get(&k).await.unwrap().as_deref(), Some(&b"w"[..]));
}

/// Two adapters on one Redis (two replicas) share values and counts.
#[tokio::test]
async fn redis_is_shared_between_replicas() {
    let Some(server) = RedisServer::start().await else {
        return;
    };
    let a = Arc::new(RedisCache::connect(&server.url(), &opts()).await.unwrap());
    let b = Arc::new(RedisCache::connect(&server.url(), &opts()).await.unwrap());
    let k = key("x");
    a.set(
        &k,
        Bytes::from_static(b"v"),
        Duration::from_secs(60),
        SetMode::Always,
    )
    .await
    .unwrap();
    assert_eq!(b.get(&k).await.unwrap().as_deref(), Some(&b"v"[..]));
    let quota = RateQuota {
        per_minute: 60,
        burst: 3,
    };
    let rl = key("rl");
    assert!(a.check(&rl, quota).await.unwrap().allowed);
    assert!(b.check(&rl, quota).await.unwrap().allowed);
    assert!(a.check(&rl, quota).await.unwrap().allowed);
    assert!(!b.check(&rl, quota).await.unwrap().allowed);
}

/// The GCRA script takes several requests at once, as many as fit.
#[tokio::test]
async fn redis_gcra_takes_what_fits() {
    let Some(server) = RedisServer::start().await else {
        return;
    };
    let redis = RedisCache::connect(&server.url(), &opts()).await.unwrap();
    // One request a minute refills: nothing refills while the test runs.
    let quota = RateQuota {
        per_minute: 1,
        burst: 10,
    };
    let rl = key("rl");
    let (taken, d) = redis.gcra(&rl, quota, 4).await.unwrap();
    assert_eq!((taken, d.allowed, d.remaining), (4, true, 6));
    let (taken, d) = redis.gcra(&rl, quota, 10).await.unwrap();
    assert_eq!((taken, d.allowed, d.remaining), (6, true, 0));
    let (taken, d) = redis.gcra(&rl, quota, 1).await.unwrap();
    assert_eq!((taken, d.allowed, d.remaining), (0, false, 0));
    assert!(
        d.retry_after > Duration::from_secs(55) && d.retry_after <= Duration::from_secs(60),
        "{:?}",
        d.retry_after
    );
}

/// The calls of `command` Redis has run, from `INFO commandstats`.
async fn redis_calls(url: &str, command: &str) -> u64 {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// Two replicas hammering one key lease requests from Redis instead of
/// asking per request, and together still admit no more than the quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_share_one_quota_between_replicas() {
    let Some(server) = RedisServer::start().await else {
        return;
    };
    let url = server.url();
    let quota = RateQuota {
        per_minute: 1,
        burst: 1000,
    };
    let rl = key("rl");
    let before = redis_calls(&url, "evalsha").await + redis_calls(&url, "eval").await;
    // Each replica: 50 requests at a time, 12 times (more than the quota).
    let replica = |url: String, rl: CacheKey| async move {
        let redis = Arc::new(RedisCache::connect(&url, &opts()).await.unwrap());
        let limiter = FallbackLimiter::new(redis);
        let mut admitted = 0u32;
        for _ in 0..12 {
            let batch = (0..50).map(|_| limiter.check(&rl, quota));
            for d in futures_util::future::join_all(batch).await {
                admitted += u32::from(d.unwrap().allowed);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        admitted
    };
    let (a, b) = tokio::join!(
        tokio::spawn(replica(url.clone(), rl.clone())),
        tokio::spawn(replica(url.clone(), rl.clone()))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let scripts = redis_calls(&url, "evalsha").await + redis_calls(&url, "eval").await - before;
    // Never above the quota (plus what refills in a second or two); below it
    // only by what a replica held when it stopped, a tenth of the burst each.
    assert!((800..=1002).contains(&(a + b)), "{a} + {b}");
    assert!(a > 0 && b > 0, "{a} {b}");
    // 1200 requests: the first of each replica go one by one (no rate
    // seen yet), refused ones are refused here once Redis said when to
    // come back.
    assert!(
        scripts * 3 < 1200,
        "{scripts} round trips for 1200 requests"
    );
}

/// Each replica's announcement feed: live once subscribed, carries what any
/// replica announces, lost while Redis is down, live again after.
#[tokio::test]
async fn announcements_reach_every_replica() {
    let Some(mut server) = RedisServer::start().await else {
        return;
    };
    let options = CacheOptions {
        channel: format!("test:{}:announcements", uuid::Uuid::now_v7()),
        ..opts()
    };
    let a = RedisCache::connect(&server.url(), &options).await.unwrap();
    let b = RedisCache::connect(&server.url(), &options).await.unwrap();
    let mut feed = a.announcements().unwrap();
    let next = async |feed: &mut tokio::sync::mpsc::Receiver<Announcement>| {
        tokio::time::timeout(Duration::from_secs(10), feed.recv())
            .await
            .expect("the feed said nothing")
            .expect("the feed ended")
    };
    assert_eq!(next(&mut feed).await, Announcement::Live);
    let (k1, k2) = (key("x"), key("y"));
    b.announce(&[k1.clone(), k2.clone()]).await.unwrap();
    assert_eq!(
        next(&mut feed).await,
        Announcement::Changed(vec![k1.clone(), k2])
    );
    a.announce(std::slice::from_ref(&k1)).await.unwrap();
    assert_eq!(
        next(&mut feed).await,
        Announcement::Changed(vec![k1.clone()])
    );

    server.stop().await;
    assert_eq!(next(&mut feed).await, Announcement::Lost);
    server.restart().await;
    assert_eq!(next(&mut feed).await, Announcement::Live);
    eventually("did not reconnect", async || {
        b.announce(std::slice::from_ref(&k1)).await.is_ok()
    })
    .await;
    assert_eq!(next(&mut feed).await, Announcement::Changed(vec![k1]));
}

/// Two replicas' `Caching` over one Redis: reads are served from local
/// copies (no Redis round trip), a write through one drops the other's copy
/// within moments, and local copies stop while Redis is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_copies_follow_announcements() {
    let Some(mut server) = RedisServer::start().await else {
        return;
    };
    let options = CacheOptions {
        channel: format!("test:{}:announcements", uuid::Uuid::now_v7()),
        ..opts()
    };
    let redis_a = Arc::new(RedisCache::connect(&server.url(), &options).await.unwrap());
    let redis_b = Arc::new(RedisCache::connect(&server.url(), &options).await.unwrap());
    let a = Caching::new(redis_a.clone(), CacheSettings::default());
    let b = Caching::new(redis_b.clone(), CacheSettings::default());
    let live = |c: &Caching| c.local_tier_live() == Some(true);
    eventually("feeds never went live", async || live(&a) && live(&b)).await;
    let k = key("row");
    let ttl = Duration::from_secs(60);
    let read = async |c: &Caching, v: u32| -> Option<u32> {
        c.get_or_load(&T, &k, ttl, || async move { Ok(Some(v)) })
            .await
            .unwrap()
    };
    assert_eq!(read(&b, 1).await, Some(1));
    // Gone from Redis, still here: the copy is local.
    redis_a.delete(&k).await.unwrap();
    assert_eq!(read(&b, 2).await, Some(1));
    // Changed through A: B's copy goes within moments.
    a.invalidate(std::slice::from_ref(&k)).await;
    eventually("B kept its copy", async || read(&b, 3).await == Some(3)).await;
    assert_eq!(read(&b, 4).await, Some(3));
    // Redis down: no local copy is served (the loader answers).
    server.stop().await;
    eventually("B's feed never noticed", async || !live(&b)).await;
    assert_eq!(read(&b, 5).await, Some(5));
    server.restart().await;
    eventually("B's feed never came back", async || live(&b)).await;
}
