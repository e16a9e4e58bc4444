//! Prints, for each file given, the memory `plan` reserves for it and the
//! peak resident memory `process` really reached above the process's
//! resident memory before it: the check that the plan is an upper bound.
//! One file per process run gives the cleanest figure (the allocator keeps
//! some freed memory):
//!
//! ```text
//! cargo run --release -p buildpeer-media --example peak -- FILE
//! ```

use std::io::Write as _;

use buildpeer_media::{Limits, default_sizes, plan, process};

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let sizes = default_sizes();
    let limits = Limits::default();
    let mut out = std::io::stdout().lock();
    for path in std::env::args().skip(1) {
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                let _ = writeln!(out, "{path}: {e}");
                continue;
            }
        };
        let before = status_kib("VmRSS:");
        let planned = plan(&bytes, &sizes, &limits);
        let started = std::time::Instant::now();
        let outcome = process(&bytes, &sizes, &limits).map_or_else(
            |e| e.code().to_owned(),
            |p| {
                format!(
                    "{:?} {:?}x{:?}",
                    p.format, p.metadata.width, p.metadata.height
                )
            },
        );
        let peak = status_kib("VmHWM:").saturating_sub(before);
        let planned = planned.map_or_else(|e| e.code().to_owned(), |b| format!("{} KiB", b >> 10));
        let _ = writeln!(
            out,
            "{path}: plan {planned}, peak {peak} KiB above the start, {} ms: {outcome}",
            started.elapsed().as_millis()
        );
    }
}
