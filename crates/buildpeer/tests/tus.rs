//! tus 1.0 resumable uploads over real HTTP on both deployments. On the
//! `postgres` deployment (PostgreSQL + S3) tus is not implemented yet and
//! creation must answer 501; everything else runs on SQLite + the local disk.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::{Backend, Resp, TestApp};

use reqwest::Method;
use sha2::{Digest, Sha256};
use uuid::Uuid;

scenarios!(
    core_protocol,
    checksums_and_termination,
    auth_on_every_method,
    interrupted_patch_is_kept,
    photo_is_processed
);

const PHOTO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/photos/jpeg/gps/DSCN0010.jpg"
);

fn meta(project: Uuid, filetype: Option<&str>) -> String {
    let mut m = format!(
        "project_id {},filename {}",
        B64.encode(project.to_string()),
        B64.encode("obra.jpg")
    );
    if let Some(t) = filetype {
        m.push_str(&format!(",filetype {}", B64.encode(t)));
    }
    m
}

fn tus(app: &TestApp, method: Method, path: &str, token: &str) -> reqwest::RequestBuilder {
    app.request(method, path, Some(token))
        .header("Tus-Resumable", "1.0.0")
}

async fn create(app: &TestApp, token: &str, project: Uuid, len: u64) -> Resp {
    app.send(
        tus(app, Method::POST, "/v1/tus", token)
            .header("Upload-Length", len.to_string())
            .header("Upload-Metadata", meta(project, Some("image/jpeg"))),
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

/// On S3 tus creation answers 501 (not implemented yet); `true` then.
async fn s3_unsupported(app: &TestApp, token: &str, project: Uuid) -> bool {
    if !app.on_s3() {
        return false;
    }
    let r = create(app, token, project, 10).await;
    r.assert_problem(501, "not_implemented");
    assert_eq!(r.header("tus-resumable"), Some("1.0.0"));
    true
}

async fn core_protocol(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = app.create_tenant("tus-core").await;
    let token = t.admin.token();
    let project = app.create_project(token, "Obra").await;

    // OPTIONS: discovery, no Tus-Resumable needed or sent.
    let r = app
        .send(app.request(Method::OPTIONS, "/v1/tus", None))
        .await;
    r.assert_status(204);
    assert_eq!(r.header("tus-version"), Some("1.0.0"));
    assert!(r.header("tus-extension").unwrap().contains("checksum"));
    assert_eq!(r.header("tus-checksum-algorithm"), Some("sha1,sha256"));
    assert!(r.header("tus-max-size").is_some());
    assert_eq!(r.header("tus-resumable"), None);

    if s3_unsupported(&app, token, project).await {
        return;
    }
    // Another version: 412 with Tus-Version.
    let r = app
        .send(
            app.request(Method::POST, "/v1/tus", Some(token))
                .header("Tus-Resumable", "0.2.2")
                .header("Upload-Length", "5"),
        )
        .await;
    r.assert_status(412);
    assert_eq!(r.header("tus-version"), Some("1.0.0"));
    // project_id is required; types outside the allowlist are refused; size limits.
    let r = app
        .send(
            tus(&app, Method::POST, "/v1/tus", token)
                .header("Upload-Length", "5")
                .header(
                    "Upload-Metadata",
                    format!("filename {}", B64.encode("a.jpg")),
                ),
        )
        .await;
    r.assert_status(400);
    let r = app
        .send(
            tus(&app, Method::POST, "/v1/tus", token)
                .header("Upload-Length", "5")
                .header("Upload-Metadata", meta(project, Some("text/html"))),
        )
        .await;
    r.assert_status(415);
    let r = create(&app, token, project, 1 << 50).await;
    r.assert_status(413);

    // Creation, HEAD, PATCH in two chunks, offset mismatch, 415.
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let r = create(&app, token, project, data.len() as u64).await;
    r.assert_status(201);
    assert_eq!(r.header("tus-resumable"), Some("1.0.0"));
    assert!(r.header("upload-expires").is_some());
    let loc = r.header("location").unwrap().to_owned();
    let id: Uuid = loc.rsplit('/').next().unwrap().parse().unwrap();
    let r = app.send(tus(&app, Method::HEAD, &loc, token)).await;
    r.assert_status(200);
    assert_eq!(r.header("upload-offset"), Some("0"));
    assert_eq!(r.header("upload-length"), Some("300000"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(r.header("upload-metadata").unwrap().contains("project_id"));

    let r = app
        .send(
            tus(&app, Method::PATCH, &loc, token)
                .header("Upload-Offset", "0")
                .header("Content-Type", "application/octet-stream")
                .body(vec![1u8; 3]),
        )
        .await;
    r.assert_status(415);
    let r = patch(&app, token, &loc, 0, data[..100_000].to_vec()).await;
    r.assert_status(204);
    assert_eq!(r.header("upload-offset"), Some("100000"));
    assert!(r.header("upload-expires").is_some());
    let r = patch(&app, token, &loc, 0, data[..10].to_vec()).await;
    r.assert_problem(409, "offset_mismatch");
    let r = app.send(tus(&app, Method::HEAD, &loc, token)).await;
    assert_eq!(r.header("upload-offset"), Some("100000"));
    // Past the length: 413, nothing changed.
    let r = patch(&app, token, &loc, 100_000, vec![0u8; 250_000]).await;
    r.assert_status(413);
    // The rest through X-HTTP-Method-Override.
    let r = app
        .send(
            tus(&app, Method::POST, &loc, token)
                .header("X-HTTP-Method-Override", "PATCH")
                .header("Upload-Offset", "100000")
                .header("Content-Type", "application/offset+octet-stream")
                .body(data[100_000..].to_vec()),
        )
        .await;
    r.assert_status(204);
    assert_eq!(r.header("upload-offset"), Some("300000"));

    // An ordinary upload now: UPLOADED with its job, byte-identical.
    let up = app.get(&format!("/v1/uploads/{id}"), token).await;
    up.assert_status(200);
    assert_eq!(up.json()["status"], "UPLOADED");
    assert_eq!(up.json()["size"], 300_000);
    assert_eq!(app.count_upload_rows("jobs", id).await, 1);

    // Defer-length and creation-with-upload.
    let r = app
        .send(
            tus(&app, Method::POST, "/v1/tus", token)
                .header("Upload-Defer-Length", "1")
                .header("Upload-Metadata", meta(project, None))
                .header("Content-Type", "application/offset+octet-stream")
                .body(vec![7u8; 1000]),
        )
        .await;
    r.assert_status(201);
    assert_eq!(r.header("upload-offset"), Some("1000"));
    let loc2 = r.header("location").unwrap().to_owned();
    let r = app.send(tus(&app, Method::HEAD, &loc2, token)).await;
    assert_eq!(r.header("upload-defer-length"), Some("1"));
    let r = app
        .send(
            tus(&app, Method::PATCH, &loc2, token)
                .header("Upload-Offset", "1000")
                .header("Upload-Length", "1500")
                .header("Content-Type", "application/offset+octet-stream")
                .body(vec![8u8; 500]),
        )
        .await;
    r.assert_status(204);
    let r = app.send(tus(&app, Method::HEAD, &loc2, token)).await;
    assert_eq!(r.header("upload-length"), Some("1500"));
    assert_eq!(r.header("upload-offset"), Some("1500"));
}

async fn checksums_and_termination(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = app.create_tenant("tus-sum").await;
    let token = t.admin.token();
    let project = app.create_project(token, "Obra").await;
    if s3_unsupported(&app, token, project).await {
        return;
    }
    let r = create(&app, token, project, 20).await;
    let loc = r.header("location").unwrap().to_owned();
    let chunk = b"0123456789".to_vec();
    let send = |algo: &str, digest: String, offset: u64, body: Vec<u8>| {
        tus(&app, Method::PATCH, &loc, token)
            .header("Upload-Offset", offset.to_string())
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Checksum", format!("{algo} {digest}"))
            .body(body)
    };
    // Unknown algorithm: 400. Mismatch: 460, offset unchanged.
    let r = app
        .send(send("md5", B64.encode([0u8; 16]), 0, chunk.clone()))
        .await;
    r.assert_status(400);
    let r = app
        .send(send("sha1", B64.encode([0u8; 20]), 0, chunk.clone()))
        .await;
    assert_eq!(r.status.as_u16(), 460, "{r}");
    let r = app.send(tus(&app, Method::HEAD, &loc, token)).await;
    assert_eq!(r.header("upload-offset"), Some("0"));
    // sha1 and sha256 that match.
    use sha1::Digest as _;
    let d1 = B64.encode(sha1::Sha1::digest(&chunk));
    let r = app.send(send("sha1", d1, 0, chunk.clone())).await;
    r.assert_status(204);
    let d2 = B64.encode(Sha256::digest(&chunk));
    let r = app
        .send(send("sha256", d2.clone(), 10, chunk.clone()))
        .await;
    r.assert_status(204);
    assert_eq!(r.header("upload-offset"), Some("20"));

    // Termination: 204, then 410 on every method.
    let r = create(&app, token, project, 20).await;
    let loc = r.header("location").unwrap().to_owned();
    patch(&app, token, &loc, 0, vec![1u8; 5])
        .await
        .assert_status(204);
    let r = app.send(tus(&app, Method::DELETE, &loc, token)).await;
    r.assert_status(204);
    assert_eq!(r.header("tus-resumable"), Some("1.0.0"));
    app.send(tus(&app, Method::HEAD, &loc, token))
        .await
        .assert_status(410);
    patch(&app, token, &loc, 5, vec![1u8; 5])
        .await
        .assert_status(410);
}

async fn auth_on_every_method(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = app.create_tenant("tus-auth").await;
    let other = app.create_tenant("tus-other").await;
    let token = t.admin.token();
    let project = app.create_project(token, "Obra").await;
    if s3_unsupported(&app, token, project).await {
        return;
    }
    let outsider = app.create_user(&t, "empleado").await;
    let r = create(&app, token, project, 10).await;
    let loc = r.header("location").unwrap().to_owned();
    // No token: 401 with Tus-Resumable.
    let r = app
        .send(
            app.request(Method::HEAD, &loc, None)
                .header("Tus-Resumable", "1.0.0"),
        )
        .await;
    r.assert_status(401);
    assert_eq!(r.header("tus-resumable"), Some("1.0.0"));
    for tk in [outsider.token(), other.admin.token()] {
        app.send(tus(&app, Method::HEAD, &loc, tk))
            .await
            .assert_status(404);
        patch(&app, tk, &loc, 0, vec![1u8; 3])
            .await
            .assert_status(404);
        app.send(tus(&app, Method::DELETE, &loc, tk))
            .await
            .assert_status(404);
        // Creating in a project it cannot see.
        create(&app, tk, project, 10).await.assert_status(404);
    }
    // Nothing changed.
    let r = app.send(tus(&app, Method::HEAD, &loc, token)).await;
    assert_eq!(r.header("upload-offset"), Some("0"));
}

async fn interrupted_patch_is_kept(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = app.create_tenant("tus-cut").await;
    let token = t.admin.token();
    let project = app.create_project(token, "Obra").await;
    if s3_unsupported(&app, token, project).await {
        return;
    }
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 241) as u8).collect();
    let r = create(&app, token, project, data.len() as u64).await;
    let loc = r.header("location").unwrap().to_owned();
    let id: Uuid = loc.rsplit('/').next().unwrap().parse().unwrap();
    // A raw request that announces 2 MB, sends 700 000 bytes and hangs up.
    {
        use tokio::io::AsyncWriteExt as _;
        let url = reqwest::Url::parse(&app.url(&loc)).unwrap();
        let addr = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
        let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "PATCH {loc} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n\
             Content-Type: application/offset+octet-stream\r\nContent-Length: {}\r\n\r\n",
            data.len()
        );
        sock.write_all(head.as_bytes()).await.unwrap();
        sock.write_all(&data[..700_000]).await.unwrap();
        sock.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(sock);
    }
    // The server persists what arrived (a moment after the drop).
    let mut offset = 0u64;
    for _ in 0..50 {
        let r = app.send(tus(&app, Method::HEAD, &loc, token)).await;
        offset = r.header("upload-offset").unwrap().parse().unwrap();
        if offset > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(offset > 0 && offset <= 700_000, "offset {offset}");
    // Resume from there; the lease of the cut PATCH is released.
    let mut r = patch(&app, token, &loc, offset, data[offset as usize..].to_vec()).await;
    for _ in 0..30 {
        if r.status.as_u16() != 423 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        r = patch(&app, token, &loc, offset, data[offset as usize..].to_vec()).await;
    }
    r.assert_status(204);
    let up = app.get(&format!("/v1/uploads/{id}"), token).await;
    assert_eq!(up.json()["status"], "UPLOADED");
    // Byte-identical: download through the redirect and compare SHA-256.
    let r = app
        .send(app.request(
            Method::GET,
            &format!("/v1/uploads/{id}/content"),
            Some(token),
        ))
        .await;
    r.assert_status(307);
    let url = r.header("location").unwrap().to_owned();
    let got = app
        .client
        .get(url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(Sha256::digest(&got), Sha256::digest(&data));
}

async fn photo_is_processed(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.run_worker = true).await;
    let t = app.create_tenant("tus-photo").await;
    let token = t.admin.token();
    let project = app.create_project(token, "Obra").await;
    if s3_unsupported(&app, token, project).await {
        return;
    }
    let photo = std::fs::read(PHOTO).unwrap();
    let r = create(&app, token, project, photo.len() as u64).await;
    let loc = r.header("location").unwrap().to_owned();
    let id: Uuid = loc.rsplit('/').next().unwrap().parse().unwrap();
    let half = photo.len() / 2;
    patch(&app, token, &loc, 0, photo[..half].to_vec())
        .await
        .assert_status(204);
    patch(&app, token, &loc, half as u64, photo[half..].to_vec())
        .await
        .assert_status(204);
    let mut status = String::new();
    for _ in 0..100 {
        let up = app.get(&format!("/v1/uploads/{id}"), token).await;
        status = up.json()["status"].as_str().unwrap().to_owned();
        if status == "COMPLETED" || status == "FAILED" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, "COMPLETED");
}
