//! Database trouble, on PostgreSQL (the server a test can interfere with
//! without touching anyone else's: only its own database): the app survives
//! the server dropping all its connections (as on a PostgreSQL restart),
//! and while the database refuses connections `/readyz` says so (503),
//! `/healthz` stays up, API calls fail as problem documents without
//! internal details, and service resumes without a restart. A read whose
//! connection is killed mid-query is retried and answers 200; an exhausted
//! pool answers 503 `database_busy` with `Retry-After` instead of hanging.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Backend, TestApp};
use reqwest::Method;
use secrecy::ExposeSecret as _;
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

/// Holds `ACCESS EXCLUSIVE` on `projects` in an open transaction, so that
/// every query on it waits (holding its pool connection) until `release`.
async fn lock_projects(app: &TestApp) -> PgConnection {
    let url = app.config.database.url.expose_secret().to_owned();
    let mut conn = PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE projects IN ACCESS EXCLUSIVE MODE")
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

async fn release(mut conn: PgConnection) {
    sqlx::raw_sql("COMMIT").execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

/// The pids of the app's sessions waiting on a lock (its blocked queries).
async fn blocked(db: &str) -> Vec<i32> {
    let url = std::env::var(common::PG_URL_ENV).unwrap();
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let pids: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
    )
    .bind(db)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    pids
}

async fn wait_blocked(db: &str) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = blocked(db).await;
        if !pids.is_empty() {
            return pids;
        }
        assert!(
            Instant::now() < deadline,
            "no query ever waited on the lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_retry_a_killed_connection() {
    common::run_scenario(Backend::Postgres, |backend| async move {
        let app = TestApp::spawn(backend).await;
        let acme = app.create_tenant("acme").await;
        let token = acme.admin.token().to_owned();
        app.create_project(&token, "Obra").await;
        let db = db_name(&app);

        let lock = lock_projects(&app).await;
        let list = {
            let client = app.client.clone();
            let url = app.url("/v1/projects");
            let token = token.clone();
            tokio::spawn(async move { client.get(url).bearer_auth(token).send().await })
        };
        // The list waits on the lock; its connection is killed under it
        // (as by a PostgreSQL restart or a failover), then the lock goes.
        for pid in wait_blocked(&db).await {
            admin_sql(&format!("SELECT pg_terminate_backend({pid})")).await;
        }
        // The retry waits on the lock again, on a fresh connection.
        wait_blocked(&db).await;
        release(lock).await;
        let resp = list.await.unwrap().unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["items"].as_array().unwrap().len(), 1);

        let metrics = app.call(Method::GET, "/metrics", None, None).await;
        let line = metrics
            .text
            .lines()
            .find(|l| l.starts_with("dependency_retries_total{dependency=\"database\"}"))
            .map(str::to_owned);
        assert!(line.is_some(), "no database retry counted");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_pool_answers_503_with_retry_after() {
    common::run_scenario(Backend::Postgres, |backend| async move {
        let app = TestApp::spawn_with(backend, |c| {
            c.database.max_connections = 1;
            c.database.acquire_timeout = Duration::from_millis(500);
        })
        .await;
        let acme = app.create_tenant("acme").await;
        let token = acme.admin.token().to_owned();
        let project = app.create_project(&token, "Obra").await;
        let db = db_name(&app);

        // The one connection waits on the lock, inside a list.
        let lock = lock_projects(&app).await;
        let first = {
            let client = app.client.clone();
            let url = app.url("/v1/projects");
            let token = token.clone();
            tokio::spawn(async move { client.get(url).bearer_auth(token).send().await })
        };
        wait_blocked(&db).await;
        // Another request (not the same cached list, which would wait for
        // the first one's load) finds no connection: 503 after the acquire
        // timeout, not a hang, and it says when to come back.
        let started = Instant::now();
        let resp = app
            .get(&format!("/v1/projects/{project}/uploads"), &token)
            .await;
        resp.assert_problem(503, "database_busy");
        assert_eq!(resp.header("retry-after"), Some("1"), "{resp}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "took {:?}",
            started.elapsed()
        );
        // The first request completes once the lock goes.
        release(lock).await;
        let resp = first.await.unwrap().unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        app.get("/v1/projects", &token).await.assert_status(200);
    })
    .await;
}

/// A PostgreSQL restart (the test's own server) under a stream of writes
/// and reads: calls during the outage fail as 503, never 500; the service
/// serves again within 5 s of the server being back, without a restart of
/// its own; and every project a 201 acknowledged is there afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_postgresql_restart_under_load() {
    tokio::time::timeout(common::SCENARIO_TIMEOUT, async {
        let pg = common::postgres_server::PostgresServer::start();
        let app = TestApp::spawn_with(Backend::Sqlite, |c| {
            c.database.url = secrecy::SecretString::from(pg.url());
            c.database.acquire_timeout = Duration::from_secs(1);
            // The load is the point here, not the limits (0 turns them off).
            c.cache.limits.user.per_minute = 0;
            c.cache.limits.tenant.per_minute = 0;
        })
        .await;
        let acme = app.create_tenant("acme").await;
        let token = acme.admin.token().to_owned();

        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut load = Vec::new();
        for worker in 0..4 {
            let (client, base, token, stop) = (
                app.client.clone(),
                app.base_url.clone(),
                token.clone(),
                stop.clone(),
            );
            load.push(tokio::spawn(async move {
                // (name, acknowledged at) of every 201; every other status.
                let mut acked = Vec::new();
                let mut failures = Vec::new();
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    let name = format!("Obra {worker}-{i}");
                    let sent = client
                        .post(format!("{base}/v1/projects"))
                        .bearer_auth(&token)
                        .json(&json!({ "name": name }))
                        .send()
                        .await;
                    match sent.map(|r| r.status().as_u16()) {
                        Ok(201) => acked.push((name, Instant::now())),
                        Ok(s) => failures.push(s),
                        // The connection itself failing is the client's
                        // problem to retry, not a server answer.
                        Err(_) => failures.push(0),
                    }
                    let read = client
                        .get(format!("{base}/v1/projects?limit=5"))
                        .bearer_auth(&token)
                        .send()
                        .await;
                    if let Ok(r) = read
                        && r.status().as_u16() != 200
                    {
                        failures.push(r.status().as_u16());
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                (acked, failures)
            }));
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let pg = tokio::task::spawn_blocking(move || {
            pg.restart();
            pg
        })
        .await
        .unwrap();
        let back = Instant::now();
        tokio::time::sleep(Duration::from_secs(6)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut acked = Vec::new();
        let mut failures = Vec::new();
        for l in load {
            let (a, f) = l.await.unwrap();
            acked.extend(a);
            failures.extend(f);
        }
        let mut by_status = std::collections::BTreeMap::new();
        for s in &failures {
            *by_status.entry(*s).or_insert(0) += 1;
        }
        assert!(
            failures.iter().all(|s| *s == 503),
            "statuses other than 503 during the restart (0: no answer): {by_status:?}"
        );
        let recovered = acked.iter().filter(|(_, at)| *at > back).count();
        assert!(recovered > 0, "no write succeeded after the restart");
        let first_after = acked
            .iter()
            .filter(|(_, at)| *at > back)
            .map(|(_, at)| at.duration_since(back))
            .min()
            .unwrap();
        assert!(
            first_after < Duration::from_secs(5),
            "the first write after the restart took {first_after:?}"
        );
        eprintln!(
            "restart: {} writes acknowledged, {} failed (503), first success {first_after:?} after the server was back",
            acked.len(),
            failures.len()
        );

        // Every acknowledged write is there.
        let mut names = std::collections::HashSet::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/projects?limit=100&cursor={c}"),
                None => "/v1/projects?limit=100".to_owned(),
            };
            let page = app.get(&path, &token).await;
            page.assert_status(200);
            let body = page.json();
            for p in body["items"].as_array().unwrap() {
                names.insert(p["name"].as_str().unwrap().to_owned());
            }
            match body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        for (name, _) in &acked {
            assert!(names.contains(name), "acknowledged {name} is missing");
        }
        drop(app);
        drop(pg);
    })
    .await
    .expect("timed out");
}
