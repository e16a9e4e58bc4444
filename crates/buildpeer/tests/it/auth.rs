//! Authentication over HTTP, on SQLite and PostgreSQL: login and its token
//! pair, `/v1/me`, refresh-token rotation with reuse detection (a reused
//! token revokes its whole family and ends its access tokens), logout (the
//! same), one indistinguishable 401 for
//! every kind of bad login (body and, loosely, timing), disabled users
//! (no login, no refresh, existing access token dead), and missing or
//! garbage bearer tokens.

use crate::common;

use std::time::{Duration, Instant};

use common::{Backend, PASSWORD, TestApp};
use reqwest::Method;
use serde_json::json;

scenarios!(
    login_me_refresh_and_reuse,
    logout_ends_the_session,
    bad_logins_are_indistinguishable,
    disabled_users_are_locked_out,
    missing_or_bad_bearer_tokens,
);

async fn login_me_refresh_and_reuse(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_tenant("acme").await;

    let resp = app.login("acme", &acme.admin.email, PASSWORD).await;
    resp.assert_status(200);
    let body = resp.json();
    assert_eq!(body["token_type"], "Bearer", "{resp}");
    assert_eq!(body["expires_in"], 900, "{resp}");
    let access = body["access_token"].as_str().unwrap().to_owned();
    let refresh1 = body["refresh_token"].as_str().unwrap().to_owned();
    assert!(!access.is_empty() && !refresh1.is_empty());

    // The e-mail is case-insensitive at login too.
    app.login_ok("acme", &acme.admin.email.to_uppercase(), PASSWORD)
        .await;

    let me = app.get("/v1/me", &access).await;
    me.assert_status(200);
    let me = me.json();
    assert_eq!(common::uuid(&me["id"]), acme.admin.id);
    assert_eq!(common::uuid(&me["tenant_id"]), acme.id);
    assert_eq!(me["email"], acme.admin.email);
    assert_eq!(me["role"], "admin");
    assert_eq!(me["disabled"], false);
    assert!(me.get("password_hash").is_none() && me.get("password").is_none());

    // Rotation: a new pair, both of which work.
    let resp = app.refresh(&refresh1).await;
    resp.assert_status(200);
    let body = resp.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    let pair2 = common::Tokens::from_json(&body);
    assert_ne!(pair2.refresh, refresh1);
    app.get("/v1/me", &pair2.access).await.assert_status(200);

    // Reusing the old refresh token is refused ...
    app.refresh(&refresh1)
        .await
        .assert_problem(401, "unauthorized");
    // ... and ends the whole family: the newer token is dead too, and so
    // are the session's access tokens, old and new.
    app.refresh(&pair2.refresh)
        .await
        .assert_problem(401, "unauthorized");
    for token in [&access, &pair2.access] {
        app.get("/v1/me", token)
            .await
            .assert_problem(401, "unauthorized");
    }

    // Another login is a separate family, unaffected.
    let other = app.login_ok("acme", &acme.admin.email, PASSWORD).await;
    let resp = app.refresh(&other.refresh).await;
    resp.assert_status(200);
    let pair3 = common::Tokens::from_json(&resp.json());
    app.refresh(&pair3.refresh).await.assert_status(200);

    // Garbage refresh tokens.
    for bad in ["", "nope", "x".repeat(500).as_str()] {
        app.refresh(bad).await.assert_problem(401, "unauthorized");
    }
}

async fn logout_ends_the_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_tenant("acme").await;
    let tokens = app.login_ok("acme", &acme.admin.email, PASSWORD).await;

    let resp = app
        .post(
            "/v1/auth/logout",
            None,
            &json!({ "refresh_token": tokens.refresh }),
        )
        .await;
    resp.assert_status(204);
    assert!(resp.text.is_empty(), "{resp}");
    app.refresh(&tokens.refresh)
        .await
        .assert_problem(401, "unauthorized");
    // The session's access token ends with it, not when it expires.
    app.get("/v1/me", &tokens.access)
        .await
        .assert_problem(401, "unauthorized");

    // Logout is idempotent and tells nothing about unknown tokens.
    for token in [tokens.refresh.as_str(), "never-issued"] {
        app.post("/v1/auth/logout", None, &json!({ "refresh_token": token }))
            .await
            .assert_status(204);
    }

    // Logging out after a rotation ends the rotated token too.
    let t1 = app.login_ok("acme", &acme.admin.email, PASSWORD).await;
    let resp = app.refresh(&t1.refresh).await;
    resp.assert_status(200);
    let t2 = common::Tokens::from_json(&resp.json());
    app.post(
        "/v1/auth/logout",
        None,
        &json!({ "refresh_token": t2.refresh }),
    )
    .await
    .assert_status(204);
    app.refresh(&t2.refresh)
        .await
        .assert_problem(401, "unauthorized");
    for token in [&t1.access, &t2.access] {
        app.get("/v1/me", token)
            .await
            .assert_problem(401, "unauthorized");
    }

    // Other sessions of the same user live on.
    app.get("/v1/me", acme.admin.token())
        .await
        .assert_status(200);
    app.refresh(&acme.admin.tokens.refresh)
        .await
        .assert_status(200);
}

async fn bad_logins_are_indistinguishable(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_tenant("acme").await;
    let email = acme.admin.email.clone();

    let cases = [
        ("wrong password", "acme", email.as_str(), "wrong-password-1"),
        ("unknown e-mail", "acme", "nobody@acme.test", PASSWORD),
        ("unknown tenant", "nosuch", email.as_str(), PASSWORD),
        ("malformed tenant", "Not A Slug!", email.as_str(), PASSWORD),
        ("malformed e-mail", "acme", "not-an-email", PASSWORD),
    ];
    let mut first: Option<serde_json::Value> = None;
    for (what, tenant, email, password) in cases {
        let resp = app.login(tenant, email, password).await;
        let body = resp.assert_problem(401, "unauthorized");
        assert_eq!(resp.header("www-authenticate"), Some("Bearer"), "{what}");
        match &first {
            None => first = Some(body),
            Some(f) => {
                assert_eq!(body["code"], f["code"], "{what}");
                assert_eq!(body["detail"], f["detail"], "{what}");
                assert_eq!(&body, f, "{what}: the whole body must be the same");
            }
        }
    }

    // Timing, loosely: a miss on an unknown e-mail or tenant still pays for
    // a password hash, so it is not an order of magnitude faster than a
    // wrong password. The minimum of a few interleaved tries filters noise.
    let mut best = [Duration::MAX; 3];
    for _ in 0..4 {
        for (i, (tenant, email)) in [
            ("acme", email.as_str()),
            ("acme", "nobody@acme.test"),
            ("nosuch", email.as_str()),
        ]
        .into_iter()
        .enumerate()
        {
            let password = if i == 0 { "wrong-password-1" } else { PASSWORD };
            let start = Instant::now();
            app.login(tenant, email, password).await.assert_status(401);
            best[i] = best[i].min(start.elapsed());
        }
    }
    let [wrong_password, unknown_email, unknown_tenant] = best;
    assert!(
        unknown_email * 10 >= wrong_password,
        "unknown e-mail {unknown_email:?} vs wrong password {wrong_password:?}"
    );
    assert!(
        unknown_tenant * 10 >= wrong_password,
        "unknown tenant {unknown_tenant:?} vs wrong password {wrong_password:?}"
    );
}

async fn disabled_users_are_locked_out(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_tenant("acme").await;
    let worker = app.create_user(&acme, "empleado").await;
    let second_session = app.login_ok("acme", &worker.email, PASSWORD).await;
    app.get("/v1/me", worker.token()).await.assert_status(200);

    let resp = app
        .patch(
            &format!("/v1/users/{}", worker.id),
            acme.admin.token(),
            &json!({ "disabled": true }),
        )
        .await;
    resp.assert_status(200);
    assert_eq!(resp.json()["disabled"], true);

    // The access token it holds stops working at once.
    let resp = app.get("/v1/me", worker.token()).await;
    resp.assert_problem(401, "unauthorized");
    assert_eq!(resp.header("www-authenticate"), Some("Bearer"));
    app.get("/v1/projects", &second_session.access)
        .await
        .assert_problem(401, "unauthorized");
    // No refresh, for any of its sessions.
    app.refresh(&worker.tokens.refresh)
        .await
        .assert_problem(401, "unauthorized");
    app.refresh(&second_session.refresh)
        .await
        .assert_problem(401, "unauthorized");
    // No login, with the same answer as a wrong password.
    let disabled = app.login("acme", &worker.email, PASSWORD).await;
    let disabled_body = disabled.assert_problem(401, "unauthorized");
    let wrong = app.login("acme", &worker.email, "wrong-password-1").await;
    assert_eq!(disabled_body, wrong.assert_problem(401, "unauthorized"));

    // Re-enabled, it can log in again; the sessions ended by disabling stay ended.
    app.patch(
        &format!("/v1/users/{}", worker.id),
        acme.admin.token(),
        &json!({ "disabled": false }),
    )
    .await
    .assert_status(200);
    let fresh = app.login_ok("acme", &worker.email, PASSWORD).await;
    app.get("/v1/me", &fresh.access).await.assert_status(200);
    app.refresh(&worker.tokens.refresh)
        .await
        .assert_problem(401, "unauthorized");
}

async fn missing_or_bad_bearer_tokens(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_tenant("acme").await;
    let token = acme.admin.token().to_owned();
    // The same token with its signature altered.
    let mut tampered = token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });

    let headers = [
        None,
        Some("".to_owned()),
        Some("Bearer".to_owned()),
        Some("Bearer ".to_owned()),
        Some("Bearer garbage".to_owned()),
        Some("Bearer a.b.c".to_owned()),
        Some(format!("Basic {token}")),
        Some(token.clone()),
        Some(format!("Bearer {tampered}")),
    ];
    for path in ["/v1/me", "/v1/users", "/v1/projects"] {
        for header in &headers {
            let mut rb = app.request(Method::GET, path, None);
            if let Some(h) = header {
                rb = rb.header("authorization", h);
            }
            let resp = app.send(rb).await;
            resp.assert_problem(401, "unauthorized");
            assert_eq!(
                resp.header("www-authenticate"),
                Some("Bearer"),
                "{header:?}: {resp}"
            );
        }
    }
    // Writes are refused the same way, before the body is looked at.
    let resp = app
        .post("/v1/projects", Some("garbage"), &json!({ "name": "Torre" }))
        .await;
    resp.assert_problem(401, "unauthorized");
    assert_eq!(resp.header("www-authenticate"), Some("Bearer"));
    // And the real token works.
    app.get("/v1/me", &token).await.assert_status(200);
}
