//! tus edge cases that `tus` does not cover, on the in-process app:
//! two colliding PATCHes (the lease in the database: 423 + `Retry-After`,
//! nothing changed), the termination of a finished upload (trash, then
//! 410) and the expiry sweeper expiring a tus upload (410; the staging
//! file, or on S3 the multipart upload and its tail object, removed).

use crate::common;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use buildpeer_db::testing;
use common::{Backend, Resp, TestApp};
use reqwest::Method;
use secrecy::ExposeSecret as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use uuid::Uuid;

scenarios!(
    uploads_count_against_no_request_quota_but_are_bounded_in_flight,
    colliding_patches,
    delete_finished_upload,
    sweeper_expires_tus_upload
);

fn tus(app: &TestApp, method: Method, path: &str, token: &str) -> reqwest::RequestBuilder {
    app.request(method, path, Some(token))
        .header("Tus-Resumable", "1.0.0")
}

async fn create(app: &TestApp, token: &str, project: Uuid, len: u64) -> Resp {
    let meta = format!(
        "project_id {},filename {},filetype {}",
        B64.encode(project.to_string()),
        B64.encode("obra.bin"),
        B64.encode("application/pdf")
    );
    app.send(
        tus(app, Method::POST, "/v1/tus", token)
            .header("Upload-Length", len.to_string())
            .header("Upload-Metadata", meta),
    )
    .await
}

async fn patch(app: &TestApp, token: &str, loc: &str, offset: u64, data: Vec<u8>) -> Resp {
    app.send(
        tus(app, Method::PATCH, loc, token)
            .header("Upload-Offset", offset.to_string())
            .header("Content-Type", "application/offset+octet-stream")
            .body(data),
    )
    .await
}

async fn head_offset(app: &TestApp, token: &str, loc: &str) -> String {
    let r = app.send(tus(app, Method::HEAD, loc, token)).await;
    r.assert_status(200);
    r.header("upload-offset").unwrap().to_owned()
}

/// Opens a raw PATCH announcing `len` bytes and sends only the headers, so
/// the server holds the upload's lease while it waits for the body.
async fn open_slow_patch(app: &TestApp, token: &str, loc: &str, len: usize) -> TcpStream {
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "PATCH {loc} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
         Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n\
         Content-Type: application/offset+octet-stream\r\nContent-Length: {len}\r\n\
         Connection: close\r\n\r\n",
        app.addr
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&vec![7u8; len / 2]).await.unwrap();
    s.flush().await.unwrap();
    s
}

async fn colliding_patches(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = app.create_tenant("tus-collide").await;
    let token = t.admin.token();
    let project = app.create_project(token, "Obra").await;
    let len = 64 * 1024;
    let r = create(&app, token, project, len as u64).await;
    r.assert_status(201);
    let loc = r.header("location").unwrap().to_owned();
    let path = loc.strip_prefix(&app.base_url).unwrap_or(&loc).to_owned();

    // The slow PATCH takes the lease once its handler runs. A probe sent
    // before that may take the lease itself for a moment and turn the slow
    // one away with 423; then the pair is tried again. The probe carries a
    // wrong checksum, so a probe that gets the lease is refused (460) and
    // changes nothing.
    let mut attempt = 0;
    let (mut slow, r) = loop {
        attempt += 1;
        let mut slow = open_slow_patch(&app, token, &path, len).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = app
            .send(
                tus(&app, Method::PATCH, &loc, token)
                    .header("Upload-Offset", "0")
                    .header("Content-Type", "application/offset+octet-stream")
                    .header("Upload-Checksum", format!("sha1 {}", B64.encode([0u8; 20])))
                    .body(vec![9u8; 10]),
            )
            .await;
        if r.status.as_u16() == 423 {
            break (slow, r);
        }
        assert_eq!(r.status.as_u16(), 460, "{r}");
        let mut answer = String::new();
        let read =
            tokio::time::timeout(Duration::from_secs(2), slow.read_to_string(&mut answer)).await;
        assert!(
            answer.starts_with("HTTP/1.1 423") && attempt < 10,
            "no collision after {attempt} attempts; the slow PATCH said {read:?} {answer}"
        );
    };
    r.assert_problem(423, "upload_locked");
    assert_eq!(r.header("retry-after"), Some("1"), "{r}");
    assert_eq!(r.header("tus-resumable"), Some("1.0.0"));
    // Nothing changed: the colliding chunk was not written.
    assert_eq!(head_offset(&app, token, &loc).await, "0");

    // The first PATCH finishes and is acknowledged with the whole length.
    slow.write_all(&vec![7u8; len - len / 2]).await.unwrap();
    let mut answer = String::new();
    slow.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains(&format!("upload-offset: {len}")),
        "{answer}"
    );
    assert_eq!(head_offset(&app, token, &loc).await, len.to_string());
}

async fn delete_finished_upload(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = app.create_tenant("tus-delfin").await;
    let token = t.admin.token();
    let project = app.create_project(token, "Obra").await;
    let r = create(&app, token, project, 10).await;
    let loc = r.header("location").unwrap().to_owned();
    let id: Uuid = loc.rsplit('/').next().unwrap().parse().unwrap();
    patch(&app, token, &loc, 0, b"%PDF-1.4\n%".to_vec())
        .await
        .assert_status(204);
    let up = app.get(&format!("/v1/uploads/{id}"), token).await;
    up.assert_status(200);
    assert_eq!(up.json()["status"], "UPLOADED", "{up}");

    // A finished upload goes to the trash like DELETE /v1/uploads/{id}.
    let r = app.send(tus(&app, Method::DELETE, &loc, token)).await;
    r.assert_status(204);
    assert_eq!(r.header("tus-resumable"), Some("1.0.0"));
    // Trashed is gone for tus (1.0: 410 Gone), as the PATCH below.
    app.send(tus(&app, Method::HEAD, &loc, token))
        .await
        .assert_status(410);
    patch(&app, token, &loc, 10, vec![1])
        .await
        .assert_outcome(410);
    // The trash shows it and it can be restored as an ordinary upload.
    let r = app
        .send(app.request(
            Method::POST,
            &format!("/v1/uploads/{id}/restore"),
            Some(token),
        ))
        .await;
    assert!(r.status.is_success(), "{r}");
}

/// What a pending tus upload holds besides its row: staging files under
/// the app's data dir (local store: `blobs/staging`), or on S3 the tail
/// objects next to the upload's original.
async fn staged(app: &TestApp, tenant: Uuid, project: Uuid, id: Uuid) -> usize {
    if app.on_s3() {
        let prefix = format!("tenants/{tenant}/projects/{project}/uploads/{id}/");
        let objects = app.blobs.list(&prefix).await.unwrap();
        return objects
            .iter()
            .filter(|(k, _)| k.as_str().contains("tus-staging-tail-"))
            .count();
    }
    fn walk(dir: &std::path::Path, in_staging: bool, n: &mut usize) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let staging = in_staging || e.file_name() == "staging";
            if path.is_dir() {
                walk(&path, staging, n);
            } else if staging {
                *n += 1;
            }
        }
    }
    let mut n = 0;
    walk(&app.config.data_dir, false, &mut n);
    n
}

async fn sweeper_expires_tus_upload(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        // Only the sweep below runs in the test's time.
        c.sweep_interval = Duration::from_secs(3600);
    })
    .await;
    let t = app.create_tenant("tus-expiry").await;
    let token = t.admin.token();
    let project = app.create_project(token, "Obra").await;
    let r = create(&app, token, project, 100).await;
    r.assert_status(201);
    let loc = r.header("location").unwrap().to_owned();
    let id: Uuid = loc.rsplit('/').next().unwrap().parse().unwrap();
    assert_eq!(staged(&app, t.id, project, id).await, 0);
    patch(&app, token, &loc, 0, vec![5u8; 40])
        .await
        .assert_status(204);
    assert_eq!(staged(&app, t.id, project, id).await, 1);

    // Straight in the database: the tus expiry is 24 h after creation and
    // the app runs on the system clock.
    let expired = testing::expire_upload(app.config.database.url.expose_secret(), t.id, id)
        .await
        .unwrap();
    assert!(expired, "no upload {id} to expire");
    // The sweep (which also drops the cached upload the direct write above
    // left behind) expires it.
    let report = app.service.sweep(100).await.expect("sweep");
    assert_eq!(report.expired, 1, "{report:?}");
    let up = app.get(&format!("/v1/uploads/{id}"), token).await;
    up.assert_status(200);
    assert_eq!(up.json()["status"], "EXPIRED", "{up}");
    assert_eq!(
        staged(&app, t.id, project, id).await,
        0,
        "the staged bytes were not removed"
    );
    app.send(tus(&app, Method::HEAD, &loc, token))
        .await
        .assert_status(410);
    patch(&app, token, &loc, 40, vec![5u8; 10])
        .await
        .assert_status(410);
}

/// The state a process leaves when it dies right after storing an upload's
/// last bytes and advancing its offset, before finishing it: all bytes
/// staged, offset = length, still `PENDING`, its lease live for [`LEASE`].
/// Written through the ports (on local disk: staging is a file there).
async fn die_after_the_last_byte(app: &TestApp, tenant: Uuid, id: Uuid, len: usize) {
    use buildpeer_core::blob::ObjectKey;
    use buildpeer_core::ids::{TenantId, UploadId};
    use futures_util::StreamExt as _;
    let (tenant, id) = (TenantId::from_uuid(tenant), UploadId::from_uuid(id));
    let tus = app.store.tus_get(tenant, id).await.unwrap().unwrap();
    let staging = ObjectKey::parse(&tus.staging_key).unwrap();
    let dead = Uuid::now_v7();
    let now = chrono::Utc::now();
    let lease = buildpeer_core::service::tus::LEASE;
    assert!(
        app.store
            .tus_lock(tenant, id, dead, now + lease, now)
            .await
            .unwrap()
    );
    let body = futures_util::stream::once(async move { Ok(bytes::Bytes::from(vec![9u8; len])) });
    app.blobs
        .staging_append(&staging, 0, body.boxed())
        .await
        .unwrap();
    assert!(
        app.store
            .tus_advance(tenant, id, dead, 0, len as u64, &[], now)
            .await
            .unwrap()
    );
}

/// A finished upload whose process died before finishing it is never left
/// `PENDING`: a HEAD answers 423 (tus clients ask again) while the dead
/// process's lease is live, then finishes it; and the sweeper finishes one
/// no client asks about, even once it is due to expire.
#[tokio::test]
async fn uploads_left_complete_by_a_dead_process_are_finished() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.sweep_interval = Duration::from_secs(3600);
    })
    .await;
    let t = app.create_tenant("tus-dead").await;
    let token = t.admin.token();
    let project = app.create_project(token, "Obra").await;
    let mut uploads = Vec::new();
    for _ in 0..2 {
        let r = create(&app, token, project, 100).await;
        r.assert_status(201);
        let loc = r.header("location").unwrap().to_owned();
        let id: Uuid = loc.rsplit('/').next().unwrap().parse().unwrap();
        die_after_the_last_byte(&app, t.id, id, 100).await;
        uploads.push((loc, id));
    }
    let status = |id: Uuid| {
        let app = &app;
        async move { app.get(&format!("/v1/uploads/{id}"), token).await.json()["status"].clone() }
    };

    // The client's retry: HEAD. Locked while the lease lives...
    let (loc, id) = &uploads[0];
    let r = app.send(tus(&app, Method::HEAD, loc, token)).await;
    r.assert_status(423);
    assert_eq!(status(*id).await, "PENDING");
    // ...and within the lease (plus a poll) the next HEAD finishes it.
    let lease = buildpeer_core::service::tus::LEASE.to_std().unwrap();
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    let r = app.send(tus(&app, Method::HEAD, loc, token)).await;
    r.assert_status(200);
    assert_eq!(r.header("upload-offset"), Some("100"));
    assert_eq!(status(*id).await, "UPLOADED");

    // No client comes back for the other; it is also due to expire.
    let (_, id) = &uploads[1];
    assert!(
        testing::expire_upload(app.config.database.url.expose_secret(), t.id, *id)
            .await
            .unwrap()
    );
    let report = app.service.sweep(100).await.expect("sweep");
    assert_eq!((report.finished, report.expired), (1, 0), "{report:?}");
    assert_eq!(status(*id).await, "UPLOADED");
}

/// A user whose request quota is nearly spent still uploads: tus HEADs and
/// PATCHes and the download redirects count against no request quota. What
/// bounds uploads is the places in flight: past the per-user bound a PATCH
/// gets 429 `too_many_uploads` with `Retry-After: 1`, past the tenant's a
/// PUT to a local signed URL too, and a place is free again when one ends.
async fn uploads_count_against_no_request_quota_but_are_bounded_in_flight(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        // One request a minute refills: the burst is all the test has.
        c.cache.limits.user = buildpeer_core::cache::RateQuota {
            per_minute: 1,
            burst: 6,
        };
        c.cache.limits.uploads_per_user = 2;
        c.cache.limits.uploads_per_tenant = 2;
    })
    .await;
    let t = app.create_tenant("tus-quota").await;
    let token = t.admin.token();
    let project = app.create_project(token, "Obra").await;
    let mut locs = Vec::new();
    for _ in 0..3 {
        let r = create(&app, token, project, 64 * 1024).await;
        r.assert_status(201);
        locs.push(r.header("location").unwrap().to_owned());
    }
    let signed = app
        .post(
            &format!("/v1/projects/{project}/uploads"),
            Some(token),
            &serde_json::json!({"filename": "a.jpg", "content_type": "image/jpeg", "size": 100}),
        )
        .await;
    signed.assert_status(201);
    let signed = signed.json()["upload"].clone();
    let put_signed = || {
        let mut rb = app
            .client
            .put(signed["url"].as_str().unwrap())
            .body(vec![7u8; 100]);
        for (k, v) in signed["headers"].as_object().unwrap() {
            rb = rb.header(k.as_str(), v.as_str().unwrap());
        }
        app.send(rb)
    };
    // Five of the six requests are spent; sixty data requests follow.
    let id = locs[0].rsplit('/').next().unwrap().to_owned();
    for i in 0..20u64 {
        let r = app.send(tus(&app, Method::HEAD, &locs[0], token)).await;
        r.assert_status(200);
        patch(&app, token, &locs[0], i * 100, vec![1u8; 100])
            .await
            .assert_status(204);
        app.get(&format!("/v1/uploads/{id}/content"), token)
            .await
            .assert_problem(409, "upload_incomplete");
    }
    app.get("/v1/me", token).await.assert_status(200);

    // Two uploads in flight (slow PATCHes waiting for their bodies)...
    let path = |loc: &str| loc.strip_prefix(&app.base_url).unwrap_or(loc).to_owned();
    let slow_a = open_slow_patch(&app, token, &path(&locs[1]), 64 * 1024).await;
    let slow_b = open_slow_patch(&app, token, &path(&locs[2]), 64 * 1024).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ...so a third is refused, with when to come back.
    let refused = patch(&app, token, &locs[0], 2000, vec![1u8; 100]).await;
    refused.assert_problem(429, "too_many_uploads");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(
        refused.header("ratelimit-policy"),
        Some("\"uploads_user\";q=2")
    );
    // A local signed PUT takes a place among the tenant's (on S3 the PUT
    // goes to S3, which this process does not serve).
    if !app.on_s3() {
        let refused = put_signed().await;
        refused.assert_problem(429, "too_many_uploads");
        assert_eq!(
            refused.header("ratelimit-policy"),
            Some("\"uploads_tenant\";q=2")
        );
    }
    // One ends (its client goes away): its place is free.
    drop(slow_a);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = patch(&app, token, &locs[0], 2000, vec![1u8; 100]).await;
        if r.status.as_u16() == 204 {
            assert!(
                r.header("ratelimit-policy")
                    .is_some_and(|p| p.contains("uploads_user"))
            );
            break;
        }
        assert_eq!(r.status.as_u16(), 429, "{r}");
        assert!(std::time::Instant::now() < deadline, "no place freed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(slow_b);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = put_signed().await;
        if r.status.is_success() {
            break;
        }
        assert_eq!(r.status.as_u16(), 429, "{r}");
        assert!(std::time::Instant::now() < deadline, "no place freed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
