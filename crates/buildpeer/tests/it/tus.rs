//! tus 1.0 resumable uploads over real HTTP on both deployments: SQLite +
//! the local disk (staging files) and PostgreSQL + S3 (multipart uploads
//! with a parts ledger and tail objects).

use crate::common;

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
    photo_is_processed,
    parts_and_tails,
    concatenation
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
    // Without credentials, who asks comes first.
    let r = app
        .send(
            app.request(
                Method::DELETE,
                "/v1/tus/01a253f0-7185-770b-ba02-ec661d05913b",
                None,
            )
            .header("Tus-Resumable", "0"),
        )
        .await;
    r.assert_status(401);
    assert_eq!(r.header("tus-resumable"), Some("1.0.0"));
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
    assert_eq!(app.count_jobs_of_upload(id).await, 1);

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
    let got = download(&app, token, id).await;
    assert_eq!(Sha256::digest(&got), Sha256::digest(&data));
}

async fn photo_is_processed(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.run_worker = true).await;
    let t = app.create_tenant("tus-photo").await;
    let token = t.admin.token();
    let project = app.create_project(token, "Obra").await;
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

/// Downloads an upload's original through its signed redirect.
async fn download(app: &TestApp, token: &str, id: Uuid) -> Vec<u8> {
    let r = app
        .send(app.request(
            Method::GET,
            &format!("/v1/uploads/{id}/content"),
            Some(token),
        ))
        .await;
    r.assert_status(307);
    let url = r.header("location").unwrap().to_owned();
    let got = app.client.get(url).send().await.unwrap();
    assert_eq!(got.status().as_u16(), 200);
    got.bytes().await.unwrap().to_vec()
}

/// An upload larger than several parts (S3: 8 MiB parts), in chunks that
/// never line up with them: full parts, tails carried from PATCH to PATCH,
/// a checksummed chunk across a part boundary refused and then accepted,
/// and a PATCH cut by a dropped connection. The result is byte-identical.
async fn parts_and_tails(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = app.create_tenant("tus-parts").await;
    let token = t.admin.token();
    let project = app.create_project(token, "Obra").await;
    // Not periodic, so a part out of order or twice would show.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..21 * 1024 * 1024 + 333)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let r = create(&app, token, project, data.len() as u64).await;
    r.assert_status(201);
    let loc = r.header("location").unwrap().to_owned();
    let id: Uuid = loc.rsplit('/').next().unwrap().parse().unwrap();

    // 3 MB, then 3 MB: a tail each time, no part yet.
    let mut offset = 0usize;
    for n in [3_000_001, 3_000_000] {
        let r = patch(
            &app,
            token,
            &loc,
            offset as u64,
            data[offset..offset + n].to_vec(),
        )
        .await;
        r.assert_status(204);
        offset += n;
        assert_eq!(r.header("upload-offset"), Some(offset.to_string().as_str()));
    }
    // A checksummed 4 MB chunk across the first part boundary (8 MiB): a
    // wrong digest is refused and changes nothing; the right one passes.
    let chunk = data[offset..offset + 4_000_000].to_vec();
    let send = |digest: Vec<u8>| {
        tus(&app, Method::PATCH, &loc, token)
            .header("Upload-Offset", offset.to_string())
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Checksum", format!("sha256 {}", B64.encode(digest)))
            .body(chunk.clone())
    };
    let r = app.send(send(vec![0u8; 32])).await;
    assert_eq!(r.status.as_u16(), 460, "{r}");
    let r = app.send(tus(&app, Method::HEAD, &loc, token)).await;
    assert_eq!(r.header("upload-offset"), Some(offset.to_string().as_str()));
    let r = app.send(send(Sha256::digest(&chunk).to_vec())).await;
    r.assert_status(204);
    offset += chunk.len();

    // A PATCH that announces the rest, sends 7 MB (across the next part
    // boundary) and hangs up: what arrived is kept.
    {
        use tokio::io::AsyncWriteExt as _;
        let mut sock = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        let path = loc.strip_prefix(&app.base_url).unwrap_or(&loc);
        let head = format!(
            "PATCH {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Tus-Resumable: 1.0.0\r\nUpload-Offset: {offset}\r\n\
             Content-Type: application/offset+octet-stream\r\nContent-Length: {}\r\n\r\n",
            data.len() - offset
        );
        sock.write_all(head.as_bytes()).await.unwrap();
        sock.write_all(&data[offset..offset + 7_000_000])
            .await
            .unwrap();
        sock.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(sock);
    }
    let before = offset;
    for _ in 0..100 {
        let r = app.send(tus(&app, Method::HEAD, &loc, token)).await;
        offset = r.header("upload-offset").unwrap().parse().unwrap();
        if offset > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        offset > before && offset <= before + 7_000_000,
        "offset {offset} after the cut PATCH (was {before})"
    );
    // The rest, in 5 MB chunks, as a client resumes: the cut PATCH may
    // still hold the lease (423: wait) and move the offset once more as it
    // stores what it received (409: HEAD again).
    let mut tries = 0;
    while offset < data.len() {
        tries += 1;
        assert!(tries < 100, "no progress at offset {offset}");
        let end = (offset + 5_000_000).min(data.len());
        let r = patch(&app, token, &loc, offset as u64, data[offset..end].to_vec()).await;
        match r.status.as_u16() {
            204 => offset = end,
            423 => tokio::time::sleep(Duration::from_millis(200)).await,
            409 => {
                let h = app.send(tus(&app, Method::HEAD, &loc, token)).await;
                offset = h.header("upload-offset").unwrap().parse().unwrap();
            }
            _ => r.assert_status(204),
        }
    }
    let up = app.get(&format!("/v1/uploads/{id}"), token).await;
    assert_eq!(up.json()["status"], "UPLOADED", "{up}");
    let got = download(&app, token, id).await;
    assert_eq!(got.len(), data.len());
    assert!(got == data, "the stored object differs from the source");
}

async fn create_concat(
    app: &TestApp,
    token: &str,
    project: Uuid,
    concat: &str,
    len: Option<u64>,
) -> Resp {
    let mut req = tus(app, Method::POST, "/v1/tus", token)
        .header("Upload-Concat", concat)
        .header("Upload-Metadata", meta(project, Some("application/pdf")));
    if let Some(len) = len {
        req = req.header("Upload-Length", len.to_string());
    }
    app.send(req).await
}

/// Partial uploads, then final ones: the refusals (400 with
/// `invalid_concat`), the concatenated object, PATCH on a final (403), and
/// the partials used up.
async fn concatenation(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = app.create_tenant("tus-concat").await;
    let other = app.create_tenant("tus-concat-other").await;
    let token = t.admin.token();
    let project = app.create_project(token, "Obra").await;
    let project2 = app.create_project(token, "Otra").await;
    let a: Vec<u8> = b"%PDF-1.4\n"
        .iter()
        .copied()
        .chain((0..99_991u32).map(|i| (i % 199) as u8))
        .collect();
    let b: Vec<u8> = (0..50_000u32).map(|i| (i % 157) as u8).collect();

    let r = create_concat(&app, token, project, "partial", Some(a.len() as u64)).await;
    r.assert_status(201);
    let loc_a = r.header("location").unwrap().to_owned();
    let id_a: Uuid = loc_a.rsplit('/').next().unwrap().parse().unwrap();
    let r = app.send(tus(&app, Method::HEAD, &loc_a, token)).await;
    assert_eq!(r.header("upload-concat"), Some("partial"));
    patch(&app, token, &loc_a, 0, a.clone())
        .await
        .assert_status(204);
    // A complete partial is not an upload of its own.
    let up = app.get(&format!("/v1/uploads/{id_a}"), token).await;
    assert_eq!(up.json()["status"], "PENDING", "{up}");
    // A repeated empty PATCH at the end changes nothing.
    let r = patch(&app, token, &loc_a, a.len() as u64, Vec::new()).await;
    r.assert_status(204);
    assert_eq!(
        r.header("upload-offset"),
        Some(a.len().to_string().as_str())
    );

    let r = create_concat(&app, token, project, "partial", Some(b.len() as u64)).await;
    let loc_b = r.header("location").unwrap().to_owned();
    patch(&app, token, &loc_b, 0, b[..20_000].to_vec())
        .await
        .assert_status(204);
    // B is not complete yet.
    let r = create_concat(
        &app,
        token,
        project,
        &format!("final;{loc_a} {loc_b}"),
        None,
    )
    .await;
    r.assert_problem(400, "invalid_concat");
    patch(&app, token, &loc_b, 20_000, b[20_000..].to_vec())
        .await
        .assert_status(204);

    // Refusals, none of which uses anything up.
    let ordinary = create(&app, token, project, 10).await;
    let loc_o = ordinary.header("location").unwrap().to_owned();
    let r = create_concat(&app, token, project2, "partial", Some(5)).await;
    let loc_p2 = r.header("location").unwrap().to_owned();
    patch(&app, token, &loc_p2, 0, b"%PDF-".to_vec())
        .await
        .assert_status(204);
    let r = create_concat(&app, other.admin.token(), project, "partial", Some(5)).await;
    r.assert_status(404);
    for bad in [
        format!("final;{loc_a} {loc_o}"),
        format!("final;{loc_a} {loc_p2}"),
        format!("final;{loc_a} {loc_a}"),
        format!("final;{loc_a} /v1/tus/{}", Uuid::now_v7()),
        "final;".to_owned(),
        "final;/elsewhere/x".to_owned(),
        "finale".to_owned(),
    ] {
        let r = create_concat(&app, token, project, &bad, None).await;
        r.assert_problem(400, "invalid_concat");
    }
    // Upload-Length is the sum, not the client's to say.
    let r = create_concat(&app, token, project, &format!("final;{loc_a}"), Some(9)).await;
    r.assert_status(400);
    // Another tenant cannot name our partials.
    let other_project = app.create_project(other.admin.token(), "Ajena").await;
    let r = create_concat(
        &app,
        other.admin.token(),
        other_project,
        &format!("final;{loc_a}"),
        None,
    )
    .await;
    r.assert_problem(400, "invalid_concat");

    // The final upload: whole at creation, A then B.
    let r = create_concat(
        &app,
        token,
        project,
        &format!("final;{}{loc_a} {loc_b}", app.base_url),
        None,
    )
    .await;
    r.assert_status(201);
    let total = (a.len() + b.len()).to_string();
    assert_eq!(r.header("upload-offset"), Some(total.as_str()));
    let loc_f = r.header("location").unwrap().to_owned();
    let id_f: Uuid = loc_f.rsplit('/').next().unwrap().parse().unwrap();
    let r = app.send(tus(&app, Method::HEAD, &loc_f, token)).await;
    r.assert_status(200);
    assert_eq!(r.header("upload-length"), Some(total.as_str()));
    assert_eq!(r.header("upload-offset"), Some(total.as_str()));
    let concat = r.header("upload-concat").unwrap();
    assert!(concat.starts_with("final;/v1/tus/"), "{concat}");
    let r = patch(&app, token, &loc_f, total.parse().unwrap(), vec![1]).await;
    r.assert_problem(403, "final_upload_immutable");
    let up = app.get(&format!("/v1/uploads/{id_f}"), token).await;
    assert_eq!(up.json()["status"], "UPLOADED", "{up}");
    assert_eq!(up.json()["size"], a.len() + b.len());
    assert_eq!(app.count_jobs_of_upload(id_f).await, 1);
    let got = download(&app, token, id_f).await;
    assert!(got == [a.as_slice(), b.as_slice()].concat(), "not A then B");

    // The partials are used up.
    app.send(tus(&app, Method::HEAD, &loc_a, token))
        .await
        .assert_status(410);
    let r = create_concat(&app, token, project, &format!("final;{loc_b}"), None).await;
    r.assert_problem(400, "invalid_concat");
    let up = app.get(&format!("/v1/uploads/{id_a}"), token).await;
    assert_eq!(up.json()["status"], "EXPIRED", "{up}");
}
