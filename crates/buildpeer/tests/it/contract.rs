//! The OpenAPI document as a contract, held to it from the outside by two
//! well-kept tools from PyPI, each against a fresh `buildpeer serve` child
//! process (SQLite and files in a temp dir, the embedded default):
//!
//! - schemathesis, every check and every phase (examples, coverage,
//!   fuzzing, stateful), with `../contract/schemathesis.toml`'s few
//!   exclusions (each with its reason there), at least [`MIN_CASES`] cases,
//!   logged in as the demo admin with the token refreshed through
//!   `/v1/auth/refresh` during the run (`../contract/hooks.py`). Any failure
//!   fails the test, with schemathesis's report.
//! - openapi-python-client generates a Python client from the served
//!   `/openapi.json` (no warning allowed), and `../contract/walkthrough.py`
//!   runs the README's walkthrough through it: log in, create a project, add
//!   a member, initiate, PUT, complete, poll to COMPLETED, list with filters,
//!   download, refresh, log out.
//!
//! Both tools live in one virtualenv that `scripts/test` creates from
//! `../contract/requirements.txt` (every package pinned) and names in
//! `BUILDPEER_TEST_CONTRACT_VENV`; without it a test says `skipped: …`, or
//! fails under `CI=true`.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::process::{DemoAdmin, Server, serve_env};
use serde_json::Value;
use tempfile::TempDir;

const CONTRACT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/contract");
/// The photo the walkthrough uploads.
const PHOTO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/photos/jpeg/gps/DSCN0010.jpg"
);
/// What the issue asks of a schemathesis run, at the least.
const MIN_CASES: u64 = 5_000;
/// Seconds between the run's token refreshes: several fall inside a run.
const REFRESH_SECONDS: &str = "15";
const SCHEMATHESIS_TIMEOUT: Duration = Duration::from_secs(20 * 60);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// The virtualenv holding schemathesis and openapi-python-client.
fn venv() -> Option<PathBuf> {
    buildpeer_testkit::required_env("BUILDPEER_TEST_CONTRACT_VENV").map(PathBuf::from)
}

/// A `buildpeer serve` on its own data dir, and the demo admin's password.
struct Live {
    root: TempDir,
    server: Server,
    base: String,
    password: String,
}

impl Live {
    async fn start() -> Self {
        let root = tempfile::Builder::new()
            .prefix("buildpeer-contract-")
            .tempdir()
            .unwrap();
        let mut env = serve_env(&root.path().join("data"));
        // The fuzzer sends thousands of requests a minute as one user; with
        // the default quotas most would be answered 429 (documented on every
        // operation, and tested elsewhere) and test nothing else.
        for quota in [
            "BUILDPEER_RATE_USER_PER_MINUTE",
            "BUILDPEER_RATE_USER_BURST",
            "BUILDPEER_RATE_TENANT_PER_MINUTE",
            "BUILDPEER_RATE_TENANT_BURST",
            "BUILDPEER_RATE_LOGIN_ACCOUNT_PER_MINUTE",
            "BUILDPEER_RATE_LOGIN_IP_PER_MINUTE",
        ] {
            env.push((quota.to_owned(), "0".to_owned()));
        }
        let server = Server::spawn(&[], &env);
        let addr = server.wait_listening().await;
        let logged = server
            .wait_for_log("the demo password", |v| v["password"].is_string())
            .await;
        let password = logged["password"].as_str().unwrap().to_owned();
        Self {
            root,
            server,
            base: format!("http://{addr}"),
            password,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }
}

/// Runs `program` with `args` in `dir` within `timeout`; its output.
async fn run_tool(
    program: &Path,
    args: &[&str],
    dir: &Path,
    env: &[(&str, &str)],
    timeout: Duration,
) -> Output {
    let run = tokio::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(timeout, run)
        .await
        .unwrap_or_else(|_| panic!("{} did not finish in {timeout:?}", program.display()))
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing() {
    let Some(venv) = venv() else { return };
    let live = Live::start().await;
    let auth_log = live.path("auth.log");
    let report = live.path("report");
    let config = format!("{CONTRACT}/schemathesis.toml");
    let schema = format!("{}/openapi.json", live.base);
    let started = Instant::now();
    let out = run_tool(
        &venv.join("bin/st"),
        &[
            "--config-file",
            &config,
            "run",
            &schema,
            "--report",
            "json",
            "--report-dir",
            report.to_str().unwrap(),
        ],
        live.root.path(),
        &[
            ("BUILDPEER_CONTRACT_BASE", &live.base),
            ("BUILDPEER_CONTRACT_PASSWORD", &live.password),
            ("BUILDPEER_CONTRACT_AUTH_LOG", auth_log.to_str().unwrap()),
            ("BUILDPEER_CONTRACT_REFRESH", REFRESH_SECONDS),
            // `../contract/hooks.py`, as a module on the path.
            ("SCHEMATHESIS_HOOKS", "hooks"),
            ("PYTHONPATH", CONTRACT),
        ],
        SCHEMATHESIS_TIMEOUT,
    )
    .await;
    let elapsed = started.elapsed();
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    let server_errors = live
        .server
        .json_lines()
        .into_iter()
        .filter(|l| l["level"] == "ERROR")
        .map(|l| l.to_string())
        .collect::<Vec<_>>();
    assert!(
        out.status.success(),
        "schemathesis failed ({}, after {elapsed:?}):\n{stdout}\n{stderr}\n\
         server errors:\n{}",
        out.status,
        server_errors.join("\n")
    );

    let cases = cases_run(&report_file(&report));
    assert!(
        cases >= MIN_CASES,
        "schemathesis ran {cases} cases, fewer than {MIN_CASES}:\n{stdout}"
    );
    let tokens = std::fs::read_to_string(&auth_log).unwrap_or_default();
    let refreshes = tokens.lines().filter(|l| *l == "refresh").count();
    assert!(
        refreshes >= 1,
        "no token was refreshed during the run (token log: {tokens:?})"
    );
    assert!(
        server_errors.is_empty(),
        "the server logged errors during the run:\n{}",
        server_errors.join("\n")
    );
    eprintln!(
        "schemathesis: {cases} cases in {elapsed:?}, {refreshes} token refreshes, no failure"
    );
}

/// What the generator cannot do, whatever the document says: send a raw
/// `application/offset+octet-stream` body (tus's PATCH, and its
/// creation-with-upload POSTs), so it leaves those three endpoints out. The
/// tus endpoints are driven by real tus clients instead (`tus_interop.rs`).
const TOLERATED: [&str; 3] = [
    "WARNING parsing POST /v1/tus within tus. Endpoint will not be generated.",
    "WARNING parsing POST /v1/tus/{id} within tus. Endpoint will not be generated.",
    "WARNING parsing PATCH /v1/tus/{id} within tus. Endpoint will not be generated.",
];

/// The generator's warnings and errors, but for [`TOLERATED`] (with their
/// reason, and the summary line any warning brings).
fn generator_complaints(output: &str) -> Vec<&str> {
    output
        .lines()
        .map(str::trim)
        .filter(|l| {
            let l = l.to_lowercase();
            l.contains("warning")
                || l.contains("unable")
                || l.contains("error")
                || l.contains("not in path")
                || l.contains("unsupported")
        })
        .filter(|l| !TOLERATED.contains(l))
        .filter(|l| *l != "Unsupported content type application/offset+octet-stream")
        .filter(|l| !l.starts_with("Warning(s) encountered while generating."))
        .collect()
}

/// `PATH` with `dir` first.
fn path_with(dir: &Path) -> String {
    let rest = std::env::var_os("PATH").unwrap_or_default();
    let paths = std::iter::once(dir.to_owned()).chain(std::env::split_paths(&rest));
    std::env::join_paths(paths)
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// schemathesis's JSON run report in `dir` (named after the time it ran).
fn report_file(dir: &Path) -> PathBuf {
    let mut reports = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect::<Vec<_>>();
    assert_eq!(reports.len(), 1, "{reports:?}");
    reports.remove(0)
}

/// The number of cases the run generated, from its JSON report, which must
/// say that it ran to the end with every phase passed.
fn cases_run(report: &Path) -> u64 {
    let json: Value = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    assert_eq!(
        json["complete"], true,
        "the run stopped early: {}",
        json["stop_reason"]
    );
    for phase in ["examples", "coverage", "fuzzing", "stateful"] {
        assert_eq!(
            json["phases"][phase]["status"], "success",
            "phase {phase}: {}",
            json["phases"][phase]
        );
    }
    json.pointer("/test_cases/generated")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no case count in the report: {}", json["test_cases"]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_client_runs_the_walkthrough() {
    let Some(venv) = venv() else { return };
    let live = Live::start().await;

    // The document as a client's author fetches it.
    let spec = reqwest::get(format!("{}/openapi.json", live.base))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let spec_path = live.path("openapi.json");
    std::fs::write(&spec_path, &spec).unwrap();
    let client_dir = live.path("client");
    let out = run_tool(
        &venv.join("bin/openapi-python-client"),
        &[
            "generate",
            "--path",
            spec_path.to_str().unwrap(),
            "--config",
            &format!("{CONTRACT}/client-config.yaml"),
            "--meta",
            "none",
            "--output-path",
            client_dir.join("buildpeer_client").to_str().unwrap(),
        ],
        live.root.path(),
        // Its post-generation hook (ruff) comes with it.
        &[("PATH", &path_with(&venv.join("bin")))],
        CLIENT_TIMEOUT,
    )
    .await;
    let generated = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "openapi-python-client failed:\n{generated}"
    );
    let complaints = generator_complaints(&generated);
    assert!(
        complaints.is_empty(),
        "openapi-python-client complained about the document: {complaints:?}\n{generated}"
    );

    let out = run_tool(
        &venv.join("bin/python"),
        &[&format!("{CONTRACT}/walkthrough.py")],
        live.root.path(),
        &[
            ("BUILDPEER_CONTRACT_BASE", &live.base),
            ("BUILDPEER_CONTRACT_PASSWORD", &live.password),
            ("BUILDPEER_CONTRACT_PHOTO", PHOTO),
            ("PYTHONPATH", client_dir.to_str().unwrap()),
        ],
        CLIENT_TIMEOUT,
    )
    .await;
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(
        out.status.success(),
        "the walkthrough through the generated client failed ({}):\n{stdout}\n{stderr}\n\
         server log:\n{}",
        out.status,
        live.server.lines().join("\n")
    );

    // What the walkthrough did, as the server has it.
    let admin = DemoAdmin::login(&live.server, &live.base).await;
    let projects = admin.get(&live.base, "/v1/projects").await;
    let items = projects["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{projects}");
    let project = items[0]["id"].as_str().unwrap();
    let uploads = admin
        .get(&live.base, &format!("/v1/projects/{project}/uploads"))
        .await;
    let photo = std::fs::read(PHOTO).unwrap();
    assert_eq!(uploads["items"][0]["status"], "COMPLETED", "{uploads}");
    assert_eq!(uploads["items"][0]["size"], photo.len(), "{uploads}");
    let copy = std::fs::read(live.path("copy.jpg")).expect("the walkthrough's copy.jpg");
    assert!(copy == photo, "the downloaded copy is not the photo");
}

#[test]
fn only_the_tus_bodies_are_tolerated() {
    let tus_only = "Generating client\n\
        Warning(s) encountered while generating. Client was generated, but some pieces may be missing\n\n\
        WARNING parsing PATCH /v1/tus/{id} within tus. Endpoint will not be generated.\n\n\
        Unsupported content type application/offset+octet-stream\n";
    assert_eq!(generator_complaints(tus_only), Vec::<&str>::new());
    let more = format!(
        "{tus_only}\nUnable to process schema /components/schemas/X:\n\
         WARNING parsing GET /v1/me within auth. Endpoint will not be generated.\nruff is not in PATH\n"
    );
    assert_eq!(
        generator_complaints(&more),
        [
            "Unable to process schema /components/schemas/X:",
            "WARNING parsing GET /v1/me within auth. Endpoint will not be generated.",
            "ruff is not in PATH"
        ]
    );
}
