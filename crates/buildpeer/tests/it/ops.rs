//! Operational endpoints over HTTP, on SQLite and PostgreSQL: `/healthz`,
//! `/readyz` with its database check, `/metrics` (request-duration histogram
//! labelled by route and status class, pool gauges), `/openapi.json` (3.1,
//! every `/v1` path), the offline `/docs` page, and `X-Request-Id` handling.

use crate::common;

use common::{Backend, TestApp};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

scenarios!(health_and_readiness, metrics, openapi_and_docs, request_ids);

async fn health_and_readiness(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let resp = app.call(Method::GET, "/healthz", None, None).await;
    resp.assert_status(200);
    assert_eq!(resp.json(), json!({ "status": "ok" }));

    let resp = app.call(Method::GET, "/readyz", None, None).await;
    resp.assert_status(200);
    assert!(
        resp.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{resp}"
    );
    assert_eq!(
        resp.json(),
        json!({ "status": "ok", "checks": { "database": "ok", "cache": "ok", "storage": "ok" } })
    );
    // No token needed, and a bad one is ignored.
    app.call(Method::GET, "/readyz", Some("garbage"), None)
        .await
        .assert_status(200);
}

async fn metrics(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_tenant("acme").await;
    app.call(Method::GET, "/healthz", None, None)
        .await
        .assert_status(200);
    let project = app.create_project(acme.admin.token(), "Torre").await;
    app.get(&format!("/v1/projects/{project}"), acme.admin.token())
        .await
        .assert_status(200);
    app.get(
        &format!("/v1/projects/{}", Uuid::now_v7()),
        acme.admin.token(),
    )
    .await
    .assert_status(404);
    app.call(Method::GET, "/no/such/route/42", None, None)
        .await
        .assert_status(404);

    let resp = app.call(Method::GET, "/metrics", None, None).await;
    resp.assert_status(200);
    assert!(
        resp.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "{resp}"
    );
    let text = &resp.text;
    let samples: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("http_request_duration_seconds"))
        .collect();
    assert!(!samples.is_empty(), "no request histogram:\n{text}");
    let has = |route: &str, class: &str| {
        samples.iter().any(|l| {
            l.contains(&format!("route=\"{route}\""))
                && l.contains(&format!("status_class=\"{class}\""))
        })
    };
    assert!(has("/healthz", "2xx"), "{text}");
    assert!(has("/v1/projects", "2xx"), "{text}");
    // Routes are labelled by their template, never by the concrete path.
    assert!(has("/v1/projects/{id}", "2xx"), "{text}");
    assert!(has("/v1/projects/{id}", "4xx"), "{text}");
    assert!(has("unmatched", "4xx"), "{text}");
    assert!(
        !text.contains(&project.to_string()),
        "a concrete id leaked into labels"
    );
    assert!(
        !text.contains("/no/such/route"),
        "an unmatched path leaked into labels"
    );
    assert!(
        text.contains("http_request_duration_seconds_bucket")
            && text.contains("http_request_duration_seconds_count"),
        "{text}"
    );

    let pool: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("db_pool_connections{"))
        .collect();
    let backend_label = format!("backend=\"{}\"", backend.name());
    for state in ["idle", "in_use"] {
        assert!(
            pool.iter()
                .any(|l| l.contains(&backend_label) && l.contains(&format!("state=\"{state}\""))),
            "no db_pool_connections for {backend_label} {state}:\n{text}"
        );
    }
    assert!(text.contains("db_pool_max_connections"), "{text}");
}

async fn openapi_and_docs(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let resp = app.call(Method::GET, "/openapi.json", None, None).await;
    resp.assert_status(200);
    assert!(
        resp.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{resp}"
    );
    let doc: Value = resp.json();
    let version = doc["openapi"].as_str().unwrap();
    assert!(version.starts_with("3.1"), "openapi {version}");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let paths = doc["paths"].as_object().unwrap();
    let expected = [
        ("/v1/auth/login", &["post"][..]),
        ("/v1/auth/refresh", &["post"]),
        ("/v1/auth/logout", &["post"]),
        ("/v1/me", &["get"]),
        ("/v1/users", &["get", "post"]),
        ("/v1/users/{id}", &["get", "patch"]),
        ("/v1/projects", &["get", "post"]),
        ("/v1/projects/{id}", &["get", "patch", "delete"]),
        ("/v1/projects/{id}/members", &["get"]),
        ("/v1/projects/{id}/members/{user_id}", &["put", "delete"]),
        ("/v1/projects/{id}/uploads", &["get", "post"]),
        ("/v1/uploads/{id}", &["get", "delete"]),
        ("/v1/uploads/{id}/complete", &["post"]),
        ("/v1/uploads/{id}/content", &["get"]),
        ("/v1/uploads/{id}/thumbnails/{name}", &["get"]),
        ("/v1/uploads/{id}/restore", &["post"]),
        ("/v1/admin/jobs", &["get"]),
        ("/v1/admin/jobs/{id}", &["get"]),
        ("/v1/admin/jobs/{id}/retry", &["post"]),
        ("/v1/admin/jobs/retry-dead", &["post"]),
        ("/v1/tus", &["post", "options"]),
        ("/v1/tus/{id}", &["head", "patch", "delete", "post"]),
        ("/v1/blobs/{key}", &["get", "head", "put"]),
    ];
    for (path, methods) in expected {
        let item = paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} missing from the OpenAPI document"));
        for m in methods {
            assert!(item.get(*m).is_some(), "{m} {path} missing");
        }
    }
    let documented: Vec<&String> = paths.keys().filter(|p| p.starts_with("/v1")).collect();
    assert_eq!(documented.len(), expected.len(), "{documented:?}");
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"] {
        assert!(paths[path]["get"].is_object(), "GET {path} missing");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    // Every reference resolves to a schema or a response of the document.
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in &refs {
        assert!(
            r.starts_with("#/components/schemas/") || r.starts_with("#/components/responses/"),
            "unexpected $ref {r}"
        );
        assert!(
            doc.pointer(&r[1..]).is_some_and(Value::is_object),
            "$ref {r} does not resolve"
        );
    }
    // Every documented operation is routed: it is answered by a handler, not
    // by the router's 404 for an unknown path or 405 for an unknown method.
    let acme = app.create_tenant("acme").await;
    for (path, item) in paths {
        let concrete = path
            .replace("{key}", "t/x/original")
            .replace("{name}", "thumb")
            .replace("{user_id}", &Uuid::now_v7().to_string())
            .replace("{id}", &Uuid::now_v7().to_string());
        for (method, _) in item.as_object().unwrap() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let resp = app
                .send(
                    app.request(method.clone(), &concrete, Some(acme.admin.token()))
                        .header("tus-resumable", "1.0.0")
                        .header("x-http-method-override", "HEAD"),
                )
                .await;
            let unrouted = match resp.status.as_u16() {
                404 => resp.text.contains("no route for this path"),
                405 => resp
                    .header("allow")
                    .is_none_or(|allow| !allow.contains(method.as_str())),
                _ => false,
            };
            assert!(
                !unrouted,
                "{method} {path} is documented but not routed: {resp}"
            );
        }
    }
    for schema in [
        "Problem",
        "UserDto",
        "ProjectDto",
        "MemberDto",
        "TokenResponse",
        "UploadDto",
        "InitiatedUploadDto",
        "UploadInstructionsDto",
        "CompleteUploadRequest",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "{schema} missing"
        );
    }

    let resp = app.call(Method::GET, "/docs", None, None).await;
    resp.assert_status(200);
    assert!(
        resp.header("content-type")
            .is_some_and(|c| c.starts_with("text/html")),
        "{resp}"
    );
    let html = &resp.text;
    assert!(html.contains("/openapi.json"));
    assert!(html.to_lowercase().contains("<html"));
    for scheme in ["http://", "https://"] {
        assert!(
            !html.contains(scheme),
            "/docs loads something over {scheme}"
        );
    }
    // Protocol-relative URLs would reach the internet too.
    for attr in ["src=\"//", "href=\"//", "src='//", "href='//", "url(//"] {
        assert!(
            !html.contains(attr),
            "/docs loads something from another host: {attr}"
        );
    }
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_refs(i, out)),
        _ => {}
    }
}

async fn request_ids(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_tenant("acme").await;
    let with_id = |path: &str, id: Option<&str>| {
        let rb = app.request(Method::GET, path, Some(acme.admin.token()));
        match id {
            Some(id) => rb.header(
                "x-request-id",
                reqwest::header::HeaderValue::from_bytes(id.as_bytes()).unwrap(),
            ),
            None => rb,
        }
    };
    let generated = |resp: &common::Resp| -> Uuid {
        let id = resp.header("x-request-id").expect("x-request-id");
        id.parse()
            .unwrap_or_else(|_| panic!("generated id {id:?} is not a UUID"))
    };

    // Sane ids are echoed, on success and on errors alike.
    for path in ["/healthz", "/v1/me", "/v1/nope", "/v1/users/abc"] {
        for id in ["req-123_abc.def:1", "a", &"x".repeat(128)] {
            let resp = app.send(with_id(path, Some(id))).await;
            assert_eq!(resp.header("x-request-id"), Some(id), "{resp}");
        }
    }
    // Insane ones are replaced by a generated id.
    for id in [
        "has space",
        &"x".repeat(129),
        "quote\"d",
        "semi;colon",
        "ñandú",
        "tab\there",
    ] {
        let resp = app.send(with_id("/v1/me", Some(id))).await;
        resp.assert_status(200);
        let got = resp.header("x-request-id").unwrap().to_owned();
        assert_ne!(got, id);
        generated(&resp);
    }
    // An empty one, or none, gets one too; each request its own.
    let a = generated(&app.send(with_id("/healthz", Some(""))).await);
    let b = generated(&app.send(with_id("/healthz", None)).await);
    let c = generated(&app.send(with_id("/v1/nope", None)).await);
    assert!(a != b && b != c && a != c);
    // A problem document of an unauthenticated request carries one as well.
    let resp = app.call(Method::GET, "/v1/me", None, None).await;
    resp.assert_problem(401, "unauthorized");
    generated(&resp);
}
