//! `buildpeer`: see `buildpeer --help`.

use std::process::ExitCode;

use clap::Parser as _;

#[tokio::main]
async fn main() -> ExitCode {
    buildpeer::cli::run(buildpeer::config::Cli::parse()).await
}
