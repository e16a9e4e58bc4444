//! The monitoring that ships in `deploy/`, held to the running service:
//!
//! - `promtool` (Debian's `prometheus` package, which `scripts/test`
//!   installs) accepts the Prometheus config and every rule file, and the
//!   rules' unit tests in `deploy/prometheus/tests/` pass: each alert fires
//!   where it should and not where it should not.
//! - Every panel of the Grafana dashboards in `deploy/grafana/dashboards/`
//!   returns data from a real Prometheus (the same package) that scrapes a
//!   real `buildpeer serve` child process with the project's rules, after
//!   the README's kind of traffic: `deploy/check-dashboards` runs each
//!   panel's query and names those that come back empty.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use buildpeer_testkit::required_tool;
use common::process::{DemoAdmin, Server, serve_env};

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy");
const PHOTO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/photos/jpeg/gps/DSCN0010.jpg"
);
/// How long the dashboards may take to all have data (scrapes and rule
/// evaluations every second; the rates need two samples).
const DASHBOARD_WAIT: Duration = Duration::from_secs(120);

fn deploy(path: &str) -> PathBuf {
    Path::new(DEPLOY).join(path)
}

/// Runs `program args…`; panics with its output unless it succeeds.
fn run_ok(program: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{} {args:?} failed ({}):\n{text}",
        program.display(),
        out.status
    );
    text
}

fn yaml_files(dir: &str) -> Vec<String> {
    let mut files = std::fs::read_dir(deploy(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>();
    files.sort();
    assert!(!files.is_empty(), "no rule files in deploy/{dir}");
    files
}

#[test]
fn rules_are_valid_and_their_tests_pass() {
    let Some(promtool) = required_tool("promtool") else {
        return;
    };
    run_ok(
        &promtool,
        &[
            "check",
            "config",
            &deploy("prometheus/prometheus.yml").display().to_string(),
        ],
    );
    let rules = yaml_files("prometheus/rules");
    let mut args = vec!["check", "rules"];
    args.extend(rules.iter().map(String::as_str));
    run_ok(&promtool, &args);
    let tests = yaml_files("prometheus/tests");
    let mut args = vec!["test", "rules"];
    args.extend(tests.iter().map(String::as_str));
    let out = run_ok(&promtool, &args);
    assert!(out.contains("SUCCESS"), "{out}");
}

/// A free loopback port (bound, then released for Prometheus to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_panel_has_data() {
    let (Some(prometheus), Some(python)) = (required_tool("prometheus"), required_tool("python3"))
    else {
        return;
    };
    let root = tempfile::Builder::new()
        .prefix("buildpeer-monitoring-")
        .tempdir()
        .unwrap();
    let server = Server::spawn(&[], &serve_env(&root.path().join("data")));
    let addr = server.wait_listening().await;
    let base = format!("http://{addr}");
    traffic(&server, &base).await;

    // The project's rules, scraped every second. A `serve` runs its worker
    // in-process: it is scraped once, as the API (deploy/prometheus says so).
    let rule_files = yaml_files("prometheus/rules");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files: {rules}\n\
         scrape_configs:\n\
         - job_name: buildpeer-api\n  static_configs: [{{targets: ['{addr}']}}]\n",
        rules = serde_json::to_string(&rule_files).unwrap(),
    );
    let config_path = root.path().join("prometheus.yml");
    std::fs::write(&config_path, config).unwrap();
    let port = free_port();
    let mut prom = tokio::process::Command::new(&prometheus)
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            root.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting prometheus");

    // Ready, or its own words why not.
    let ready = format!("http://127.0.0.1:{port}/-/ready");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if reqwest::get(&ready)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        if tokio::time::Instant::now() > deadline || prom.try_wait().unwrap().is_some() {
            let _ = prom.start_kill();
            let out = prom.wait_with_output().await.unwrap();
            panic!(
                "prometheus did not start:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Traffic again while Prometheus watches, so that every rate has two
    // samples to differ by.
    tokio::time::sleep(Duration::from_secs(2)).await;
    traffic(&server, &base).await;

    let check = tokio::process::Command::new(&python)
        .arg(deploy("check-dashboards"))
        .args(["--timeout", &DASHBOARD_WAIT.as_secs().to_string()])
        .args(["--var", "tenant=demo"])
        .arg(format!("http://127.0.0.1:{port}"))
        .arg(deploy("grafana/dashboards"))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(DASHBOARD_WAIT + Duration::from_secs(30), check)
        .await
        .expect("check-dashboards did not finish")
        .unwrap();
    let _ = prom.start_kill();
    let prom_log = match prom.wait_with_output().await {
        Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
        Err(e) => e.to_string(),
    };
    assert!(
        out.status.success(),
        "dashboard panels without data ({}):\n{}{}\nprometheus:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        prom_log
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// What a dashboard shows: the demo admin logs in, creates a project,
/// uploads a photo that processing completes, reads it, and asks for
/// something that is not there.
async fn traffic(server: &Server, base: &str) {
    let admin = DemoAdmin::login(server, base).await;
    let project = admin
        .create_project(base, &format!("Obra {}", uuid::Uuid::now_v7()))
        .await;
    let photo = std::fs::read(PHOTO).unwrap();
    let upload = admin.upload(base, &project, "foto.jpg", photo).await;
    assert_eq!(upload["status"], "COMPLETED", "{upload}");
    let missing = admin
        .client
        .get(format!("{base}/v1/uploads/{}", uuid::Uuid::now_v7()))
        .bearer_auth(&admin.token)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}
