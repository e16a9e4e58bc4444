//! Processing over real HTTP on both deployments (SQLite + local disk,
//! PostgreSQL + S3): a completed upload is picked up by the worker and ends
//! `COMPLETED` with metadata and thumbnails, or `FAILED` with a reason;
//! without a worker it waits as `UPLOADED` and is processed once one starts.

use crate::common;

use std::time::{Duration, Instant};

use buildpeer_worker::WorkerSettings;
use common::{Backend, TestApp, uuid};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

scenarios!(
    photo_is_processed,
    bad_content_fails,
    checksum_is_verified,
    uploads_wait_for_a_worker,
    declared_type_mismatch_is_recorded,
    over_the_memory_budget_fails_at_once,
    files_wait_for_memory_without_using_attempts,
);

const PHOTOS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/photos"
);
/// Processing of one photo at light load takes well under a second; this
/// only bounds a broken run.
const WAIT: Duration = Duration::from_secs(60);

fn photo(rel: &str) -> Vec<u8> {
    std::fs::read(format!("{PHOTOS}/{rel}")).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn with_worker(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |c| c.run_worker = true).await
}

/// Initiates an upload of `bytes` declared as `content_type` (with the
/// SHA-256 of `declared`), PUTs `bytes`, completes; returns the upload id.
async fn send(
    app: &TestApp,
    token: &str,
    project: Uuid,
    content_type: &str,
    bytes: &[u8],
    declared: &[u8],
) -> Uuid {
    let body = json!({
        "filename": "obra.jpg",
        "content_type": content_type,
        "size": bytes.len(),
        "sha256": sha256_hex(declared),
    });
    let started = app
        .call(
            Method::POST,
            &format!("/v1/projects/{project}/uploads"),
            Some(token),
            Some(&body),
        )
        .await;
    started.assert_status(201);
    let started = started.json();
    let instr = &started["upload"];
    let mut rb = app.client.put(instr["url"].as_str().unwrap());
    for (name, value) in instr["headers"].as_object().unwrap() {
        rb = rb.header(name.as_str(), value.as_str().unwrap());
    }
    let put = rb.body(bytes.to_vec()).send().await.expect("PUT");
    assert!(put.status().is_success(), "PUT: {}", put.status());
    let id = uuid(&started["id"]);
    app.call(
        Method::POST,
        &format!("/v1/uploads/{id}/complete"),
        Some(token),
        None,
    )
    .await
    .assert_status(200);
    id
}

/// Polls the upload until it is COMPLETED or FAILED.
async fn settled(app: &TestApp, token: &str, id: Uuid) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let resp = app.get(&format!("/v1/uploads/{id}"), token).await;
        resp.assert_status(200);
        let upload = resp.json();
        if matches!(upload["status"].as_str(), Some("COMPLETED" | "FAILED")) {
            return upload;
        }
        assert!(
            Instant::now() < deadline,
            "upload still {} after {WAIT:?}",
            upload["status"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn setup(app: &TestApp) -> (String, Uuid) {
    let acme = app.create_tenant("acme").await;
    let token = acme.admin.token().to_owned();
    let project = app.create_project(&token, "Torre Norte").await;
    (token, project)
}

async fn photo_is_processed(backend: Backend) {
    let app = with_worker(backend).await;
    let (token, project) = setup(&app).await;
    let bytes = photo("jpeg/gps/DSCN0010.jpg");
    let id = send(&app, &token, project, "image/jpeg", &bytes, &bytes).await;
    let upload = settled(&app, &token, id).await;
    assert_eq!(upload["status"], "COMPLETED", "{upload}");
    assert_eq!(upload["error"], Value::Null);
    assert_eq!(upload["detected_type"], "image/jpeg");
    assert_eq!(upload["type_mismatch"], false);
    let meta = &upload["metadata"];
    assert_eq!(
        (meta["width"].as_u64(), meta["height"].as_u64()),
        (Some(640), Some(480)),
        "{meta}"
    );
    assert_eq!(meta["taken_at"], "2008-10-22T16:28:39", "{meta}");
    let lat = meta["gps"]["latitude"].as_f64().unwrap();
    let lon = meta["gps"]["longitude"].as_f64().unwrap();
    assert!(
        (lat - 43.467_448).abs() < 1e-5 && (lon - 11.885_127).abs() < 1e-5,
        "{meta}"
    );
    assert_eq!(meta["camera"]["make"], "NIKON", "{meta}");
    let thumbs = upload["thumbnails"].as_array().unwrap();
    let names: Vec<&str> = thumbs.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["thumb", "preview"], "{upload}");
    assert_eq!(
        (thumbs[0]["width"].as_u64(), thumbs[0]["height"].as_u64()),
        (Some(256), Some(192))
    );
    // Never upscaled: the 640 px original keeps its size as the preview.
    assert_eq!(
        (thumbs[1]["width"].as_u64(), thumbs[1]["height"].as_u64()),
        (Some(640), Some(480))
    );

    // Each derivative downloads through its redirect as a clean JPEG.
    for t in thumbs {
        let resp = app.get(t["url"].as_str().unwrap(), &token).await;
        resp.assert_status(307);
        let location = resp.header("location").unwrap().to_owned();
        let got = app.client.get(location).send().await.unwrap();
        assert_eq!(got.status(), 200);
        assert_eq!(got.headers()["content-type"], "image/jpeg");
        let body = got.bytes().await.unwrap();
        assert_eq!(body.len() as u64, t["bytes"].as_u64().unwrap());
        assert_eq!(&body[..2], &[0xFF, 0xD8]);
        assert!(
            !body.windows(4).any(|w| w == b"Exif"),
            "metadata left in {}",
            t["name"]
        );
    }
    let missing = app
        .get(&format!("/v1/uploads/{id}/thumbnails/huge"), &token)
        .await;
    missing.assert_problem(404, "not_found");

    // The list filters on what processing found.
    let list = |query: &'static str| {
        let app = &app;
        let token = &token;
        async move {
            let resp = app
                .get(&format!("/v1/projects/{project}/uploads?{query}"), token)
                .await;
            resp.assert_status(200);
            common::ids(resp.json()["items"].as_array().unwrap(), "id")
        }
    };
    assert_eq!(list("has_gps=true").await, [id]);
    assert!(list("has_gps=false").await.is_empty());
    assert_eq!(
        list("taken_from=2008-10-22T00:00:00Z&taken_to=2008-10-23T00:00:00Z").await,
        [id]
    );
    assert!(list("taken_from=2009-01-01T00:00:00Z").await.is_empty());
    app.get(
        &format!("/v1/projects/{project}/uploads?has_gps=maybe"),
        &token,
    )
    .await
    .assert_problem(422, "validation_failed");
}

async fn bad_content_fails(backend: Backend) {
    let app = with_worker(backend).await;
    let (token, project) = setup(&app).await;
    // Not an image at all: fails at once, without retries.
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let id = send(&app, &token, project, "image/jpeg", &noise, &noise).await;
    let upload = settled(&app, &token, id).await;
    assert_eq!(upload["status"], "FAILED", "{upload}");
    assert_eq!(upload["error"]["code"], "unsupported_type", "{upload}");
    assert!(upload["error"]["message"].as_str().unwrap().len() > 10);
    assert_eq!(upload["thumbnails"], json!([]));

    // A damaged photo: a clear reason, or a picture if it still decodes.
    let broken = photo("jpeg/broken/corrupted.jpg");
    let id = send(&app, &token, project, "image/jpeg", &broken, &broken).await;
    let upload = settled(&app, &token, id).await;
    if upload["status"] == "FAILED" {
        assert!(
            upload["error"]["code"]
                .as_str()
                .is_some_and(|c| !c.is_empty()),
            "{upload}"
        );
    } else {
        assert!(
            !upload["thumbnails"].as_array().unwrap().is_empty(),
            "{upload}"
        );
    }
}

async fn checksum_is_verified(backend: Backend) {
    let app = with_worker(backend).await;
    let (token, project) = setup(&app).await;
    let bytes = photo("jpeg/gps/DSCN0012.jpg");
    let mut other = bytes.clone();
    let last = other.len() - 3;
    other[last] ^= 0x55;
    // Same length, other bytes: storage takes them, processing does not.
    let id = send(&app, &token, project, "image/jpeg", &other, &bytes).await;
    let upload = settled(&app, &token, id).await;
    assert_eq!(upload["status"], "FAILED", "{upload}");
    assert_eq!(upload["error"]["code"], "checksum_mismatch", "{upload}");
}

async fn uploads_wait_for_a_worker(backend: Backend) {
    let app = TestApp::spawn(backend).await; // no worker
    let (token, project) = setup(&app).await;
    let bytes = photo("jpeg/orientation/portrait_6.jpg");
    let id = send(&app, &token, project, "image/jpeg", &bytes, &bytes).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let upload = app.get(&format!("/v1/uploads/{id}"), &token).await.json();
    assert_eq!(upload["status"], "UPLOADED", "{upload}");

    // A worker process starts (here: the worker on a second handle to the
    // same database and storage) and takes it from there.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let settings = WorkerSettings {
        concurrency: 2,
        ..WorkerSettings::default()
    };
    let worker = tokio::spawn(buildpeer_worker::run(
        app.service.clone(),
        settings,
        stop_rx,
    ));
    let upload = settled(&app, &token, id).await;
    assert_eq!(upload["status"], "COMPLETED", "{upload}");
    // Orientation 6: stored landscape, displayed portrait.
    let meta = &upload["metadata"];
    assert_eq!(meta["orientation"], 6, "{meta}");
    assert!(meta["height"].as_u64() > meta["width"].as_u64(), "{meta}");
    for t in upload["thumbnails"].as_array().unwrap() {
        assert!(t["height"].as_u64() > t["width"].as_u64(), "{t}");
    }
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(30), worker)
        .await
        .expect("the worker stops")
        .unwrap();
}

async fn declared_type_mismatch_is_recorded(backend: Backend) {
    let app = with_worker(backend).await;
    let (token, project) = setup(&app).await;
    let bytes = photo("jpeg/gps/DSCN0021.jpg");
    let id = send(&app, &token, project, "image/png", &bytes, &bytes).await;
    let upload = settled(&app, &token, id).await;
    assert_eq!(upload["status"], "COMPLETED", "{upload}");
    assert_eq!(upload["content_type"], "image/png");
    assert_eq!(upload["detected_type"], "image/jpeg");
    assert_eq!(upload["type_mismatch"], true);
}

/// Every job of the upload's tenant, as the admin API lists them.
async fn jobs(app: &TestApp, token: &str) -> Vec<Value> {
    let body = app.get("/v1/admin/jobs?limit=100", token).await.json();
    body["items"].as_array().cloned().unwrap_or_default()
}

/// A 12 MP HEIC needs about 80 MiB to process (its plan): with a 16 MiB
/// budget it never could, so it fails at once, on its first attempt,
/// without being retried.
async fn over_the_memory_budget_fails_at_once(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.run_worker = true;
        c.processing.media.memory_budget = 16 << 20;
    })
    .await;
    let (token, project) = setup(&app).await;
    let bytes = photo("heic/iphone_13_pro_max.HEIC");
    let id = send(&app, &token, project, "image/heic", &bytes, &bytes).await;
    let upload = settled(&app, &token, id).await;
    assert_eq!(upload["status"], "FAILED", "{upload}");
    assert_eq!(upload["error"]["code"], "image_too_large", "{upload}");
    let message = upload["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("budget of 16 MiB"), "{message}");
    let jobs = jobs(&app, &token).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0]["state"], "dead");
    assert_eq!(jobs[0]["attempts"], 1);
}

/// Three photos that each fit the budget but not together, on a worker
/// that would run them at once: they take turns for memory, all complete,
/// and no job needs a second attempt.
async fn files_wait_for_memory_without_using_attempts(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.run_worker = true;
        c.processing.worker.concurrency = 3;
        c.processing.media.memory_budget = 100 << 20;
    })
    .await;
    let (token, _) = setup(&app).await;
    let bytes = photo("heic/iphone_13_pro_max.HEIC");
    let mut ids = Vec::new();
    for i in 0..3 {
        // A project each: the same bytes in one project are de-duplicated.
        let project = app.create_project(&token, &format!("Obra {i}")).await;
        ids.push(send(&app, &token, project, "image/heic", &bytes, &bytes).await);
    }
    for id in ids {
        let upload = settled(&app, &token, id).await;
        assert_eq!(upload["status"], "COMPLETED", "{upload}");
        assert_eq!(upload["metadata"]["width"], 3024, "{upload}");
    }
    let jobs = jobs(&app, &token).await;
    assert_eq!(jobs.len(), 3, "{jobs:?}");
    for job in jobs {
        assert_eq!(job["state"], "done", "{job}");
        assert_eq!(job["attempts"], 1, "{job}");
    }
}
