//! Test support shared by the workspace's test suites (a dev-dependency
//! only): [`RedisServer`], a redis-server of the test's own, and the checks
//! a test makes for what it needs from outside the build.
//!
//! Every test that needs a service or a tool asks for it through
//! [`required_env`] or [`required_tool`]. Run locally without it, the test
//! says `skipped: …` on stderr and returns (passing), so that `cargo test`
//! works on a bare machine. Under `CI=true` (which `scripts/test` sets) a
//! missing one fails the test instead: a run that was meant to be complete
//! cannot pass by skipping.
//!
//! [`hostile`] is the hostile-file set (decompression bombs, loops,
//! polyglots, truncations) both the media crate's and the server's suites
//! run.

pub mod hostile;
mod redis;

use std::path::PathBuf;

pub use redis::RedisServer;

/// The variable that turns skips into failures.
const CI_ENV: &str = "CI";

/// Whether the run must be complete: `CI` is `true` (or `1`), as CI
/// services and `scripts/test` set it.
pub fn ci() -> bool {
    std::env::var(CI_ENV).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// The value of the environment variable `name`, which the test needs.
/// When it is unset or empty: `None` after a `skipped: …` line, or under
/// `CI=true` a panic that names it.
#[track_caller]
pub fn required_env(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            missing(&format!("{name} is unset"));
            None
        }
    }
}

/// The path of the program `name` on `PATH`, which the test needs. When it
/// is not there: `None` after a `skipped: …` line, or under `CI=true` a
/// panic that names it.
#[track_caller]
pub fn required_tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| is_executable(p))
    });
    if found.is_none() {
        missing(&format!("{name} is not on PATH"));
    }
    found
}

fn is_executable(path: &std::path::Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        path.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}

#[track_caller]
fn missing(what: &str) {
    assert!(
        !ci(),
        "{what}, and {CI_ENV}=true forbids skipping this test (scripts/test provides every service and tool)"
    );
    eprintln!("skipped: {what} (under {CI_ENV}=true this fails)");
}
