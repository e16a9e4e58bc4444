//! Wiring: adapters into ports, ports into the core, the core into the HTTP
//! driver. Building the app (connect, migrate, bind) is separate from running
//! it, so tests boot the real thing on port 0.

use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use buildpeer_core::Service;
use buildpeer_core::auth::TokenKeys;
use buildpeer_core::blob::BlobStore;
use buildpeer_core::clock::SystemClock;
use buildpeer_core::ports::MetadataStore;
use buildpeer_core::service::{Bootstrap, Deps};
use buildpeer_db::DbOptions;
use buildpeer_media_adapter::Media;
use buildpeer_storage::StorageOptions;
use buildpeer_worker::WorkerSettings;
use secrecy::{ExposeSecret, SecretSlice};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use crate::config::{Config, DatabaseConfig, ProcessingConfig};
use crate::telemetry;

/// A built, bound, not yet serving application.
pub struct App {
    listener: TcpListener,
    api: buildpeer_api::Api,
    service: Service,
    /// The adapters the service runs on, for tests and tools that look
    /// below it.
    store: Arc<dyn MetadataStore>,
    blobs: Arc<dyn BlobStore>,
    shutdown_timeout: Duration,
    sweep_interval: Duration,
    /// `None`: no worker in this process.
    worker: Option<WorkerSettings>,
}

/// Connects to the metadata store and brings its schema up to date.
pub async fn connect_store(
    db: &DatabaseConfig,
    data_dir: &Path,
) -> anyhow::Result<Arc<dyn MetadataStore>> {
    if db.is_sqlite() {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating data dir {}", data_dir.display()))?;
    }
    let opts = DbOptions {
        max_connections: db.max_connections,
        acquire_timeout: db.acquire_timeout,
        ..DbOptions::default()
    };
    buildpeer_db::connect(db.url.expose_secret(), &opts)
        .await
        .context("connecting to the database")
}

/// Opens object storage: the configured URL, or the local store under the
/// data dir. Local signed links are keyed from the JWT secret, so replicas
/// that share one (as they must) accept each other's links.
pub async fn open_blobs(
    storage_url: Option<&str>,
    data_dir: &Path,
    public_url: String,
    secret: &SecretSlice<u8>,
) -> anyhow::Result<Arc<dyn BlobStore>> {
    let url = storage_url
        .map(str::to_owned)
        .unwrap_or_else(|| format!("file:{}", data_dir.join("blobs").display()));
    let mut h = Sha256::new();
    h.update(b"buildpeer local blob signing v1\0");
    h.update(secret.expose_secret());
    let opts = StorageOptions {
        public_url,
        signing_key: SecretSlice::from(h.finalize().to_vec()),
        data_dir: data_dir.to_owned(),
    };
    buildpeer_storage::open(&url, &opts)
        .await
        .context("opening object storage")
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        // First: metrics registered from here on reach the recorder.
        let metrics = telemetry::metrics_handle()?;
        telemetry::announce("api");
        if config.run_worker {
            telemetry::announce("worker");
        }
        let store = connect_store(&config.database, &config.data_dir).await?;
        let secret = jwt_secret(&config)?;
        let keys = TokenKeys::new(&secret).context("JWT secret")?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let public_url = match &config.public_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => format!("http://{}", listener.local_addr()?),
        };
        let blobs = open_blobs(
            config.storage_url.as_deref(),
            &config.data_dir,
            public_url,
            &secret,
        )
        .await?;
        let blobs: Arc<dyn BlobStore> = Arc::new(buildpeer_storage::CircuitBreaker::new(
            blobs,
            config.breaker,
        ));
        let service = Service::new(Deps {
            store: Arc::clone(&store),
            blobs: Arc::clone(&blobs),
            media: media(&config.processing),
            clock: Arc::new(SystemClock),
            tokens: keys,
            uploads: config.uploads.clone(),
        })
        .with_jobs(config.processing.jobs.clone())
        .with_metrics_tenants(config.metrics_tenants);
        let service = crate::cache::attach(service, &config.cache).await?;
        if config.cache.redis_url.is_none() && store.backend() == "postgres" {
            // The in-process cache hears of no other process's change: a
            // second replica (or a separate worker) on this database would
            // serve what it cached before another one changed it.
            tracing::warn!(
                "PostgreSQL without BUILDPEER_REDIS_URL: the cache is this process's own; \
                 run several replicas or a separate worker only with Redis"
            );
        }
        if config.bootstrap {
            bootstrap(&service).await?;
        }
        let api = buildpeer_api::Api::new(service.clone(), metrics);
        Ok(Self {
            listener,
            api,
            service,
            store,
            blobs,
            shutdown_timeout: config.shutdown_timeout,
            sweep_interval: config.sweep_interval,
            worker: config.run_worker.then(|| config.processing.worker.clone()),
        })
    }

    /// The use-cases this app serves (tests share its cache through it).
    pub fn service(&self) -> &Service {
        &self.service
    }

    /// The metadata store below the service.
    pub fn store(&self) -> &Arc<dyn MetadataStore> {
        &self.store
    }

    /// Object storage below the service (behind its circuit breaker).
    pub fn blobs(&self) -> &Arc<dyn BlobStore> {
        &self.blobs
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight
    /// requests finish for up to the shutdown timeout, and returns.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = self.local_addr()?;
        // Computing the login dummy hash now keeps the first failed login as
        // slow as every other one, without delaying readiness.
        let service = self.service.clone();
        tokio::spawn(async move {
            if let Err(e) = service.warm_up().await {
                tracing::warn!(error = %e, "warm-up failed");
            }
        });
        let sweeper = tokio::spawn(buildpeer_worker::sweep_forever(
            self.service.clone(),
            self.sweep_interval,
        ));
        let (stop_worker, worker_stop) = tokio::sync::watch::channel(false);
        let worker = self.worker.map(|settings| {
            tokio::spawn(buildpeer_worker::run(
                self.service.clone(),
                settings,
                worker_stop,
            ))
        });
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let server = self.api.serve(self.listener, async move {
            shutdown.await;
            tracing::info!("shutdown requested: draining in-flight requests");
            let _ = stop_worker.send(true);
            let _ = stopping_tx.send(());
        });
        tracing::info!(address = %addr, "listening");
        let timeout = self.shutdown_timeout;
        let deadline = async move {
            if stopping_rx.await.is_ok() {
                tokio::time::sleep(timeout).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            result = server => result.context("serving HTTP")?,
            () = deadline => tracing::warn!(?timeout, "shutdown timeout: abandoning in-flight requests"),
        }
        sweeper.abort();
        if let Some(worker) = worker {
            // It got the same grace period, and gives back what it could not finish.
            let _ = worker.await;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// The media port's adapter, with one decode slot per worker job.
pub fn media(processing: &ProcessingConfig) -> Arc<Media> {
    Arc::new(Media::new(
        processing.media.clone(),
        processing.worker.concurrency,
    ))
}

/// `buildpeer worker`: processes jobs until `shutdown`, then drains. With
/// `ops`, also serves the operational endpoints there until it has drained.
pub async fn run_worker(
    service: Service,
    settings: WorkerSettings,
    ops: Option<(
        tokio::net::TcpListener,
        metrics_exporter_prometheus::PrometheusHandle,
    )>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
    let ops = match ops {
        Some((listener, metrics)) => {
            tracing::info!(address = %listener.local_addr()?, "listening");
            let api = buildpeer_api::Api::ops_only(service.clone(), metrics);
            Some(tokio::spawn(api.serve(listener, async move {
                // Sent or dropped: the worker has drained either way.
                let _ = drained_rx.await;
            })))
        }
        None => None,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(buildpeer_worker::run(service, settings, stop_rx));
    shutdown.await;
    tracing::info!("shutdown requested: finishing running jobs");
    let _ = stop_tx.send(true);
    worker.await.context("worker task")?;
    drop(drained_tx);
    if let Some(ops) = ops {
        ops.await.context("operational endpoints")??;
    }
    Ok(())
}

/// The signing secret: the configured one, or one generated on first start
/// and kept in the data dir (readable by the owner only).
fn jwt_secret(config: &Config) -> anyhow::Result<SecretSlice<u8>> {
    if let Some(s) = &config.jwt_secret {
        return Ok(SecretSlice::from(s.expose_secret().as_bytes().to_vec()));
    }
    let path = config.data_dir.join("jwt_secret");
    match std::fs::read_to_string(&path) {
        Ok(s) => return Ok(SecretSlice::from(s.trim().as_bytes().to_vec())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    std::fs::create_dir_all(&config.data_dir)?;
    let mut raw = [0u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut raw);
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    // Write a temp file, then hard-link it into place: the link fails if the
    // file exists, so when two processes start at once on one data dir the
    // first one's key wins and both read it back below; a crash never leaves
    // half a key under the real name.
    let tmp = config
        .data_dir
        .join(format!("jwt_secret.{}.tmp", std::process::id()));
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(hex.as_bytes())?;
        f.sync_all()?;
    }
    let linked = std::fs::hard_link(&tmp, &path);
    std::fs::remove_file(&tmp)?;
    match linked {
        Ok(()) => tracing::info!(path = %path.display(), "generated a JWT signing secret"),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("writing {}", path.display())),
    }
    let s = std::fs::read_to_string(&path)?;
    Ok(SecretSlice::from(s.trim().as_bytes().to_vec()))
}

async fn bootstrap(service: &Service) -> anyhow::Result<()> {
    match service.bootstrap_demo().await.context("bootstrap")? {
        Bootstrap::Skipped => {}
        Bootstrap::Created {
            tenant,
            admin_email,
            admin_password,
        } => {
            // Printed once, on purpose: it is how a newcomer logs in.
            tracing::warn!(
                tenant = %tenant.slug,
                email = %admin_email,
                password = %admin_password,
                "created the demo tenant; log in with this e-mail and password (shown only this once)"
            );
        }
    }
    Ok(())
}

/// Completes on SIGTERM or SIGINT. On Unix the handlers are installed when
/// this is called, not when the future is first polled: the server polls it only once
/// it serves, and a SIGTERM that came between "listening" and that first poll
/// found no handler and killed the process outright.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let terminate = signal(SignalKind::terminate()).ok();
        let interrupt = signal(SignalKind::interrupt()).ok();
        async move {
            let wait = async |s: Option<tokio::signal::unix::Signal>| match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            };
            tokio::select! {
                () = wait(terminate) => {},
                () = wait(interrupt) => {},
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
