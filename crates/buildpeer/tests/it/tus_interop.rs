//! tus interop with the real clients, tus-js-client (under Node) and tuspy,
//! against the real binary (`buildpeer serve` child processes): a whole
//! upload; an upload interrupted mid-way and resumed against a restarted
//! server on the same data dir, database and storage; the same resumed
//! against a second server process running next to the first; and a kill -9
//! during a PATCH followed by a resume. Every upload must end `COMPLETED`
//! with a download whose SHA-256 is the source's.
//!
//! The clients come from `scripts/test`, which installs them pinned into
//! `~/.cache/buildpeer-tools` and exports `BUILDPEER_TEST_NODE_MODULES`
//! (tus-js-client's `node_modules`) and `BUILDPEER_TEST_TUSPY` (a directory
//! with `tusclient`); without them (or without `node`, `python3`) a test
//! prints "skipped: …" and passes, or fails under `CI=true`. Each runs on
//! SQLite + local disk and on PostgreSQL + S3 (Garage, when
//! `BUILDPEER_TEST_S3_URL` is set; local disk otherwise). tus-js-client's
//! `parallelUploads` (concatenation) runs too.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use buildpeer_testkit::{required_env, required_tool};
use common::process::{DemoAdmin, Server, serve_env};
use common::{Backend, PgDatabase, s3_url};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const PHOTO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/photos/jpeg/gps/DSCN0010.jpg"
);
const DRIVERS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop");
/// Small enough for several PATCHes over the 158 KiB photo.
const CHUNK: usize = 32 * 1024;
/// Where the interrupted uploads stop: mid-way, after two chunks.
const STOP_AFTER: usize = 2 * CHUNK;
const SECRET: &str = "interop-test-secret-interop-test-secret-interop-test-secret!";

#[derive(Clone, Copy, Debug)]
enum Client {
    Js,
    Py,
}

#[derive(Clone, Copy, Debug)]
enum Resume {
    /// No interruption.
    Whole,
    /// Stop, restart the server process, resume against the new one.
    Restarted,
    /// Stop, resume against a second process running next to the first.
    SecondProcess,
    /// No interruption; three partial uploads in parallel, then a final one
    /// (tus-js-client's `parallelUploads`).
    Parallel,
}

macro_rules! interop {
    ($($name:ident: $client:ident, $resume:ident;)*) => {$(
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                scenario(Client::$client, Backend::Sqlite, Resume::$resume).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                scenario(Client::$client, Backend::Postgres, Resume::$resume).await;
            }
        }
    )*};
}

interop! {
    js_whole: Js, Whole;
    js_resume_after_restart: Js, Restarted;
    js_resume_on_second_process: Js, SecondProcess;
    js_parallel: Js, Parallel;
    py_whole: Py, Whole;
    py_resume_after_restart: Py, Restarted;
    py_resume_on_second_process: Py, SecondProcess;
}

mod kill_during_patch {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        crash(Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        crash(Backend::Postgres).await;
    }
}

/// One deployment: a data dir, and on `postgres` a fresh database (and S3
/// when configured), shared by every server process the test starts.
struct Deployment {
    dir: tempfile::TempDir,
    _pg: Option<PgDatabase>,
    env: Vec<(String, String)>,
}

impl Deployment {
    async fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut env = serve_env(dir.path());
        env.push(("BUILDPEER_JWT_SECRET".into(), SECRET.into()));
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let db = PgDatabase::create().await;
                env.push(("BUILDPEER_DATABASE_URL".into(), db.url.clone()));
                match s3_url() {
                    Some(url) => env.push(("BUILDPEER_STORAGE_URL".into(), url)),
                    None => {
                        eprintln!("note: BUILDPEER_TEST_S3_URL unset: postgres keeps local storage")
                    }
                }
                Some(db)
            }
        };
        Self { dir, _pg: pg, env }
    }

    fn spawn(&self) -> Server {
        Server::spawn(&[], &self.env)
    }
}

/// A logged-in admin of the bootstrap tenant with a fresh project.
struct Api {
    client: reqwest::Client,
    token: String,
    project: String,
}

impl Api {
    async fn login(server: &Server, base: &str) -> Self {
        let admin = DemoAdmin::login(server, base).await;
        let project = admin.create_project(base, "Obra").await;
        Self {
            client: admin.client,
            token: admin.token,
            project,
        }
    }

    /// Waits for processing to finish, then downloads the original and
    /// compares its SHA-256 with the source's.
    async fn assert_completed(&self, base: &str, upload_url: &str, source: &[u8]) {
        let id = upload_url.rsplit('/').next().unwrap();
        let mut last = Value::Null;
        for _ in 0..300 {
            last = self
                .client
                .get(format!("{base}/v1/uploads/{id}"))
                .bearer_auth(&self.token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if last["status"] == "COMPLETED" || last["status"] == "FAILED" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(last["status"], "COMPLETED", "{last}");
        // The signed redirect is followed (local /v1/blobs or S3).
        let r = self
            .client
            .get(format!("{base}/v1/uploads/{id}/content"))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{r:?}");
        let body = r.bytes().await.unwrap();
        assert_eq!(hex(&Sha256::digest(&body)), hex(&Sha256::digest(source)));
    }

    async fn head_offset(&self, upload_url: &str) -> u64 {
        let r = self
            .client
            .head(upload_url)
            .bearer_auth(&self.token)
            .header("Tus-Resumable", "1.0.0")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{r:?}");
        r.headers()["upload-offset"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The client's command, or `None` (and a "skipped" line; a failure under
/// `CI=true`) when the test runner did not provide it.
fn client_command(client: Client) -> Option<tokio::process::Command> {
    match client {
        Client::Js => {
            // scripts/test installs tus-js-client and sets it.
            let modules = required_env("BUILDPEER_TEST_NODE_MODULES")?;
            let mut cmd = tokio::process::Command::new(required_tool("node")?);
            cmd.arg(Path::new(DRIVERS).join("upload.mjs"))
                .env("TUS_JS_CLIENT_DIR", PathBuf::from(modules));
            Some(cmd)
        }
        Client::Py => {
            // scripts/test installs tuspy and sets it.
            let dir = required_env("BUILDPEER_TEST_TUSPY")?;
            let mut cmd = tokio::process::Command::new(required_tool("python3")?);
            cmd.arg(Path::new(DRIVERS).join("upload.py"))
                .env("PYTHONPATH", dir);
            Some(cmd)
        }
    }
}

/// Runs the client once; returns the upload URL and whether it finished.
async fn run_client(
    client: Client,
    base: &str,
    api: &Api,
    stop_after: usize,
    resume: Option<&str>,
    parallel: bool,
) -> (String, bool) {
    let mut cmd = client_command(client).unwrap();
    cmd.args([
        &format!("{base}/v1/tus"),
        &api.token,
        PHOTO,
        &api.project,
        &CHUNK.to_string(),
        &stop_after.to_string(),
    ]);
    if let Some(url) = resume {
        cmd.arg(url);
    }
    if parallel {
        cmd.env("TUS_PARALLEL", "3");
    }
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("the client did not finish in 60 s")
        .expect("running the client");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{client:?} failed\n{stdout}\n{stderr}"
    );
    let url = stdout
        .lines()
        .find_map(|l| l.strip_prefix("URL "))
        .unwrap_or_else(|| panic!("no URL printed\n{stdout}\n{stderr}"))
        .to_owned();
    let done = stdout.lines().any(|l| l == "DONE");
    assert!(
        done || stdout.lines().any(|l| l.starts_with("STOPPED ")),
        "{stdout}\n{stderr}"
    );
    (url, done)
}

/// Whether the deployment's services are there (see `client_command` for
/// what a `false` means).
fn deployable(backend: Backend) -> bool {
    backend == Backend::Sqlite || required_env(common::PG_URL_ENV).is_some()
}

async fn scenario(client: Client, backend: Backend, resume: Resume) {
    if client_command(client).is_none() || !deployable(backend) {
        return;
    }
    tokio::time::timeout(Duration::from_secs(150), async {
        let source = std::fs::read(PHOTO).unwrap();
        let dep = Deployment::new(backend).await;
        let mut first = dep.spawn();
        let base = format!("http://{}", first.wait_listening().await);
        let api = Api::login(&first, &base).await;

        if let Resume::Whole | Resume::Parallel = resume {
            let parallel = matches!(resume, Resume::Parallel);
            let (url, done) = run_client(client, &base, &api, 0, None, parallel).await;
            assert!(done);
            api.assert_completed(&base, &url, &source).await;
            return;
        }
        let (url, done) = run_client(client, &base, &api, STOP_AFTER, None, false).await;
        assert!(!done, "the client was to stop mid-way");
        let acknowledged = api.head_offset(&url).await;
        assert!(
            (STOP_AFTER as u64..source.len() as u64).contains(&acknowledged),
            "offset {acknowledged}"
        );
        // The URL the client holds names the first process; the resume goes
        // to whichever process serves now, as behind a load balancer.
        let (_second, base2) = match resume {
            Resume::Restarted => {
                first.stop().await;
                let second = dep.spawn();
                let base2 = format!("http://{}", second.wait_listening().await);
                (second, base2)
            }
            _ => {
                let second = dep.spawn();
                let base2 = format!("http://{}", second.wait_listening().await);
                (second, base2)
            }
        };
        let moved = url.replacen(&base, &base2, 1);
        assert_eq!(api.head_offset(&moved).await, acknowledged);
        let (_, done) = run_client(client, &base2, &api, 0, Some(&moved), false).await;
        assert!(done);
        api.assert_completed(&base2, &moved, &source).await;
        drop(dep.dir);
    })
    .await
    .expect("scenario timed out");
}

/// kill -9 of the server while a raw client streams a PATCH slowly: the
/// acknowledged offset survives, the resume completes, the bytes are equal.
async fn crash(backend: Backend) {
    if !deployable(backend) {
        return;
    }
    tokio::time::timeout(Duration::from_secs(150), async {
        let source = std::fs::read(PHOTO).unwrap();
        let dep = Deployment::new(backend).await;
        let first = dep.spawn();
        let addr = first.wait_listening().await;
        let base = format!("http://{addr}");
        let api = Api::login(&first, &base).await;
        let meta = format!(
            "project_id {},filetype {}",
            b64(api.project.as_bytes()),
            b64(b"image/jpeg")
        );
        let r = api
            .client
            .post(format!("{base}/v1/tus"))
            .bearer_auth(&api.token)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", source.len().to_string())
            .header("Upload-Metadata", meta)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "{r:?}");
        // Location may be relative (tus clients resolve it against the endpoint).
        let location = r.headers()["location"].to_str().unwrap().to_owned();
        let path = location.strip_prefix(&base).unwrap_or(&location).to_owned();
        let url = format!("{base}{path}");

        // One acknowledged chunk.
        let r = api
            .client
            .patch(&url)
            .bearer_auth(&api.token)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Offset", "0")
            .header("Content-Type", "application/offset+octet-stream")
            .body(source[..CHUNK].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 204, "{r:?}");
        // The rest streamed slowly; the server dies in the middle of it.
        let mut s = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "PATCH {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
             Tus-Resumable: 1.0.0\r\nUpload-Offset: {CHUNK}\r\n\
             Content-Type: application/offset+octet-stream\r\nContent-Length: {}\r\n\r\n",
            api.token,
            source.len() - CHUNK
        );
        s.write_all(head.as_bytes()).await.unwrap();
        for piece in source[CHUNK..2 * CHUNK].chunks(4096) {
            s.write_all(piece).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let status = std::process::Command::new("kill")
            .args(["-KILL", &first.pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let killed = std::time::Instant::now();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
        drop(first);

        let second = dep.spawn();
        let base2 = format!("http://{}", second.wait_listening().await);
        let moved = url.replacen(&base, &base2, 1);
        let offset = api.head_offset(&moved).await;
        assert!(
            (CHUNK as u64..source.len() as u64).contains(&offset),
            "offset {offset} after the crash"
        );
        // The dead process' lease runs out within its term; until then 423.
        let mut r;
        loop {
            r = api
                .client
                .patch(&moved)
                .bearer_auth(&api.token)
                .header("Tus-Resumable", "1.0.0")
                .header("Upload-Offset", offset.to_string())
                .header("Content-Type", "application/offset+octet-stream")
                .body(source[offset as usize..].to_vec())
                .send()
                .await
                .unwrap();
            if r.status().as_u16() != 423 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(r.status().as_u16(), 204, "{r:?}");
        // Within the lease (seconds, inside tus clients' retry delays), with
        // room for a loaded machine and the restart; it was 20 s.
        let freed = killed.elapsed();
        eprintln!("SIGKILL to the first accepted PATCH: {freed:?}");
        assert!(freed < Duration::from_secs(8), "{freed:?}");
        api.assert_completed(&base2, &moved, &source).await;
    })
    .await
    .expect("scenario timed out");
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
