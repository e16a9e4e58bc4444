//! The commands of the binary.

use std::process::ExitCode;

use anyhow::Context as _;
use buildpeer_core::Service;
use buildpeer_core::auth::TokenKeys;
use buildpeer_core::clock::SystemClock;
use buildpeer_core::ports::TenantLimits;
use buildpeer_core::service::{CreateTenantInput, Deps, UploadSettings};
use secrecy::{ExposeSecret, SecretSlice};
use std::sync::Arc;

use crate::app::{self, App};
use crate::config::{
    Cli, Command, CommonArgs, Config, DatabaseConfig, ProcessingConfig, TenantCommand,
    TenantLimitsArgs, WorkerCommandArgs, parse_size,
};
use crate::telemetry::{self, Sink};

pub async fn run(cli: Cli) -> ExitCode {
    let (common, service, sink) = match &cli.command {
        Command::Serve(a) => (&a.common, "buildpeer-api", Sink::Stdout),
        Command::Worker(a) => (&a.common, "buildpeer-worker", Sink::Stdout),
        Command::Migrate(c) => (c, "buildpeer", Sink::Stderr),
        Command::Tenant(TenantCommand::Create(a)) => (&a.common, "buildpeer", Sink::Stderr),
        Command::Tenant(TenantCommand::Limits(a)) => (&a.common, "buildpeer", Sink::Stderr),
        Command::Media(cmd) => return crate::media_cli::run(cmd),
    };
    if let Err(e) = telemetry::init_logging(common.log_format, &common.log, service, sink) {
        eprintln!("buildpeer: {e:#}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Serve(args) => match Config::from_serve_args(&args) {
            Ok(config) => serve(config).await,
            Err(e) => Err(anyhow::Error::msg(e)),
        },
        Command::Worker(args) => worker(args).await,
        Command::Migrate(args) => migrate(&args).await,
        Command::Tenant(TenantCommand::Create(args)) => create_tenant(args).await,
        Command::Tenant(TenantCommand::Limits(args)) => tenant_limits(args).await,
        Command::Media(_) => Ok(()), // handled above
    };
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "command failed");
            ExitCode::FAILURE
        }
    };
    telemetry::flush_logs();
    code
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let app = App::build(config).await?;
    app.run_until_stopped(app::shutdown_signal()).await
}

async fn worker(args: WorkerCommandArgs) -> anyhow::Result<()> {
    let mut processing = args.worker.settings().map_err(anyhow::Error::msg)?;
    processing.worker.grace = std::time::Duration::from_secs(args.shutdown_timeout);
    // The recorder first, so that what the set-up records (the breaker's
    // initial state) is kept.
    let ops = match args.ops_listen {
        Some(addr) => {
            let metrics = crate::telemetry::metrics_handle()?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr} (BUILDPEER_WORKER_OPS_LISTEN)"))?;
            Some((listener, metrics))
        }
        None => None,
    };
    crate::telemetry::announce("worker");
    let service = operator_service(&args.common, &processing).await?;
    // Its invalidations (status changes) must reach the API's cache.
    let service = crate::cache::attach(service, &args.cache.settings()).await?;
    app::run_worker(service, processing.worker, ops, app::shutdown_signal()).await
}

async fn migrate(args: &CommonArgs) -> anyhow::Result<()> {
    let store = app::connect_store(&DatabaseConfig::from_args(args), &args.data_dir).await?;
    tracing::info!(backend = store.backend(), "migrations are up to date");
    Ok(())
}

/// The use-cases for an operator command or a worker process. They sign
/// nothing, so random keys that die with the process stand in for the
/// server's.
async fn operator_service(
    common: &CommonArgs,
    processing: &ProcessingConfig,
) -> anyhow::Result<Service> {
    let store = app::connect_store(&DatabaseConfig::from_args(common), &common.data_dir).await?;
    let mut key = vec![0u8; TokenKeys::MIN_SECRET_LEN];
    rand::Rng::fill(&mut rand::rng(), key.as_mut_slice());
    let key = SecretSlice::from(key);
    let blobs = app::open_blobs(
        common.storage_url.as_deref(),
        &common.data_dir,
        "http://127.0.0.1".to_owned(),
        &key,
    )
    .await?;
    let breaker = common.breaker.settings().map_err(|e| anyhow::anyhow!(e))?;
    let blobs = Arc::new(buildpeer_storage::CircuitBreaker::new(blobs, breaker));
    Ok(Service::new(Deps {
        store,
        blobs,
        media: app::media(processing),
        clock: Arc::new(SystemClock),
        tokens: TokenKeys::new(&key).context("token keys")?,
        uploads: UploadSettings::default(),
    })
    .with_jobs(processing.jobs.clone())
    .with_metrics_tenants(common.metrics_tenants))
}

async fn create_tenant(args: crate::config::TenantCreateArgs) -> anyhow::Result<()> {
    let service = operator_service(&args.common, &ProcessingConfig::default()).await?;
    let (tenant, admin) = service
        .create_tenant(CreateTenantInput {
            slug: args.slug,
            name: args.name,
            admin_email: args.admin_email,
            admin_name: args.admin_name,
            admin_password: args.admin_password.expose_secret().to_owned(),
        })
        .await
        .map_err(describe)?;
    let out = serde_json::json!({ "tenant_id": tenant.id, "admin_user_id": admin.id });
    #[allow(clippy::print_stdout)] // the command's output
    {
        println!("{out}");
    }
    Ok(())
}

async fn tenant_limits(args: TenantLimitsArgs) -> anyhow::Result<()> {
    let size = |s: &str| -> anyhow::Result<Option<u64>> {
        if s.eq_ignore_ascii_case("default") {
            Ok(None)
        } else {
            parse_size(s).map(Some).map_err(anyhow::Error::msg)
        }
    };
    let limits = TenantLimits {
        max_upload_bytes: size(&args.max_upload_size)?,
        quota_bytes: size(&args.quota)?,
    };
    let service = operator_service(&args.common, &ProcessingConfig::default()).await?;
    service
        .set_tenant_limits(&args.slug, limits)
        .await
        .map_err(describe)?;
    tracing::info!(slug = %args.slug, ?limits, "tenant limits set");
    Ok(())
}

/// Spells out validation errors for a terminal user.
fn describe(e: buildpeer_core::CoreError) -> anyhow::Error {
    match e {
        buildpeer_core::CoreError::Validation(errors) => {
            let lines: Vec<String> = errors
                .iter()
                .map(|f| format!("{}: {}", f.field, f.message))
                .collect();
            anyhow::anyhow!("invalid input: {}", lines.join("; "))
        }
        other => anyhow::Error::new(other),
    }
}
