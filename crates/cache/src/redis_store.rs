//! Redis (one node, or a Cluster) for the cache and the rate limiter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use buildpeer_core::cache::{
    Announcement, Cache, CacheError, CacheKey, RateDecision, RateLimiter, RateQuota, SetMode,
};
use bytes::Bytes;
use futures_util::StreamExt as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink, PubSubStream};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, RedisError, Script, ScriptInvocation};
use tokio::sync::{Mutex, mpsc};

use crate::CacheOptions;

/// GCRA (the generic cell rate algorithm) in one atomic step, taking up to
/// `want` requests at once (a process leasing a few ahead, see
/// `FallbackLimiter`): the key holds the "theoretical arrival time" in
/// microseconds of Redis' own clock, so replicas with skewed clocks still
/// agree. `fit` is how many requests the quota admits right now; the script
/// takes `min(want, fit)`. Returns {taken, remaining, retry_after_us,
/// reset_us}; taken = 0 is a refusal.
const GCRA: &str = r"
local emission = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local fit = math.floor((now + emission * burst - tat) / emission)
if fit < 1 then
  return {0, 0, tat + emission - emission * burst - now, tat - now}
end
local n = math.min(want, fit)
local new_tat = tat + emission * n
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {n, fit - n, 0, new_tat - now}
";

enum Conn {
    Single(ConnectionManager),
    /// Connected on first use (and again after a failed attempt).
    Cluster {
        client: Box<ClusterClient>,
        conn: Mutex<Option<ClusterConnection>>,
    },
}

/// One connection of either kind, for commands and scripts alike.
enum AnyConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for AnyConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            AnyConn::Single(c) => c.req_packed_command(cmd),
            AnyConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            AnyConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            AnyConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            AnyConn::Single(c) => c.get_db(),
            AnyConn::Cluster(c) => c.get_db(),
        }
    }
}

pub struct RedisCache {
    conn: Conn,
    /// Where the announcement feed subscribes: the server, or each node of
    /// a Cluster in turn (a publish on any node reaches every subscriber).
    subscribe_to: Vec<redis::Client>,
    channel: String,
    gcra: Script,
    timeout: Duration,
    retry_after_failure: Duration,
    started: Instant,
    /// Milliseconds since `started` until which calls fail at once.
    down_until: AtomicU64,
}

impl RedisCache {
    /// `redis://[user:pass@]host:port[/db]`, `rediss://…`, or
    /// `redis+cluster://host:port,host:port` for Redis Cluster. Does not
    /// wait for Redis: a service whose Redis is down starts, degraded.
    pub async fn connect(url: &str, opts: &CacheOptions) -> Result<Self, CacheError> {
        let (conn, subscribe_to) = if let Some(nodes) = url.strip_prefix("redis+cluster://") {
            let nodes: Vec<String> = nodes
                .split(',')
                .filter(|n| !n.is_empty())
                .map(|n| format!("redis://{n}"))
                .collect();
            let subscribe_to = nodes
                .iter()
                .map(|n| redis::Client::open(n.as_str()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(other)?;
            let client = ClusterClient::builder(nodes)
                .connection_timeout(opts.timeout)
                .response_timeout(opts.timeout)
                .retries(1)
                .build()
                .map_err(other)?;
            let conn = Conn::Cluster {
                client: Box::new(client),
                conn: Mutex::new(None),
            };
            (conn, subscribe_to)
        } else {
            let client = redis::Client::open(url).map_err(other)?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(opts.timeout))
                .set_response_timeout(Some(opts.timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_secs(1));
            let manager =
                ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(other)?;
            (Conn::Single(manager), vec![client])
        };
        Ok(Self {
            conn,
            subscribe_to,
            channel: opts.channel.clone(),
            gcra: Script::new(GCRA),
            timeout: opts.timeout,
            retry_after_failure: opts.retry_after_failure,
            started: Instant::now(),
            down_until: AtomicU64::new(0),
        })
    }

    /// The longest a call may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn backend_name(&self) -> &'static str {
        match self.conn {
            Conn::Single(_) => "redis",
            Conn::Cluster { .. } => "redis-cluster",
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn failed(&self, e: &CacheError) {
        metrics::counter!("cache_errors_total").increment(1);
        if matches!(e, CacheError::Unavailable(_)) {
            let until =
                self.now_ms() + u64::try_from(self.retry_after_failure.as_millis()).unwrap_or(0);
            self.down_until.store(until, Ordering::Relaxed);
        }
    }

    async fn run<T, F>(&self, call: F) -> Result<T, CacheError>
    where
        F: AsyncFnOnce(&mut AnyConn) -> Result<T, RedisError>,
    {
        if self.now_ms() < self.down_until.load(Ordering::Relaxed) {
            return Err(CacheError::Unavailable("failed moments ago".into()));
        }
        let result = tokio::time::timeout(self.timeout, async {
            match &self.conn {
                Conn::Single(m) => call(&mut AnyConn::Single(m.clone()))
                    .await
                    .map_err(classify),
                Conn::Cluster { client, conn } => {
                    let c = {
                        let mut slot = conn.lock().await;
                        match &*slot {
                            Some(c) => c.clone(),
                            None => {
                                let c = client.get_async_connection().await.map_err(classify)?;
                                *slot = Some(c.clone());
                                c
                            }
                        }
                    };
                    call(&mut AnyConn::Cluster(c)).await.map_err(classify)
                }
            }
        })
        .await
        .unwrap_or_else(|_| Err(CacheError::Unavailable("timed out".into())));
        if let Err(e) = &result {
            self.failed(e);
        }
        result
    }

    async fn query<T: FromRedisValue>(&self, cmd: Cmd) -> Result<T, CacheError> {
        self.run(async move |c| cmd.query_async(c).await).await
    }

    /// One GCRA step taking up to `want` requests (see [`GCRA`]): how many
    /// it took, and the decision, its `remaining` and `reset` counted after
    /// all of them.
    pub async fn gcra(
        &self,
        key: &CacheKey,
        quota: RateQuota,
        want: u32,
    ) -> Result<(u32, RateDecision), CacheError> {
        let emission = u64::try_from(quota.emission().as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let script = &self.gcra;
        let (taken, remaining, retry_us, reset_us): (i64, i64, i64, i64) = self
            .run(async move |c| {
                let mut invocation: ScriptInvocation<'_> = script.key(key.as_str());
                invocation.arg(emission).arg(quota.burst).arg(want.max(1));
                invocation.invoke_async(c).await
            })
            .await?;
        let us = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
        let taken = u32::try_from(taken).unwrap_or(0);
        Ok((
            taken,
            RateDecision {
                allowed: taken > 0,
                remaining: u32::try_from(remaining).unwrap_or(0),
                retry_after: us(retry_us),
                reset: us(reset_us),
            },
        ))
    }
}

fn other(e: RedisError) -> CacheError {
    CacheError::Other(e.to_string())
}

fn classify(e: RedisError) -> CacheError {
    if e.is_io_error()
        || e.is_timeout()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_cluster_error()
    {
        CacheError::Unavailable(e.to_string())
    } else {
        CacheError::Other(e.to_string())
    }
}

#[async_trait]
impl Cache for RedisCache {
    fn backend(&self) -> &'static str {
        self.backend_name()
    }

    async fn get(&self, key: &CacheKey) -> Result<Option<Bytes>, CacheError> {
        let v: Option<Vec<u8>> = self
            .query(redis::cmd("GET").arg(key.as_str()).clone())
            .await?;
        Ok(v.map(Bytes::from))
    }

    async fn set(
        &self,
        key: &CacheKey,
        value: Bytes,
        ttl: Duration,
        mode: SetMode,
    ) -> Result<(), CacheError> {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut cmd = redis::cmd("SET");
        cmd.arg(key.as_str()).arg(value.as_ref()).arg("PX").arg(ms);
        if mode == SetMode::IfAbsent {
            cmd.arg("NX");
        }
        // `NX` answers nil when the key exists.
        let _: Option<String> = self.query(cmd).await?;
        Ok(())
    }

    async fn delete(&self, key: &CacheKey) -> Result<(), CacheError> {
        let _: i64 = self
            .query(redis::cmd("DEL").arg(key.as_str()).clone())
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), CacheError> {
        // Bypasses the fast-fail window: readiness should say what is true now.
        self.down_until.store(0, Ordering::Relaxed);
        let _: String = self.query(redis::cmd("PING")).await?;
        Ok(())
    }

    async fn announce(&self, keys: &[CacheKey]) -> Result<(), CacheError> {
        if keys.is_empty() {
            return Ok(());
        }
        let payload = keys
            .iter()
            .map(CacheKey::as_str)
            .collect::<Vec<_>>()
            .join("\n");
        let _: i64 = self
            .query(
                redis::cmd("PUBLISH")
                    .arg(&self.channel)
                    .arg(payload)
                    .clone(),
            )
            .await?;
        Ok(())
    }

    fn announcements(&self) -> Option<mpsc::Receiver<Announcement>> {
        let (tx, rx) = mpsc::channel(1024);
        let feed = Feed {
            nodes: self.subscribe_to.clone(),
            channel: self.channel.clone(),
            timeout: self.timeout.max(FEED_PING_EVERY),
            tx,
        };
        tokio::spawn(feed.run());
        Some(rx)
    }
}

/// How often the feed's connection is pinged: a connection that went silent
/// (a half-open socket, a stalled server) is noticed within about two of
/// these, and local copies stop being served.
const FEED_PING_EVERY: Duration = Duration::from_secs(1);

/// The announcement feed: a subscription to the channel, kept up for as long
/// as the receiving end lives. It says `Live` once subscribed, and `Lost` as
/// soon as the subscription breaks or stops answering pings; then it
/// subscribes again, with a backoff.
struct Feed {
    nodes: Vec<redis::Client>,
    channel: String,
    timeout: Duration,
    tx: mpsc::Sender<Announcement>,
}

impl Feed {
    async fn run(self) {
        let mut backoff = Duration::from_millis(100);
        for attempt in 0usize.. {
            let Some(client) = self.nodes.get(attempt % self.nodes.len().max(1)) else {
                return;
            };
            if let Ok(Ok((sink, stream))) =
                tokio::time::timeout(self.timeout, self.subscribe(client)).await
            {
                backoff = Duration::from_millis(100);
                if self.tx.send(Announcement::Live).await.is_err()
                    || !self.listen(sink, stream).await
                {
                    return;
                }
                tracing::warn!(
                    "cache announcement feed lost; local copies dropped until it is back"
                );
                metrics::counter!("cache_feed_lost_total").increment(1);
                if self.tx.send(Announcement::Lost).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = self.tx.closed() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    async fn subscribe(
        &self,
        client: &redis::Client,
    ) -> Result<(PubSubSink, PubSubStream), RedisError> {
        let (mut sink, stream) = client.get_async_pubsub().await?.split();
        sink.subscribe(&self.channel).await?;
        Ok((sink, stream))
    }

    /// Passes announcements on until the subscription breaks (`true`) or
    /// the receiving end is gone (`false`).
    async fn listen(&self, mut sink: PubSubSink, mut stream: PubSubStream) -> bool {
        let mut ping = tokio::time::interval(FEED_PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else { return true };
                    let keys = String::from_utf8_lossy(msg.get_payload_bytes())
                        .split('\n')
                        .filter(|k| !k.is_empty())
                        .map(|k| CacheKey::announced(k.to_owned()))
                        .collect();
                    if self.tx.send(Announcement::Changed(keys)).await.is_err() {
                        return false;
                    }
                }
                _ = ping.tick() => {
                    let pong = tokio::time::timeout(self.timeout, sink.ping::<redis::Value>()).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        return true;
                    }
                }
                () = self.tx.closed() => return false,
            }
        }
    }
}

#[async_trait]
impl RateLimiter for RedisCache {
    fn backend(&self) -> &'static str {
        self.backend_name()
    }

    async fn check(&self, key: &CacheKey, quota: RateQuota) -> Result<RateDecision, CacheError> {
        self.gcra(key, quota, 1).await.map(|(_, d)| d)
    }
}
