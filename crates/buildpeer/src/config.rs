//! Configuration: command-line flags, each with a `BUILDPEER_*` environment
//! variable (12-factor). Parsed once in `main` and passed down explicitly.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use buildpeer_core::service::{JobSettings, UploadSettings};
use buildpeer_media_adapter::{MediaSettings, parse_sizes};
use buildpeer_storage::BreakerConfig;
use buildpeer_worker::WorkerSettings;

use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::{ExposeSecret, SecretString};

#[derive(Debug, Parser)]
#[command(
    name = "buildpeer",
    version,
    about = "BuildPeer: multi-tenant uploads and media processing for construction companies",
    long_about = "BuildPeer: multi-tenant uploads and media processing for construction companies.\n\n\
        Every flag can also be set through the BUILDPEER_* environment variable shown next to it.\n\
        With no configuration, `buildpeer serve` runs on SQLite and files under ./data.",
    after_help = "Environment: BUILDPEER_LISTEN, BUILDPEER_DATA_DIR, BUILDPEER_DATABASE_URL, \
        BUILDPEER_DB_MAX_CONNECTIONS, BUILDPEER_JWT_SECRET, BUILDPEER_LOG_FORMAT, BUILDPEER_LOG, BUILDPEER_METRICS_TENANTS, \
        BUILDPEER_NO_BOOTSTRAP, BUILDPEER_SHUTDOWN_TIMEOUT, BUILDPEER_ADMIN_PASSWORD, \
        BUILDPEER_STORAGE_URL, BUILDPEER_PUBLIC_URL, BUILDPEER_MAX_UPLOAD_SIZE, BUILDPEER_TENANT_QUOTA, \
        BUILDPEER_MULTIPART_THRESHOLD, BUILDPEER_UPLOAD_URL_TTL, BUILDPEER_TRASH_RETENTION_DAYS, \
        BUILDPEER_SWEEP_INTERVAL, BUILDPEER_NO_WORKER, BUILDPEER_WORKER_CONCURRENCY, \
        BUILDPEER_THUMBNAIL_SIZES, BUILDPEER_JOB_TIMEOUT, BUILDPEER_JOB_RETRY_BASE_MS, BUILDPEER_MAX_PIXELS, \
        BUILDPEER_MAX_PROCESSING_SIZE, BUILDPEER_WORKER_MEMORY_BUDGET, BUILDPEER_REDIS_URL, BUILDPEER_REDIS_PREFIX, BUILDPEER_RATE_USER_PER_MINUTE, \
        BUILDPEER_RATE_USER_BURST, BUILDPEER_RATE_TENANT_PER_MINUTE, BUILDPEER_RATE_TENANT_BURST, \
        BUILDPEER_RATE_LOGIN_ACCOUNT_PER_MINUTE, BUILDPEER_RATE_LOGIN_IP_PER_MINUTE, \
        BUILDPEER_UPLOADS_PER_USER, BUILDPEER_UPLOADS_PER_TENANT (see `buildpeer <COMMAND> --help`)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API (runs pending migrations first).
    Serve(ServeArgs),
    /// Run processing workers only (no HTTP API).
    Worker(WorkerCommandArgs),
    /// Run pending database migrations and exit.
    Migrate(CommonArgs),
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Process local media files (thumbnails and metadata), without a server.
    #[command(subcommand)]
    Media(crate::media_cli::MediaCommand),
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant and its first admin; prints {"tenant_id", "admin_user_id"} as JSON.
    Create(TenantCreateArgs),
    /// Set a tenant's upload limits (overriding the service-wide defaults).
    Limits(TenantLimitsArgs),
}

#[derive(Debug, Clone, Args)]
pub struct TenantLimitsArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    #[arg(long)]
    pub slug: String,
    /// Largest file of one upload, e.g. 1GiB; `default` for the service-wide default.
    #[arg(long, default_value = "default")]
    pub max_upload_size: String,
    /// Storage quota, e.g. 100GiB; `default` for the service-wide default.
    #[arg(long, default_value = "default")]
    pub quota: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Settings every command shares.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Directory for the embedded database and generated secrets.
    #[arg(long, env = "BUILDPEER_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// sqlite://PATH or postgres://USER@HOST/DB. Default: a SQLite file in the data dir.
    #[arg(long, env = "BUILDPEER_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<SecretString>,

    /// Size of the PostgreSQL connection pool of this process.
    #[arg(long, env = "BUILDPEER_DB_MAX_CONNECTIONS", default_value_t = 10)]
    pub db_max_connections: u32,

    /// Milliseconds a request waits for a free database connection before
    /// it answers 503 `database_busy` with Retry-After (pool exhaustion).
    #[arg(long, env = "BUILDPEER_DB_ACQUIRE_TIMEOUT_MS", default_value_t = 5000)]
    pub db_acquire_timeout_ms: u64,

    /// Log format: one JSON object per line, or human-readable.
    #[arg(long, env = "BUILDPEER_LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,

    /// Object storage: file:PATH (default: DATA_DIR/blobs) or
    /// s3://BUCKET?endpoint=URL&region=R (credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY).
    #[arg(long, env = "BUILDPEER_STORAGE_URL", hide_env_values = true)]
    pub storage_url: Option<String>,

    /// Log filter, in tracing's EnvFilter syntax (e.g. `info,buildpeer_api=debug`).
    #[arg(long, env = "BUILDPEER_LOG", default_value = "info,sqlx=warn")]
    pub log: String,

    /// Tenants this process labels in per-tenant metrics (`tenant_*`), the
    /// first it sees; the others count under `tenant="_other"`. Each costs
    /// a few series in Prometheus.
    #[arg(long, env = "BUILDPEER_METRICS_TENANTS",
        default_value_t = buildpeer_core::service::DEFAULT_MAX_TENANTS)]
    pub metrics_tenants: usize,

    #[command(flatten)]
    pub breaker: BreakerArgs,
}

/// The storage circuit breaker (the seed's numbers by default).
#[derive(Debug, Clone, Args)]
pub struct BreakerArgs {
    /// Calls the breaker's sliding window holds.
    #[arg(long, env = "BUILDPEER_STORAGE_BREAKER_WINDOW", default_value_t = 20)]
    pub storage_breaker_window: usize,
    /// Seconds a call stays in the window.
    #[arg(
        long,
        env = "BUILDPEER_STORAGE_BREAKER_WINDOW_SECS",
        default_value_t = 10.0
    )]
    pub storage_breaker_window_secs: f64,
    /// Fewest calls in the window before it may open.
    #[arg(long, env = "BUILDPEER_STORAGE_BREAKER_MIN_CALLS", default_value_t = 5)]
    pub storage_breaker_min_calls: usize,
    /// Share of failed calls in the window that opens it.
    #[arg(
        long,
        env = "BUILDPEER_STORAGE_BREAKER_FAILURE_RATIO",
        default_value_t = 0.5
    )]
    pub storage_breaker_failure_ratio: f64,
    /// Seconds it stays open before a trial call.
    #[arg(
        long,
        env = "BUILDPEER_STORAGE_BREAKER_OPEN_SECS",
        default_value_t = 30.0
    )]
    pub storage_breaker_open_secs: f64,
    /// Timeout of each storage call that does not stream a body, in seconds.
    #[arg(long, env = "BUILDPEER_STORAGE_TIMEOUT_SECS", default_value_t = 10.0)]
    pub storage_timeout_secs: f64,
}

impl BreakerArgs {
    pub fn settings(&self) -> Result<BreakerConfig, String> {
        let secs = |name: &str, v: f64| {
            Duration::try_from_secs_f64(v)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| format!("{name} must be a positive number of seconds"))
        };
        if !(self.storage_breaker_failure_ratio > 0.0 && self.storage_breaker_failure_ratio <= 1.0)
        {
            return Err("BUILDPEER_STORAGE_BREAKER_FAILURE_RATIO must be in (0, 1]".into());
        }
        if self.storage_breaker_window == 0 || self.storage_breaker_min_calls == 0 {
            return Err("the storage breaker's window and minimum calls must be positive".into());
        }
        Ok(BreakerConfig {
            window: self.storage_breaker_window,
            window_time: secs(
                "BUILDPEER_STORAGE_BREAKER_WINDOW_SECS",
                self.storage_breaker_window_secs,
            )?,
            min_calls: self.storage_breaker_min_calls,
            failure_ratio: self.storage_breaker_failure_ratio,
            open_for: secs(
                "BUILDPEER_STORAGE_BREAKER_OPEN_SECS",
                self.storage_breaker_open_secs,
            )?,
            call_timeout: secs("BUILDPEER_STORAGE_TIMEOUT_SECS", self.storage_timeout_secs)?,
        })
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Address to listen on.
    #[arg(long, env = "BUILDPEER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Secret that signs access tokens (at least 32 bytes). Default: generated once
    /// and kept in DATA_DIR/jwt_secret. Set it explicitly when running replicas.
    #[arg(long, env = "BUILDPEER_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<SecretString>,

    /// Do not run a processing worker in this process (run `buildpeer worker` instead).
    #[arg(long, env = "BUILDPEER_NO_WORKER")]
    pub no_worker: bool,

    #[command(flatten)]
    pub worker: WorkerArgs,

    /// Do not create the `demo` tenant on an empty database (for production).
    #[arg(long, env = "BUILDPEER_NO_BOOTSTRAP")]
    pub no_bootstrap: bool,

    /// Seconds to let in-flight requests finish after SIGTERM or SIGINT.
    #[arg(long, env = "BUILDPEER_SHUTDOWN_TIMEOUT", default_value_t = 30)]
    pub shutdown_timeout: u64,

    /// Base URL clients reach this service at; the local store's signed links
    /// start with it. Default: http:// and the listen address.
    #[arg(long, env = "BUILDPEER_PUBLIC_URL")]
    pub public_url: Option<String>,

    #[command(flatten)]
    pub uploads: UploadArgs,

    #[command(flatten)]
    pub cache: crate::cache::CacheArgs,
}

/// Upload limits and timings.
#[derive(Debug, Clone, Args)]
pub struct UploadArgs {
    /// Largest file one upload may have (per tenant unless `tenant limits` overrides), e.g. 5GiB.
    #[arg(long, env = "BUILDPEER_MAX_UPLOAD_SIZE", default_value = "5GiB", value_parser = parse_size)]
    pub max_upload_size: u64,

    /// Storage quota per tenant, e.g. 500GiB. Unset: no quota.
    #[arg(long, env = "BUILDPEER_TENANT_QUOTA", value_parser = parse_size)]
    pub tenant_quota: Option<u64>,

    /// Files above this size upload in parts (multipart), e.g. 64MiB.
    #[arg(long, env = "BUILDPEER_MULTIPART_THRESHOLD", default_value = "64MiB", value_parser = parse_size)]
    pub multipart_threshold: u64,

    /// Seconds the signed upload URLs of a pending upload work.
    #[arg(long, env = "BUILDPEER_UPLOAD_URL_TTL", default_value_t = 3600)]
    pub upload_url_ttl: u64,

    /// Days a deleted upload stays in the trash before it is purged.
    #[arg(long, env = "BUILDPEER_TRASH_RETENTION_DAYS", default_value_t = 30)]
    pub trash_retention_days: u32,

    /// Seconds between sweeps that expire stale pending uploads and purge the trash.
    #[arg(long, env = "BUILDPEER_SWEEP_INTERVAL", default_value_t = 60)]
    pub sweep_interval: u64,
}

/// How uploads are processed.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Jobs a worker process runs at once. Default: the number of CPU cores.
    #[arg(long, env = "BUILDPEER_WORKER_CONCURRENCY")]
    pub concurrency: Option<usize>,

    /// Derivatives to make, as NAME:PIXELS (longest side), comma-separated.
    #[arg(
        long,
        env = "BUILDPEER_THUMBNAIL_SIZES",
        default_value = "thumb:256,preview:1280"
    )]
    pub thumbnail_sizes: String,

    /// Seconds one file may take to process before it fails.
    #[arg(long, env = "BUILDPEER_JOB_TIMEOUT", default_value_t = 30)]
    pub job_timeout: u64,

    /// Largest image (width × height) processed; larger ones fail before decoding.
    #[arg(long, env = "BUILDPEER_MAX_PIXELS", default_value_t = 120_000_000)]
    pub max_pixels: u64,

    /// Milliseconds before the first retry of a failed job; doubles per attempt
    /// (with jitter), up to 5 minutes.
    #[arg(long, env = "BUILDPEER_JOB_RETRY_BASE_MS", default_value_t = 2000)]
    pub job_retry_base_ms: u64,

    /// Seconds a worker holds a job without renewing its lease (it renews
    /// every third of it); a job whose worker died runs again after this.
    #[arg(long, env = "BUILDPEER_JOB_LEASE_SECS", default_value_t = 60)]
    pub job_lease_secs: u64,

    /// Memory the files processed at once in this process may hold
    /// (originals and decoding), e.g. 160MiB; a file that needs more fails
    /// with `image_too_large`, one that needs more than is free waits.
    #[arg(long, env = "BUILDPEER_WORKER_MEMORY_BUDGET", default_value = "160MiB", value_parser = parse_size)]
    pub memory_budget: u64,

    /// Originals above this size get no metadata or derivatives (only their type), e.g. 256MiB.
    #[arg(long, env = "BUILDPEER_MAX_PROCESSING_SIZE", default_value = "256MiB", value_parser = parse_size)]
    pub max_processing_size: u64,
}

impl WorkerArgs {
    pub fn settings(&self) -> Result<ProcessingConfig, String> {
        let worker = WorkerSettings {
            concurrency: self
                .concurrency
                .unwrap_or_else(|| WorkerSettings::default().concurrency)
                .max(1),
            ..WorkerSettings::default()
        };
        let jobs = JobSettings {
            lease: Duration::from_secs(self.job_lease_secs.max(1)),
            base_backoff: Duration::from_millis(self.job_retry_base_ms.max(1)),
            ..JobSettings::default()
        };
        let media = MediaSettings {
            sizes: parse_sizes(&self.thumbnail_sizes)
                .map_err(|e| format!("BUILDPEER_THUMBNAIL_SIZES: {e}"))?,
            limits: buildpeer_media::Limits {
                max_pixels: self.max_pixels,
                ..buildpeer_media::Limits::default()
            },
            max_input_bytes: self.max_processing_size,
            time_cap: Duration::from_secs(self.job_timeout.max(1)),
            memory_budget: self.memory_budget,
        };
        Ok(ProcessingConfig {
            worker,
            jobs,
            media,
        })
    }
}

/// The worker, the jobs it runs and its media processing.
#[derive(Debug, Clone, Default)]
pub struct ProcessingConfig {
    pub worker: WorkerSettings,
    pub jobs: JobSettings,
    pub media: MediaSettings,
}

#[derive(Debug, Clone, Args)]
pub struct WorkerCommandArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub worker: WorkerArgs,

    /// Seconds running jobs may take to finish after SIGTERM or SIGINT.
    #[arg(long, env = "BUILDPEER_SHUTDOWN_TIMEOUT", default_value_t = 30)]
    pub shutdown_timeout: u64,

    /// Serve `/healthz`, `/readyz` and `/metrics` (Prometheus: the jobs,
    /// the storage breaker, the database pool, the queue) on this address,
    /// e.g. `0.0.0.0:9464`. Unset: nothing is served and the worker's
    /// metrics are not kept.
    #[arg(long, env = "BUILDPEER_WORKER_OPS_LISTEN")]
    pub ops_listen: Option<SocketAddr>,

    #[command(flatten)]
    pub cache: crate::cache::CacheArgs,
}

impl UploadArgs {
    pub fn settings(&self) -> UploadSettings {
        UploadSettings {
            multipart_threshold: self.multipart_threshold,
            upload_url_ttl: chrono::Duration::seconds(
                i64::try_from(self.upload_url_ttl).unwrap_or(i64::MAX / 1000),
            ),
            max_upload_bytes: self.max_upload_size,
            quota_bytes: self.tenant_quota,
            trash_retention: chrono::Duration::days(i64::from(self.trash_retention_days)),
            ..UploadSettings::default()
        }
    }
}

/// `1048576`, `512KiB`, `64MiB`, `5GiB`, `2TiB` (also KB/MB/GB/TB as powers of 1000).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("not a size: {s:?}"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(format!("unknown size unit in {s:?}")),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("size too large: {s:?}"))
}

#[derive(Debug, Clone, Args)]
pub struct TenantCreateArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// URL-safe handle used at login, e.g. `acme`.
    #[arg(long)]
    pub slug: String,
    /// Display name, e.g. "Acme Construcciones".
    #[arg(long)]
    pub name: String,
    #[arg(long)]
    pub admin_email: String,
    #[arg(long, env = "BUILDPEER_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: SecretString,
    /// The admin's display name.
    #[arg(long, default_value = "Admin")]
    pub admin_name: String,
}

/// Where the metadata store lives.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub url: SecretString,
    pub max_connections: u32,
    /// How long a query waits for a free connection.
    pub acquire_timeout: Duration,
}

impl DatabaseConfig {
    pub fn from_args(args: &CommonArgs) -> Self {
        let url = args.database_url.clone().unwrap_or_else(|| {
            SecretString::from(format!(
                "sqlite://{}",
                args.data_dir.join("buildpeer.db").display()
            ))
        });
        Self {
            url,
            max_connections: args.db_max_connections,
            acquire_timeout: Duration::from_millis(args.db_acquire_timeout_ms.max(1)),
        }
    }

    pub fn is_sqlite(&self) -> bool {
        self.url.expose_secret().starts_with("sqlite:")
    }
}

/// Everything `App::build` needs; tests build it directly.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database: DatabaseConfig,
    /// `None`: the local store under the data dir.
    pub storage_url: Option<String>,
    /// `None`: `http://` and the bound address.
    pub public_url: Option<String>,
    pub uploads: UploadSettings,
    pub sweep_interval: Duration,
    pub jwt_secret: Option<SecretString>,
    pub bootstrap: bool,
    pub shutdown_timeout: Duration,
    pub processing: ProcessingConfig,
    /// Run a worker in this process.
    pub run_worker: bool,
    /// Cache (Redis or in-process) and rate limits.
    pub cache: crate::cache::CacheConfig,
    /// The circuit breaker in front of storage.
    pub breaker: BreakerConfig,
    pub metrics_tenants: usize,
}

impl Config {
    pub fn from_serve_args(args: &ServeArgs) -> Result<Self, String> {
        let mut processing = args.worker.settings()?;
        processing.worker.grace = Duration::from_secs(args.shutdown_timeout);
        Ok(Self {
            listen: args.listen,
            data_dir: args.common.data_dir.clone(),
            database: DatabaseConfig::from_args(&args.common),
            storage_url: args.common.storage_url.clone(),
            public_url: args.public_url.clone(),
            uploads: args.uploads.settings(),
            sweep_interval: Duration::from_secs(args.uploads.sweep_interval.max(1)),
            jwt_secret: args.jwt_secret.clone(),
            bootstrap: !args.no_bootstrap,
            shutdown_timeout: Duration::from_secs(args.shutdown_timeout),
            processing,
            run_worker: !args.no_worker,
            cache: args.cache.settings(),
            breaker: args.common.breaker.settings()?,
            metrics_tenants: args.common.metrics_tenants,
        })
    }

    /// A configuration for tests and tools: SQLite in `data_dir`, port 0.
    pub fn embedded(data_dir: &Path) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.to_owned(),
            database: DatabaseConfig {
                url: SecretString::from(format!(
                    "sqlite://{}",
                    data_dir.join("buildpeer.db").display()
                )),
                max_connections: 10,
                acquire_timeout: Duration::from_secs(5),
            },
            storage_url: None,
            public_url: None,
            uploads: UploadSettings::default(),
            sweep_interval: Duration::from_secs(60),
            jwt_secret: None,
            bootstrap: true,
            shutdown_timeout: Duration::from_secs(30),
            processing: ProcessingConfig::default(),
            run_worker: true,
            cache: crate::cache::CacheConfig::default(),
            breaker: BreakerConfig::default(),
            metrics_tenants: buildpeer_core::service::DEFAULT_MAX_TENANTS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let cli = Cli::try_parse_from([
            "buildpeer",
            "serve",
            "--database-url",
            "postgres://app:hunter2hunter2@db/buildpeer",
            "--jwt-secret",
            "super-secret-signing-key-0123456789abcdef",
        ]);
        let Ok(Cli {
            command: Command::Serve(args),
        }) = cli
        else {
            panic!("parse failed");
        };
        let Ok(config) = Config::from_serve_args(&args) else {
            panic!("config failed");
        };
        let debug = format!("{args:?} {config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(!debug.contains("super-secret"), "{debug}");
        assert!(!config.database.is_sqlite());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("5 GiB"), Ok(5 << 30));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }

    #[test]
    fn defaults() {
        let Ok(Cli {
            command: Command::Serve(args),
        }) = Cli::try_parse_from(["buildpeer", "serve"])
        else {
            panic!("parse failed");
        };
        assert_eq!(args.listen.to_string(), "127.0.0.1:8080");
        let Ok(config) = Config::from_serve_args(&args) else {
            panic!("config failed");
        };
        assert!(config.run_worker);
        assert_eq!(config.processing.media.sizes.len(), 2);
        assert!(config.database.is_sqlite());
        assert!(config.bootstrap);
    }
}
