//! Bad input over HTTP, on SQLite and PostgreSQL: malformed JSON (400),
//! unknown, missing and mistyped fields (422 naming the field), wrong
//! content type (415), bodies over 64 KiB (413), per-field validation of
//! users and projects, uniqueness conflicts (409; e-mails case-insensitive
//! and per tenant), bad `limit`/`cursor`/query parameters (422), unknown
//! routes (404) and methods (405) as problem documents, `null` clearing a
//! project code, archived projects refusing changes (409), and idempotent
//! archiving.

use crate::common;

use common::haproxy::Haproxy;
use common::{Backend, TestApp};
use reqwest::Method;
use serde_json::json;

scenarios!(
    malformed_bodies,
    oversized_bodies,
    user_validation_and_conflicts,
    project_validation_and_conflicts,
    bad_list_parameters,
    unknown_routes_and_methods,
    patch_semantics_and_archived_projects,
    refused_bodies_are_read_before_the_answer,
    project_creation_is_safe_to_retry,
    user_creation_is_safe_to_retry,
    refusals_reach_the_client_through_haproxy,
);

/// Sends `body` as-is with the given content type.
async fn raw(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> common::Resp {
    let mut rb = app.request(method, path, token).body(body);
    if let Some(ct) = content_type {
        rb = rb.header("content-type", ct);
    }
    app.send(rb).await
}

async fn malformed_bodies(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_tenant("acme").await;
    let token = Some(acme.admin.token());
    const JSON: Option<&str> = Some("application/json");

    for body in [
        r#"{"name":"#,
        r#"{"name":"a"} trailing"#,
        "",
        "nope",
        r#"{"name":"a",}"#,
    ] {
        raw(&app, Method::POST, "/v1/projects", token, JSON, body)
            .await
            .assert_problem(400, "malformed_json");
        raw(&app, Method::POST, "/v1/auth/login", None, JSON, body)
            .await
            .assert_problem(400, "malformed_json");
    }

    // Parses, but does not fit: 422 naming the field.
    let resp = app
        .post(
            "/v1/projects",
            token,
            &json!({ "name": "Torre", "colour": "red" }),
        )
        .await;
    resp.assert_invalid_field("colour", "unknown_field");
    app.post(
        "/v1/auth/login",
        None,
        &json!({ "tenant": "acme", "email": "a@b.co", "password": "x", "remember": true }),
    )
    .await
    .assert_invalid_field("remember", "unknown_field");
    app.patch(
        &format!("/v1/users/{}", acme.admin.id),
        acme.admin.token(),
        &json!({ "email": "new@acme.test" }),
    )
    .await
    .assert_invalid_field("email", "unknown_field");
    app.post("/v1/projects", token, &json!({ "code": "A-1" }))
        .await
        .assert_invalid_field("name", "required");
    app.post(
        "/v1/auth/login",
        None,
        &json!({ "tenant": "acme", "email": "a@b.co" }),
    )
    .await
    .assert_invalid_field("password", "required");
    app.post("/v1/projects", token, &json!({ "name": 5 }))
        .await
        .assert_invalid_field("name", "invalid_type");
    app.post("/v1/projects", token, &json!(["name"]))
        .await
        .assert_invalid_field("body", "invalid_type");
    app.patch(
        &format!("/v1/users/{}", acme.admin.id),
        acme.admin.token(),
        &json!({ "disabled": "yes" }),
    )
    .await
    .assert_invalid_field("disabled", "invalid_type");

    // Not JSON at all: 415, whatever the body.
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/jsonx"),
    ] {
        raw(
            &app,
            Method::POST,
            "/v1/projects",
            token,
            ct,
            r#"{"name":"Torre"}"#,
        )
        .await
        .assert_problem(415, "unsupported_media_type");
        raw(
            &app,
            Method::POST,
            "/v1/auth/login",
            None,
            ct,
            r#"{"tenant":"acme"}"#,
        )
        .await
        .assert_problem(415, "unsupported_media_type");
    }
    // JSON with parameters or a +json subtype is fine.
    for ct in [
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/merge-patch+json",
    ] {
        raw(
            &app,
            Method::POST,
            "/v1/projects",
            token,
            Some(ct),
            r#"{"name":"Torre"}"#,
        )
        .await
        .assert_status(201);
    }
    // Nothing was created by the refused requests.
    let projects = app.get("/v1/projects", acme.admin.token()).await.json();
    assert_eq!(projects["items"].as_array().unwrap().len(), 3);
}

async fn oversized_bodies(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_tenant("acme").await;
    let token = Some(acme.admin.token());
    const LIMIT: usize = 64 * 1024;
    // A JSON document of exactly `len` bytes.
    let doc = |len: usize| {
        let frame = r#"{"name":""}"#.len();
        format!(r#"{{"name":"{}"}}"#, "x".repeat(len - frame))
    };
    assert_eq!(doc(LIMIT).len(), LIMIT);

    // At the limit the body is read (and the over-long name refused) ...
    raw(
        &app,
        Method::POST,
        "/v1/projects",
        token,
        Some("application/json"),
        doc(LIMIT),
    )
    .await
    .assert_invalid_field("name", "too_long");
    // ... one byte over, it is not.
    for len in [LIMIT + 1, 4 * LIMIT] {
        raw(
            &app,
            Method::POST,
            "/v1/projects",
            token,
            Some("application/json"),
            doc(len),
        )
        .await
        .assert_problem(413, "payload_too_large");
        raw(
            &app,
            Method::POST,
            "/v1/auth/login",
            None,
            Some("application/json"),
            doc(len),
        )
        .await
        .assert_problem(413, "payload_too_large");
    }
    // The server is fine afterwards.
    app.create_project(acme.admin.token(), "Después").await;
}

async fn user_validation_and_conflicts(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_tenant("acme").await;
    let beta = app.create_tenant("beta").await;
    let token = Some(acme.admin.token());

    // Every bad field is reported at once.
    let resp = app
        .post(
            "/v1/users",
            token,
            &json!({ "email": "not-an-email", "password": "short", "name": "   ", "role": "owner" }),
        )
        .await;
    for (field, code) in [
        ("email", "invalid_email"),
        ("password", "too_short"),
        ("name", "empty"),
        ("role", "unknown_role"),
    ] {
        resp.assert_invalid_field(field, code);
    }
    assert_eq!(resp.json()["errors"].as_array().unwrap().len(), 4, "{resp}");
    for (body, field, code) in [
        (
            json!({ "email": "a@b", "password": common::PASSWORD, "name": "A", "role": "viewer" }),
            "email",
            "invalid_email",
        ),
        (
            json!({ "email": "a@b.co", "password": "1234567", "name": "A", "role": "viewer" }),
            "password",
            "too_short",
        ),
        (
            json!({ "email": "a@b.co", "password": "x".repeat(1025), "name": "A", "role": "viewer" }),
            "password",
            "too_long",
        ),
        (
            json!({ "email": "a@b.co", "password": common::PASSWORD, "name": "", "role": "viewer" }),
            "name",
            "empty",
        ),
        (
            json!({ "email": "a@b.co", "password": common::PASSWORD, "name": "ñ".repeat(201), "role": "viewer" }),
            "name",
            "too_long",
        ),
        (
            json!({ "email": "a@b.co", "password": common::PASSWORD, "name": "A", "role": "Admin" }),
            "role",
            "unknown_role",
        ),
        (
            json!({ "email": "a@b.co", "password": common::PASSWORD, "name": "A" }),
            "role",
            "required",
        ),
    ] {
        app.post("/v1/users", token, &body)
            .await
            .assert_invalid_field(field, code);
    }
    let target = format!("/v1/users/{}", acme.admin.id);
    app.patch(&target, acme.admin.token(), &json!({ "role": "root" }))
        .await
        .assert_invalid_field("role", "unknown_role");
    app.patch(&target, acme.admin.token(), &json!({ "name": "" }))
        .await
        .assert_invalid_field("name", "empty");
    // Only the two admins exist: nothing was created.
    let users = app.get("/v1/users", acme.admin.token()).await.json();
    assert_eq!(users["items"].as_array().unwrap().len(), 1);

    // E-mails are unique per tenant, case-insensitively, and stored lower-cased.
    let user = |email: &str| json!({ "email": email, "password": common::PASSWORD, "name": "Ana", "role": "empleado" });
    let resp = app
        .post("/v1/users", token, &user("Ana.Perez@Acme.test"))
        .await;
    resp.assert_status(201);
    assert_eq!(resp.json()["email"], "ana.perez@acme.test");
    assert!(
        resp.header("location")
            .is_some_and(|l| l.starts_with("/v1/users/")),
        "{resp}"
    );
    for dup in [
        "ana.perez@acme.test",
        "ANA.PEREZ@ACME.TEST",
        "  Ana.Perez@acme.test ",
    ] {
        app.post("/v1/users", token, &user(dup))
            .await
            .assert_problem(409, "conflict");
    }
    // The admin's own address is taken too.
    app.post("/v1/users", token, &user(&acme.admin.email.to_uppercase()))
        .await
        .assert_problem(409, "conflict");
    // The same address in another tenant is another person.
    app.post(
        "/v1/users",
        Some(beta.admin.token()),
        &user("ana.perez@acme.test"),
    )
    .await
    .assert_status(201);
    app.post(
        "/v1/users",
        Some(beta.admin.token()),
        &user(&acme.admin.email),
    )
    .await
    .assert_status(201);
}

async fn project_validation_and_conflicts(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_tenant("acme").await;
    let beta = app.create_tenant("beta").await;
    let token = Some(acme.admin.token());

    let resp = app
        .post(
            "/v1/projects",
            token,
            &json!({ "name": " ", "code": "has space", "address": "" }),
        )
        .await;
    for (field, code) in [
        ("name", "empty"),
        ("code", "invalid_code"),
        ("address", "empty"),
    ] {
        resp.assert_invalid_field(field, code);
    }
    app.post(
        "/v1/projects",
        token,
        &json!({ "name": "A", "code": "x".repeat(41) }),
    )
    .await
    .assert_invalid_field("code", "invalid_code");

    let resp = app
        .post(
            "/v1/projects",
            token,
            &json!({ "name": "Torre", "code": "OBR-2026-014", "address": "Av. Juárez 10" }),
        )
        .await;
    resp.assert_status(201);
    let first = resp.json();
    assert_eq!(first["code"], "OBR-2026-014");
    assert_eq!(first["archived"], false);
    assert_eq!(first["archived_at"], serde_json::Value::Null);
    assert_eq!(
        resp.header("location"),
        Some(format!("/v1/projects/{}", first["id"].as_str().unwrap()).as_str())
    );
    app.post(
        "/v1/projects",
        token,
        &json!({ "name": "Otra", "code": "OBR-2026-014" }),
    )
    .await
    .assert_problem(409, "conflict");
    // Taking the code by renaming another project is a conflict too.
    let other = app.create_project(acme.admin.token(), "Otra").await;
    app.patch(
        &format!("/v1/projects/{other}"),
        acme.admin.token(),
        &json!({ "code": "OBR-2026-014" }),
    )
    .await
    .assert_problem(409, "conflict");
    // Projects without a code never conflict.
    app.create_project(acme.admin.token(), "Sin código").await;
    // Another tenant may use the same code.
    app.post(
        "/v1/projects",
        Some(beta.admin.token()),
        &json!({ "name": "Torre", "code": "OBR-2026-014" }),
    )
    .await
    .assert_status(201);
    // An archived project still holds its code.
    let first_id = first["id"].as_str().unwrap();
    app.delete(&format!("/v1/projects/{first_id}"), acme.admin.token())
        .await
        .assert_status(204);
    app.post(
        "/v1/projects",
        token,
        &json!({ "name": "Otra", "code": "OBR-2026-014" }),
    )
    .await
    .assert_problem(409, "conflict");
}

async fn bad_list_parameters(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_tenant("acme").await;
    let token = acme.admin.token();
    let project = app.create_project(token, "Torre").await;
    let members = format!("/v1/projects/{project}/members");

    for list in ["/v1/users", "/v1/projects", members.as_str()] {
        for (query, field, code) in [
            ("limit=0", "limit", "out_of_range"),
            ("limit=101", "limit", "out_of_range"),
            ("limit=abc", "query", "invalid_query"),
            ("limit=-1", "query", "invalid_query"),
            ("limit=", "query", "invalid_query"),
            ("cursor=!!", "cursor", "invalid_cursor"),
            ("cursor=YWJj", "cursor", "invalid_cursor"),
            ("cursor=not-a-cursor-at-all", "cursor", "invalid_cursor"),
            ("colour=red", "query", "invalid_query"),
        ] {
            let resp = app.get(&format!("{list}?{query}"), token).await;
            resp.assert_invalid_field(field, code);
        }
        // Both bad at once: both reported.
        let resp = app.get(&format!("{list}?limit=0&cursor=!!"), token).await;
        resp.assert_invalid_field("limit", "out_of_range");
        resp.assert_invalid_field("cursor", "invalid_cursor");
        for ok in ["limit=1", "limit=100", "cursor=", ""] {
            app.get(&format!("{list}?{ok}"), token)
                .await
                .assert_status(200);
        }
    }
    app.get("/v1/projects?include_archived=maybe", token)
        .await
        .assert_invalid_field("query", "invalid_query");
    // Query parameters are validated after authentication.
    app.call(Method::GET, "/v1/projects?limit=0", None, None)
        .await
        .assert_problem(401, "unauthorized");
}

async fn unknown_routes_and_methods(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_tenant("acme").await;
    let token = Some(acme.admin.token());

    for (method, path) in [
        (Method::GET, "/v1/nope"),
        (Method::GET, "/nope"),
        (Method::GET, "/v2/projects"),
        (Method::POST, "/v1/projects/a/b/c"),
        (Method::GET, "/v1/users/"),
        (Method::DELETE, "/"),
    ] {
        for t in [token, None] {
            app.call(method.clone(), path, t, None)
                .await
                .assert_problem(404, "not_found");
        }
    }
    // 405 names the methods the route has (RFC 9110 requires `Allow`).
    for (method, path, allowed) in [
        (Method::DELETE, "/v1/users".to_owned(), &["GET", "POST"][..]),
        (Method::PUT, "/v1/projects".to_owned(), &["GET", "POST"]),
        (Method::POST, "/v1/me".to_owned(), &["GET"]),
        (Method::GET, "/v1/auth/login".to_owned(), &["POST"]),
        (
            Method::DELETE,
            format!("/v1/users/{}", acme.admin.id),
            &["GET", "PATCH"],
        ),
        (
            Method::POST,
            format!("/v1/projects/{}/members", acme.admin.id),
            &["GET"],
        ),
        (
            Method::GET,
            format!("/v1/projects/{}/members/{}", acme.admin.id, acme.admin.id),
            &["PUT", "DELETE"],
        ),
        (Method::PATCH, "/healthz".to_owned(), &["GET"]),
        (Method::POST, "/metrics".to_owned(), &["GET"]),
    ] {
        for t in [token, None] {
            let resp = app.call(method.clone(), &path, t, None).await;
            resp.assert_problem(405, "method_not_allowed");
            let allow: Vec<&str> = resp
                .header("allow")
                .unwrap_or_else(|| panic!("no Allow header: {resp}"))
                .split(',')
                .map(str::trim)
                .collect();
            for m in allowed {
                assert!(allow.contains(m), "Allow lacks {m}: {resp}");
            }
            assert!(!allow.contains(&method.as_str()), "{resp}");
        }
    }
}

async fn patch_semantics_and_archived_projects(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_tenant("acme").await;
    let token = acme.admin.token();
    let worker = app.create_user(&acme, "empleado").await;
    let resp = app
        .post(
            "/v1/projects",
            Some(token),
            &json!({ "name": "Torre", "code": "T-1", "address": "Calle 1" }),
        )
        .await;
    resp.assert_status(201);
    let id = resp.json()["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/projects/{id}");

    // Absent leaves a field alone; null clears code and address.
    let p = app.patch(&path, token, &json!({ "name": "Torre B" })).await;
    p.assert_status(200);
    let p = p.json();
    assert_eq!(
        (&p["name"], &p["code"], &p["address"]),
        (&json!("Torre B"), &json!("T-1"), &json!("Calle 1"))
    );
    let p = app
        .patch(&path, token, &json!({ "code": null }))
        .await
        .json();
    assert_eq!(
        (&p["code"], &p["address"]),
        (&json!(null), &json!("Calle 1"))
    );
    let p = app
        .patch(&path, token, &json!({ "address": null }))
        .await
        .json();
    assert_eq!((&p["code"], &p["address"]), (&json!(null), &json!(null)));
    let p = app.get(&path, token).await.json();
    assert_eq!(
        (&p["name"], &p["code"], &p["address"]),
        (&json!("Torre B"), &json!(null), &json!(null))
    );
    // The cleared code is free again.
    app.post(
        "/v1/projects",
        Some(token),
        &json!({ "name": "Nueva", "code": "T-1" }),
    )
    .await
    .assert_status(201);
    let p = app
        .patch(
            &path,
            token,
            &json!({ "code": "T-2", "address": "Calle 2" }),
        )
        .await
        .json();
    assert_eq!(
        (&p["code"], &p["address"]),
        (&json!("T-2"), &json!("Calle 2"))
    );
    app.patch(&path, token, &json!({ "name": null }))
        .await
        .assert_status(200);
    assert_eq!(app.get(&path, token).await.json()["name"], "Torre B");
    app.patch(&path, token, &json!({})).await.assert_status(200);
    app.add_member(token, id.parse().unwrap(), worker.id).await;

    // Archiving is idempotent and keeps the project readable.
    app.delete(&path, token).await.assert_status(204);
    let archived = app.get(&path, token).await.json();
    assert_eq!(archived["archived"], true);
    let archived_at = archived["archived_at"].clone();
    assert!(archived_at.is_string(), "{archived}");
    let again = app.delete(&path, token).await;
    again.assert_status(204);
    assert!(again.text.is_empty());
    assert_eq!(
        app.get(&path, token).await.json()["archived_at"],
        archived_at
    );

    // An archived project refuses changes.
    app.patch(&path, token, &json!({ "name": "Otra" }))
        .await
        .assert_problem(409, "project_archived");
    app.put(&format!("{path}/members/{}", acme.admin.id), token)
        .await
        .assert_problem(409, "project_archived");
    app.delete(&format!("{path}/members/{}", worker.id), token)
        .await
        .assert_problem(409, "project_archived");
    let p = app.get(&path, token).await.json();
    assert_eq!(p["name"], "Torre B");
    let members = app.get(&format!("{path}/members"), token).await.json();
    assert_eq!(
        common::ids(members["items"].as_array().unwrap(), "user_id"),
        vec![worker.id]
    );
    // Its members still see it.
    app.get(&path, worker.token()).await.assert_status(200);
}

/// Sends one request with a body of `len` bytes on `stream` and reads its
/// answer's head and body (by its Content-Length).
async fn exchange(stream: &mut tokio::net::TcpStream, head: &str, len: usize) -> (String, Vec<u8>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    stream.write_all(head.as_bytes()).await.unwrap();
    // Sent in pieces, as a phone sends: the answer may come first.
    let piece = vec![7u8; 64 * 1024];
    let mut sent = 0;
    while sent < len {
        let n = piece.len().min(len - sent);
        if stream.write_all(&piece[..n]).await.is_err() {
            break;
        }
        sent += n;
    }
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let read = stream.read(&mut byte).await;
        assert!(
            matches!(read, Ok(1)),
            "the answer ended early ({read:?}) after {sent} of {len} bytes sent"
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap().to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    (head, body)
}

/// A request refused before its body is read (here 401: no token) is
/// answered after the body has been read, so the client sees the answer
/// and the connection stays usable; a body past the drain bound is answered
/// with `Connection: close`.
async fn refused_bodies_are_read_before_the_answer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let request = |len: usize| {
        format!(
            "PATCH /v1/tus/00000000-0000-7000-8000-000000000000 HTTP/1.1\r\nHost: x\r\n\
             Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n\
             Content-Type: application/offset+octet-stream\r\nContent-Length: {len}\r\n\r\n"
        )
    };
    let (head, body) = exchange(&mut stream, &request(1 << 20), 1 << 20).await;
    assert!(head.starts_with("http/1.1 401"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("unauthorized"));
    // The same connection serves the next request.
    let (head, _) = exchange(&mut stream, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 0).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");

    // Past the bound: read no further, and say so.
    let len = 9 << 20;
    let (head, _) = exchange(&mut stream, &request(len), len).await;
    assert!(head.starts_with("http/1.1 401"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
}

/// Creating a project with an `Idempotency-Key` is safe to retry: the same
/// key and body answer with the first project (200, one project exists); the
/// same key with another body is refused; another user's same key is theirs.
async fn project_creation_is_safe_to_retry(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_tenant("acme").await;
    let admin = acme.admin.token();
    let app = &app;
    let create = |token: &str, key: &str, body: serde_json::Value| {
        let rb = app
            .request(Method::POST, "/v1/projects", Some(token))
            .header("Idempotency-Key", key)
            .json(&body);
        async move { app.send(rb).await }
    };
    let body = json!({ "name": "Torre Norte", "code": "TN-1" });
    let first = create(admin, "k-1", body.clone()).await;
    first.assert_status(201);
    let again = create(admin, "k-1", body.clone()).await;
    again.assert_status(200);
    assert_eq!(again.json(), first.json());
    assert_eq!(again.header("location"), first.header("location"));
    let listed = app.get("/v1/projects", admin).await.json();
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );

    let other_body = create(admin, "k-1", json!({ "name": "Otra" })).await;
    other_body.assert_invalid_field("idempotency_key", "idempotency_key_reused");
    let bad_key = create(admin, "", body.clone()).await;
    bad_key.assert_invalid_field("idempotency_key", "invalid_idempotency_key");

    // Another user's key is another key (their project: the code is taken).
    let supervisor = app.create_user(&acme, "supervisor").await;
    let theirs = create(supervisor.token(), "k-1", json!({ "name": "Torre Sur" })).await;
    theirs.assert_status(201);
    assert_ne!(theirs.json()["id"], first.json()["id"]);
}

/// Creating a user with an `Idempotency-Key` is safe to retry: the same key
/// and body answer with the first user (a retry with another password too:
/// passwords are not compared); the same key with another e-mail is refused.
async fn user_creation_is_safe_to_retry(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_tenant("acme").await;
    let admin = acme.admin.token();
    let app = &app;
    let create = |key: &str, body: serde_json::Value| {
        let rb = app
            .request(Method::POST, "/v1/users", Some(admin))
            .header("Idempotency-Key", key)
            .json(&body);
        async move { app.send(rb).await }
    };
    let body = |email: &str, password: &str| json!({ "email": email, "password": password, "name": "Juan", "role": "empleado" });
    let first = create("u-1", body("juan@acme.mx", "obra-segura-1")).await;
    first.assert_status(201);
    let again = create("u-1", body("juan@acme.mx", "otra-clave-22")).await;
    again.assert_status(200);
    assert_eq!(again.json(), first.json());
    let other = create("u-1", body("pedro@acme.mx", "obra-segura-1")).await;
    other.assert_invalid_field("idempotency_key", "idempotency_key_reused");
    // Without a key, the e-mail is simply taken.
    let plain = app
        .post(
            "/v1/users",
            Some(admin),
            &body("juan@acme.mx", "obra-segura-1"),
        )
        .await;
    plain.assert_status(409);
}

/// Through a real HAProxy, a PATCH refused before its body is read (401)
/// reaches the client every time as a 401, not as a reset, whether its body
/// is read in full (1 MiB) or only up to the bound (9 MiB).
async fn refusals_reach_the_client_through_haproxy(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let Some(proxy) = Haproxy::start(&[app.addr]).await else {
        return;
    };
    for (round, len) in [(1usize << 20); 10]
        .into_iter()
        .chain([9 << 20; 3])
        .enumerate()
    {
        let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        let head = format!(
            "PATCH /v1/tus/00000000-0000-7000-8000-000000000000 HTTP/1.1\r\nHost: x\r\n\
             Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n\
             Content-Type: application/offset+octet-stream\r\nContent-Length: {len}\r\n\r\n"
        );
        let (answer, _) = exchange(&mut stream, &head, len).await;
        assert!(
            answer.starts_with("http/1.1 401"),
            "round {round} ({len} bytes): {answer}"
        );
    }
}
