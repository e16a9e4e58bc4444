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

/// mimalloc's option for how long freed memory stays committed before it is
/// returned to the system; it reads it from the environment when it starts.
const PURGE_DELAY: &str = "MIMALLOC_PURGE_DELAY";

fn main() -> ExitCode {
    return_memory_at_once();
    run()
}

#[tokio::main]
async fn run() -> ExitCode {
    buildpeer::cli::run(buildpeer::config::Cli::parse()).await
}

/// mimalloc 3 keeps freed memory committed for a second (and, in a thread
/// that goes idle, until it allocates again), so the 19 MiB argon2 block of
/// every login and the body chunks of finished uploads stayed resident: with
/// 100 concurrent 100 MiB uploads the peak was 126-145 MiB, with a delay of 0
/// it is ~90 MiB at the same throughput (bench/ingest). The delay can only be
/// set before the allocator starts, and setting it through mimalloc's API
/// takes `unsafe`, so the process re-executes itself once with the variable
/// set (same pid, arguments and environment otherwise; ~1 ms). An operator's
/// own setting is kept, and if the exec fails we simply run as we are.
fn return_memory_at_once() {
    #[cfg(unix)]
    if std::env::var_os(PURGE_DELAY).is_none()
        && let Ok(exe) = std::env::current_exe()
    {
        use std::os::unix::process::CommandExt as _;
        // Returns only if the exec failed.
        let _failed = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env(PURGE_DELAY, "0")
            .exec();
    }
}
