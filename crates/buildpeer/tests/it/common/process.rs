//! The compiled `buildpeer` binary as a child process: `serve` with its JSON
//! log lines collected from stdout, and one-shot commands with their output.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

pub const BIN: &str = env!("CARGO_BIN_EXE_buildpeer");
/// How long a command or a log line is waited for.
pub const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(20);

/// The binary with no `BUILDPEER_*` variable inherited from the test
/// runner's environment.
pub fn command() -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("BUILDPEER_") {
            cmd.env_remove(key);
        }
    }
    cmd.kill_on_drop(true);
    cmd
}

/// Runs a one-shot command to completion (within [`WAIT`]).
pub async fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = command();
    cmd.args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    tokio::time::timeout(WAIT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("buildpeer {args:?} did not finish in {WAIT:?}"))
        .expect("running buildpeer")
}

/// Environment for `serve` on a SQLite data dir, JSON logs, a port of the
/// kernel's choosing (read back from the `listening` log line).
pub fn serve_env(data_dir: &Path) -> Vec<(String, String)> {
    vec![
        (
            "BUILDPEER_DATA_DIR".to_owned(),
            data_dir.display().to_string(),
        ),
        ("BUILDPEER_LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
        ("BUILDPEER_LOG_FORMAT".to_owned(), "json".to_owned()),
    ]
}

/// A running `buildpeer serve` (or `worker`); killed if still running when dropped.
pub struct Server {
    child: Child,
    pub pid: u32,
    /// Every stdout line so far.
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub fn spawn(args: &[&str], env: &[(String, String)]) -> Self {
        Self::spawn_command("serve", args, env)
    }

    /// Any long-running command (`serve`, `worker`).
    pub fn spawn_command(command_name: &str, args: &[&str], env: &[(String, String)]) -> Self {
        let mut cmd = command();
        cmd.arg(command_name)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawning buildpeer");
        let pid = child.id().expect("pid");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stdout_pipe = child.stdout.take().expect("stdout");
        let stderr_pipe = child.stderr.take().expect("stderr");
        collect(stdout_pipe, Arc::clone(&lines));
        collect(stderr_pipe, Arc::clone(&stderr));
        Self {
            child,
            pid,
            lines,
            stderr,
        }
    }

    /// The stdout lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    /// The stdout lines so far, each parsed as JSON (failing on any that is not).
    pub fn json_lines(&self) -> Vec<Value> {
        self.lines()
            .iter()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}"))
            })
            .collect()
    }

    fn diagnostics(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            self.lines().join("\n"),
            self.stderr.lock().expect("stderr").join("\n")
        )
    }

    /// Polls the log until a JSON line satisfies `pred`.
    pub async fn wait_for_log(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let found = self
                .lines()
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| pred(v));
            if let Some(v) = found {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no log line {what} within {WAIT:?}\n{}",
                self.diagnostics()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits for the `listening` line and returns the bound address.
    pub async fn wait_listening(&self) -> SocketAddr {
        let line = self
            .wait_for_log("listening", |v| v["message"] == "listening")
            .await;
        line["address"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line}"))
    }

    /// Sends SIGTERM to this process (by its pid).
    pub fn sigterm(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM {} failed", self.pid);
    }

    /// Waits for the process to exit, within `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status.expect("waiting for buildpeer"),
            Err(_) => panic!(
                "buildpeer did not exit within {timeout:?}\n{}",
                self.diagnostics()
            ),
        }
    }

    /// SIGKILL: the process dies where it stands, as an OOM kill leaves it.
    pub async fn sigkill(&mut self) {
        self.child.start_kill().expect("SIGKILL");
        self.wait_exit(Duration::from_secs(10)).await;
    }

    /// SIGTERM, then a clean exit within a few seconds.
    pub async fn stop(&mut self) {
        self.sigterm();
        let status = self.wait_exit(Duration::from_secs(10)).await;
        assert!(
            status.success(),
            "exit status {status}\n{}",
            self.diagnostics()
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Only this child, by its own handle; a no-op once it has exited.
        let _ = self.child.start_kill();
    }
}

fn collect<R>(pipe: R, into: Arc<Mutex<Vec<String>>>)
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(mut v) = into.lock() {
                v.push(line);
            }
        }
    });
}

/// The demo tenant's admin, logged in over HTTP to a `serve` child process
/// that bootstrapped it (the one-time password comes from its log).
pub struct DemoAdmin {
    pub client: reqwest::Client,
    pub token: String,
}

impl DemoAdmin {
    pub async fn login(server: &Server, base: &str) -> Self {
        let line = server
            .wait_for_log("the demo password", |v| v["password"].is_string())
            .await;
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(WAIT)
            .build()
            .expect("HTTP client");
        let tokens: Value = client
            .post(format!("{base}/v1/auth/login"))
            .json(
                &serde_json::json!({"tenant": "demo", "email": "admin@demo.local",
                                      "password": line["password"]}),
            )
            .send()
            .await
            .expect("login")
            .json()
            .await
            .expect("login answer");
        let token = tokens["access_token"]
            .as_str()
            .expect("an access token")
            .to_owned();
        Self { client, token }
    }

    /// Creates a project named `name`; returns its id.
    pub async fn create_project(&self, base: &str, name: &str) -> String {
        let project: Value = self
            .client
            .post(format!("{base}/v1/projects"))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({ "name": name }))
            .send()
            .await
            .expect("creating a project")
            .json()
            .await
            .expect("the project");
        project["id"].as_str().expect("a project id").to_owned()
    }

    /// A successful GET's JSON answer.
    pub async fn get(&self, base: &str, path: &str) -> Value {
        let resp = self
            .client
            .get(format!("{base}{path}"))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("GET");
        assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
        resp.json().await.expect("a JSON answer")
    }

    /// Uploads `bytes` as `filename` (declared a JPEG) through a signed
    /// PUT, completes it, and waits for processing to end; the upload as it
    /// ended (`COMPLETED` or `FAILED`).
    pub async fn upload(&self, base: &str, project: &str, filename: &str, bytes: Vec<u8>) -> Value {
        let initiated: Value = self
            .client
            .post(format!("{base}/v1/projects/{project}/uploads"))
            .bearer_auth(&self.token)
            .json(
                &serde_json::json!({"filename": filename, "content_type": "image/jpeg",
                                      "size": bytes.len()}),
            )
            .send()
            .await
            .expect("initiating")
            .json()
            .await
            .expect("the upload");
        let id = initiated["id"].as_str().expect("an upload id").to_owned();
        let mut put = self
            .client
            .put(initiated["upload"]["url"].as_str().expect("a signed URL"))
            .body(bytes);
        for (k, v) in initiated["upload"]["headers"].as_object().expect("headers") {
            put = put.header(k, v.as_str().expect("a header value"));
        }
        assert!(put.send().await.expect("PUT").status().is_success());
        let done = self
            .client
            .post(format!("{base}/v1/uploads/{id}/complete"))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("completing");
        assert!(done.status().is_success(), "complete: {}", done.status());
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let upload = self.get(base, &format!("/v1/uploads/{id}")).await;
            if upload["status"] == "COMPLETED" || upload["status"] == "FAILED" {
                return upload;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not processed: {upload}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `serve_env` for a `buildpeer worker` on the same data dir: quick retries,
/// two jobs at once, and `extra` on top.
pub fn worker_env(data_dir: &Path, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = serve_env(data_dir);
    env.push(("BUILDPEER_JOB_RETRY_BASE_MS".into(), "100".into()));
    env.push(("BUILDPEER_WORKER_CONCURRENCY".into(), "2".into()));
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    env
}

/// A camera photo with GPS, which processing completes with two thumbnails.
const GPS_PHOTO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/photos/jpeg/gps/DSCN0025.jpg"
);

/// `buildpeer serve --no-worker` on `data_dir`, and the path of a photo the
/// demo admin uploaded and completed there: it waits for a worker process.
pub async fn upload_for_a_worker(data_dir: &Path) -> (Server, AdminApi, String) {
    let server = Server::spawn(&["--no-worker"], &serve_env(data_dir));
    let addr = server.wait_listening().await;
    let api = AdminApi::login(&server, addr).await;
    let project = api.create_project("Obra").await;
    let bytes = std::fs::read(GPS_PHOTO).expect("the test photo");
    let id = api.upload(&project, "obra.jpg", "image/jpeg", bytes).await;
    (server, api, format!("/v1/uploads/{id}"))
}

/// The demo admin's API on a `serve` child process, for tests that drive
/// uploads and the admin's job endpoints across processes.
pub struct AdminApi {
    pub base: String,
    pub token: String,
    pub client: reqwest::Client,
}

impl AdminApi {
    pub async fn login(server: &Server, addr: SocketAddr) -> Self {
        let base = format!("http://{addr}");
        let admin = DemoAdmin::login(server, &base).await;
        Self {
            base,
            token: admin.token,
            client: admin.client,
        }
    }

    /// A successful call's JSON answer (`Null` for an empty body).
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut rb = self
            .client
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("answer");
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    pub async fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str) -> Value {
        self.call(reqwest::Method::POST, path, None).await
    }

    /// Polls `path` until `pred` holds (slowly enough to stay inside the
    /// admin's rate limit).
    pub async fn until(&self, what: &str, path: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let v = self.get(path).await;
            if pred(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {v}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Creates a project named `name`; returns its id.
    pub async fn create_project(&self, name: &str) -> String {
        let body = serde_json::json!({ "name": name });
        let project = self
            .call(reqwest::Method::POST, "/v1/projects", Some(body))
            .await;
        project["id"].as_str().expect("a project id").to_owned()
    }

    /// Uploads `bytes` to `project` through a signed URL and completes the
    /// upload; returns its id.
    pub async fn upload(
        &self,
        project: &str,
        filename: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> String {
        use sha2::Digest as _;
        let sha = hex_digest(&sha2::Sha256::digest(&bytes));
        let body = serde_json::json!({"filename": filename, "content_type": content_type,
                                      "size": bytes.len(), "sha256": sha});
        let started = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/projects/{project}/uploads"),
                Some(body),
            )
            .await;
        let instr = &started["upload"];
        let mut put = self
            .client
            .put(instr["url"].as_str().expect("a signed URL"));
        for (k, v) in instr["headers"].as_object().expect("headers") {
            put = put.header(k.as_str(), v.as_str().expect("a header value"));
        }
        let sent = put.body(bytes).send().await.expect("PUT");
        assert!(sent.status().is_success(), "PUT: {}", sent.status());
        let id = started["id"].as_str().expect("an upload id").to_owned();
        self.post(&format!("/v1/uploads/{id}/complete")).await;
        id
    }
}

fn hex_digest(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
