//! A replica killed mid-PATCH behind a real load balancer (issue 19, item
//! 6): two `buildpeer serve` processes on one PostgreSQL database and one
//! blob store (a shared local blob dir, or S3 on Garage with a data dir of
//! each replica's own) and one Redis (which several replicas need: the
//! in-process cache tells no other replica of a change, so without it a
//! replica can go on serving an upload as it was before another replica
//! finished it), each with its in-process worker, behind HAProxy
//! (round-robin, `/readyz` health checks every 300 ms, connection failures
//! redispatched); tus-js-client with its default retry delays uploads 20
//! files at once; replica A is SIGKILLed once a quarter of the bytes are
//! acknowledged (at a moment when HAProxy has requests in flight to it) and
//! started again 3 s later. Then:
//!
//! - every file's upload finishes with no client action beyond
//!   tus-js-client's own retries (the driver exits 0), and at least one
//!   retry happened (the kill hit work in flight);
//! - no answer the client got, retried or not, is a 429, and every 5xx is
//!   HAProxy's own answer for the killed connection (its HTML error page;
//!   BuildPeer's errors are problem+json); a connection error (status 0)
//!   is fine;
//! - every file's upload reaches `UPLOADED` or later within 60 s (only
//!   GETs), and its content's SHA-256 is the source file's.
//!
//! tus-js-client starts a file over as a new upload when the HEAD it
//! resumes with is refused (anything but 2xx and 423), leaving the first
//! `PENDING` to expire; HAProxy's `retry-on` resends a HEAD the killed
//! replica never answered, so no file is started over.
//!
//! The files are real JPEGs from `../shared/testdata` padded after their
//! end (decoders ignore trailing data) to 3–4 MiB with deterministic
//! pseudo-random bytes, in a temp dir; with 256 KiB chunks the uploads
//! take long enough that many PATCHes are in flight when the kill lands.
//! Needs PostgreSQL, `node` with tus-js-client, `haproxy` and `redis-server`
//! (and Garage for the S3 variant), as scripts/test provides; otherwise
//! "skipped: …".

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use buildpeer_testkit::{RedisServer, required_env, required_tool};
use common::haproxy::{Haproxy, free_addr};
use common::process::{DemoAdmin, Server, serve_env};
use common::{PG_URL_ENV, PgDatabase, s3_url};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncBufReadExt as _, BufReader};

const PHOTOS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/photos/jpeg"
);
const DRIVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/upload_many.mjs");
const SECRET: &str = "replica-crash-secret-replica-crash-secret-replica-crash-secret";
const FILES: usize = 20;
/// Each file is padded to this plus up to [`PAD_SPREAD`].
const MIN_SIZE: usize = 3 << 20;
const PAD_SPREAD: usize = 1 << 20;
/// A PATCH per 256 KiB: about 14 per file, 280 in all.
const CHUNK: usize = 256 << 10;
/// Replica A dies once this share of all bytes is acknowledged…
const KILL_AT: f64 = 0.25;
/// …at a moment when at least this many requests are in flight to it…
const IN_FLIGHT: u64 = 2;
/// …and starts again this long after.
const RESTART_AFTER: Duration = Duration::from_secs(3);
/// The whole test, set-up and downloads included.
const BUDGET: Duration = Duration::from_secs(120);
/// From the driver's start to its exit.
const DRIVER_TIMEOUT: Duration = Duration::from_secs(75);
/// For every upload to be `UPLOADED` or later once the driver is done.
const SETTLE: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug)]
enum Blobs {
    /// One local blob dir, the replicas' shared data dir.
    Local,
    /// S3 (Garage); each replica has a data dir of its own.
    S3,
}

mod tus_js_client_survives_a_killed_replica {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_local() {
        scenario(Blobs::Local).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_s3() {
        scenario(Blobs::S3).await;
    }
}

/// What the test needs from outside the build, or `None` (each missing one
/// said "skipped: …"; a failure under `CI=true`).
struct Tools {
    node: PathBuf,
    modules: String,
    s3: Option<String>,
}

fn tools(blobs: Blobs) -> Option<Tools> {
    let pg = required_env(PG_URL_ENV);
    let modules = required_env("BUILDPEER_TEST_NODE_MODULES");
    let node = required_tool("node");
    let haproxy = required_tool("haproxy");
    let redis = required_tool("redis-server");
    let s3 = match blobs {
        Blobs::Local => None,
        Blobs::S3 => Some(s3_url()?),
    };
    pg?;
    haproxy?;
    redis?;
    Some(Tools {
        node: node?,
        modules: modules?,
        s3,
    })
}

/// The source files: real JPEGs padded with deterministic bytes.
fn make_files(dir: &Path) -> Vec<(String, PathBuf, Vec<u8>)> {
    let mut photos: Vec<PathBuf> = ["gps", "orientation"]
        .iter()
        .flat_map(|sub| std::fs::read_dir(Path::new(PHOTOS).join(sub)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
        .collect();
    photos.sort();
    assert!(photos.len() >= FILES, "only {} test photos", photos.len());
    photos
        .iter()
        .take(FILES)
        .enumerate()
        .map(|(i, photo)| {
            let mut bytes = std::fs::read(photo).unwrap();
            assert!(
                bytes.ends_with(&[0xFF, 0xD9]),
                "{photo:?} is not a whole JPEG"
            );
            let size = MIN_SIZE + (i * 7919 * 131) % PAD_SPREAD;
            let mut state = 0x9E37_79B9_7F4A_7C15_u64 ^ (i as u64);
            while bytes.len() < size {
                bytes.extend_from_slice(&splitmix64(&mut state).to_le_bytes());
            }
            bytes.truncate(size);
            let name = format!("photo-{i:02}.jpg");
            let path = dir.join(&name);
            std::fs::write(&path, &bytes).unwrap();
            (name, path, bytes)
        })
        .collect()
}

/// Whether an answer the client got is allowed: no 429, and a 5xx only as
/// HAProxy's own error page ("<html><body><h1>502 Bad Gateway</h1>…",
/// `text/html`; without a body for a HEAD), never one of BuildPeer's
/// (problem+json). `content_type` is `None` where the driver does not say.
fn check_answer(status: u16, content_type: Option<&str>, body: &str) -> bool {
    if status == 429 {
        return false;
    }
    if status < 500 {
        return true;
    }
    let page = body.starts_with(&format!("<html><body><h1>{status} "));
    match content_type {
        None => page,
        Some(t) => t.starts_with("text/html") && (page || body.is_empty()),
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `env` with `key` set to `value` (replaced if there).
fn with(env: &[(String, String)], key: &str, value: &str) -> Vec<(String, String)> {
    let mut env: Vec<_> = env.iter().filter(|(k, _)| k != key).cloned().collect();
    env.push((key.to_owned(), value.to_owned()));
    env
}

/// The driver's output lines, each with when it arrived.
type Lines = Arc<Mutex<Vec<(Instant, String)>>>;

/// Collects `pipe`'s lines until it closes (the task ends then), noting the
/// highest `PROGRESS` in `progress`.
fn collect_lines<R>(
    pipe: R,
    progress: Option<Arc<AtomicU64>>,
) -> (Lines, tokio::task::JoinHandle<()>)
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    let lines: Lines = Arc::default();
    let into = Arc::clone(&lines);
    let task = tokio::spawn(async move {
        let mut reader = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            if let (Some(p), Some(n)) = (&progress, line.strip_prefix("PROGRESS ")) {
                p.fetch_max(n.trim().parse().unwrap_or(0), Ordering::Relaxed);
            }
            into.lock().unwrap().push((Instant::now(), line));
        }
    });
    (lines, task)
}

fn texts(lines: &Lines) -> Vec<String> {
    lines
        .lock()
        .unwrap()
        .iter()
        .map(|(_, l)| l.clone())
        .collect()
}

/// The replicas' log lines at `warn` or `error` (but the one with the demo
/// admin's password), tagged with the replica.
fn server_problems(servers: &[(&str, &Server)]) -> Vec<String> {
    servers
        .iter()
        .flat_map(|(tag, s)| {
            s.lines()
                .into_iter()
                .filter(|l| {
                    serde_json::from_str::<Value>(l).map_or(true, |v| {
                        matches!(
                            v["level"].as_str(),
                            Some("warn" | "error" | "WARN" | "ERROR")
                        ) && !v["password"].is_string()
                    })
                })
                .map(move |l| format!("[{tag}] {l}"))
        })
        .collect()
}

/// Everything worth seeing when the test fails.
fn diagnostics(
    stdout: &Lines,
    stderr: &Lines,
    proxy: &Haproxy,
    servers: &[(&str, &Server)],
) -> String {
    let out: Vec<String> = texts(stdout)
        .into_iter()
        .filter(|l| !l.starts_with("PROGRESS "))
        .collect();
    let tail = |v: Vec<String>, n: usize| v[v.len().saturating_sub(n)..].join("\n");
    format!(
        "driver stdout (no PROGRESS):\n{}\ndriver stderr:\n{}\nhaproxy log (last 80):\n{}\n\
         replicas' warnings and errors (last 60):\n{}",
        out.join("\n"),
        tail(texts(stderr), 200),
        tail(proxy.log(), 80),
        tail(server_problems(servers), 60),
    )
}

async fn scenario(blobs: Blobs) {
    let Some(tools) = tools(blobs) else {
        return;
    };
    let started = Instant::now();
    tokio::time::timeout(BUDGET, run(blobs, tools))
        .await
        .unwrap_or_else(|_| panic!("{blobs:?}: the test took over {BUDGET:?}"));
    eprintln!("{blobs:?}: the whole test took {:?}", started.elapsed());
}

async fn run(blobs: Blobs, tools: Tools) {
    let files_dir = tempfile::tempdir().unwrap();
    let files = make_files(files_dir.path());
    let total: usize = files.iter().map(|(_, _, b)| b.len()).sum();

    // The deployment: one database, one Redis, one JWT secret, the proxy's
    // address as the public URL (local signed links go through it too).
    let db = PgDatabase::create().await;
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let proxy_addr = free_addr();
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let replica_env = |dir: &Path| {
        let mut env = serve_env(dir);
        env.push(("BUILDPEER_JWT_SECRET".into(), SECRET.into()));
        env.push(("BUILDPEER_DATABASE_URL".into(), db.url.clone()));
        env.push(("BUILDPEER_REDIS_URL".into(), redis.url()));
        env.push((
            "BUILDPEER_PUBLIC_URL".into(),
            format!("http://{proxy_addr}"),
        ));
        if let Some(url) = &tools.s3 {
            env.push(("BUILDPEER_STORAGE_URL".into(), url.clone()));
        }
        env
    };
    let env_a = replica_env(dir_a.path());
    let env_b = match blobs {
        Blobs::Local => env_a.clone(),
        Blobs::S3 => replica_env(dir_b.path()),
    };

    // A first: it creates the demo tenant on the empty database.
    let mut a = Server::spawn(&[], &env_a);
    let addr_a: SocketAddr = a.wait_listening().await;
    let admin = DemoAdmin::login(&a, &format!("http://{addr_a}")).await;
    let project = admin
        .create_project(&format!("http://{addr_a}"), "Obra")
        .await;
    let b = Server::spawn(&[], &env_b);
    let addr_b = b.wait_listening().await;
    let proxy = Haproxy::start_on(proxy_addr, &[addr_a, addr_b])
        .await
        .expect("haproxy was found above");
    let base = proxy.base_url();
    // Both replicas answer through the proxy before the uploads start.
    for _ in 0..6 {
        let r = admin
            .client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{r:?}");
    }

    // The uploads.
    let mut cmd = tokio::process::Command::new(&tools.node);
    cmd.arg(DRIVER)
        .arg(format!("{base}/v1/tus"))
        .arg(&admin.token)
        .arg(&project)
        .arg(CHUNK.to_string())
        .args(files.iter().map(|(_, p, _)| p))
        .env("TUS_JS_CLIENT_DIR", &tools.modules)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let driver_started = Instant::now();
    let mut driver = cmd.spawn().expect("running node");
    let progress = Arc::new(AtomicU64::new(0));
    let (stdout, stdout_read) =
        collect_lines(driver.stdout.take().unwrap(), Some(Arc::clone(&progress)));
    let (stderr, stderr_read) = collect_lines(driver.stderr.take().unwrap(), None);

    // Kill A once a quarter is acknowledged, at a moment when the proxy
    // has requests in flight to it.
    let threshold = (total as f64 * KILL_AT) as u64;
    let in_flight = loop {
        if progress.load(Ordering::Relaxed) >= threshold {
            let n = proxy.sessions(0).await;
            if n >= IN_FLIGHT {
                break n;
            }
        }
        if let Some(status) = driver.try_wait().unwrap() {
            panic!(
                "the driver ended ({status}) before {threshold} of {total} bytes were \
                 acknowledged with {IN_FLIGHT} requests in flight to A: nothing left to kill \
                 A under\n{}",
                diagnostics(&stdout, &stderr, &proxy, &[("A", &a), ("B", &b)])
            );
        }
        assert!(
            driver_started.elapsed() < DRIVER_TIMEOUT,
            "no 25 % within {DRIVER_TIMEOUT:?}\n{}",
            diagnostics(&stdout, &stderr, &proxy, &[("A", &a), ("B", &b)])
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let at_kill = progress.load(Ordering::Relaxed);
    let lines_at_kill = stdout.lock().unwrap().len();
    a.sigkill().await;
    let killed = Instant::now();
    eprintln!(
        "{blobs:?}: SIGKILL to A ({}) at {at_kill} of {total} bytes acknowledged, {in_flight} \
         requests in flight to it, {:?} after the driver started",
        a.pid,
        killed - driver_started
    );

    // A again, on its address, as a supervisor restarts it.
    tokio::time::sleep(RESTART_AFTER).await;
    let a2 = Server::spawn(&[], &with(&env_a, "BUILDPEER_LISTEN", &addr_a.to_string()));
    let addr_a2 = a2.wait_listening().await;
    assert_eq!(addr_a2, addr_a);
    eprintln!(
        "{blobs:?}: A listening again {:?} after the kill",
        killed.elapsed()
    );
    let servers = [("A", &a), ("A2", &a2), ("B", &b)];

    let left = DRIVER_TIMEOUT.saturating_sub(driver_started.elapsed());
    let status = match tokio::time::timeout(left, driver.wait()).await {
        Ok(status) => status.unwrap(),
        Err(_) => panic!(
            "the uploads did not finish within {DRIVER_TIMEOUT:?}\n{}",
            diagnostics(&stdout, &stderr, &proxy, &servers)
        ),
    };
    // Every line read: the pipes close once the driver is gone.
    for read in [stdout_read, stderr_read] {
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("the driver's pipes did not close")
            .unwrap();
    }
    let report = || diagnostics(&stdout, &stderr, &proxy, &servers);
    assert!(status.success(), "the driver: {status}\n{}", report());

    // What the client saw.
    let out = stdout.lock().unwrap().clone();
    let mut urls: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut done = BTreeSet::new();
    let mut last_done = killed;
    let mut retries: BTreeMap<u16, usize> = BTreeMap::new();
    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    let mut retries_before_kill = 0;
    // HEADs answered neither 2xx nor 423: tus-js-client starts over.
    let mut heads_refused = 0;
    for (i, (at, line)) in out.iter().enumerate() {
        let mut words = line.splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("URL"), Some(name), Some(url)) => {
                urls.entry(name.to_owned())
                    .or_default()
                    .push(url.to_owned());
            }
            (Some("DONE"), Some(name), None) => {
                done.insert(name.to_owned());
                last_done = last_done.max(*at);
            }
            (Some("RETRY"), Some(status), body) => {
                let status: u16 = status.parse().unwrap();
                *retries.entry(status).or_default() += 1;
                if i < lines_at_kill {
                    retries_before_kill += 1;
                }
                let ok = check_answer(status, None, body.unwrap_or(""));
                assert!(ok, "{line}\n{}", report());
            }
            (Some("ANSWER"), Some(status), Some(rest)) => {
                let status: u16 = status.parse().unwrap();
                let mut rest = rest.splitn(3, ' ');
                let (method, content_type, body) = (
                    rest.next().unwrap_or(""),
                    rest.next().unwrap_or(""),
                    rest.next().unwrap_or(""),
                );
                *answers
                    .entry(format!("{method} {status} {content_type}"))
                    .or_default() += 1;
                if method == "HEAD" && status != 423 {
                    heads_refused += 1;
                }
                let ok = check_answer(status, Some(content_type), body);
                assert!(ok, "{line}\n{}", report());
            }
            (Some("PROGRESS"), ..) => {}
            _ => panic!("unexpected driver line {line:?}\n{}", report()),
        }
    }
    let names: BTreeSet<String> = files.iter().map(|(n, _, _)| n.clone()).collect();
    assert_eq!(done, names, "not every upload finished\n{}", report());
    assert_eq!(
        urls.keys().cloned().collect::<BTreeSet<_>>(),
        names,
        "{}",
        report()
    );
    // tus-js-client starts a file over as a new upload (leaving the first
    // PENDING, to expire) when its resume HEAD is refused; the balancer
    // resends a HEAD a dying replica never answered, so none is.
    let started_over: usize = urls.values().map(|u| u.len() - 1).sum();
    assert_eq!(
        (started_over, heads_refused),
        (0, 0),
        "files started over, HEADs refused\n{}",
        report()
    );
    let retried: usize = retries.values().sum();
    eprintln!(
        "{blobs:?}: SIGKILL to the last DONE: {:?}; all uploads took {:?}; {retried} retries \
         ({retries_before_kill} before the kill), by status: {retries:?}; answers other than \
         2xx: {answers:?}; {started_over} files started over as new uploads",
        last_done.saturating_duration_since(killed),
        last_done.saturating_duration_since(driver_started)
    );
    assert!(
        retried > 0,
        "no retry: the kill hit no request in flight\n{}",
        report()
    );
    // Which requests were retried (the driver's details on stderr), and
    // what the proxy did other than pass an answer on.
    let mut by_request: BTreeMap<(String, String), usize> = BTreeMap::new();
    for line in texts(&stderr) {
        let words: Vec<&str> = line.split(' ').collect();
        if let ["retry", _, _, method, _, status, ..] = words[..] {
            *by_request
                .entry((method.to_owned(), status.to_owned()))
                .or_default() += 1;
        }
    }
    eprintln!("{blobs:?}: retries by request: {by_request:?}");
    let unusual: Vec<String> = proxy
        .log()
        .into_iter()
        .filter(|l| !l.contains(" ---- ") || l.contains("\" 5"))
        .filter(|l| !l.starts_with('['))
        .collect();
    eprintln!(
        "{blobs:?}: haproxy: health changes and requests not ended normally ({}):\n{}",
        unusual.len(),
        unusual[..unusual.len().min(40)].join("\n")
    );

    // What the server kept: every upload UPLOADED or later, with the
    // source's bytes. Only GETs, through the proxy.
    let settle_until = Instant::now() + SETTLE;
    let mut statuses = BTreeMap::new();
    for (name, _, bytes) in &files {
        let url = urls[name].last().unwrap();
        let id = url.rsplit('/').next().unwrap();
        let upload = loop {
            let r = admin
                .client
                .get(format!("{base}/v1/uploads/{id}"))
                .bearer_auth(&admin.token)
                .send()
                .await
                .unwrap();
            let code = r.status();
            let text = r.text().await.unwrap();
            assert!(code.is_success(), "GET upload {name}: {code} {text}");
            let upload: Value = serde_json::from_str(&text).unwrap();
            let status = upload["status"].as_str().unwrap_or_default().to_owned();
            if matches!(status.as_str(), "UPLOADED" | "PROCESSING" | "COMPLETED") {
                break upload;
            }
            assert!(
                Instant::now() < settle_until,
                "{name} still {status} {SETTLE:?} after the uploads: {upload}\n{}",
                report()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        *statuses
            .entry(upload["status"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
        // A 307 to a signed URL (through the proxy, or Garage), followed.
        let r = admin
            .client
            .get(format!("{base}/v1/uploads/{id}/content"))
            .bearer_auth(&admin.token)
            .send()
            .await
            .unwrap();
        let code = r.status();
        let url = r.url().clone();
        let got = r.bytes().await.unwrap();
        assert_eq!(
            code.as_u16(),
            200,
            "download of {name} ({upload}): {code} from {url}: {}\n{}",
            String::from_utf8_lossy(&got),
            report()
        );
        assert_eq!(
            (got.len(), hex(&Sha256::digest(&got))),
            (bytes.len(), hex(&Sha256::digest(bytes))),
            "{name}'s stored bytes differ from the source"
        );
    }
    eprintln!("{blobs:?}: uploads by status afterwards: {statuses:?}");
    let problems = server_problems(&servers);
    if !problems.is_empty() {
        eprintln!(
            "{blobs:?}: the replicas' warnings and errors ({}):\n{}",
            problems.len(),
            problems[problems.len().saturating_sub(30)..].join("\n")
        );
    }
    drop(proxy);
    drop((a, a2, b));
    drop(redis);
    drop(db);
}
