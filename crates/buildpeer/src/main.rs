//! `buildpeer`: see `buildpeer --help`.

use std::process::ExitCode;

use clap::Parser as _;

/// mimalloc rather than glibc's malloc: glibc keeps freed upload buffers in
/// its arenas (argon2's large start-up allocations raise its mmap threshold,
/// and each of the many blocking-pool threads that write uploads can get an
/// arena of its own), so the resident set after a burst of uploads stays
/// near its peak; mimalloc gives the memory back. (Built without transparent
/// huge pages: with them, every 2 MiB region it touched counted as resident.)
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    buildpeer::cli::run(buildpeer::config::Cli::parse()).await
}
