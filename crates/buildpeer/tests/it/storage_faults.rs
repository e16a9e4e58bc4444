//! Storage outages, on PostgreSQL + a real S3 server (Garage) reached
//! through a TCP proxy the test controls: while the proxy refuses
//! connections the storage circuit breaker opens; uploads then get 503
//! `storage_unavailable` with `Retry-After` at once, browsing answers 200,
//! `/readyz` reports storage down but stays ready, and processing is
//! deferred without using attempts. When the proxy forwards again the
//! breaker closes and the pending upload completes.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use buildpeer_storage::BreakerConfig;
use buildpeer_worker::WorkerSettings;
use common::{Backend, TestApp, uuid};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use uuid::Uuid;

/// Forwards loopback connections to `target` while up; while down it
/// closes new connections at once and cuts the open ones.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    /// Connections the app opened to storage, forwarded or not.
    connections: Arc<AtomicUsize>,
    /// Bumped to cut every open connection.
    cut: watch::Sender<u64>,
}

impl Proxy {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(AtomicUsize::new(0));
        let (cut, _) = watch::channel(0u64);
        let (flag, cuts, count) = (up.clone(), cut.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                if !flag.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let mut cut_rx = cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut_rx.changed() => {}
                    }
                });
            }
        });
        Self {
            port,
            up,
            connections,
            cut,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

const OPEN_FOR: Duration = Duration::from_secs(2);

/// Initiates an upload of `bytes` and PUTs them; returns its id.
async fn initiate_and_put(app: &TestApp, token: &str, project: Uuid, bytes: &[u8]) -> Uuid {
    let body = json!({"filename": "obra.jpg", "content_type": "image/jpeg", "size": bytes.len()});
    let resp = app
        .call(
            Method::POST,
            &format!("/v1/projects/{project}/uploads"),
            Some(token),
            Some(&body),
        )
        .await;
    resp.assert_status(201);
    let started = resp.json();
    let instr = &started["upload"];
    let mut rb = app.client.put(instr["url"].as_str().unwrap());
    for (name, value) in instr["headers"].as_object().unwrap() {
        rb = rb.header(name.as_str(), value.as_str().unwrap());
    }
    let put = rb.body(bytes.to_vec()).send().await.expect("PUT");
    assert!(put.status().is_success(), "PUT: {}", put.status());
    uuid(&started["id"])
}

async fn complete(app: &TestApp, token: &str, id: Uuid) -> common::Resp {
    app.call(
        Method::POST,
        &format!("/v1/uploads/{id}/complete"),
        Some(token),
        None,
    )
    .await
}

fn time(v: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap()
}

/// `worker_deferred_total` of the process (its one worker's), from `/metrics`.
async fn deferrals(app: &TestApp) -> u64 {
    let metrics = app.call(Method::GET, "/metrics", None, None).await;
    metrics.assert_status(200);
    metrics
        .text
        .lines()
        .filter(|l| l.starts_with("worker_deferred_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_outage_degrades_and_recovers() {
    let Some(s3) = common::s3_url() else {
        return;
    };
    if buildpeer_testkit::required_env(common::PG_URL_ENV).is_none() {
        return;
    }
    // s3://bucket?endpoint=http://127.0.0.1:PORT&region=…: the proxy goes
    // in front of the endpoint.
    let endpoint = s3
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("endpoint="))
        .expect("an endpoint in the S3 URL")
        .to_owned();
    let target = endpoint.trim_start_matches("http://").to_owned();
    let proxy = Proxy::start(target.clone()).await;
    let proxied = s3.replace(&endpoint, &format!("http://127.0.0.1:{}", proxy.port));
    let app = TestApp::spawn_with(Backend::Postgres, |c| {
        c.storage_url = Some(proxied);
        c.breaker = BreakerConfig {
            open_for: OPEN_FOR,
            call_timeout: Duration::from_secs(2),
            ..BreakerConfig::default()
        };
    })
    .await;
    let acme = app.create_tenant("acme").await;
    let token = acme.admin.token().to_owned();
    let project = app.create_project(&token, "Torre Norte").await;
    let photo = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/testdata/photos/jpeg/gps/DSCN0010.jpg"),
    )
    .expect("shared test photo");

    // Completed before the outage, not processed yet (no worker runs).
    let pending = initiate_and_put(&app, &token, project, &photo).await;
    complete(&app, &token, pending).await.assert_status(200);
    // Sent before the outage, completed during it.
    let stranded = initiate_and_put(&app, &token, project, &photo).await;

    proxy.down();
    // Each failing completion is a failed storage call; the breaker opens
    // after five within its window.
    let mut failures = 0;
    loop {
        let resp = complete(&app, &token, stranded).await;
        resp.assert_problem(503, "storage_unavailable");
        failures += 1;
        let retry: u64 = resp.header("retry-after").unwrap().parse().unwrap();
        if retry <= OPEN_FOR.as_secs() && failures >= 5 {
            break;
        }
        assert!(failures < 10, "the breaker did not open");
    }
    // Open: uploads are refused at once, without a call to storage.
    let calls = proxy.connections();
    let body = json!({"filename": "b.jpg", "content_type": "image/jpeg", "size": 10});
    let resp = app
        .call(
            Method::POST,
            &format!("/v1/projects/{project}/uploads"),
            Some(&token),
            Some(&body),
        )
        .await;
    resp.assert_problem(503, "storage_unavailable");
    assert_eq!(proxy.connections(), calls, "the refusal called storage");
    let retry: u64 = resp.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=OPEN_FOR.as_secs()).contains(&retry), "{retry}");
    // Browsing goes on.
    app.get("/v1/projects", &token).await.assert_status(200);
    app.get(&format!("/v1/projects/{project}/uploads"), &token)
        .await
        .assert_status(200);
    let upload = app.get(&format!("/v1/uploads/{pending}"), &token).await;
    upload.assert_status(200);
    assert_eq!(upload.json()["status"], "UPLOADED");
    let ready = app.get("/readyz", &token).await;
    ready.assert_status(200);
    assert_eq!(
        ready.json(),
        json!({"status": "degraded", "checks": {"database": "ok", "cache": "ok", "storage": "down"}})
    );

    // A worker sharing the app's store finds the breaker open: the job is
    // deferred, no attempt used, the upload stays UPLOADED.
    let (stop_tx, stop_rx) = watch::channel(false);
    let settings = WorkerSettings {
        concurrency: 1,
        ..WorkerSettings::default()
    };
    let worker = tokio::spawn(buildpeer_worker::run(
        app.service.clone(),
        settings,
        stop_rx,
    ));
    // Proof that it ran and deferred, not merely that it has not got to
    // the job yet: the deferral counted, and the job queued again for later
    // than it was created with its attempt given back.
    let deadline = Instant::now() + Duration::from_secs(30);
    let job = loop {
        let jobs = app.get("/v1/admin/jobs", &token).await;
        jobs.assert_status(200);
        let items = jobs.json()["items"].as_array().unwrap().clone();
        assert_eq!(items.len(), 1, "{items:?}");
        let job = items[0].clone();
        assert_ne!(job["state"], "dead", "{job}");
        let requeued = job["state"] == "queued"
            && job["attempts"] == 0
            && time(&job["run_at"]) > time(&job["created_at"]);
        if requeued && deferrals(&app).await > 0 {
            break job;
        }
        assert!(Instant::now() < deadline, "the job was not deferred: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        job["last_error"].is_null(),
        "a deferral is no failure: {job}"
    );
    let upload = app.get(&format!("/v1/uploads/{pending}"), &token).await;
    assert_eq!(upload.json()["status"], "UPLOADED");

    // Storage returns: after the open time the next call is the trial, it
    // succeeds, the breaker closes and the pending upload completes.
    proxy.up();
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let upload = app
            .get(&format!("/v1/uploads/{pending}"), &token)
            .await
            .json();
        if upload["status"] == "COMPLETED" || upload["status"] == "FAILED" {
            break upload;
        }
        assert!(Instant::now() < deadline, "still {}", upload["status"]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(done["status"], "COMPLETED", "{done}");
    complete(&app, &token, stranded).await.assert_status(200);
    let ready = app.get("/readyz", &token).await.json();
    assert_eq!(ready["checks"]["storage"], "ok", "{ready}");
    let jobs = app.get("/v1/admin/jobs?state=dead", &token).await.json();
    assert_eq!(jobs["items"], Value::Array(vec![]), "nothing dead-lettered");
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(30), worker)
        .await
        .unwrap()
        .unwrap();
}
