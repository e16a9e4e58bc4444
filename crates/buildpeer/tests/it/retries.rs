//! Creating requests are safe to retry: a request committed just before its
//! replica died answers 502 through the balancer, and the client sends it
//! again. With an `Idempotency-Key`, the retry answers as the first request
//! did (project and user creation are in `bad_input.rs`, upload initiation
//! in `uploads.rs`); here: adding a member and creating a tus upload.

use crate::common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::{Backend, TestApp};
use reqwest::Method;
use uuid::Uuid;

scenarios!(membership_is_safe_to_retry, tus_creation_is_safe_to_retry);

/// The same key and member: the first answer again (201 even after the
/// member was removed in between: a retry adds nothing back); the key for
/// another member: 422; without a key, PUT's own idempotence (204).
async fn membership_is_safe_to_retry(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_tenant("acme").await;
    let admin = acme.admin.token();
    let project = app.create_project(admin, "Torre").await;
    let ana = app.create_user(&acme, "empleado").await;
    let luis = app.create_user(&acme, "empleado").await;
    let app = &app;
    let put = |user: Uuid, key: Option<&'static str>| {
        let mut rb = app.request(
            Method::PUT,
            &format!("/v1/projects/{project}/members/{user}"),
            Some(admin),
        );
        if let Some(key) = key {
            rb = rb.header("Idempotency-Key", key);
        }
        async move { app.send(rb).await }
    };
    put(ana.id, Some("m-1")).await.assert_status(201);
    put(ana.id, Some("m-1")).await.assert_status(201);
    put(ana.id, None).await.assert_status(204);
    put(luis.id, Some("m-1"))
        .await
        .assert_invalid_field("idempotency_key", "idempotency_key_reused");
    put(luis.id, Some(" "))
        .await
        .assert_invalid_field("idempotency_key", "invalid_idempotency_key");
    app.delete(&format!("/v1/projects/{project}/members/{}", ana.id), admin)
        .await
        .assert_status(204);
    put(ana.id, Some("m-1")).await.assert_status(201);
    let members = app
        .get(&format!("/v1/projects/{project}/members"), admin)
        .await
        .json();
    let ids: Vec<&str> = members["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["user_id"].as_str())
        .collect();
    assert!(!ids.contains(&ana.id.to_string().as_str()), "{members}");
    // A fresh key for a member already there answers as without one.
    put(ana.id, None).await.assert_status(201);
    put(ana.id, Some("m-2")).await.assert_status(204);
    put(ana.id, Some("m-2")).await.assert_status(204);
}

/// The same key and headers: the same upload (same Location), at its current
/// offset, and a body sent with the retried creation is not written again;
/// the key with other headers: 422; nothing else is created.
async fn tus_creation_is_safe_to_retry(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_tenant("acme").await;
    let token = acme.admin.token();
    let project = app.create_project(token, "Torre").await;
    let app = &app;
    let meta = format!(
        "project_id {},filename {},filetype {}",
        B64.encode(project.to_string()),
        B64.encode("obra.jpg"),
        B64.encode("image/jpeg")
    );
    let create = |length: u64, key: &'static str, body: Option<&'static [u8]>| {
        let mut rb = app
            .request(Method::POST, "/v1/tus", Some(token))
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", length.to_string())
            .header("Upload-Metadata", meta.clone())
            .header("Idempotency-Key", key);
        if let Some(body) = body {
            rb = rb
                .header("Content-Type", "application/offset+octet-stream")
                .body(body);
        }
        async move { app.send(rb).await }
    };
    // Creation with upload: the first chunk lands with the creation.
    let first = create(10, "t-1", Some(b"0123")).await;
    first.assert_status(201);
    let location = first.header("location").unwrap().to_owned();
    assert_eq!(first.header("upload-offset"), Some("4"));
    // The retry (its answer was lost) gets the same upload where it stands;
    // its body is not appended a second time.
    let again = create(10, "t-1", Some(b"0123")).await;
    again.assert_status(201);
    assert_eq!(again.header("location"), Some(location.as_str()));
    assert_eq!(again.header("upload-offset"), Some("4"));
    // tus answers a bad request 400 (a problem document all the same).
    let reused = create(11, "t-1", None).await;
    let body = reused.assert_problem(400, "validation_failed");
    assert_eq!(
        body["errors"][0]["code"], "idempotency_key_reused",
        "{body}"
    );
    let path = location
        .strip_prefix(&app.base_url)
        .unwrap_or(&location)
        .to_owned();
    let head = app
        .send(
            app.request(Method::HEAD, &path, Some(token))
                .header("Tus-Resumable", "1.0.0"),
        )
        .await;
    head.assert_status(200);
    assert_eq!(head.header("upload-offset"), Some("4"));
    let listed = app
        .get(&format!("/v1/projects/{project}/uploads"), token)
        .await
        .json();
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
}
