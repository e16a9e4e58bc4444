//! README.md's "First steps with curl", run as written: the fenced blocks
//! marked ```` ```sh walkthrough ```` are taken from the README in order and
//! run as one bash script (`set -euo pipefail`) against a fresh
//! `buildpeer serve` child process (SQLite and files in a temp dir, the
//! embedded default), in a temp dir holding a camera photo as
//! `foto-obra.jpg`. The one block marked ```` ```sh walkthrough-setup ````
//! is what the reader sets by hand (`BASE`, and `PASSWORD` from the log): it
//! must set exactly those variables, and the test sets them instead, to this
//! server's address and the password it logged. The script must exit 0; then,
//! through the API, the walkthrough's upload is `COMPLETED` with the photo's
//! SHA-256, and the `copy.jpg` it downloaded is the photo, byte for byte. So
//! the walkthrough cannot drift from the server again.
//!
//! It needs `bash`, `curl` and `jq` (scripts/test installs them): without
//! one it says `skipped: …`, or fails under `CI=true`.

use crate::common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::process::{DemoAdmin, Server, serve_env};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

const README: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"));
/// The reader's `foto-obra.jpg`: a camera JPEG with GPS, which processing
/// completes with a thumbnail.
const PHOTO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/photos/jpeg/gps/DSCN0010.jpg"
);
/// The name the walkthrough gives the reader's photo.
const PHOTO_NAME: &str = "foto-obra.jpg";
/// The fence info strings that mark the walkthrough's blocks.
const STEP_INFO: &str = "sh walkthrough";
const SETUP_INFO: &str = "sh walkthrough-setup";
/// What the setup block sets by hand, and the test sets for it.
const SETUP_VARS: [&str; 2] = ["BASE", "PASSWORD"];
/// How long the script may run (its polling loop gives up after 30 s).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(90);

/// One fenced block of the README.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Block {
    /// The README line of its opening fence (1-based).
    line: usize,
    text: String,
}

/// The README's walkthrough: what the reader sets by hand, then the blocks
/// they paste, in order.
#[derive(Debug)]
struct Walkthrough {
    setup: Block,
    steps: Vec<Block>,
}

impl Walkthrough {
    /// The marked blocks of `markdown`; panics unless there is exactly one
    /// setup block, before at least one step block, and no other fence
    /// mentions the walkthrough.
    fn parse(markdown: &str) -> Self {
        let mut setups = Vec::new();
        let mut steps = Vec::new();
        // (opening fence's backticks, marked as setup?, the block so far)
        let mut open: Option<(usize, Option<bool>, Block)> = None;
        for (i, line) in markdown.lines().enumerate() {
            let trimmed = line.trim_start();
            let ticks = trimmed.chars().take_while(|&c| c == '`').count();
            match open.take() {
                None if ticks >= 3 => {
                    let info = trimmed[ticks..].split_whitespace().collect::<Vec<_>>();
                    let marked = if info.iter().any(|w| w.contains("walkthrough")) {
                        match info.join(" ").as_str() {
                            STEP_INFO => Some(false),
                            SETUP_INFO => Some(true),
                            other => panic!(
                                "README.md:{}: fence info `{other}` mentions the walkthrough \
                                 but is neither `{STEP_INFO}` nor `{SETUP_INFO}`",
                                i + 1
                            ),
                        }
                    } else {
                        None
                    };
                    let block = Block {
                        line: i + 1,
                        text: String::new(),
                    };
                    open = Some((ticks, marked, block));
                }
                None => {}
                Some((fence, marked, block))
                    if ticks >= fence && trimmed[ticks..].trim().is_empty() =>
                {
                    match marked {
                        Some(true) => setups.push(block),
                        Some(false) => steps.push(block),
                        None => {}
                    }
                }
                Some((fence, marked, mut block)) => {
                    block.text.push_str(line);
                    block.text.push('\n');
                    open = Some((fence, marked, block));
                }
            }
        }
        if let Some((_, _, block)) = open {
            panic!("README.md:{}: a fence that is never closed", block.line);
        }
        assert!(
            !steps.is_empty(),
            "README.md has no block marked ```{STEP_INFO}: the walkthrough this test runs is gone"
        );
        assert_eq!(
            setups.len(),
            1,
            "README.md needs exactly one block marked ```{SETUP_INFO}, found {setups:?}"
        );
        let setup = setups.remove(0);
        assert!(
            setup.line < steps[0].line,
            "README.md:{}: the setup block comes after the first walkthrough block",
            setup.line
        );
        Self { setup, steps }
    }

    /// The variables the setup block sets (`NAME=…` lines; comments and
    /// blank lines aside).
    fn setup_vars(&self) -> Vec<String> {
        self.setup
            .text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (name, _) = l.split_once('=').unwrap_or_else(|| {
                    panic!(
                        "README.md:{}: the setup block may only set variables, not run `{l}`",
                        self.setup.line
                    )
                });
                name.to_owned()
            })
            .collect()
    }

    /// The script the test runs: strict mode, the setup block's variables
    /// with this test's values, then every step block as written.
    fn script(&self, vars: &[(&str, &str)]) -> String {
        let mut s = String::from(
            "set -euo pipefail\nPS4='+ line $LINENO: '\nset -x\n\
             # The README's setup block, with this test's values:\n",
        );
        for (name, value) in vars {
            s.push_str(&format!("{name}={}\n", sh_quote(value)));
        }
        for step in &self.steps {
            s.push_str(&format!("# README.md:{}\n{}", step.line, step.text));
        }
        s
    }
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn numbered(script: &str) -> String {
    script
        .lines()
        .enumerate()
        .map(|(i, l)| format!("{:4} {l}\n", i + 1))
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A successful GET's JSON answer.
async fn get(admin: &DemoAdmin, base: &str, path: &str) -> Value {
    let resp = admin
        .client
        .get(format!("{base}{path}"))
        .bearer_auth(&admin.token)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert!(status.is_success(), "GET {path}: {status} {text}");
    serde_json::from_str(&text).unwrap()
}

/// Every upload of every project the demo admin sees.
async fn all_uploads(admin: &DemoAdmin, base: &str) -> Vec<Value> {
    let projects = get(admin, base, "/v1/projects").await;
    assert_eq!(projects["next_cursor"], Value::Null, "{projects}");
    let mut uploads = Vec::new();
    for project in projects["items"].as_array().unwrap() {
        let id = project["id"].as_str().unwrap();
        let page = get(admin, base, &format!("/v1/projects/{id}/uploads")).await;
        assert_eq!(page["next_cursor"], Value::Null, "{page}");
        uploads.extend(page["items"].as_array().unwrap().iter().cloned());
    }
    uploads
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walkthrough_runs_as_written() {
    // First: a README without the walkthrough fails even where a tool is missing.
    let walkthrough = Walkthrough::parse(README);
    let mut vars = walkthrough.setup_vars();
    vars.sort();
    assert_eq!(
        vars, SETUP_VARS,
        "README.md:{}: the setup block must set exactly {SETUP_VARS:?}, which this test sets",
        walkthrough.setup.line
    );
    for step in &walkthrough.steps {
        assert!(
            !step.text.contains(":8080"),
            "README.md:{}: a walkthrough block names the address itself; use $BASE",
            step.line
        );
    }
    let (Some(bash), Some(_), Some(_)) = (
        buildpeer_testkit::required_tool("bash"),
        buildpeer_testkit::required_tool("curl"),
        buildpeer_testkit::required_tool("jq"),
    ) else {
        return;
    };

    tokio::time::timeout(common::SCENARIO_TIMEOUT, async {
        let root = tempfile::Builder::new()
            .prefix("buildpeer-readme-")
            .tempdir()
            .unwrap();
        let data = root.path().join("data");
        let work = root.path().join("work");
        std::fs::create_dir(&work).unwrap();
        let photo = std::fs::read(PHOTO).expect("the test photo");
        std::fs::write(work.join(PHOTO_NAME), &photo).unwrap();

        let server = Server::spawn(&[], &serve_env(&data));
        let addr = server.wait_listening().await;
        let logged = server
            .wait_for_log("the demo password", |v| v["password"].is_string())
            .await;
        let password = logged["password"].as_str().unwrap();
        // As the README has the reader write it: localhost, this server's port.
        let base = format!("http://localhost:{}", addr.port());

        let script = walkthrough.script(&[("BASE", &base), ("PASSWORD", password)]);
        let script_path = root.path().join("walkthrough.sh");
        std::fs::write(&script_path, &script).unwrap();
        let started = Instant::now();
        let run = tokio::process::Command::new(&bash)
            .arg(&script_path)
            .current_dir(&work)
            .env_remove("BASH_ENV")
            .env("NO_PROXY", "localhost,127.0.0.1")
            .env("no_proxy", "localhost,127.0.0.1")
            // No ~/.curlrc of the machine's.
            .env("CURL_HOME", root.path())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(SCRIPT_TIMEOUT, run)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the walkthrough did not finish in {SCRIPT_TIMEOUT:?}\nscript:\n{}\
                     server log:\n{}",
                    numbered(&script),
                    server.lines().join("\n")
                )
            })
            .expect("running bash");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let report = format!(
            "script:\n{}stdout:\n{stdout}\nstderr (set -x):\n{stderr}\nserver log:\n{}",
            numbered(&script),
            server.lines().join("\n")
        );
        assert!(
            out.status.success(),
            "the README's walkthrough failed: {}\n{report}",
            out.status
        );
        eprintln!(
            "the walkthrough's {} blocks ran in {:?}",
            walkthrough.steps.len(),
            started.elapsed()
        );

        // What the walkthrough did, as the server has it.
        let admin = DemoAdmin::login(&server, &format!("http://{addr}")).await;
        let uploads = all_uploads(&admin, &format!("http://{addr}")).await;
        assert_eq!(uploads.len(), 1, "{uploads:?}\n{report}");
        let upload = &uploads[0];
        assert_eq!(upload["status"], "COMPLETED", "{upload}\n{report}");
        assert_eq!(upload["filename"], PHOTO_NAME, "{upload}");
        assert_eq!(upload["size"], photo.len(), "{upload}");
        assert_eq!(upload["sha256"], sha256_hex(&photo), "{upload}");

        // What it downloaded: the photo itself, and a JPEG thumbnail.
        let copy = std::fs::read(work.join("copy.jpg")).expect("the walkthrough's copy.jpg");
        assert_eq!(
            sha256_hex(&copy),
            sha256_hex(&photo),
            "copy.jpg is not the photo ({} bytes)",
            copy.len()
        );
        let thumb = std::fs::read(work.join("thumb.jpg")).expect("the walkthrough's thumb.jpg");
        assert!(
            thumb.starts_with(&[0xFF, 0xD8, 0xFF]),
            "thumb.jpg is not a JPEG: {:?}",
            String::from_utf8_lossy(&thumb[..thumb.len().min(300)])
        );
        assert_photo_untouched(&work, &photo);
    })
    .await
    .expect("the README test did not finish in time");
}

/// The walkthrough reads the reader's photo and leaves it as it was.
fn assert_photo_untouched(work: &Path, photo: &[u8]) {
    let now = std::fs::read(work.join(PHOTO_NAME)).unwrap();
    assert!(now == photo, "the walkthrough changed {PHOTO_NAME}");
}

#[test]
fn marked_blocks_are_found_in_order() {
    let md = "intro\n\
              ```sh walkthrough-setup\nBASE=http://localhost:8080\nPASSWORD='…'  # by hand\n```\n\
              ```sh\nnot run\n```\n\
              ```sh walkthrough\necho one\n```\n\
              text\n\
              ````json\n```sh walkthrough\n````\n\
              ```sh walkthrough\necho two\n\n```\n";
    let w = Walkthrough::parse(md);
    assert_eq!(w.setup.line, 2);
    assert_eq!(w.setup_vars(), ["BASE", "PASSWORD"]);
    assert_eq!(
        w.steps,
        [
            Block {
                line: 9,
                text: "echo one\n".into()
            },
            Block {
                line: 16,
                text: "echo two\n\n".into()
            },
        ]
    );
    let script = w.script(&[("BASE", "http://x"), ("PASSWORD", "it's")]);
    assert!(script.starts_with("set -euo pipefail\n"), "{script}");
    assert!(script.contains("PASSWORD='it'\\''s'\n"), "{script}");
    assert!(
        script.ends_with("# README.md:9\necho one\n# README.md:16\necho two\n\n"),
        "{script}"
    );
}

#[test]
#[should_panic(expected = "no block marked")]
fn a_readme_without_the_walkthrough_fails() {
    Walkthrough::parse("# BuildPeer\n\n```sh\ncurl -s localhost:8080/healthz\n```\n");
}

#[test]
#[should_panic(expected = "neither")]
fn a_misspelt_marker_fails() {
    Walkthrough::parse("```sh walkthru walkthrough\necho\n```\n");
}
