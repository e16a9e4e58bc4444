//! The `buildpeer` binary as an operator runs it (a child process on a
//! SQLite data dir in a temp dir, JSON logs on stdout): first-start
//! bootstrap of the demo tenant and its one-time password (and none with
//! `--no-bootstrap` / `BUILDPEER_NO_BOOTSTRAP`), the JSON log schema with
//! request, tenant and user ids, graceful shutdown on SIGTERM (in-flight
//! request completed, new connections refused, exit 0), the `tenant create`
//! and `migrate` commands, `--help` naming every `BUILDPEER_*` variable
//! without echoing secret values, and a quick restart on an existing data dir.

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use buildpeer::config::DatabaseConfig;
use common::process::{self, DemoAdmin, Server, serve_env};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use uuid::Uuid;

const DEMO_EMAIL: &str = "admin@demo.local";

/// Environment variables for a child process.
type Env = Vec<(String, String)>;

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("buildpeer-bin-")
        .tempdir()
        .unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(common::REQUEST_TIMEOUT)
        .build()
        .unwrap()
}

async fn login(addr: SocketAddr, tenant: &str, email: &str, password: &str) -> reqwest::Response {
    client()
        .post(format!("http://{addr}/v1/auth/login"))
        .json(&json!({ "tenant": tenant, "email": email, "password": password }))
        .send()
        .await
        .unwrap()
}

/// The bootstrap line: the one log line that carries a `password`.
fn password_lines(server: &Server) -> Vec<Value> {
    server
        .json_lines()
        .into_iter()
        .filter(|l| l.get("password").is_some())
        .collect()
}

/// How many tenants the data dir's database holds.
async fn tenant_count(data_dir: &Path) -> u64 {
    let db = DatabaseConfig {
        url: SecretString::from(format!(
            "sqlite://{}",
            data_dir.join("buildpeer.db").display()
        )),
        max_connections: 1,
        acquire_timeout: std::time::Duration::from_secs(5),
    };
    let store = buildpeer::app::connect_store(&db, data_dir).await.unwrap();
    store.tenant_count().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_and_json_logs() {
    tokio::time::timeout(common::SCENARIO_TIMEOUT, async {
        let dir = temp_dir();
        let env = serve_env(dir.path());

        // First start on an empty data dir: the demo tenant and its password.
        let mut server = Server::spawn(&[], &env);
        let addr = server.wait_listening().await;
        let lines = password_lines(&server);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        assert_eq!(line["level"], "warn", "{line}");
        assert_eq!(line["email"], DEMO_EMAIL, "{line}");
        assert_eq!(line["tenant"], "demo", "{line}");
        let password = line["password"].as_str().unwrap().to_owned();
        assert!(password.len() >= 12, "{line}");

        let resp = login(addr, "demo", DEMO_EMAIL, &password).await;
        assert_eq!(resp.status(), 200);
        let token = resp.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let me: Value = client()
            .get(format!("http://{addr}/v1/me"))
            .bearer_auth(&token)
            .header("x-request-id", "bin-me-1")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(me["email"], DEMO_EMAIL);
        assert_eq!(me["role"], "admin");
        let anonymous = client()
            .get(format!("http://{addr}/healthz"))
            .header("x-request-id", "bin-health-1")
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.status(), 200);

        // Request lines: the request id, and on authenticated requests the
        // tenant and user, all camelCase.
        let authed = server
            .wait_for_log("for bin-me-1", |l| {
                l["requestId"] == "bin-me-1" && l["message"] == "request completed"
            })
            .await;
        assert_eq!(authed["tenantId"], me["tenant_id"], "{authed}");
        assert_eq!(authed["userId"], me["id"], "{authed}");
        assert_eq!(authed["status"], 200, "{authed}");
        assert_eq!(authed["route"], "/v1/me", "{authed}");
        assert_eq!(authed["method"], "GET", "{authed}");
        assert!(authed["latencyMs"].is_number(), "{authed}");
        let anon = server
            .wait_for_log("for bin-health-1", |l| {
                l["requestId"] == "bin-health-1" && l["message"] == "request completed"
            })
            .await;
        assert!(
            anon.get("tenantId").is_none() && anon.get("userId").is_none(),
            "{anon}"
        );
        // The login request logged its outcome with the ids too.
        server
            .wait_for_log("login", |l| {
                l["message"] == "login" && l["userId"] == me["id"]
            })
            .await;

        server.stop().await;
        let lines = server.json_lines();
        assert!(lines.len() >= 5, "{lines:?}");
        for l in &lines {
            for key in ["timestamp", "level", "service", "message"] {
                assert!(l[key].is_string(), "{key} missing: {l}");
            }
            assert_eq!(l["service"], "buildpeer-api", "{l}");
            let ts = l["timestamp"].as_str().unwrap();
            assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{l}");
            assert!(
                ["trace", "debug", "info", "warn", "error"].contains(&l["level"].as_str().unwrap()),
                "{l}"
            );
            // Field names are camelCase.
            for key in l.as_object().unwrap().keys() {
                assert!(!key.contains('_'), "snake_case field {key}: {l}");
            }
            if l["message"] == "request completed" {
                assert!(l["requestId"].is_string(), "{l}");
            }
        }
        // The password shows up on that one line only.
        let stdout = server.lines().join("\n");
        assert_eq!(stdout.matches(password.as_str()).count(), 1);

        // A second start on the same data dir creates and shows nothing.
        let mut again = Server::spawn(&[], &env);
        let addr = again.wait_listening().await;
        assert!(password_lines(&again).is_empty(), "{:?}", again.lines());
        assert!(!again.lines().join("\n").contains(&password));
        assert_eq!(
            login(addr, "demo", DEMO_EMAIL, &password).await.status(),
            200
        );
        // The signing secret generated on first start was kept: tokens
        // issued before the restart still work.
        let resp = client()
            .get(format!("http://{addr}/v1/me"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        again.stop().await;
        assert_eq!(tenant_count(dir.path()).await, 1);
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_bootstrap_flag_and_env() {
    tokio::time::timeout(common::SCENARIO_TIMEOUT, async {
        for (args, extra_env) in [(&["--no-bootstrap"][..], None), (&[][..], Some("true"))] {
            let dir = temp_dir();
            let mut env = serve_env(dir.path());
            if let Some(v) = extra_env {
                env.push(("BUILDPEER_NO_BOOTSTRAP".to_owned(), v.to_owned()));
            }
            let mut server = Server::spawn(args, &env);
            let addr = server.wait_listening().await;
            assert!(password_lines(&server).is_empty(), "{:?}", server.lines());
            let resp = login(addr, "demo", DEMO_EMAIL, "whatever-password").await;
            assert_eq!(resp.status(), 401);
            server.stop().await;
            assert_eq!(tenant_count(dir.path()).await, 0, "{args:?} {extra_env:?}");
        }
        // BUILDPEER_NO_BOOTSTRAP=false bootstraps as usual.
        let dir = temp_dir();
        let mut env = serve_env(dir.path());
        env.push(("BUILDPEER_NO_BOOTSTRAP".to_owned(), "false".to_owned()));
        let mut server = Server::spawn(&[], &env);
        server.wait_listening().await;
        assert_eq!(password_lines(&server).len(), 1, "{:?}", server.lines());
        server.stop().await;
    })
    .await
    .expect("timed out");
}

/// Reads one HTTP/1.1 response with a Content-Length body; returns the
/// status code and the body.
async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.expect("reading the response");
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let status: u16 = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("bad status line in {head}"));
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                // A 204 has no body and so no length.
                .or((status == 204).then_some(0))
                .unwrap_or_else(|| panic!("no Content-Length in {head}"));
            if buf.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).to_string();
                return (status, body);
            }
        }
    }
    panic!(
        "connection closed before a complete response: {:?}",
        String::from_utf8_lossy(&buf)
    );
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Whether a fresh connection can still get an answer from `addr`.
async fn new_connection_served(addr: SocketAddr) -> bool {
    let Ok(Ok(mut stream)) =
        tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await
    else {
        return false;
    };
    let request = "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = Vec::new();
    matches!(
        tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut buf)).await,
        Ok(Ok(_))
    ) && buf.starts_with(b"HTTP/1.1 200")
}

/// SIGTERM, then waits until new connections are refused. Polled, because
/// the accept loop notices the signal a moment after it is logged.
async fn sigterm_then_refused(server: &Server, addr: SocketAddr) {
    server.sigterm();
    server
        .wait_for_log("shutdown requested", |l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("shutdown requested"))
        })
        .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting 5 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_on_sigterm() {
    tokio::time::timeout(common::SCENARIO_TIMEOUT, async {
        let dir = temp_dir();
        let mut server = Server::spawn(&[], &serve_env(dir.path()));
        let addr = server.wait_listening().await;
        let password = password_lines(&server)[0]["password"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(new_connection_served(addr).await);
        // An idle keep-alive connection, which must not hold up the exit.
        let mut idle = TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_response(&mut idle).await.0, 200);

        // A login whose body arrives slowly: headers, then half the body.
        let body =
            json!({ "tenant": "demo", "email": DEMO_EMAIL, "password": password }).to_string();
        let (first, second) = body.as_bytes().split_at(body.len() / 2);
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /v1/auth/login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nExpect: 100-continue\r\nX-Request-Id: in-flight-1\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        // `100 Continue` proves the server has the request and is reading its body.
        let mut interim = [0u8; 25];
        stream.read_exact(&mut interim).await.unwrap();
        assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
        stream.write_all(first).await.unwrap();
        stream.flush().await.unwrap();

        sigterm_then_refused(&server, addr).await;
        for _ in 0..3 {
            assert!(
                !new_connection_served(addr).await,
                "served a new connection after SIGTERM"
            );
        }

        // The idle connection is closed by the server.
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest)).await;
        assert!(
            matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
            "idle connection left open: {closed:?}"
        );

        // The in-flight request still gets its whole answer.
        stream.write_all(second).await.unwrap();
        let (status, body) = read_response(&mut stream).await;
        assert_eq!(status, 200, "{body}");
        let tokens: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(tokens["token_type"], "Bearer");
        assert!(tokens["access_token"].is_string());

        // And the process exits cleanly, without waiting out a grace period.
        let status = server.wait_exit(Duration::from_secs(5)).await;
        assert!(status.success(), "exit status {status}");
        server
            .wait_for_log("in-flight request line", |l| {
                l["requestId"] == "in-flight-1" && l["status"] == 200
            })
            .await;
        server
            .wait_for_log("stopped", |l| l["message"] == "stopped")
            .await;
    })
    .await
    .expect("timed out");
}

/// Sends a request's head and the first half of its `body` on a fresh
/// connection; the caller sends the rest.
async fn half_sent(addr: SocketAddr, head: &str, body: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..body.len() / 2]).await.unwrap();
    stream.flush().await.unwrap();
    stream
}

/// SIGTERM while two uploads stream their bodies (a tus PATCH and a signed
/// PUT): both complete and are acknowledged, no new connection is served,
/// the process exits 0, and after a restart the bytes are all there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_inflight_uploads_finish() {
    tokio::time::timeout(common::SCENARIO_TIMEOUT, async {
        let dir = temp_dir();
        let env = serve_env(dir.path());
        let mut server = Server::spawn(&[], &env);
        let addr = server.wait_listening().await;
        let base = format!("http://{addr}");
        let admin = DemoAdmin::login(&server, &base).await;
        let project = admin.create_project(&base, "Obra").await;
        let DemoAdmin {
            client: http,
            token,
        } = admin;
        let body: Vec<u8> = b"%PDF-1.4\n"
            .iter()
            .copied()
            .chain((0..2_000_000u32).map(|i| (i % 251) as u8))
            .collect();

        // A tus upload and a signed upload, each with its body half sent.
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let created = http
            .post(format!("{base}/v1/tus"))
            .bearer_auth(&token)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", body.len().to_string())
            .header(
                "Upload-Metadata",
                format!(
                    "project_id {},filetype {}",
                    b64(&project),
                    b64("application/pdf")
                ),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(created.status().as_u16(), 201);
        let tus_path = created.headers()["location"].to_str().unwrap().to_owned();
        let tus_path = tus_path.strip_prefix(&base).unwrap_or(&tus_path).to_owned();
        let tus_id = tus_path.rsplit('/').next().unwrap().to_owned();
        let mut patch = half_sent(
            addr,
            &format!(
                "PATCH {tus_path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
                 Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n\
                 Content-Type: application/offset+octet-stream\r\nContent-Length: {}\r\n\r\n",
                body.len()
            ),
            &body,
        )
        .await;
        let initiated: Value = http
            .post(format!("{base}/v1/projects/{project}/uploads"))
            .bearer_auth(&token)
            .json(
                &json!({ "filename": "plano.pdf", "content_type": "application/pdf",
                           "size": body.len() }),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let signed_id = initiated["id"].as_str().unwrap().to_owned();
        let url = reqwest::Url::parse(initiated["upload"]["url"].as_str().unwrap()).unwrap();
        let target = format!("{}?{}", url.path(), url.query().unwrap_or(""));
        let mut put = half_sent(
            addr,
            &format!(
                "PUT {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/pdf\r\n\
                 Content-Length: {}\r\n\r\n",
                body.len()
            ),
            &body,
        )
        .await;
        // Both handlers are running when the signal comes.
        tokio::time::sleep(Duration::from_millis(300)).await;

        sigterm_then_refused(&server, addr).await;

        // The rest of both bodies: both are acknowledged.
        let half = body.len() / 2;
        patch.write_all(&body[half..]).await.unwrap();
        put.write_all(&body[half..]).await.unwrap();
        let (status, text) = read_response(&mut patch).await;
        assert_eq!(status, 204, "{text}");
        let (status, text) = read_response(&mut put).await;
        assert!((200..300).contains(&status), "{status} {text}");
        let status = server.wait_exit(Duration::from_secs(10)).await;
        assert!(status.success(), "exit status {status}");

        // After a restart: the tus upload is whole; the signed one completes
        // (its size checked against the stored object).
        let server = Server::spawn(&[], &env);
        let addr = server.wait_listening().await;
        let base = format!("http://{addr}");
        let tus: Value = http
            .get(format!("{base}/v1/uploads/{tus_id}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        // Acknowledged, then picked up by the in-process worker.
        assert_ne!(tus["status"], "PENDING", "{tus}");
        assert_eq!(tus["size"], body.len());
        let stored = http
            .get(format!("{base}/v1/uploads/{tus_id}/content"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(stored.status().as_u16(), 200);
        assert!(
            stored.bytes().await.unwrap() == body,
            "the tus bytes differ"
        );
        let done = http
            .post(format!("{base}/v1/uploads/{signed_id}/complete"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(done.status().as_u16(), 200, "{:?}", done.text().await);
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_create_and_migrate_commands() {
    tokio::time::timeout(common::SCENARIO_TIMEOUT, async {
        let dir = temp_dir();
        let data_dir = dir.path().display().to_string();
        let env = [
            ("BUILDPEER_DATA_DIR", data_dir.as_str()),
            ("BUILDPEER_LOG_FORMAT", "json"),
        ];

        let out = process::run(&["migrate"], &env).await;
        assert!(out.status.success(), "{out:?}");
        assert!(out.stdout.is_empty(), "migrate printed on stdout: {out:?}");
        let again = process::run(&["migrate"], &env).await;
        assert!(again.status.success(), "{again:?}");

        let create = [
            "tenant",
            "create",
            "--slug",
            "acme",
            "--name",
            "Acme Construcciones",
            "--admin-email",
            "a@acme.mx",
            "--admin-password",
            "obra-segura-2026",
        ];
        let out = process::run(&create, &env).await;
        assert!(out.status.success(), "{out:?}");
        let stdout = String::from_utf8(out.stdout.clone()).unwrap();
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 1, "stdout: {stdout:?}");
        assert!(stdout.ends_with('\n'));
        let created: Value = serde_json::from_str(lines[0]).unwrap();
        let keys: Vec<&String> = created.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["tenant_id", "admin_user_id"], "{created}");
        let tenant_id: Uuid = created["tenant_id"].as_str().unwrap().parse().unwrap();
        let admin_id: Uuid = created["admin_user_id"].as_str().unwrap().parse().unwrap();
        // Its logs went to stderr, as JSON lines.
        for l in String::from_utf8_lossy(&out.stderr).lines() {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert_eq!(v["service"], "buildpeer", "{l}");
        }

        // The same slug again: refused, nothing on stdout.
        let mut dup = create;
        dup[7] = "b@acme.mx";
        let out = process::run(&dup, &env).await;
        assert!(!out.status.success(), "{out:?}");
        assert!(out.stdout.is_empty(), "{out:?}");
        // Invalid input: refused with a message naming the field.
        let mut bad = create;
        bad[3] = "Not A Slug";
        let out = process::run(&bad, &env).await;
        assert!(!out.status.success(), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("slug"),
            "{out:?}"
        );
        // The password may come from the environment instead.
        let out = process::run(
            &[
                "tenant",
                "create",
                "--slug",
                "beta",
                "--name",
                "Beta",
                "--admin-email",
                "b@beta.mx",
            ],
            &[
                env[0],
                env[1],
                ("BUILDPEER_ADMIN_PASSWORD", "obra-segura-2027"),
            ],
        )
        .await;
        assert!(out.status.success(), "{out:?}");
        assert_eq!(tenant_count(dir.path()).await, 2);

        // The created admin can log in to a server on that data dir.
        let mut server = Server::spawn(&["--no-bootstrap"], &serve_env(dir.path()));
        let addr = server.wait_listening().await;
        let resp = login(addr, "acme", "a@acme.mx", "obra-segura-2026").await;
        assert_eq!(resp.status(), 200);
        let token = resp.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let me: Value = client()
            .get(format!("http://{addr}/v1/me"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(me["id"], admin_id.to_string());
        assert_eq!(me["tenant_id"], tenant_id.to_string());
        assert_eq!(me["role"], "admin");
        assert_eq!(me["name"], "Admin");
        assert_eq!(
            login(addr, "beta", "b@beta.mx", "obra-segura-2027")
                .await
                .status(),
            200
        );
        server.stop().await;
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_names_every_variable_and_hides_secrets() {
    tokio::time::timeout(common::SCENARIO_TIMEOUT, async {
        let jwt = "jwt-secret-value-0123456789abcdef0123456789";
        let db_password = "db-pass-Zq9xW";
        let db_url = format!("postgres://app:{db_password}@db.invalid:5432/buildpeer");
        let admin_password = "admin-pass-Kt7vR";
        let env = [
            ("BUILDPEER_JWT_SECRET", jwt),
            ("BUILDPEER_DATABASE_URL", db_url.as_str()),
            ("BUILDPEER_ADMIN_PASSWORD", admin_password),
        ];
        let vars = [
            "BUILDPEER_LISTEN",
            "BUILDPEER_DATA_DIR",
            "BUILDPEER_DATABASE_URL",
            "BUILDPEER_JWT_SECRET",
            "BUILDPEER_LOG_FORMAT",
            "BUILDPEER_NO_BOOTSTRAP",
        ];
        for args in [
            &["--help"][..],
            &["serve", "--help"][..],
            &["help", "serve"][..],
        ] {
            let out = process::run(args, &env).await;
            assert!(out.status.success(), "{args:?}: {out:?}");
            let text = String::from_utf8_lossy(&out.stdout);
            for var in vars {
                assert!(
                    text.contains(var),
                    "{args:?} does not mention {var}:\n{text}"
                );
            }
        }
        for args in [
            &["--help"][..],
            &["serve", "--help"][..],
            &["migrate", "--help"][..],
            &["tenant", "create", "--help"][..],
            &["-h"][..],
            &["serve", "-h"][..],
        ] {
            let out = process::run(args, &env).await;
            assert!(out.status.success(), "{args:?}: {out:?}");
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            for secret in [jwt, db_password, db_url.as_str(), admin_password] {
                assert!(!all.contains(secret), "{args:?} shows a secret:\n{all}");
            }
        }
        let out = process::run(&["--version"], &[]).await;
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    })
    .await
    .expect("timed out");
}

/// A second start on the data dir the first one left (migrations applied,
/// secret generated) serves. How quickly is for benchmarks to say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_on_existing_data_dir_serves() {
    tokio::time::timeout(common::SCENARIO_TIMEOUT, async {
        let dir = temp_dir();
        let env = serve_env(dir.path());
        let mut first = Server::spawn(&[], &env);
        first.wait_listening().await;
        first.stop().await;

        let start = Instant::now();
        let mut server = Server::spawn(&[], &env);
        let addr = server.wait_listening().await;
        let client = client();
        loop {
            let ok = client
                .get(format!("http://{addr}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ok {
                break;
            }
            assert!(start.elapsed() < process::WAIT, "/healthz never answered");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        server.stop().await;
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_fails_cleanly() {
    tokio::time::timeout(common::SCENARIO_TIMEOUT, async {
        let dir = temp_dir();
        // A port of ours that nothing listens on any more.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        // A port of ours that is taken.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken_addr = taken.local_addr().unwrap().to_string();
        let db_password = "db-pass-Zq9xW";
        let unreachable_db =
            format!("postgres://app:{db_password}@127.0.0.1:{closed_port}/buildpeer");
        let short_secret = "too-short-secret";

        let cases: Vec<(&str, Env, Vec<&str>)> = vec![
            (
                "short JWT secret",
                vec![("BUILDPEER_JWT_SECRET".into(), short_secret.into())],
                vec![short_secret],
            ),
            (
                "unsupported database URL",
                vec![(
                    "BUILDPEER_DATABASE_URL".into(),
                    format!("mysql://app:{db_password}@db/x"),
                )],
                vec![db_password],
            ),
            (
                "unreachable database",
                vec![("BUILDPEER_DATABASE_URL".into(), unreachable_db.clone())],
                vec![db_password, unreachable_db.as_str()],
            ),
            (
                "address in use",
                vec![("BUILDPEER_LISTEN".into(), taken_addr.clone())],
                vec![],
            ),
        ];
        for (what, extra, secrets) in cases {
            let mut env = serve_env(dir.path());
            env.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
            env.extend(extra);
            let mut server = Server::spawn(&["--no-bootstrap"], &env);
            let status = server.wait_exit(process::WAIT).await;
            assert!(!status.success(), "{what}: {status}");
            let failure = server
                .wait_for_log("command failed", |l| {
                    l["level"] == "error" && l["message"] == "command failed"
                })
                .await;
            assert!(failure["error"].is_string(), "{what}: {failure}");
            let output = server.lines().join("\n");
            for secret in secrets {
                assert!(
                    !output.contains(secret),
                    "{what}: the output shows a secret:\n{output}"
                );
            }
            assert!(!output.contains("panicked"), "{what}:\n{output}");
        }
        drop(taken);
    })
    .await
    .expect("timed out");
}
