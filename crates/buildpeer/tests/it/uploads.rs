//! The upload lifecycle over real HTTP on both deployments: `sqlite` (SQLite
//! and the local disk, whose signed links this app serves at `/v1/blobs/…`)
//! and `postgres` (PostgreSQL and S3 on a real Garage, which checks its
//! presigned URLs itself). The client moves the bytes exactly as a phone
//! would: it initiates, PUTs to the signed URLs with the headers it was
//! given, completes, and downloads through the redirect. Covered: single and
//! multipart transfers, completion checks and idempotency, Idempotency-Key,
//! de-duplication, limits and quota, hostile filenames, attacks on the signed
//! URLs (wrong length, type, method, key, signature, expiry), roles and
//! tenant isolation, list filters and pages, trash, restore and purge, the
//! expiry sweeper, completions finished for a process that died, metrics,
//! and the local blob endpoint itself.

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use buildpeer_core::blob::{CompletedPart, ObjectKey, ObjectMeta};
use buildpeer_core::ids::{TenantId, UploadId};
use buildpeer_core::ports::TenantLimits;
use buildpeer_core::upload::Transfer;
use chrono::{DateTime, Utc};
use common::{Backend, Resp, TestApp, TestTenant, TestUser, uuid};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

scenarios!(
    single_put_lifecycle,
    multipart_lifecycle,
    complete_is_checked_and_idempotent,
    idempotency_keys,
    deduplication,
    limits_and_bad_input,
    filenames_are_metadata_only,
    signed_put_refusals,
    roles_and_tenants,
    list_filters_and_pages,
    trash_and_restore,
    trash_is_purged,
    pending_uploads_expire,
    completions_survive_a_crash,
    upload_metrics,
    local_blob_endpoint,
);

const MIB: u64 = 1024 * 1024;

/// Real job-site photos (JPEG with GPS EXIF), read from the shared test data
/// next to the repository; never copied into it.
const PHOTO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/photos/jpeg/gps/DSCN0010.jpg"
);
const PHOTO_2: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/photos/jpeg/gps/DSCN0012.jpg"
);

/// How long a test waits for something the app does in the background.
const WAIT: Duration = Duration::from_secs(30);

// ---- Helpers -----------------------------------------------------------------

fn photo(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `len` deterministic pseudo-random bytes (xorshift64*): incompressible,
/// and each part of a multipart file differs from the others.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a timestamp: {v}"))
}

/// A query-string value: RFC 3339 timestamps carry `+` and `:`.
fn q(s: &str) -> String {
    s.replace('%', "%25")
        .replace('+', "%2B")
        .replace(':', "%3A")
}

/// The body of an initiation that declares `bytes`.
fn declare(filename: &str, content_type: &str, bytes: &[u8]) -> Value {
    json!({
        "filename": filename,
        "content_type": content_type,
        "size": bytes.len(),
        "sha256": sha256_hex(bytes),
    })
}

fn uploads_of(project: Uuid) -> String {
    format!("/v1/projects/{project}/uploads")
}

async fn initiate(
    app: &TestApp,
    token: &str,
    project: Uuid,
    body: &Value,
    idempotency_key: Option<&str>,
) -> Resp {
    let mut rb = app
        .request(Method::POST, &uploads_of(project), Some(token))
        .json(body);
    if let Some(key) = idempotency_key {
        rb = rb.header("Idempotency-Key", key);
    }
    app.send(rb).await
}

/// Initiates an upload that must be created (201); returns its answer.
async fn start(app: &TestApp, token: &str, project: Uuid, body: &Value) -> Value {
    let resp = initiate(app, token, project, body, None).await;
    resp.assert_status(201);
    resp.json()
}

async fn complete(app: &TestApp, token: &str, id: Uuid, body: Option<&Value>) -> Resp {
    app.call(
        Method::POST,
        &format!("/v1/uploads/{id}/complete"),
        Some(token),
        body,
    )
    .await
}

async fn get_upload(app: &TestApp, token: &str, id: Uuid) -> Value {
    let resp = app.get(&format!("/v1/uploads/{id}"), token).await;
    resp.assert_status(200);
    resp.json()
}

/// What storage (or the local blob endpoint) answered, body as bytes.
struct Raw {
    what: String,
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl std::fmt::Display for Raw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = &self.body[..self.body.len().min(400)];
        write!(
            f,
            "{} -> {}: {}",
            self.what,
            self.status,
            String::from_utf8_lossy(shown)
        )
    }
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Whether the body holds `needle` anywhere.
    fn leaks(&self, needle: &[u8]) -> bool {
        !needle.is_empty() && self.body.windows(needle.len()).any(|w| w == needle)
    }
}

/// Sends a request to storage (or the local blob endpoint) without any
/// credential of ours.
async fn raw(rb: reqwest::RequestBuilder) -> Raw {
    try_raw(rb).await.unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`raw`], with a connection that ends without an answer as an error.
async fn try_raw(rb: reqwest::RequestBuilder) -> Result<Raw, String> {
    let req = rb.build().expect("request");
    let what = format!("{} {}", req.method(), req.url().path());
    // A connection of its own: Garage closes a connection after some
    // refusals without saying so, and a pooled one could be that one.
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .timeout(common::REQUEST_TIMEOUT)
        .build()
        .expect("HTTP client");
    let resp = client
        .execute(req)
        .await
        .map_err(|e| format!("{what}: {e:?}"))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("{what}: reading the body: {e}"))?
        .to_vec();
    Ok(Raw {
        what,
        status,
        headers,
        body,
    })
}

/// A PUT of `body` with the given Content-Type; the client sets the
/// Content-Length of the body it really sends.
fn put_request(
    app: &TestApp,
    url: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> reqwest::RequestBuilder {
    let mut rb = app.client.put(url);
    if let Some(ct) = content_type {
        rb = rb.header("Content-Type", ct);
    }
    rb.body(body)
}

/// Sends a PUT storage must refuse (see [`assert_refused`]). Garage answers
/// a refused PUT as soon as it has read the headers and closes the
/// connection without reading the body; a client still sending the body may
/// then see the connection end without the answer, which refuses the PUT all
/// the same (the callers check that nothing was stored). This app's own
/// endpoint must always answer.
async fn assert_put_refused(
    app: &TestApp,
    rb: reqwest::RequestBuilder,
    local_code: &str,
    s3_status: u16,
) {
    match try_raw(rb).await {
        Ok(r) => assert_refused(app, &r, local_code, s3_status),
        Err(e) if app.on_s3() => {
            eprintln!("note: Garage closed the connection instead of answering {s3_status}: {e}");
        }
        Err(e) => panic!("{e}"),
    }
}

/// A PUT of `body` to a single-PUT upload's URL with exactly the headers
/// the instructions list, as a client must send it.
fn signed_put_request(
    app: &TestApp,
    instructions: &Value,
    body: Vec<u8>,
) -> reqwest::RequestBuilder {
    assert_eq!(instructions["method"], "PUT", "{instructions}");
    let mut rb = app.client.put(instructions["url"].as_str().unwrap());
    for (name, value) in instructions["headers"].as_object().unwrap() {
        rb = rb.header(name.as_str(), value.as_str().unwrap());
    }
    rb.body(body)
}

/// Sends [`signed_put_request`].
async fn put_signed(app: &TestApp, instructions: &Value, body: Vec<u8>) -> Raw {
    raw(signed_put_request(app, instructions, body)).await
}

/// PUTs `body` with the given Content-Type (see [`put_request`]).
async fn put_as(app: &TestApp, url: &str, content_type: Option<&str>, body: Vec<u8>) -> Raw {
    raw(put_request(app, url, content_type, body)).await
}

/// Initiates, sends the bytes and completes; returns the completed upload.
async fn upload(app: &TestApp, token: &str, project: Uuid, name: &str, bytes: &[u8]) -> Value {
    let started = start(app, token, project, &declare(name, "image/jpeg", bytes)).await;
    let put = put_signed(app, &started["upload"], bytes.to_vec()).await;
    assert_eq!(put.status, 200, "{put}");
    let resp = complete(app, token, uuid(&started["id"]), None).await;
    resp.assert_status(200);
    let done = resp.json();
    assert_eq!(done["status"], "UPLOADED", "{done}");
    done
}

/// The signed download URL `/content` redirects to.
async fn download_url(app: &TestApp, token: &str, id: Uuid) -> String {
    let resp = app.get(&format!("/v1/uploads/{id}/content"), token).await;
    resp.assert_status(307);
    assert_eq!(resp.header("cache-control"), Some("no-store"), "{resp}");
    resp.header("location").expect("Location").to_owned()
}

/// Downloads through the redirect, as a browser would (no token on the
/// storage request).
async fn download(app: &TestApp, token: &str, id: Uuid) -> Raw {
    let url = download_url(app, token, id).await;
    raw(app.client.get(url)).await
}

fn object_key(tenant: Uuid, project: Uuid, upload: Uuid) -> ObjectKey {
    ObjectKey::parse(&format!(
        "tenants/{tenant}/projects/{project}/uploads/{upload}/original"
    ))
    .expect("an object key")
}

/// What storage holds under `key`, asked through the blob store directly.
async fn stored(app: &TestApp, key: &ObjectKey) -> Option<ObjectMeta> {
    app.blobs.head(key).await.expect("HEAD on storage")
}

/// Files under `dir`, relative, recursively.
fn files_under(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                out.insert(rel.display().to_string());
            }
        }
    }
    out
}

/// The local store's files being written: none once every request is done.
fn local_temp_files(app: &TestApp) -> BTreeSet<String> {
    files_under(&app.config.data_dir.join("blobs").join("tmp"))
}

/// A refusal by storage. The local endpoint answers 403 with `local_code`;
/// S3 answers with its own XML error and `s3_status`: 403 for a signature
/// that does not match, but Garage answers 400 `InvalidRequest` for a
/// request it cannot even check (expired, a signed header missing).
#[track_caller]
fn assert_refused(app: &TestApp, r: &Raw, local_code: &str, s3_status: u16) {
    if app.on_s3() {
        assert_eq!(r.status.as_u16(), s3_status, "{r}");
        let body = String::from_utf8_lossy(&r.body);
        let code = if s3_status == 403 {
            "<Code>SignatureDoesNotMatch</Code>"
        } else {
            "<Code>InvalidRequest</Code>"
        };
        assert!(
            body.contains(code) || (s3_status == 403 && body.contains("<Code>AccessDenied</Code>")),
            "{r}"
        );
    } else {
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{r}");
        let body: Value = serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{r}: {e}"));
        assert_eq!(body["code"], local_code, "{r}");
    }
}

/// The URL with the first character of query parameter `name`'s value
/// changed (a hex digit or a decimal one).
fn tamper(url: &str, name: &str) -> String {
    let at = [format!("?{name}="), format!("&{name}=")]
        .iter()
        .find_map(|needle| url.find(needle.as_str()).map(|i| i + needle.len()))
        .unwrap_or_else(|| panic!("{name} not in {url}"));
    let c = url[at..].chars().next().expect("a value");
    let changed = match c {
        '9' => '1',
        'f' => '0',
        c if c.is_ascii_digit() || ('a'..'f').contains(&c) => (c as u8 + 1) as char,
        c => panic!("unexpected {c:?} in {name}"),
    };
    format!("{}{changed}{}", &url[..at], &url[at + 1..])
}

/// The signature parameter of this deployment's signed URLs.
fn sig_param(app: &TestApp) -> &'static str {
    if app.on_s3() {
        "X-Amz-Signature"
    } else {
        "sig"
    }
}

/// The expiry parameter of this deployment's signed URLs.
fn expiry_param(app: &TestApp) -> &'static str {
    if app.on_s3() { "X-Amz-Expires" } else { "exp" }
}

/// The ids of one page of a list route.
async fn list_ids(app: &TestApp, token: &str, path: &str) -> Vec<Uuid> {
    let resp = app.get(path, token).await;
    resp.assert_status(200);
    common::ids(resp.json()["items"].as_array().unwrap(), "id")
}

/// Polls `check` every 100 ms until it holds, within [`WAIT`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sleeps until the wall clock is past `t` by a second (signed URLs count
/// whole seconds), polling rather than guessing.
async fn wait_past(t: DateTime<Utc>) {
    let deadline = Instant::now() + WAIT;
    while Utc::now() < t + chrono::Duration::seconds(1) {
        assert!(Instant::now() < deadline, "the clock did not reach {t}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A tenant, a project of it, and members of each role but admin.
struct World {
    app: TestApp,
    acme: TestTenant,
    project: Uuid,
    supervisor: TestUser,
    empleado: TestUser,
    viewer: TestUser,
}

async fn world(app: TestApp) -> World {
    let acme = app.create_tenant("acme").await;
    let admin = acme.admin.token().to_owned();
    let project = app.create_project(&admin, "Torre Norte").await;
    let supervisor = app.create_user(&acme, "supervisor").await;
    let empleado = app.create_user(&acme, "empleado").await;
    let viewer = app.create_user(&acme, "viewer").await;
    for u in [&supervisor, &empleado, &viewer] {
        app.add_member(&admin, project, u.id).await;
    }
    World {
        app,
        acme,
        project,
        supervisor,
        empleado,
        viewer,
    }
}

// ---- Scenarios ---------------------------------------------------------------

async fn single_put_lifecycle(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_tenant("acme").await;
    let token = acme.admin.token();
    let project = app.create_project(token, "Torre Norte").await;
    let bytes = photo(PHOTO);
    let size = bytes.len() as u64;

    let before = Utc::now();
    let resp = initiate(
        &app,
        token,
        project,
        &declare("DSCN0010.jpg", "image/jpeg", &bytes),
        None,
    )
    .await;
    resp.assert_status(201);
    let started = resp.json();
    let id = uuid(&started["id"]);
    assert_eq!(
        resp.header("location"),
        Some(format!("/v1/uploads/{id}").as_str())
    );
    assert_eq!(started["status"], "PENDING");
    assert_eq!(started["project_id"], project.to_string());
    assert_eq!(started["uploaded_by"], acme.admin.id.to_string());
    assert_eq!(started["filename"], "DSCN0010.jpg");
    assert_eq!(started["content_type"], "image/jpeg");
    assert_eq!(started["size"], size);
    assert_eq!(started["sha256"], sha256_hex(&bytes));
    assert_eq!(started["deduplicated"], false);
    for absent in ["uploaded_at", "deleted_at", "error"] {
        assert!(started[absent].is_null(), "{absent}: {started}");
    }
    let put = &started["upload"];
    assert_eq!(put["method"], "PUT", "{started}");
    assert_eq!(
        put["headers"],
        json!({ "Content-Type": "image/jpeg", "Content-Length": size.to_string() })
    );
    // The URL expires with the upload (in whole seconds), in about an hour.
    let url_expires = time(&put["expires_at"]);
    assert!(url_expires <= time(&started["expires_at"]), "{started}");
    assert!(
        url_expires > before + chrono::Duration::minutes(59),
        "{started}"
    );
    // The object key is the server's: tenant, project and upload ids.
    let url = put["url"].as_str().unwrap();
    let key = object_key(acme.id, project, id);
    assert!(url.contains(key.as_str()), "{url}");
    if app.on_s3() {
        assert!(url.contains("X-Amz-Signature="), "{url}");
    } else {
        assert!(url.starts_with(&app.url("/v1/blobs/")), "{url}");
    }
    assert!(stored(&app, &key).await.is_none());

    let sent = put_signed(&app, put, bytes.clone()).await;
    assert_eq!(sent.status, 200, "{sent}");
    let etag = sent.header("etag").expect("an ETag").to_owned();
    assert!(etag.len() > 2, "{sent}");
    // The ETag the client got is the stored object's.
    let meta = stored(&app, &key).await.expect("the object");
    assert_eq!(meta.size, size);
    assert_eq!(meta.etag.as_deref(), Some(etag.as_str()));

    let resp = complete(&app, token, id, None).await;
    resp.assert_status(200);
    let done = resp.json();
    assert_eq!(done["id"], id.to_string());
    assert_eq!(done["status"], "UPLOADED");
    assert_eq!(done["size"], size);
    assert!(done.get("upload").is_none(), "{done}");
    let uploaded_at = time(&done["uploaded_at"]);
    assert!(uploaded_at >= time(&done["created_at"]), "{done}");
    assert_eq!(get_upload(&app, token, id).await, done);

    // The download: a redirect to a short-lived signed URL that serves the
    // same bytes as an attachment of the recorded type.
    app.call(
        Method::GET,
        &format!("/v1/uploads/{id}/content"),
        None,
        None,
    )
    .await
    .assert_problem(401, "unauthorized");
    let location = download_url(&app, token, id).await;
    let got = raw(app.client.get(&location)).await;
    assert_eq!(got.status, 200, "{got}");
    assert_eq!(sha256_hex(&got.body), sha256_hex(&bytes));
    assert_eq!(got.header("content-type"), Some("image/jpeg"), "{got}");
    let disposition = got.header("content-disposition").unwrap_or_default();
    assert!(
        disposition.starts_with("attachment;") && disposition.contains("filename=\"DSCN0010.jpg\""),
        "{disposition}"
    );
    if app.on_s3() {
        assert!(
            location.contains("response-content-type=image%2Fjpeg")
                && location.contains("response-content-disposition=attachment"),
            "{location}"
        );
    } else {
        assert!(location.starts_with(&app.url("/v1/blobs/")), "{location}");
        assert_eq!(got.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(
            got.header("content-length"),
            Some(size.to_string().as_str())
        );
    }
}

async fn multipart_lifecycle(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.uploads.multipart_threshold = 6 * MIB).await;
    assert_eq!(app.config.uploads.min_part_size, 8 * MIB);
    let acme = app.create_tenant("acme").await;
    let token = acme.admin.token();
    let project = app.create_project(token, "Torre Norte").await;
    let data = noise(20 * MIB as usize, 7);

    let started = start(
        &app,
        token,
        project,
        &declare("plano.tiff", "image/tiff", &data),
    )
    .await;
    let id = uuid(&started["id"]);
    let plan = &started["upload"];
    assert_eq!(plan["method"], "MULTIPART", "{started}");
    assert_eq!(plan["part_size"], 8 * MIB);
    assert!(time(&plan["expires_at"]) <= time(&started["expires_at"]));
    let parts = plan["parts"].as_array().unwrap().clone();
    let numbers: Vec<u64> = parts
        .iter()
        .map(|p| p["number"].as_u64().unwrap())
        .collect();
    let sizes: Vec<u64> = parts.iter().map(|p| p["size"].as_u64().unwrap()).collect();
    assert_eq!(numbers, [1, 2, 3]);
    assert_eq!(sizes, [8 * MIB, 8 * MIB, 4 * MIB]);
    let urls: Vec<String> = parts
        .iter()
        .map(|p| p["url"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(urls.iter().collect::<BTreeSet<_>>().len(), 3, "{urls:?}");
    let key = object_key(acme.id, project, id);
    assert!(urls.iter().all(|u| u.contains(key.as_str())), "{urls:?}");

    // A multipart upload completes with its parts, nothing else.
    complete(&app, token, id, None)
        .await
        .assert_invalid_field("parts", "required");
    complete(&app, token, id, Some(&json!({})))
        .await
        .assert_invalid_field("parts", "required");

    let chunk = |n: usize| {
        let start = n * 8 * MIB as usize;
        data[start..(start + 8 * MIB as usize).min(data.len())].to_vec()
    };
    // A part of another length than signed is refused.
    assert_put_refused(
        &app,
        put_request(&app, &urls[2], None, chunk(0)),
        "length_mismatch",
        403,
    )
    .await;

    let mut etags = Vec::new();
    for (n, url) in urls.iter().enumerate().take(2) {
        let sent = put_as(&app, url, None, chunk(n)).await;
        assert_eq!(sent.status, 200, "{sent}");
        etags.push(sent.header("etag").expect("an ETag").to_owned());
    }
    let list = |etags: &[(u64, &str)]| {
        let parts: Vec<Value> = etags
            .iter()
            .map(|(n, e)| json!({ "number": n, "etag": e }))
            .collect();
        json!({ "parts": parts })
    };
    // Storage does not have part 3 yet: the upload stays pending.
    let fake = "\"0123456789abcdef0123456789abcdef\"";
    complete(
        &app,
        token,
        id,
        Some(&list(&[(1, &etags[0]), (2, &etags[1]), (3, fake)])),
    )
    .await
    .assert_problem(409, "upload_incomplete");
    assert_eq!(get_upload(&app, token, id).await["status"], "PENDING");

    let sent = put_as(&app, &urls[2], None, chunk(2)).await;
    assert_eq!(sent.status, 200, "{sent}");
    etags.push(sent.header("etag").expect("an ETag").to_owned());
    let (e1, e2, e3) = (etags[0].as_str(), etags[1].as_str(), etags[2].as_str());

    // Malformed part lists: refused before storage sees them.
    for bad in [
        list(&[(1, e1), (2, e2)]),
        list(&[(2, e2), (1, e1), (3, e3)]),
        list(&[(1, e1), (3, e3), (2, e2)]),
        list(&[(1, e1), (1, e1), (3, e3)]),
        list(&[(1, e1), (2, e2), (3, e3), (4, e3)]),
        list(&[(1, e1), (2, ""), (3, e3)]),
        json!({ "parts": [] }),
    ] {
        complete(&app, token, id, Some(&bad))
            .await
            .assert_invalid_field("parts", "invalid_parts");
    }
    // Well-formed, but storage holds other ETags: still incomplete.
    for wrong in [
        list(&[(1, e1), (2, e1), (3, e3)]),
        list(&[(1, e1), (2, e2), (3, fake)]),
    ] {
        complete(&app, token, id, Some(&wrong))
            .await
            .assert_problem(409, "upload_incomplete");
    }
    complete(
        &app,
        token,
        id,
        Some(&json!({ "parts": [{ "number": 1 }] })),
    )
    .await
    .assert_status(422);
    let pending = get_upload(&app, token, id).await;
    assert_eq!(pending["status"], "PENDING");
    assert!(pending["uploaded_at"].is_null());
    assert_eq!(app.count_jobs_of_upload(id).await, 0);

    let good = list(&[(1, e1), (2, e2), (3, e3)]);
    let resp = complete(&app, token, id, Some(&good)).await;
    resp.assert_status(200);
    let done = resp.json();
    assert_eq!(done["status"], "UPLOADED");
    assert_eq!(done["size"], 20 * MIB);
    // Repeating it (a retried request) answers the same.
    let again = complete(&app, token, id, Some(&good)).await;
    again.assert_status(200);
    assert_eq!(again.json(), done);
    assert_eq!(app.count_jobs_of_upload(id).await, 1);
    assert_eq!(stored(&app, &key).await.map(|m| m.size), Some(20 * MIB));

    let got = download(&app, token, id).await;
    assert_eq!(got.status, 200, "{got}");
    assert_eq!(got.body.len(), data.len());
    assert_eq!(sha256_hex(&got.body), sha256_hex(&data));
    assert_eq!(got.header("content-type"), Some("image/tiff"));
    if !app.on_s3() {
        assert!(local_temp_files(&app).is_empty());
    }
}

async fn complete_is_checked_and_idempotent(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_tenant("acme").await;
    let token = acme.admin.token();
    let project = app.create_project(token, "Torre Norte").await;
    let bytes = photo(PHOTO_2);

    let started = start(
        &app,
        token,
        project,
        &declare("a.jpg", "image/jpeg", &bytes),
    )
    .await;
    let id = uuid(&started["id"]);
    let before = get_upload(&app, token, id).await;
    // Before the bytes: refused, and the upload is exactly as it was.
    for _ in 0..2 {
        complete(&app, token, id, None)
            .await
            .assert_problem(409, "upload_incomplete");
    }
    assert_eq!(get_upload(&app, token, id).await, before);
    assert_eq!(app.count_jobs_of_upload(id).await, 0);
    // Nothing to download yet.
    app.get(&format!("/v1/uploads/{id}/content"), token)
        .await
        .assert_problem(409, "upload_incomplete");
    // A single PUT takes no parts.
    let sent = put_signed(&app, &started["upload"], bytes.clone()).await;
    assert_eq!(sent.status, 200, "{sent}");

    let first = complete(&app, token, id, None).await;
    first.assert_status(200);
    let done = first.json();
    assert_eq!(done["status"], "UPLOADED");
    for body in [None, Some(json!({})), None] {
        let again = complete(&app, token, id, body.as_ref()).await;
        again.assert_status(200);
        assert_eq!(again.json(), done);
    }
    assert_eq!(get_upload(&app, token, id).await, done);
    assert_eq!(app.count_jobs_of_upload(id).await, 1);

    // Racing completions of one upload: all succeed, one job.
    let other = noise(4096, 11);
    let started = start(
        &app,
        token,
        project,
        &declare("b.jpg", "image/jpeg", &other),
    )
    .await;
    let id = uuid(&started["id"]);
    let sent = put_signed(&app, &started["upload"], other).await;
    assert_eq!(sent.status, 200, "{sent}");
    let (a, b, c, d) = tokio::join!(
        complete(&app, token, id, None),
        complete(&app, token, id, None),
        complete(&app, token, id, None),
        complete(&app, token, id, None),
    );
    let answers: Vec<Value> = [a, b, c, d]
        .iter()
        .map(|r| {
            r.assert_status(200);
            r.json()
        })
        .collect();
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
    assert_eq!(app.count_jobs_of_upload(id).await, 1);
}

async fn idempotency_keys(backend: Backend) {
    let w = world(TestApp::spawn(backend).await).await;
    let (app, token) = (&w.app, w.acme.admin.token());
    let bytes = photo(PHOTO);
    let body = declare("DSCN0010.jpg", "image/jpeg", &bytes);

    let first = initiate(app, token, w.project, &body, Some("retry-7f3a")).await;
    first.assert_status(201);
    let first = first.json();
    let id = uuid(&first["id"]);
    // A retry gets the same upload, with instructions to send the bytes.
    let again = initiate(app, token, w.project, &body, Some("retry-7f3a")).await;
    again.assert_status(200);
    let again = again.json();
    assert_eq!(uuid(&again["id"]), id);
    assert_eq!(again["status"], "PENDING");
    assert_eq!(again["deduplicated"], false);
    assert_eq!(again["upload"]["method"], "PUT", "{again}");
    // The same key with another request is refused.
    let mut changed = body.clone();
    changed["filename"] = json!("other.jpg");
    initiate(app, token, w.project, &changed, Some("retry-7f3a"))
        .await
        .assert_invalid_field("idempotency_key", "idempotency_key_reused");
    let mut changed = body.clone();
    changed["size"] = json!(bytes.len() + 1);
    initiate(app, token, w.project, &changed, Some("retry-7f3a"))
        .await
        .assert_invalid_field("idempotency_key", "idempotency_key_reused");
    // Keys are per user: another user's same key is its own upload.
    let theirs = initiate(
        app,
        w.empleado.token(),
        w.project,
        &body,
        Some("retry-7f3a"),
    )
    .await;
    theirs.assert_status(201);
    let theirs = theirs.json();
    assert_ne!(uuid(&theirs["id"]), id);
    assert_eq!(theirs["uploaded_by"], w.empleado.id.to_string());
    // Without a key, the same body is a new upload.
    let fresh = initiate(app, token, w.project, &body, None).await;
    fresh.assert_status(201);
    assert_ne!(uuid(&fresh.json()["id"]), id);
    for bad in ["two words", "", &"k".repeat(256), "ñandú"] {
        initiate(app, token, w.project, &body, Some(bad))
            .await
            .assert_invalid_field("idempotency_key", "invalid_idempotency_key");
    }

    // Once completed, a replay returns the upload with nothing left to send.
    let sent = put_signed(app, &first["upload"], bytes.clone()).await;
    assert_eq!(sent.status, 200, "{sent}");
    complete(app, token, id, None).await.assert_status(200);
    let replay = initiate(app, token, w.project, &body, Some("retry-7f3a")).await;
    replay.assert_status(200);
    let replay = replay.json();
    assert_eq!(uuid(&replay["id"]), id);
    assert_eq!(replay["status"], "UPLOADED");
    assert!(replay.get("upload").is_none(), "{replay}");
}

async fn deduplication(backend: Backend) {
    let w = world(TestApp::spawn(backend).await).await;
    let (app, token) = (&w.app, w.acme.admin.token());
    let bytes = photo(PHOTO);
    let done = upload(app, token, w.project, "DSCN0010.jpg", &bytes).await;
    let id = uuid(&done["id"]);

    // The same photo again (even under another name): that upload, nothing to send.
    for name in ["DSCN0010.jpg", "copia.jpg"] {
        let resp = initiate(
            app,
            token,
            w.project,
            &declare(name, "image/jpeg", &bytes),
            None,
        )
        .await;
        resp.assert_status(200);
        let dup = resp.json();
        assert_eq!(dup["deduplicated"], true, "{dup}");
        assert_eq!(uuid(&dup["id"]), id);
        assert_eq!(dup["status"], "UPLOADED");
        assert_eq!(dup["filename"], "DSCN0010.jpg");
        assert!(dup.get("upload").is_none(), "{dup}");
    }
    let body = declare("DSCN0010.jpg", "image/jpeg", &bytes);
    // Another uploader, another project, or no hash: a new upload.
    let theirs = initiate(app, w.empleado.token(), w.project, &body, None).await;
    theirs.assert_status(201);
    let theirs = theirs.json();
    assert_eq!(theirs["deduplicated"], false);
    assert_ne!(uuid(&theirs["id"]), id);
    assert_eq!(theirs["upload"]["method"], "PUT");
    let elsewhere = app.create_project(token, "Puente Sur").await;
    let resp = initiate(app, token, elsewhere, &body, None).await;
    resp.assert_status(201);
    assert_ne!(uuid(&resp.json()["id"]), id);
    let mut unhashed = body.clone();
    unhashed.as_object_mut().unwrap().remove("sha256");
    let resp = initiate(app, token, w.project, &unhashed, None).await;
    resp.assert_status(201);
    assert_ne!(uuid(&resp.json()["id"]), id);
    // A copy still pending is no copy: the empleado starts over.
    let resp = initiate(app, w.empleado.token(), w.project, &body, None).await;
    resp.assert_status(201);
    assert_eq!(resp.json()["deduplicated"], false);
    // A copy in the trash is not reused either.
    app.delete(&format!("/v1/uploads/{id}"), token)
        .await
        .assert_status(204);
    let resp = initiate(app, token, w.project, &body, None).await;
    resp.assert_status(201);
    let new = resp.json();
    assert_ne!(uuid(&new["id"]), id);
    assert_eq!(new["deduplicated"], false);
}

async fn limits_and_bad_input(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.uploads.max_upload_bytes = MIB;
        c.uploads.quota_bytes = Some(2 * MIB);
    })
    .await;
    let acme = app.create_tenant("acme").await;
    let token = acme.admin.token();
    let project = app.create_project(token, "Torre Norte").await;
    let sized =
        |size: u64| json!({ "filename": "f.jpg", "content_type": "image/jpeg", "size": size });

    for ct in ["text/html", "image/svg+xml", "application/octet-stream", ""] {
        let body = json!({ "filename": "x.html", "content_type": ct, "size": 10 });
        initiate(&app, token, project, &body, None)
            .await
            .assert_problem(415, "unsupported_type");
    }
    // Type aliases are normalised.
    let resp = initiate(
        &app,
        token,
        project,
        &json!({ "filename": "a.jpg", "content_type": "image/JPG; q=1", "size": 10 }),
        None,
    )
    .await;
    resp.assert_status(201);
    let normalised = resp.json();
    assert_eq!(normalised["content_type"], "image/jpeg");
    assert_eq!(
        normalised["upload"]["headers"]["Content-Type"],
        "image/jpeg"
    );

    initiate(&app, token, project, &sized(MIB + 1), None)
        .await
        .assert_problem(413, "too_large");
    // Exactly the maximum is fine; pending uploads count toward the quota.
    initiate(&app, token, project, &sized(MIB), None)
        .await
        .assert_status(201);
    initiate(&app, token, project, &sized(MIB - 10), None)
        .await
        .assert_status(201);
    initiate(&app, token, project, &sized(1), None)
        .await
        .assert_problem(409, "quota_exceeded");

    // Per-tenant limits (`buildpeer tenant limits`) override the defaults.
    let beta = app.create_tenant("beta").await;
    app.service
        .set_tenant_limits(
            "beta",
            TenantLimits {
                max_upload_bytes: Some(1000),
                quota_bytes: Some(1500),
            },
        )
        .await
        .expect("set_tenant_limits");
    let beta_project = app.create_project(beta.admin.token(), "Obra").await;
    let beta_token = beta.admin.token();
    initiate(&app, beta_token, beta_project, &sized(1001), None)
        .await
        .assert_problem(413, "too_large");
    initiate(&app, beta_token, beta_project, &sized(1000), None)
        .await
        .assert_status(201);
    initiate(&app, beta_token, beta_project, &sized(501), None)
        .await
        .assert_problem(409, "quota_exceeded");
    initiate(&app, beta_token, beta_project, &sized(500), None)
        .await
        .assert_status(201);
    // A limit above the service's default is honoured too.
    let gamma = app.create_tenant("gamma").await;
    app.service
        .set_tenant_limits(
            "gamma",
            TenantLimits {
                max_upload_bytes: Some(3 * MIB),
                quota_bytes: Some(10 * MIB),
            },
        )
        .await
        .expect("set_tenant_limits");
    let gamma_project = app.create_project(gamma.admin.token(), "Obra").await;
    initiate(
        &app,
        gamma.admin.token(),
        gamma_project,
        &sized(3 * MIB),
        None,
    )
    .await
    .assert_status(201);

    // An archived project takes no uploads.
    let archived = app.create_project(token, "Terminada").await;
    app.delete(&format!("/v1/projects/{archived}"), token)
        .await
        .assert_status(204);
    initiate(&app, token, archived, &sized(10), None)
        .await
        .assert_problem(409, "project_archived");

    // Bad input: 422, every field at once.
    let fresh = app.create_project(token, "Vacía").await;
    let declared = |filename: &str, size: i64, sha: &str| {
        json!({
            "filename": filename,
            "content_type": "image/jpeg",
            "size": size,
            "sha256": sha,
        })
    };
    let good_sha = "a".repeat(64);
    initiate(&app, token, fresh, &declared("a.jpg", 0, &good_sha), None)
        .await
        .assert_invalid_field("size", "empty_file");
    for sha in ["abc", &"g".repeat(64), &"a".repeat(65), ""] {
        initiate(&app, token, fresh, &declared("a.jpg", 10, sha), None)
            .await
            .assert_invalid_field("sha256", "invalid_sha256");
    }
    for name in ["", "   ", "...", " .. "] {
        initiate(&app, token, fresh, &declared(name, 10, &good_sha), None)
            .await
            .assert_invalid_field("filename", "empty");
    }
    let all = initiate(&app, token, fresh, &declared("", 0, "zz"), None).await;
    all.assert_invalid_field("filename", "empty");
    all.assert_invalid_field("size", "empty_file");
    all.assert_invalid_field("sha256", "invalid_sha256");
    for body in [
        json!({ "filename": "a.jpg", "content_type": "image/jpeg", "size": -1 }),
        json!({ "filename": "a.jpg", "content_type": "image/jpeg", "size": "10" }),
        json!({ "filename": "a.jpg", "content_type": "image/jpeg" }),
        json!({ "filename": "a.jpg", "size": 10 }),
        json!({ "content_type": "image/jpeg", "size": 10 }),
        json!({ "filename": "a.jpg", "content_type": "image/jpeg", "size": 10, "key": "x/y" }),
    ] {
        initiate(&app, token, fresh, &body, None)
            .await
            .assert_problem(422, "validation_failed");
    }
    let resp = app
        .send(
            app.request(Method::POST, &uploads_of(fresh), Some(token))
                .header("content-type", "application/json")
                .body("{\"filename\":"),
        )
        .await;
    resp.assert_problem(400, "malformed_json");
    // Nothing of that was created.
    assert!(list_ids(&app, token, &uploads_of(fresh)).await.is_empty());
    // Bad ids in the path.
    app.get("/v1/uploads/not-a-uuid", token)
        .await
        .assert_status(404);
    app.get(&format!("/v1/uploads/{}", Uuid::now_v7()), token)
        .await
        .assert_problem(404, "not_found");
}

async fn filenames_are_metadata_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_tenant("acme").await;
    let token = acme.admin.token();
    let project = app.create_project(token, "Torre Norte").await;
    let cases = [
        ("../../x.jpg", "_.._x.jpg"),
        ("..\\..\\windows\\win.ini", "_.._windows_win.ini"),
        ("/etc/passwd", "_etc_passwd"),
        ("foto\u{0}obra.jpg", "foto_obra.jpg"),
        ("línea\n2.jpg", "línea_2.jpg"),
        (".bashrc", "bashrc"),
        ("tenants/other/original", "tenants_other_original"),
    ];
    for (given, kept) in cases {
        let bytes = noise(100, 3);
        let started = start(&app, token, project, &declare(given, "image/jpeg", &bytes)).await;
        let id = uuid(&started["id"]);
        assert_eq!(started["filename"], kept, "{given:?}");
        let url = started["upload"]["url"].as_str().unwrap();
        let key = object_key(acme.id, project, id);
        assert!(url.contains(&format!("{}?", key.as_str())), "{url}");
        assert_eq!(get_upload(&app, token, id).await["filename"], kept);
    }

    // The bytes land under the server's key, and the name only shows up,
    // defused, in the download's Content-Disposition.
    let bytes = photo(PHOTO);
    let started = start(
        &app,
        token,
        project,
        &declare("../../x.jpg", "image/jpeg", &bytes),
    )
    .await;
    let id = uuid(&started["id"]);
    let sent = put_signed(&app, &started["upload"], bytes.clone()).await;
    assert_eq!(sent.status, 200, "{sent}");
    complete(&app, token, id, None).await.assert_status(200);
    let key = object_key(acme.id, project, id);
    assert!(stored(&app, &key).await.is_some());
    let got = download(&app, token, id).await;
    assert_eq!(got.status, 200, "{got}");
    assert_eq!(sha256_hex(&got.body), sha256_hex(&bytes));
    let disposition = got.header("content-disposition").unwrap_or_default();
    assert_eq!(
        disposition,
        "attachment; filename=\"_.._x.jpg\"; filename*=UTF-8''_.._x.jpg"
    );
    // A name that is not plain ASCII: an ASCII fallback and the UTF-8 name.
    let done = upload(&app, token, project, "foto año \"1\";.jpg", &photo(PHOTO_2)).await;
    let got = download(&app, token, uuid(&done["id"])).await;
    assert_eq!(got.status, 200, "{got}");
    assert_eq!(
        got.header("content-disposition"),
        Some(
            "attachment; filename=\"foto a_o _1_;.jpg\"; filename*=UTF-8''foto%20a%C3%B1o%20%221%22%3B.jpg"
        ),
        "{got}"
    );
    if !app.on_s3() {
        let files = files_under(&app.config.data_dir);
        assert!(
            files.iter().all(|f| !f.contains("x.jpg")),
            "a user's filename became a path: {files:?}"
        );
        assert!(
            files.contains(&format!("blobs/objects/{}", key.as_str())),
            "{files:?}"
        );
    }
}

async fn signed_put_refusals(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_tenant("acme").await;
    let token = acme.admin.token();
    let project = app.create_project(token, "Torre Norte").await;
    let bytes = photo(PHOTO);
    let started = start(
        &app,
        token,
        project,
        &declare("a.jpg", "image/jpeg", &bytes),
    )
    .await;
    let id = uuid(&started["id"]);
    let put = &started["upload"];
    let url = put["url"].as_str().unwrap().to_owned();
    let key = object_key(acme.id, project, id);

    // The body must be the one signed: not longer, not shorter, not empty
    // (the client's Content-Length is that of the body it sends).
    let mut longer = bytes.clone();
    longer.push(0);
    assert_put_refused(
        &app,
        put_request(&app, &url, Some("image/jpeg"), longer),
        "length_mismatch",
        403,
    )
    .await;
    assert_put_refused(
        &app,
        put_request(
            &app,
            &url,
            Some("image/jpeg"),
            bytes[..bytes.len() - 1].to_vec(),
        ),
        "length_mismatch",
        403,
    )
    .await;
    if !app.on_s3() {
        // Much longer: this app's refusal still arrives as an answer, not as
        // a connection reset while the client is sending. (Garage closes
        // the connection on a large refused body; that is its business.)
        assert_put_refused(
            &app,
            put_request(&app, &url, Some("image/jpeg"), noise(16 * MIB as usize, 4)),
            "length_mismatch",
            403,
        )
        .await;
    }
    // (No body at all: the client sends no Content-Length, which Garage
    // refuses as malformed before looking at the signature.)
    let rb = put_request(&app, &url, Some("image/jpeg"), Vec::new());
    assert_put_refused(&app, rb, "length_mismatch", 400).await;
    // The type must be the one signed.
    assert_put_refused(
        &app,
        put_request(&app, &url, Some("text/html"), bytes.clone()),
        "content_type_mismatch",
        403,
    )
    .await;
    let rb = put_request(&app, &url, None, bytes.clone());
    assert_put_refused(&app, rb, "content_type_mismatch", 400).await;
    // A changed signature, or a stretched expiry, breaks the signature.
    assert_put_refused(
        &app,
        put_request(
            &app,
            &tamper(&url, sig_param(&app)),
            Some("image/jpeg"),
            bytes.clone(),
        ),
        "signature_invalid",
        403,
    )
    .await;
    assert_put_refused(
        &app,
        put_request(
            &app,
            &tamper(&url, expiry_param(&app)),
            Some("image/jpeg"),
            bytes.clone(),
        ),
        "signature_invalid",
        403,
    )
    .await;
    // The signature is for this key only.
    let other = start(
        &app,
        token,
        project,
        &declare("b.jpg", "image/jpeg", &bytes),
    )
    .await;
    let other_key = object_key(acme.id, project, uuid(&other["id"]));
    let moved = url.replace(key.as_str(), other_key.as_str());
    assert_ne!(moved, url);
    assert_put_refused(
        &app,
        put_request(&app, &moved, Some("image/jpeg"), bytes.clone()),
        "signature_invalid",
        403,
    )
    .await;
    // An upload URL does not read (Garage: the GET lacks the signed
    // Content-Length, a 400).
    let r = raw(app.client.get(&url)).await;
    assert_refused(&app, &r, "method_not_allowed", 400);

    // Nothing was stored: completing finds nothing.
    assert!(stored(&app, &key).await.is_none());
    assert!(stored(&app, &other_key).await.is_none());
    if !app.on_s3() {
        assert!(local_temp_files(&app).is_empty());
    }
    complete(&app, token, id, None)
        .await
        .assert_problem(409, "upload_incomplete");
    assert_eq!(get_upload(&app, token, id).await["status"], "PENDING");

    // The real PUT works, after all that.
    let sent = put_signed(&app, put, bytes.clone()).await;
    assert_eq!(sent.status, 200, "{sent}");
    complete(&app, token, id, None).await.assert_status(200);
    // Now there is something to leak: the upload URL still does not read.
    let r = raw(app.client.get(&url)).await;
    assert_refused(&app, &r, "method_not_allowed", 400);
    assert!(!r.leaks(&bytes[..64]), "the PUT URL served the object");
    // And the download URL does not write.
    let location = download_url(&app, token, id).await;
    let rb = put_request(&app, &location, Some("image/jpeg"), noise(bytes.len(), 5));
    assert_put_refused(&app, rb, "method_not_allowed", 403).await;
    // A tampered download URL does not read either.
    let r = raw(app.client.get(tamper(&location, sig_param(&app)))).await;
    assert_refused(&app, &r, "signature_invalid", 403);
    assert!(!r.leaks(&bytes[..64]));
    let got = raw(app.client.get(&location)).await;
    assert_eq!(got.status, 200, "{got}");
    assert_eq!(sha256_hex(&got.body), sha256_hex(&bytes));
}

async fn roles_and_tenants(backend: Backend) {
    let w = world(TestApp::spawn(backend).await).await;
    let app = &w.app;
    let admin = w.acme.admin.token();
    let bytes = photo(PHOTO);

    // An empleado member uploads.
    let done = upload(app, w.empleado.token(), w.project, "e.jpg", &bytes).await;
    let id = uuid(&done["id"]);
    assert_eq!(done["uploaded_by"], w.empleado.id.to_string());
    // A viewer member reads, lists and downloads, but does not upload or change.
    initiate(
        app,
        w.viewer.token(),
        w.project,
        &declare("v.jpg", "image/jpeg", &bytes),
        None,
    )
    .await
    .assert_problem(403, "forbidden");
    assert_eq!(get_upload(app, w.viewer.token(), id).await, done);
    assert_eq!(
        list_ids(app, w.viewer.token(), &uploads_of(w.project)).await,
        [id]
    );
    let got = download(app, w.viewer.token(), id).await;
    assert_eq!(got.status, 200, "{got}");
    let upload_path = format!("/v1/uploads/{id}");
    for (method, path) in [
        (Method::POST, format!("{upload_path}/complete")),
        (Method::DELETE, upload_path.clone()),
        (Method::POST, format!("{upload_path}/restore")),
    ] {
        app.call(method, &path, Some(w.viewer.token()), None)
            .await
            .assert_outcome(403);
    }
    // Another empleado member may not trash someone else's upload.
    let other_empleado = app.create_user(&w.acme, "empleado").await;
    app.add_member(admin, w.project, other_empleado.id).await;
    app.delete(&upload_path, other_empleado.token())
        .await
        .assert_outcome(403);
    // The uploader and the project's supervisor may.
    app.delete(&upload_path, w.empleado.token())
        .await
        .assert_status(204);
    app.call(
        Method::POST,
        &format!("{upload_path}/restore"),
        Some(w.supervisor.token()),
        None,
    )
    .await
    .assert_status(200);
    app.delete(&upload_path, w.supervisor.token())
        .await
        .assert_status(204);
    app.call(
        Method::POST,
        &format!("{upload_path}/restore"),
        Some(w.empleado.token()),
        None,
    )
    .await
    .assert_status(200);
    // A pending upload of the empleado, for the routes below.
    let pending = start(
        app,
        w.empleado.token(),
        w.project,
        &declare("p.jpg", "image/jpeg", &noise(10, 1)),
    )
    .await;
    let pending_id = uuid(&pending["id"]);

    // Not a member, or another tenant (even its admin): nothing exists.
    let outsider = app.create_user(&w.acme, "empleado").await;
    let beta = app.create_tenant("beta").await;
    for who in [outsider.token(), beta.admin.token()] {
        for target in [id, pending_id] {
            let path = format!("/v1/uploads/{target}");
            for (method, path) in [
                (Method::GET, path.clone()),
                (Method::GET, format!("{path}/content")),
                (Method::POST, format!("{path}/complete")),
                (Method::DELETE, path.clone()),
                (Method::POST, format!("{path}/restore")),
                (Method::GET, uploads_of(w.project)),
            ] {
                let resp = app.call(method, &path, Some(who), None).await;
                resp.assert_problem(404, "not_found");
                assert!(!resp.text.contains(&target.to_string()), "{resp}");
            }
        }
        initiate(
            app,
            who,
            w.project,
            &declare("x.jpg", "image/jpeg", &bytes),
            None,
        )
        .await
        .assert_problem(404, "not_found");
    }
    // Nothing changed for the owners.
    assert_eq!(get_upload(app, admin, id).await["status"], "UPLOADED");
    assert!(get_upload(app, admin, id).await["deleted_at"].is_null());
    assert_eq!(
        get_upload(app, admin, pending_id).await["status"],
        "PENDING"
    );
    // Unauthenticated: 401.
    app.call(Method::POST, &uploads_of(w.project), None, Some(&json!({})))
        .await
        .assert_problem(401, "unauthorized");
    app.call(Method::GET, &upload_path, None, None)
        .await
        .assert_problem(401, "unauthorized");
}

async fn list_filters_and_pages(backend: Backend) {
    let w = world(TestApp::spawn(backend).await).await;
    let app = &w.app;
    let admin = w.acme.admin.token();
    let empleado = w.empleado.token();
    let file = |seed: u64| noise(1000 + seed as usize, seed);

    let a1 = start(
        app,
        admin,
        w.project,
        &declare("a1.jpg", "image/jpeg", &file(1)),
    )
    .await;
    let a2 = upload(app, admin, w.project, "a2.jpg", &file(2)).await;
    let e1 = start(
        app,
        empleado,
        w.project,
        &declare("e1.jpg", "image/jpeg", &file(3)),
    )
    .await;
    let e2 = upload(app, empleado, w.project, "e2.jpg", &file(4)).await;
    let a3 = start(
        app,
        admin,
        w.project,
        &declare("a3.jpg", "image/jpeg", &file(5)),
    )
    .await;
    // Another project's upload never shows.
    let elsewhere = app.create_project(admin, "Puente Sur").await;
    start(
        app,
        admin,
        elsewhere,
        &declare("x.jpg", "image/jpeg", &file(6)),
    )
    .await;
    let [a1, a2, e1, e2, a3] = [&a1, &a2, &e1, &e2, &a3].map(|u| uuid(&u["id"]));
    // What the list answers is what was stored.
    let e1_stored = get_upload(app, admin, e1).await;
    let a2_stored = get_upload(app, admin, a2).await;
    let a3_stored = get_upload(app, admin, a3).await;

    let base = uploads_of(w.project);
    let resp = app.get(&base, admin).await;
    resp.assert_status(200);
    let body = resp.json();
    assert!(body["next_cursor"].is_null());
    let items = body["items"].as_array().unwrap();
    assert_eq!(common::ids(items, "id"), [a3, e2, e1, a2, a1]);
    assert_eq!(items[2], e1_stored);
    for (query, expected) in [
        ("status=UPLOADED".to_owned(), vec![e2, a2]),
        ("status=PENDING".to_owned(), vec![a3, e1, a1]),
        ("status=EXPIRED".to_owned(), vec![]),
        (format!("uploaded_by={}", w.empleado.id), vec![e2, e1]),
        (
            format!("uploaded_by={}&status=PENDING", w.acme.admin.id),
            vec![a3, a1],
        ),
        (format!("uploaded_by={}", w.viewer.id), vec![]),
        (
            format!("from={}", q(e1_stored["created_at"].as_str().unwrap())),
            vec![a3, e2, e1],
        ),
        (
            format!("to={}", q(e1_stored["created_at"].as_str().unwrap())),
            vec![a2, a1],
        ),
        (
            format!(
                "from={}&to={}",
                q(a2_stored["created_at"].as_str().unwrap()),
                q(a3_stored["created_at"].as_str().unwrap())
            ),
            vec![e2, e1, a2],
        ),
        (
            format!(
                "from={}&status=UPLOADED",
                q(e1_stored["created_at"].as_str().unwrap())
            ),
            vec![e2],
        ),
        ("deleted=true".to_owned(), vec![]),
    ] {
        assert_eq!(
            list_ids(app, admin, &format!("{base}?{query}")).await,
            expected,
            "{query}"
        );
    }
    // Pages, newest first; filters hold across pages.
    let pages: Vec<Vec<Uuid>> = app
        .pages(&base, admin, 2)
        .await
        .iter()
        .map(|p| common::ids(p, "id"))
        .collect();
    assert_eq!(pages, [vec![a3, e2], vec![e1, a2], vec![a1]]);
    let pages: Vec<Vec<Uuid>> = app
        .pages(&format!("{base}?status=PENDING"), w.viewer.token(), 2)
        .await
        .iter()
        .map(|p| common::ids(p, "id"))
        .collect();
    assert_eq!(pages, [vec![a3, e1], vec![a1]]);

    for status in ["DONE", "uploaded", ""] {
        app.get(&format!("{base}?status={status}"), admin)
            .await
            .assert_invalid_field("status", "unknown_status");
    }
    app.get(&format!("{base}?uploaded_by=nobody"), admin)
        .await
        .assert_invalid_field("uploaded_by", "invalid_id");
    for query in [
        "from=yesterday",
        "to=2026-13-01",
        "limit=0",
        "limit=101",
        "sort=asc",
        "cursor=zzz",
    ] {
        app.get(&format!("{base}?{query}"), admin)
            .await
            .assert_problem(422, "validation_failed");
    }
}

async fn trash_and_restore(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_tenant("acme").await;
    let token = acme.admin.token();
    let project = app.create_project(token, "Torre Norte").await;
    let bytes = photo(PHOTO);
    let done = upload(&app, token, project, "a.jpg", &bytes).await;
    let id = uuid(&done["id"]);
    let path = format!("/v1/uploads/{id}");
    let base = uploads_of(project);
    let trash = format!("{base}?deleted=true");

    let resp = app.delete(&path, token).await;
    resp.assert_status(204);
    assert!(resp.text.is_empty());
    assert!(list_ids(&app, token, &base).await.is_empty());
    assert_eq!(list_ids(&app, token, &trash).await, [id]);
    let trashed = get_upload(&app, token, id).await;
    let deleted_at = time(&trashed["deleted_at"]);
    assert_eq!(trashed["status"], "UPLOADED");
    app.get(&format!("{path}/content"), token)
        .await
        .assert_problem(409, "upload_deleted");
    // Trashing again changes nothing.
    app.delete(&path, token).await.assert_status(204);
    assert_eq!(get_upload(&app, token, id).await, trashed);
    // The bytes stay until the purge.
    let key = object_key(acme.id, project, id);
    assert!(stored(&app, &key).await.is_some());

    let resp = app
        .call(Method::POST, &format!("{path}/restore"), Some(token), None)
        .await;
    resp.assert_status(200);
    let restored = resp.json();
    assert!(restored["deleted_at"].is_null(), "{restored}");
    assert_eq!(restored["status"], "UPLOADED");
    assert!(time(&restored["updated_at"]) >= deleted_at);
    assert_eq!(list_ids(&app, token, &base).await, [id]);
    assert!(list_ids(&app, token, &trash).await.is_empty());
    let got = download(&app, token, id).await;
    assert_eq!(got.status, 200, "{got}");
    assert_eq!(sha256_hex(&got.body), sha256_hex(&bytes));
    // Restoring a live upload changes nothing.
    let again = app
        .call(Method::POST, &format!("{path}/restore"), Some(token), None)
        .await;
    again.assert_status(200);
    assert_eq!(again.json(), restored);

    // A trashed pending upload cannot be completed.
    let other = noise(500, 2);
    let started = start(
        &app,
        token,
        project,
        &declare("b.jpg", "image/jpeg", &other),
    )
    .await;
    let pending = uuid(&started["id"]);
    let sent = put_signed(&app, &started["upload"], other).await;
    assert_eq!(sent.status, 200, "{sent}");
    app.delete(&format!("/v1/uploads/{pending}"), token)
        .await
        .assert_status(204);
    complete(&app, token, pending, None)
        .await
        .assert_problem(409, "upload_deleted");
    assert_eq!(get_upload(&app, token, pending).await["status"], "PENDING");
}

async fn trash_is_purged(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.uploads.trash_retention = chrono::Duration::zero();
        c.uploads.multipart_threshold = 6 * MIB;
        c.sweep_interval = Duration::from_secs(1);
    })
    .await;
    let acme = app.create_tenant("acme").await;
    let token = acme.admin.token();
    let project = app.create_project(token, "Torre Norte").await;
    let bytes = photo(PHOTO);
    let done = upload(&app, token, project, "a.jpg", &bytes).await;
    let id = uuid(&done["id"]);
    let kept = upload(&app, token, project, "b.jpg", &photo(PHOTO_2)).await;
    let kept = uuid(&kept["id"]);
    let key = object_key(acme.id, project, id);
    let link = download_url(&app, token, id).await;
    let got = raw(app.client.get(&link)).await;
    assert_eq!(got.status, 200, "{got}");
    assert_eq!(app.count_jobs_of_upload(id).await, 1);

    // A multipart upload trashed half-way, while its URLs still work.
    let big = noise(10 * MIB as usize, 8);
    let multipart = start(
        &app,
        token,
        project,
        &declare("plano.tiff", "image/tiff", &big),
    )
    .await;
    let multipart_id = uuid(&multipart["id"]);
    let parts = multipart["upload"]["parts"].as_array().unwrap().clone();
    assert_eq!(parts.len(), 2);
    let sent = put_as(
        &app,
        parts[0]["url"].as_str().unwrap(),
        None,
        big[..8 * MIB as usize].to_vec(),
    )
    .await;
    assert_eq!(sent.status, 200, "{sent}");

    for trashed in [id, multipart_id] {
        app.delete(&format!("/v1/uploads/{trashed}"), token)
            .await
            .assert_status(204);
    }
    // The app's own sweeper (every second) purges them.
    let app_ref = &app;
    for trashed in [id, multipart_id] {
        eventually("the purge", || async move {
            app_ref
                .get(&format!("/v1/uploads/{trashed}"), token)
                .await
                .status
                == StatusCode::NOT_FOUND
        })
        .await;
    }
    // The multipart upload went with it: its part URLs find nothing to add
    // to (Garage may refuse by closing the connection, see assert_put_refused).
    let late = put_request(
        &app,
        parts[1]["url"].as_str().unwrap(),
        None,
        big[8 * MIB as usize..].to_vec(),
    );
    match try_raw(late).await {
        Ok(r) => assert_eq!(r.status, StatusCode::NOT_FOUND, "{r}"),
        Err(e) if app.on_s3() => eprintln!("note: Garage closed the connection: {e}"),
        Err(e) => panic!("{e}"),
    }
    assert!(stored(&app, &key).await.is_none());
    assert_eq!(app.count_jobs_of_upload(id).await, 0);
    let gone = raw(app.client.get(&link)).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{gone}");
    assert!(!gone.leaks(&bytes[..64]));
    assert!(
        list_ids(
            &app,
            token,
            &format!("{}?deleted=true", uploads_of(project))
        )
        .await
        .is_empty()
    );
    app.call(
        Method::POST,
        &format!("/v1/uploads/{id}/restore"),
        Some(token),
        None,
    )
    .await
    .assert_problem(404, "not_found");
    // What was not trashed stays.
    assert_eq!(list_ids(&app, token, &uploads_of(project)).await, [kept]);
    assert!(
        stored(&app, &object_key(acme.id, project, kept))
            .await
            .is_some()
    );
    assert_eq!(download(&app, token, kept).await.status, 200);
    if !app.on_s3() {
        let files = files_under(&app.config.data_dir.join("blobs"));
        assert_eq!(
            files.into_iter().collect::<Vec<_>>(),
            [format!(
                "objects/{}",
                object_key(acme.id, project, kept).as_str()
            )]
        );
    }
}

async fn pending_uploads_expire(backend: Backend) {
    // URLs valid for 3 s: at least 2 s once truncated to whole seconds,
    // room enough for the PUTs that must land in time.
    let app = TestApp::spawn_with(backend, |c| {
        c.uploads.upload_url_ttl = chrono::Duration::seconds(3);
        c.uploads.download_url_ttl = chrono::Duration::seconds(3);
        c.uploads.multipart_threshold = 6 * MIB;
        // Only the sweep below runs in the test's time.
        c.sweep_interval = Duration::from_secs(3600);
    })
    .await;
    let acme = app.create_tenant("acme").await;
    let token = acme.admin.token();
    let project = app.create_project(token, "Torre Norte").await;
    let bytes = photo(PHOTO);

    // Never sent.
    let idle = start(
        &app,
        token,
        project,
        &declare("idle.jpg", "image/jpeg", &bytes),
    )
    .await;
    // Sent, never completed.
    let sent = noise(2048, 9);
    let abandoned = start(
        &app,
        token,
        project,
        &declare("sent.jpg", "image/jpeg", &sent),
    )
    .await;
    let r = put_signed(&app, &abandoned["upload"], sent).await;
    assert_eq!(r.status, 200, "{r}");
    // A multipart upload never finished.
    let big = json!({ "filename": "big.tiff", "content_type": "image/tiff", "size": 7 * MIB });
    let multipart = start(&app, token, project, &big).await;
    assert_eq!(multipart["upload"]["method"], "MULTIPART");
    // Completed in time: its download link expires too.
    let done = upload(&app, token, project, "done.jpg", &photo(PHOTO_2)).await;
    let link = download_url(&app, token, uuid(&done["id"])).await;
    let got = raw(app.client.get(&link)).await;
    assert_eq!(got.status, 200, "{got}");

    let latest = [&idle, &abandoned, &multipart]
        .iter()
        .map(|u| time(&u["expires_at"]))
        .max()
        .unwrap();
    wait_past(latest).await;
    // Expired URLs are refused by storage.
    let rb = signed_put_request(&app, &idle["upload"], bytes.clone());
    assert_put_refused(&app, rb, "signature_expired", 400).await;
    let part = &multipart["upload"]["parts"][0];
    let rb = put_request(
        &app,
        part["url"].as_str().unwrap(),
        None,
        noise(7 * MIB as usize, 1),
    );
    assert_put_refused(&app, rb, "signature_expired", 400).await;
    let r = raw(app.client.get(&link)).await;
    assert_refused(&app, &r, "signature_expired", 400);
    // Not swept yet: still pending, still without bytes.
    let idle_id = uuid(&idle["id"]);
    complete(&app, token, idle_id, None)
        .await
        .assert_problem(409, "upload_incomplete");

    let report = app.service.sweep(100).await.expect("sweep");
    assert_eq!(report.expired, 3, "{report:?}");
    assert_eq!(report.purged, 0, "{report:?}");
    let abandoned_key = object_key(acme.id, project, uuid(&abandoned["id"]));
    assert!(stored(&app, &abandoned_key).await.is_none());
    for u in [&idle, &abandoned, &multipart] {
        let id = uuid(&u["id"]);
        let now = get_upload(&app, token, id).await;
        assert_eq!(now["status"], "EXPIRED", "{now}");
        complete(&app, token, id, None)
            .await
            .assert_problem(409, "upload_expired");
        app.get(&format!("/v1/uploads/{id}/content"), token)
            .await
            .assert_problem(409, "upload_incomplete");
    }
    complete(
        &app,
        token,
        uuid(&multipart["id"]),
        Some(&json!({ "parts": [{ "number": 1, "etag": "\"abc\"" }] })),
    )
    .await
    .assert_problem(409, "upload_expired");
    let expired = list_ids(
        &app,
        token,
        &format!("{}?status=EXPIRED", uploads_of(project)),
    )
    .await;
    assert_eq!(expired.len(), 3);
    // A second pass finds nothing; the completed upload is untouched.
    assert_eq!(app.service.sweep(100).await.expect("sweep").expired, 0);
    assert_eq!(
        get_upload(&app, token, uuid(&done["id"])).await["status"],
        "UPLOADED"
    );
    // Retrying the initiation of an expired file starts over.
    let retry = initiate(
        &app,
        token,
        project,
        &declare("idle.jpg", "image/jpeg", &bytes),
        None,
    )
    .await;
    retry.assert_status(201);
    assert_eq!(retry.json()["status"], "PENDING");
    if !app.on_s3() {
        assert!(local_temp_files(&app).is_empty());
        assert!(files_under(&app.config.data_dir.join("blobs/multipart")).is_empty());
    }
}

async fn upload_metrics(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_tenant("acme").await;
    let token = acme.admin.token();
    let project = app.create_project(token, "Torre Norte").await;
    let bytes = photo(PHOTO);
    upload(&app, token, project, "a.jpg", &bytes).await;
    initiate(
        &app,
        token,
        project,
        &json!({ "filename": "a.jpg", "content_type": "image/jpeg", "size": 100 * 1024 * MIB }),
        None,
    )
    .await
    .assert_problem(413, "too_large");

    let resp = app.call(Method::GET, "/metrics", None, None).await;
    resp.assert_status(200);
    let text = &resp.text;
    let value = |name: &str| -> f64 {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find(|l| l.split([' ', '{']).next() == Some(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
    };
    assert!(value("uploads_initiated_total") >= 1.0);
    assert!(value("uploads_completed_total") >= 1.0);
    assert!(value("upload_bytes_ingested_total") >= bytes.len() as f64);
    assert!(
        text.lines()
            .any(|l| l.starts_with("upload_latency_seconds")),
        "no upload latency:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("uploads_failed_total") && l.contains("reason=\"too_large\"")),
        "no too_large failure:\n{text}"
    );
    // Histograms with buckets (summaries cannot be summed across replicas).
    assert!(
        text.lines()
            .any(|l| l.starts_with("upload_latency_seconds_bucket{")),
        "upload latency has no buckets:\n{text}"
    );
    // The tenant's own series, labelled with its slug.
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix}… in /metrics:\n{text}"))
    };
    line("tenant_uploads_total{tenant=\"acme\",outcome=\"initiated\"}");
    line("tenant_upload_failures_total{tenant=\"acme\",reason=\"too_large\"}");
    line("tenant_http_requests_total{tenant=\"acme\",status_class=\"2xx\"}");
    line("tenant_http_requests_total{tenant=\"acme\",status_class=\"4xx\"}");
    line("tenant_stored_bytes{tenant=\"acme\"}");
    // The process's own.
    assert!(value("process_resident_memory_bytes") > 0.0);
    assert!(value("process_cpu_seconds_total") > 0.0);
}

async fn local_blob_endpoint(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_tenant("acme").await;
    let token = acme.admin.token();
    let project = app.create_project(token, "Torre Norte").await;
    let bytes = photo(PHOTO);
    let done = upload(&app, token, project, "a.jpg", &bytes).await;
    let id = uuid(&done["id"]);
    let key = object_key(acme.id, project, id);
    let link = download_url(&app, token, id).await;
    let secret = std::fs::read_to_string(app.config.data_dir.join("jwt_secret")).unwrap();
    let blobs_before = files_under(&app.config.data_dir);

    // A query that has the shape of the local store's links.
    let get_query =
        "op=get&exp=9999999999&rct=image%2Fjpeg&rcd=attachment&sig=".to_owned() + &"0".repeat(64);
    let put_query = "op=put&exp=9999999999&len=5&ct=image%2Fjpeg&sig=".to_owned() + &"0".repeat(64);
    if app.on_s3() {
        // Storage is S3: this app serves no blobs at all, whatever is asked.
        let own = format!("/v1/blobs/{}", key.as_str());
        for path in [own.clone(), format!("{own}?{get_query}")] {
            app.call(Method::GET, &path, None, None)
                .await
                .assert_problem(404, "not_found");
        }
        let resp = app
            .send(
                app.request(Method::PUT, &format!("{own}?{put_query}"), None)
                    .header("content-type", "image/jpeg")
                    .body("pwned"),
            )
            .await;
        resp.assert_problem(404, "not_found");
        assert!(!link.starts_with(&app.base_url), "{link}");
    } else {
        assert!(link.starts_with(&app.url("/v1/blobs/")), "{link}");
        // Without a signature, nothing.
        let own = format!("/v1/blobs/{}", key.as_str());
        for path in [
            own.clone(),
            format!("{own}?{get_query}"),
            format!("{own}?op=get"),
        ] {
            let resp = app.call(Method::GET, &path, None, None).await;
            resp.assert_problem(403, "signature_invalid");
            assert!(!resp.text.contains("JFIF"), "{resp}");
        }
        // A real link's signature moved to another path does not hold.
        let real_query = link.split_once('?').unwrap().1;
        let resp = app
            .call(
                Method::GET,
                &format!(
                    "/v1/blobs/{}?{real_query}",
                    object_key(acme.id, project, Uuid::now_v7()).as_str()
                ),
                None,
                None,
            )
            .await;
        resp.assert_problem(403, "signature_invalid");
    }

    // Malformed keys, traversal attempts included: refused, nothing read or
    // written outside (or inside) the store.
    let real_query = link
        .split_once('?')
        .map_or(String::new(), |(_, q)| q.to_owned());
    for path in [
        "..%2f..%2fjwt_secret",
        "%2e%2e%2f%2e%2e%2fjwt_secret",
        "tenants/..%2f..%2f..%2f..%2fjwt_secret",
        "%2fetc%2fpasswd",
        "..%5c..%5cjwt_secret",
        "A/B",
        "a//b",
        "a/b%00",
        "tenants/x/original%20",
    ] {
        for query in [get_query.as_str(), real_query.as_str()] {
            let resp = app
                .call(
                    Method::GET,
                    &format!("/v1/blobs/{path}?{query}"),
                    None,
                    None,
                )
                .await;
            assert!(
                resp.status == StatusCode::FORBIDDEN || resp.status == StatusCode::NOT_FOUND,
                "{resp}"
            );
            assert!(!resp.text.contains(secret.trim()), "{resp}");
            assert!(!resp.text.contains("root:"), "{resp}");
        }
        let resp = app
            .send(
                app.request(Method::PUT, &format!("/v1/blobs/{path}?{put_query}"), None)
                    .header("content-type", "image/jpeg")
                    .body("pwned"),
            )
            .await;
        assert!(
            resp.status == StatusCode::FORBIDDEN || resp.status == StatusCode::NOT_FOUND,
            "{resp}"
        );
    }
    let blobs_after = files_under(&app.config.data_dir);
    let changed: Vec<_> = blobs_after
        .symmetric_difference(&blobs_before)
        .filter(|f| !f.starts_with("buildpeer.db"))
        .collect();
    assert!(changed.is_empty(), "files changed: {changed:?}");
    assert!(!app.config.data_dir.join("pwned").exists());
    // Only GET and PUT are routed.
    let resp = app
        .call(
            Method::POST,
            &format!("/v1/blobs/{}", key.as_str()),
            None,
            None,
        )
        .await;
    resp.assert_problem(405, "method_not_allowed");
    // The object is intact.
    let got = download(&app, token, id).await;
    assert_eq!(sha256_hex(&got.body), sha256_hex(&bytes));
}

/// Sends every part of a multipart plan; returns the parts as a client
/// reports them on completion.
async fn send_parts(app: &TestApp, started: &Value, data: &[u8]) -> Vec<CompletedPart> {
    let plan = &started["upload"];
    let size = plan["part_size"].as_u64().unwrap() as usize;
    let mut parts = Vec::new();
    for (n, part) in plan["parts"].as_array().unwrap().iter().enumerate() {
        let chunk = data[n * size..((n + 1) * size).min(data.len())].to_vec();
        let sent = put_as(app, part["url"].as_str().unwrap(), None, chunk).await;
        assert_eq!(sent.status, 200, "{sent}");
        parts.push(CompletedPart {
            number: part["number"].as_u64().unwrap() as u32,
            etag: sent.header("etag").expect("an ETag").to_owned(),
        });
    }
    parts
}

/// A completion the client asked for is finished even when the process that
/// took it died before marking the upload: after recording it, or after
/// assembling the multipart object. The sweeper finishes it with no client
/// action, and the client's own retry answers the same. One whose bytes are
/// not all there is cleared (the upload then expires as usual); one asked
/// for moments ago is left to the request still at it.
async fn completions_survive_a_crash(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.uploads.multipart_threshold = 6 * MIB;
        c.sweep_interval = Duration::from_secs(3600);
    })
    .await;
    let acme = app.create_tenant("acme").await;
    let token = acme.admin.token();
    let project = app.create_project(token, "Torre Norte").await;
    let tenant = TenantId::from_uuid(acme.id);
    let long_ago = Utc::now() - chrono::Duration::minutes(5);
    let record = |id: Uuid, parts: Vec<CompletedPart>, at: DateTime<Utc>| {
        let store = app.store.clone();
        async move {
            store
                .upload_set_completion(tenant, UploadId::from_uuid(id), Some((&parts, at)))
                .await
                .unwrap();
        }
    };

    // Multipart: every part sent; died right after recording the completion.
    let recorded = noise(20 * MIB as usize, 3);
    let started = start(
        &app,
        token,
        project,
        &declare("a.tiff", "image/tiff", &recorded),
    )
    .await;
    let recorded_id = uuid(&started["id"]);
    let recorded_parts = send_parts(&app, &started, &recorded).await;
    record(recorded_id, recorded_parts.clone(), long_ago).await;

    // Multipart: died after assembling the object, before marking it.
    let assembled = noise(20 * MIB as usize, 4);
    let started = start(
        &app,
        token,
        project,
        &declare("b.tiff", "image/tiff", &assembled),
    )
    .await;
    let assembled_id = uuid(&started["id"]);
    let parts = send_parts(&app, &started, &assembled).await;
    let row = app
        .store
        .upload_get(tenant, UploadId::from_uuid(assembled_id))
        .await
        .unwrap()
        .unwrap();
    let Transfer::Multipart { upload_id, .. } = &row.transfer else {
        panic!("{row:?}");
    };
    let key = object_key(acme.id, project, assembled_id);
    app.blobs
        .multipart_complete(&key, upload_id, &parts)
        .await
        .unwrap();
    record(assembled_id, parts, long_ago).await;

    // A single PUT: sent; died after recording the completion.
    let single = photo(PHOTO);
    let started = start(
        &app,
        token,
        project,
        &declare("c.jpg", "image/jpeg", &single),
    )
    .await;
    let single_id = uuid(&started["id"]);
    let put = put_signed(&app, &started["upload"], single.clone()).await;
    assert_eq!(put.status, 200, "{put}");
    record(single_id, Vec::new(), long_ago).await;

    // Recorded, but the bytes never came.
    let idle = start(
        &app,
        token,
        project,
        &declare("d.jpg", "image/jpeg", &photo(PHOTO_2)),
    )
    .await;
    let idle_id = uuid(&idle["id"]);
    record(idle_id, Vec::new(), long_ago).await;

    // Recorded a moment ago: its request may still be at it.
    let recent_bytes = noise(4096, 5);
    let recent = start(
        &app,
        token,
        project,
        &declare("e.jpg", "image/jpeg", &recent_bytes),
    )
    .await;
    let recent_id = uuid(&recent["id"]);
    let put = put_signed(&app, &recent["upload"], recent_bytes).await;
    assert_eq!(put.status, 200, "{put}");
    record(recent_id, Vec::new(), Utc::now()).await;

    let report = app.service.sweep(100).await.expect("sweep");
    assert_eq!(report.finished, 3, "{report:?}");
    assert_eq!(report.expired, 0, "{report:?}");
    for (id, bytes) in [
        (recorded_id, &recorded),
        (assembled_id, &assembled),
        (single_id, &single),
    ] {
        assert_eq!(get_upload(&app, token, id).await["status"], "UPLOADED");
        assert_eq!(app.count_jobs_of_upload(id).await, 1);
        let link = download_url(&app, token, id).await;
        let got = raw(app.client.get(&link)).await;
        assert_eq!(got.status, 200, "{got}");
        assert_eq!(sha256_hex(&got.body), sha256_hex(bytes));
    }
    // The client's retry, had it come, answers as a completion does.
    let parts: Vec<Value> = recorded_parts
        .iter()
        .map(|p| json!({ "number": p.number, "etag": p.etag }))
        .collect();
    let again = complete(&app, token, recorded_id, Some(&json!({ "parts": parts }))).await;
    again.assert_status(200);
    assert_eq!(again.json()["status"], "UPLOADED");
    assert_eq!(app.count_jobs_of_upload(recorded_id).await, 1);

    // Nothing to finish for the idle one: cleared, pending, and it will
    // expire; the recent one waits for its request.
    assert_eq!(get_upload(&app, token, idle_id).await["status"], "PENDING");
    assert_eq!(
        get_upload(&app, token, recent_id).await["status"],
        "PENDING"
    );
    let due = app
        .store
        .uploads_completion_due(Utc::now(), 10)
        .await
        .unwrap();
    let due: Vec<Uuid> = due.iter().map(|(u, _)| u.id.as_uuid()).collect();
    assert_eq!(due, [recent_id]);
    assert_eq!(app.service.sweep(100).await.expect("sweep").finished, 0);
}
