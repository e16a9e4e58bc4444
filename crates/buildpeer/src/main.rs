//! `buildpeer`: see `buildpeer --help`.

use std::process::ExitCode;

use clap::Parser as _;

/// mimalloc rather than glibc's malloc: glibc keeps freed upload buffers in
/// its arenas (the large start-up allocations of argon2 raise its mmap
/// threshold, and each of the many blocking-pool threads can get an arena of
/// its own), so the resident set grows with concurrent uploads and stays up;
/// mimalloc returns freed memory to the system.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    buildpeer::cli::run(buildpeer::config::Cli::parse()).await
}
