//! The hostile-file set (`buildpeer_testkit::hostile`, issue 18) through
//! `process` with the default sizes and limits: every file ends (inside the
//! hang guard), the same way twice, the way its case expects. The table it
//! prints (`--nocapture`) is each file's outcome, for the one implementing
//! the issue; every mismatch is listed before the test fails.
//! `BUILDPEER_TEST_HOSTILE=heic,pdf_` runs only the files so named.

use crate::common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use buildpeer_media::{Limits, Metadata, default_sizes, process, sniff};
use buildpeer_testkit::hostile::{self, Hostile, Outcome};
use common::without_hanging;

/// One call's result: the outcome, with the whole metadata when it
/// completed (compared between runs), or why the call itself failed
/// (a panic, a hang).
type Run = Result<(Outcome, Option<Metadata>), String>;

fn run(h: &Hostile) -> (Run, u128) {
    let bytes = h.bytes.clone();
    let started = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(|| {
        without_hanging(move || {
            process(&bytes, &default_sizes(), &Limits::default()).map(|p| {
                let outcome = Outcome::Completed {
                    width: p.metadata.width,
                    height: p.metadata.height,
                    page_count: p.metadata.page_count,
                    derivatives: p.derivatives.iter().map(|d| (d.width, d.height)).collect(),
                };
                (outcome, Some(p.metadata))
            })
        })
    }));
    let ms = started.elapsed().as_millis();
    let run = match result {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(e)) => Ok((
            Outcome::Failed {
                code: e.code().to_owned(),
            },
            None,
        )),
        Err(panic) => Err(panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "panicked".to_owned())),
    };
    (run, ms)
}

fn show(run: &Run) -> String {
    match run {
        Ok((outcome, _)) => outcome.to_string(),
        Err(e) => format!("PANIC/HANG: {e}"),
    }
}

#[test]
fn every_hostile_file_ends_the_same_way_twice_as_expected() {
    let set = hostile::selected();
    let mut problems = Vec::new();
    let mut table = vec![format!(
        "{:<36} {:<16} {:>9} {:<6} {:>7} {:<44} {}",
        "file", "declared", "bytes", "sniff", "ms", "expected", "observed"
    )];
    for h in &set {
        let (first, ms) = run(h);
        let (second, _) = run(h);
        let verdict = match &first {
            Ok((outcome, _)) => h.expect.check(outcome),
            Err(e) => Err(format!("the call did not return: {e}")),
        };
        if let Err(why) = &verdict {
            problems.push(format!("{}: {why}", h.name));
        }
        if first != second {
            problems.push(format!(
                "{}: not the same twice: {} then {}",
                h.name,
                show(&first),
                show(&second)
            ));
        }
        let sniffed = sniff(&h.bytes).map_or("-", |f| match f.mime() {
            "application/pdf" => "pdf",
            mime => mime.trim_start_matches("image/"),
        });
        table.push(format!(
            "{:<36} {:<16} {:>9} {:<6} {:>7} {:<44} {}{}",
            h.name,
            h.declared_type,
            h.bytes.len(),
            sniffed,
            ms,
            h.expect.to_string(),
            show(&first),
            if verdict.is_ok() {
                ""
            } else {
                "   <-- MISMATCH"
            }
        ));
    }
    eprintln!(
        "\nhostile set through buildpeer_media::process:\n{}\n",
        table.join("\n")
    );
    assert!(
        problems.is_empty(),
        "{} of {} hostile files went wrong:\n{}",
        problems.len(),
        set.len(),
        problems.join("\n")
    );
}
