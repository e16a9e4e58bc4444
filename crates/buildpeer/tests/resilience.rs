//! Database trouble, on PostgreSQL (the server a test can interfere with
//! without touching anyone else's: only its own database): the app survives
//! the server dropping all its connections (as on a PostgreSQL restart),
//! and while the database refuses connections `/readyz` says so (503),
//! `/healthz` stays up, API calls fail as problem documents without
//! internal details, and service resumes without a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Backend, TestApp};
use reqwest::Method;
use serde_json::json;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// Runs SQL on the admin connection.
async fn admin_sql(sql: &str) {
    let url = std::env::var(common::PG_URL_ENV).unwrap();
    let mut conn = PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

/// Ends every session on the test's own database.
async fn terminate_connections(db: &str) {
    admin_sql(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = '{db}' AND pid <> pg_backend_pid()"
    ))
    .await;
}

fn db_name(app: &TestApp) -> String {
    app.pg_name().expect("a PostgreSQL app").to_owned()
}

/// Polls `/readyz` until it answers `status`.
async fn wait_ready(app: &TestApp, status: u16) -> common::Resp {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let resp = app.call(Method::GET, "/readyz", None, None).await;
        if resp.status.as_u16() == status {
            return resp;
        }
        assert!(
            Instant::now() < deadline,
            "readyz never answered {status}: {resp}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_dropped_connections() {
    common::run_scenario(Backend::Postgres, |backend| async move {
        let app = TestApp::spawn(backend).await;
        let acme = app.create_tenant("acme").await;
        let token = acme.admin.token().to_owned();
        // Warm the pool: several connections open.
        for i in 0..5 {
            app.create_project(&token, &format!("Obra {i}")).await;
        }

        terminate_connections(&db_name(&app)).await;

        // Every call answers, none with a server error: broken connections
        // are replaced, not handed out.
        for i in 0..10 {
            let resp = app.get("/v1/projects", &token).await;
            resp.assert_status(200);
            assert_eq!(
                resp.json()["items"].as_array().unwrap().len(),
                5,
                "call {i}"
            );
        }
        app.create_project(&token, "Después").await;
        wait_ready(&app, 200).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_refusing_connections() {
    common::run_scenario(Backend::Postgres, |backend| async move {
        let app = TestApp::spawn(backend).await;
        let acme = app.create_tenant("acme").await;
        let token = acme.admin.token().to_owned();
        let db = db_name(&app);

        admin_sql(&format!(r#"ALTER DATABASE "{db}" ALLOW_CONNECTIONS false"#)).await;
        terminate_connections(&db).await;

        let resp = wait_ready(&app, 503).await;
        assert_eq!(
            resp.json(),
            json!({ "status": "unavailable", "checks": { "database": "down", "cache": "ok", "storage": "ok" } })
        );
        app.call(Method::GET, "/healthz", None, None)
            .await
            .assert_status(200);
        let resp = app.get("/v1/projects", &token).await;
        assert!(resp.status.is_server_error(), "{resp}");
        let body = resp.json();
        assert_eq!(
            resp.header("content-type"),
            Some("application/problem+json"),
            "{resp}"
        );
        let detail = body["detail"].as_str().unwrap();
        for leak in [db.as_str(), "sqlx", "postgres", "connection"] {
            assert!(!detail.to_lowercase().contains(leak), "{resp}");
        }
        assert!(resp.header("x-request-id").is_some());

        // Back to normal without a restart.
        admin_sql(&format!(r#"ALTER DATABASE "{db}" ALLOW_CONNECTIONS true"#)).await;
        wait_ready(&app, 200).await;
        app.get("/v1/projects", &token).await.assert_status(200);
    })
    .await;
}
