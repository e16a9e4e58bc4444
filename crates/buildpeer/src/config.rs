//! Configuration: command-line flags, each with a `BUILDPEER_*` environment
//! variable (12-factor). Parsed once in `main` and passed down explicitly.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
        BUILDPEER_DB_MAX_CONNECTIONS, BUILDPEER_JWT_SECRET, BUILDPEER_LOG_FORMAT, BUILDPEER_LOG, \
        BUILDPEER_NO_BOOTSTRAP, BUILDPEER_SHUTDOWN_TIMEOUT, BUILDPEER_ADMIN_PASSWORD \
        (see `buildpeer <COMMAND> --help`)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API (runs pending migrations first).
    Serve(ServeArgs),
    /// Run pending database migrations and exit.
    Migrate(CommonArgs),
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant and its first admin; prints {"tenant_id", "admin_user_id"} as JSON.
    Create(TenantCreateArgs),
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

    /// Log format: one JSON object per line, or human-readable.
    #[arg(long, env = "BUILDPEER_LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,

    /// Log filter, in tracing's EnvFilter syntax (e.g. `info,buildpeer_api=debug`).
    #[arg(long, env = "BUILDPEER_LOG", default_value = "info,sqlx=warn")]
    pub log: String,
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

    /// Do not create the `demo` tenant on an empty database (for production).
    #[arg(long, env = "BUILDPEER_NO_BOOTSTRAP")]
    pub no_bootstrap: bool,

    /// Seconds to let in-flight requests finish after SIGTERM or SIGINT.
    #[arg(long, env = "BUILDPEER_SHUTDOWN_TIMEOUT", default_value_t = 30)]
    pub shutdown_timeout: u64,
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
    pub jwt_secret: Option<SecretString>,
    pub bootstrap: bool,
    pub shutdown_timeout: Duration,
}

impl Config {
    pub fn from_serve_args(args: &ServeArgs) -> Self {
        Self {
            listen: args.listen,
            data_dir: args.common.data_dir.clone(),
            database: DatabaseConfig::from_args(&args.common),
            jwt_secret: args.jwt_secret.clone(),
            bootstrap: !args.no_bootstrap,
            shutdown_timeout: Duration::from_secs(args.shutdown_timeout),
        }
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
            },
            jwt_secret: None,
            bootstrap: true,
            shutdown_timeout: Duration::from_secs(30),
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
        let config = Config::from_serve_args(&args);
        let debug = format!("{args:?} {config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(!debug.contains("super-secret"), "{debug}");
        assert!(!config.database.is_sqlite());
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
        let config = Config::from_serve_args(&args);
        assert!(config.database.is_sqlite());
        assert!(config.bootstrap);
    }
}
