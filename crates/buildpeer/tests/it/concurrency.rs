//! Concurrent requests over HTTP, on SQLite and PostgreSQL: racing writes
//! never surface as 5xx (SQLite serialises writers; PostgreSQL's unique
//! constraints decide races), duplicate creations race to exactly one 201
//! and the rest 409, racing membership additions to exactly one 201, and
//! racing rotations of one refresh token to exactly one new pair (the
//! losers count as reuse and end the session).

use crate::common;

use std::collections::BTreeSet;

use common::{Backend, PASSWORD, Resp, TestApp};
use reqwest::Method;
use serde_json::json;
use tokio::task::JoinSet;

scenarios!(
    parallel_writes_all_succeed,
    duplicate_creations_race_to_one_winner,
    racing_refreshes_yield_one_pair,
);

const N: usize = 12;

/// Sends `n` copies of a request at once; returns every answer.
async fn burst(
    app: &std::sync::Arc<TestApp>,
    n: usize,
    make: impl Fn(usize) -> (Method, String, Option<String>, Option<serde_json::Value>),
) -> Vec<Resp> {
    let mut set = JoinSet::new();
    for i in 0..n {
        let (method, path, token, body) = make(i);
        let app = std::sync::Arc::clone(app);
        set.spawn(async move {
            app.call(method, &path, token.as_deref(), body.as_ref())
                .await
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.expect("request task"));
    }
    out
}

fn count(resps: &[Resp], status: u16) -> usize {
    resps.iter().filter(|r| r.status.as_u16() == status).count()
}

async fn parallel_writes_all_succeed(backend: Backend) {
    let app = std::sync::Arc::new(TestApp::spawn(backend).await);
    let acme = app.create_tenant("acme").await;
    let token = acme.admin.token().to_owned();

    let t = token.clone();
    let created = burst(&app, N, move |i| {
        (
            Method::POST,
            "/v1/projects".to_owned(),
            Some(t.clone()),
            Some(json!({ "name": format!("Obra {i}"), "code": format!("C-{i}") })),
        )
    })
    .await;
    for r in &created {
        r.assert_status(201);
    }
    let ids: BTreeSet<String> = created
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), N);

    // Reads and writes mixed: renames of every project alongside listings.
    let list: Vec<String> = ids.iter().cloned().collect();
    let t = token.clone();
    let mixed = burst(&app, 2 * N, move |i| {
        if i % 2 == 0 {
            (
                Method::PATCH,
                format!("/v1/projects/{}", list[i / 2]),
                Some(t.clone()),
                Some(json!({ "name": format!("Renombrada {i}") })),
            )
        } else {
            (
                Method::GET,
                "/v1/projects?limit=100".to_owned(),
                Some(t.clone()),
                None,
            )
        }
    })
    .await;
    for r in &mixed {
        r.assert_status(200);
    }
    let listed = app.get("/v1/projects?limit=100", &token).await.json();
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), N);
    assert!(
        items
            .iter()
            .all(|p| p["name"].as_str().unwrap().starts_with("Renombrada"))
    );
}

async fn duplicate_creations_race_to_one_winner(backend: Backend) {
    let app = std::sync::Arc::new(TestApp::spawn(backend).await);
    let acme = app.create_tenant("acme").await;
    let token = acme.admin.token().to_owned();

    // The same e-mail, differently cased, N times at once.
    let t = token.clone();
    let users = burst(&app, N, move |i| {
        let email = if i % 2 == 0 {
            "Ana@Acme.test"
        } else {
            "ana@acme.test"
        };
        (
            Method::POST,
            "/v1/users".to_owned(),
            Some(t.clone()),
            Some(
                json!({ "email": email, "password": PASSWORD, "name": "Ana", "role": "empleado" }),
            ),
        )
    })
    .await;
    assert_eq!(count(&users, 201), 1, "exactly one creation wins");
    for r in users.iter().filter(|r| r.status.as_u16() != 201) {
        r.assert_problem(409, "conflict");
    }
    let ana = users
        .iter()
        .find(|r| r.status.as_u16() == 201)
        .unwrap()
        .json();

    // The same project code N times at once.
    let t = token.clone();
    let projects = burst(&app, N, move |i| {
        (
            Method::POST,
            "/v1/projects".to_owned(),
            Some(t.clone()),
            Some(json!({ "name": format!("Obra {i}"), "code": "OBR-1" })),
        )
    })
    .await;
    assert_eq!(count(&projects, 201), 1);
    for r in projects.iter().filter(|r| r.status.as_u16() != 201) {
        r.assert_problem(409, "conflict");
    }
    let project = projects
        .iter()
        .find(|r| r.status.as_u16() == 201)
        .unwrap()
        .json();

    // The same membership N times at once: one 201, the rest 204.
    let path = format!(
        "/v1/projects/{}/members/{}",
        project["id"].as_str().unwrap(),
        ana["id"].as_str().unwrap()
    );
    let t = token.clone();
    let p = path.clone();
    let adds = burst(&app, N, move |_| {
        (Method::PUT, p.clone(), Some(t.clone()), None)
    })
    .await;
    assert_eq!(count(&adds, 201), 1, "exactly one addition is new");
    assert_eq!(count(&adds, 204), N - 1);
    let members = app
        .get(
            &format!("/v1/projects/{}/members", project["id"].as_str().unwrap()),
            &token,
        )
        .await
        .json();
    assert_eq!(members["items"].as_array().unwrap().len(), 1);

    // Removing it N times at once: all 204, and it is gone.
    let t = token.clone();
    let removes = burst(&app, N, move |_| {
        (Method::DELETE, path.clone(), Some(t.clone()), None)
    })
    .await;
    assert_eq!(count(&removes, 204), N);
    let members = app
        .get(
            &format!("/v1/projects/{}/members", project["id"].as_str().unwrap()),
            &token,
        )
        .await
        .json();
    assert_eq!(members["items"], json!([]));
}

async fn racing_refreshes_yield_one_pair(backend: Backend) {
    let app = std::sync::Arc::new(TestApp::spawn(backend).await);
    let acme = app.create_tenant("acme").await;
    let tokens = app.login_ok("acme", &acme.admin.email, PASSWORD).await;

    let presented = tokens.refresh.clone();
    let answers = burst(&app, N, move |_| {
        (
            Method::POST,
            "/v1/auth/refresh".to_owned(),
            None,
            Some(json!({ "refresh_token": presented })),
        )
    })
    .await;
    assert_eq!(count(&answers, 200), 1, "exactly one rotation wins");
    for r in answers.iter().filter(|r| r.status.as_u16() != 200) {
        r.assert_problem(401, "unauthorized");
    }
    // The losers presented a used token: the session is over, including
    // the winner's new refresh token.
    let winner = common::Tokens::from_json(
        &answers
            .iter()
            .find(|r| r.status.as_u16() == 200)
            .unwrap()
            .json(),
    );
    app.refresh(&winner.refresh)
        .await
        .assert_problem(401, "unauthorized");
    // Other sessions are unaffected.
    app.refresh(&acme.admin.tokens.refresh)
        .await
        .assert_status(200);

    // Logins in parallel each start their own session.
    let email = acme.admin.email.clone();
    let logins = burst(&app, 4, move |_| {
        (
            Method::POST,
            "/v1/auth/login".to_owned(),
            None,
            Some(json!({ "tenant": "acme", "email": email, "password": PASSWORD })),
        )
    })
    .await;
    for r in &logins {
        r.assert_status(200);
        let t = common::Tokens::from_json(&r.json());
        app.refresh(&t.refresh).await.assert_status(200);
    }
}
