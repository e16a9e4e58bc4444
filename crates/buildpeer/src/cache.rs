//! Configuration and wiring of the cache and the rate limits
//! (`BUILDPEER_REDIS_URL`, `BUILDPEER_RATE_*`).

use std::sync::Arc;

use anyhow::Context as _;
use buildpeer_cache::CacheOptions;
use buildpeer_core::Service;
use buildpeer_core::cache::{CacheSettings, Caching, RateQuota};
use buildpeer_core::service::RateLimits;
use clap::Args;
use secrecy::{ExposeSecret, SecretString};

/// Cache and rate-limit flags.
#[derive(Debug, Clone, Args)]
pub struct CacheArgs {
    /// Redis for the cache and the rate limits, shared by every replica:
    /// redis://[user:pass@]HOST:PORT[/DB], rediss://…, or
    /// redis+cluster://HOST:PORT,HOST:PORT for Redis Cluster. Unset: an
    /// in-process cache and limiter (one process only).
    #[arg(long, env = "BUILDPEER_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<SecretString>,

    /// Prefix of every Redis key (to share one Redis between deployments).
    #[arg(long, env = "BUILDPEER_REDIS_PREFIX", default_value = "bp")]
    pub redis_prefix: String,

    /// With Redis: hot entries each process keeps decoded in memory, dropped
    /// when any process announces a change (Redis pub/sub) and not served
    /// while that feed is down. 0: every read asks Redis (a write is then
    /// seen by every replica the moment it returns, not moments later).
    /// At most 10 million (the table is sized for it at start-up).
    #[arg(long, env = "BUILDPEER_CACHE_LOCAL_ENTRIES", default_value_t = CacheSettings::default().local_capacity,
          value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
    pub cache_local_entries: u64,

    /// Requests per minute one user may make (0: no limit).
    #[arg(long, env = "BUILDPEER_RATE_USER_PER_MINUTE", default_value_t = 1200)]
    pub rate_user_per_minute: u32,

    /// Requests one user may make at once above the steady rate (0: no limit).
    #[arg(long, env = "BUILDPEER_RATE_USER_BURST", default_value_t = 200)]
    pub rate_user_burst: u32,

    /// Requests per minute one tenant's users may make together (0: no limit).
    #[arg(
        long,
        env = "BUILDPEER_RATE_TENANT_PER_MINUTE",
        default_value_t = 20_000
    )]
    pub rate_tenant_per_minute: u32,

    /// Requests one tenant may make at once above the steady rate (0: no limit).
    #[arg(long, env = "BUILDPEER_RATE_TENANT_BURST", default_value_t = 2000)]
    pub rate_tenant_burst: u32,

    /// Login attempts per minute for one account (tenant + e-mail), burst the same (0: no limit).
    #[arg(
        long,
        env = "BUILDPEER_RATE_LOGIN_ACCOUNT_PER_MINUTE",
        default_value_t = 10
    )]
    pub rate_login_account_per_minute: u32,

    /// Login attempts per minute from one IP address (burst: a third of it; 0: no limit).
    #[arg(
        long,
        env = "BUILDPEER_RATE_LOGIN_IP_PER_MINUTE",
        default_value_t = 300
    )]
    pub rate_login_ip_per_minute: u32,

    /// Uploads (tus PATCHes) one user may have in flight at once in one
    /// process (0: no limit); data requests count against no request quota.
    #[arg(long, env = "BUILDPEER_UPLOADS_PER_USER", default_value_t = 64)]
    pub uploads_per_user: u32,

    /// Uploads one tenant's users may have in flight at once in one process (0: no limit).
    #[arg(long, env = "BUILDPEER_UPLOADS_PER_TENANT", default_value_t = 512)]
    pub uploads_per_tenant: u32,
}

impl CacheArgs {
    pub fn settings(&self) -> CacheConfig {
        CacheConfig {
            redis_url: self.redis_url.clone(),
            prefix: self.redis_prefix.clone(),
            local_entries: self.cache_local_entries,
            limits: RateLimits {
                user: RateQuota {
                    per_minute: self.rate_user_per_minute,
                    burst: self.rate_user_burst,
                },
                tenant: RateQuota {
                    per_minute: self.rate_tenant_per_minute,
                    burst: self.rate_tenant_burst,
                },
                login_account: RateQuota {
                    per_minute: self.rate_login_account_per_minute,
                    burst: self.rate_login_account_per_minute,
                },
                login_ip: RateQuota {
                    per_minute: self.rate_login_ip_per_minute,
                    burst: self.rate_login_ip_per_minute.div_ceil(3),
                },
                uploads_per_user: self.uploads_per_user,
                uploads_per_tenant: self.uploads_per_tenant,
            },
        }
    }
}

/// Where the cache lives and the quotas.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// `None`: in this process.
    pub redis_url: Option<SecretString>,
    pub prefix: String,
    /// Local copies in front of Redis (0: none).
    pub local_entries: u64,
    pub limits: RateLimits,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            prefix: "bp".into(),
            local_entries: CacheSettings::default().local_capacity,
            limits: RateLimits::default(),
        }
    }
}

/// Gives `service` its cache and rate limits.
pub async fn attach(service: Service, config: &CacheConfig) -> anyhow::Result<Service> {
    let url = config
        .redis_url
        .as_ref()
        .map(|u| u.expose_secret().to_owned());
    let options = CacheOptions {
        channel: format!("{}:announcements", config.prefix),
        ..CacheOptions::default()
    };
    let (cache, limiter) = buildpeer_cache::open(url.as_deref(), &options)
        .await
        .context("opening the cache (BUILDPEER_REDIS_URL)")?;
    tracing::info!(backend = cache.backend(), "cache");
    let settings = CacheSettings {
        prefix: config.prefix.clone(),
        local_capacity: config.local_entries,
        ..CacheSettings::default()
    };
    Ok(service
        .with_cache(Arc::new(Caching::new(cache, settings)))
        .with_rate_limits(limiter, config.limits, &config.prefix))
}
