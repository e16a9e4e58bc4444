//! The cache and the rate limits over HTTP: reads are served from the cache,
//! every write that changes a cached value is seen at once, limits answer
//! 429 with their headers, two instances on one Redis share invalidations
//! and counts, and Redis stopping mid-traffic costs no 5xx.
//!
//! Each scenario runs four ways: SQLite and PostgreSQL, each with the
//! in-process cache and with a redis-server of the test's own.

use crate::common;

use std::time::{Duration, Instant};

use buildpeer::Config;
use buildpeer_core::cache::RateQuota;
use buildpeer_core::ids::{TenantId, UserId};
use buildpeer_core::ports::UserPatch;
use buildpeer_testkit::RedisServer;
use common::{Backend, PASSWORD, TestApp, uuid};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// `scenario(backend, redis)` as `scenario::{sqlite,postgres}_{memory,redis}`.
macro_rules! cache_scenarios {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite_memory() {
                common::run_scenario(Backend::Sqlite, |b| super::$name(b, false)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite_redis() {
                common::run_scenario(Backend::Sqlite, |b| super::$name(b, true)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres_memory() {
                common::run_scenario(Backend::Postgres, |b| super::$name(b, false)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres_redis() {
                common::run_scenario(Backend::Postgres, |b| super::$name(b, true)).await;
            }
        }
    )+};
}

cache_scenarios!(
    cached_reads_see_every_write,
    worker_transitions_reach_status_polls,
    limits_per_user_and_tenant,
    login_limited_per_account_and_ip,
);

/// An app with a redis-server of its own when `redis`. `None` when
/// redis-server is missing (the test skips; under `CI=true` it fails).
async fn spawn(
    backend: Backend,
    redis: bool,
    tweak: impl FnOnce(&mut Config),
) -> Option<(TestApp, Option<RedisServer>)> {
    let server = if redis {
        Some(RedisServer::start().await?)
    } else {
        None
    };
    let url = server.as_ref().map(RedisServer::url);
    let app = TestApp::spawn_with(backend, |c| {
        c.cache.redis_url = url.map(Into::into);
        tweak(c);
    })
    .await;
    Some((app, server))
}

/// Changes a user's name in the database behind the cache's back.
async fn rename_behind_the_cache(app: &TestApp, tenant: Uuid, user: Uuid, name: &str) {
    let patch = UserPatch {
        name: Some(buildpeer_core::model::Name::parse(name).unwrap()),
        role: None,
        disabled: None,
    };
    app.store
        .user_update(
            TenantId::from_uuid(tenant),
            UserId::from_uuid(user),
            &patch,
            chrono::Utc::now(),
        )
        .await
        .unwrap()
        .unwrap();
}

async fn cached_reads_see_every_write(backend: Backend, redis: bool) {
    let Some((app, _redis)) = spawn(backend, redis, |_| {}).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let admin = acme.admin.token();
    let juan = app.create_user(&acme, "supervisor").await;

    // Profiles are cached: a change behind the cache's back is not seen...
    let me = app.get("/v1/me", juan.token()).await.json();
    assert_eq!(me["name"], "supervisor user");
    rename_behind_the_cache(&app, acme.id, juan.id, "Behind").await;
    assert_eq!(
        app.get("/v1/me", juan.token()).await.json()["name"],
        "supervisor user"
    );
    // ...but every change through the service is, at once.
    let user_path = format!("/v1/users/{}", juan.id);
    app.patch(&user_path, admin, &json!({ "name": "Juan Pérez" }))
        .await
        .assert_status(200);
    assert_eq!(
        app.get("/v1/me", juan.token()).await.json()["name"],
        "Juan Pérez"
    );
    assert_eq!(
        app.get(&user_path, admin).await.json()["name"],
        "Juan Pérez"
    );

    // A role change and a disable take effect on the very next request,
    // though the per-request user load is cached.
    let created = app
        .post(
            "/v1/projects",
            Some(juan.token()),
            &json!({ "name": "Torre" }),
        )
        .await;
    created.assert_status(201);
    let project = uuid(&created.json()["id"]);
    app.patch(&user_path, admin, &json!({ "role": "viewer" }))
        .await
        .assert_status(200);
    app.post(
        "/v1/projects",
        Some(juan.token()),
        &json!({ "name": "Otra" }),
    )
    .await
    .assert_problem(403, "forbidden");

    // Project lists and projects: update, archive, membership.
    let emp = app.create_user(&acme, "empleado").await;
    let list = |token: String| {
        let app = &app;
        async move {
            let body = app
                .get("/v1/projects?include_archived=true", &token)
                .await
                .json();
            body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p["name"].as_str().unwrap().to_owned(),
                        p["archived_at"].is_null(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    assert!(list(emp.token().to_owned()).await.is_empty());
    let project_path = format!("/v1/projects/{project}");
    app.get(&project_path, emp.token()).await.assert_status(404);
    app.add_member(admin, project, emp.id).await;
    assert_eq!(
        list(emp.token().to_owned()).await,
        [("Torre".to_owned(), true)]
    );
    app.get(&project_path, emp.token()).await.assert_status(200);
    app.patch(&project_path, admin, &json!({ "name": "Torre Norte" }))
        .await
        .assert_status(200);
    assert_eq!(
        app.get(&project_path, emp.token()).await.json()["name"],
        "Torre Norte"
    );
    assert_eq!(
        list(emp.token().to_owned()).await,
        [("Torre Norte".to_owned(), true)]
    );
    assert_eq!(
        list(admin.to_owned()).await,
        [("Torre Norte".to_owned(), true)]
    );
    app.delete(&project_path, admin).await.assert_status(204);
    assert_eq!(
        list(emp.token().to_owned()).await,
        [("Torre Norte".to_owned(), false)]
    );
    let active = app.get("/v1/projects", emp.token()).await.json();
    assert_eq!(active["items"].as_array().unwrap().len(), 0, "{active}");
    app.delete(&format!("{project_path}/members/{}", emp.id), admin)
        .await;
    // Removing a member of an archived project is refused; membership is
    // checked on a live project below.
    let live = app.create_project(admin, "Viva").await;
    app.add_member(admin, live, emp.id).await;
    let live_path = format!("/v1/projects/{live}");
    app.get(&live_path, emp.token()).await.assert_status(200);
    app.delete(&format!("{live_path}/members/{}", emp.id), admin)
        .await
        .assert_status(204);
    app.get(&live_path, emp.token()).await.assert_status(404);
    assert!(
        list(emp.token().to_owned())
            .await
            .iter()
            .all(|(n, _)| n != "Viva")
    );

    // Disabling ends access at once.
    app.patch(&user_path, admin, &json!({ "disabled": true }))
        .await
        .assert_status(200);
    app.get("/v1/me", juan.token())
        .await
        .assert_problem(401, "unauthorized");

    // Upload status: complete, trash, restore.
    let bytes = b"not really a photo".to_vec();
    let id = upload(&app, admin, live, &bytes).await;
    let path = format!("/v1/uploads/{id}");
    assert_eq!(app.get(&path, admin).await.json()["status"], "UPLOADED");
    app.delete(&path, admin).await.assert_status(204);
    assert!(!app.get(&path, admin).await.json()["deleted_at"].is_null());
    app.post(&format!("{path}/restore"), Some(admin), &json!({}))
        .await
        .assert_status(200);
    assert!(app.get(&path, admin).await.json()["deleted_at"].is_null());

    // The cache holds the tenant's keys under its hash tag.
    let key = app
        .service
        .caching()
        .key(TenantId::from_uuid(acme.id), "upload", id);
    assert!(key.as_str().contains(&format!("{{t:{}}}", acme.id)));
    assert!(
        app.service
            .caching()
            .port()
            .get(&key)
            .await
            .unwrap()
            .is_some()
    );
}

/// Initiates, PUTs and completes an upload of `bytes` (declared a JPEG).
async fn upload(app: &TestApp, token: &str, project: Uuid, bytes: &[u8]) -> Uuid {
    let body = json!({
        "filename": "obra.jpg",
        "content_type": "image/jpeg",
        "size": bytes.len(),
        "sha256": hex(&Sha256::digest(bytes)),
    });
    let started = app
        .call(
            Method::POST,
            &format!("/v1/projects/{project}/uploads"),
            Some(token),
            Some(&body),
        )
        .await;
    started.assert_status(201);
    let started = started.json();
    let instructions = &started["upload"];
    let mut rb = app.client.put(instructions["url"].as_str().unwrap());
    for (name, value) in instructions["headers"].as_object().unwrap() {
        rb = rb.header(name.as_str(), value.as_str().unwrap());
    }
    let put = rb.body(bytes.to_vec()).send().await.unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    let id = uuid(&started["id"]);
    // Polled before completing: a PENDING status is now cached.
    assert_eq!(
        app.get(&format!("/v1/uploads/{id}"), token).await.json()["status"],
        "PENDING"
    );
    let done = app
        .call(
            Method::POST,
            &format!("/v1/uploads/{id}/complete"),
            Some(token),
            None,
        )
        .await;
    done.assert_status(200);
    id
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The worker's transitions (PROCESSING, then FAILED for bytes that are no
/// image) reach a client polling the cached status well within its 30 s TTL.
async fn worker_transitions_reach_status_polls(backend: Backend, redis: bool) {
    let Some((app, _redis)) = spawn(backend, redis, |c| c.run_worker = true).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let admin = acme.admin.token();
    let project = app.create_project(admin, "Torre").await;
    let id = upload(&app, admin, project, b"definitely not a jpeg").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let u = app.get(&format!("/v1/uploads/{id}"), admin).await.json();
        if u["status"] == "FAILED" {
            break;
        }
        assert!(Instant::now() < deadline, "still {u}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn limits(c: &mut Config, user: (u32, u32), tenant: (u32, u32)) {
    c.cache.limits.user = RateQuota {
        per_minute: user.0,
        burst: user.1,
    };
    c.cache.limits.tenant = RateQuota {
        per_minute: tenant.0,
        burst: tenant.1,
    };
}

async fn limits_per_user_and_tenant(backend: Backend, redis: bool) {
    // One request a minute refills: nothing refills while the test runs.
    let Some((app, _redis)) = spawn(backend, redis, |c| limits(c, (1, 4), (1, 7))).await else {
        return;
    };
    let acme = app.create_tenant("acme").await;
    let other = app.create_tenant("other").await;
    let a = app.create_user(&acme, "viewer").await;
    let b = app.create_user(&acme, "viewer").await;
    for remaining in (0..4).rev() {
        let r = app.get("/v1/me", a.token()).await;
        r.assert_status(200);
        assert_eq!(
            r.header("ratelimit-policy"),
            Some("\"user\";q=4;w=240, \"tenant\";q=7;w=420")
        );
        let rl = r.header("ratelimit").unwrap();
        assert!(
            rl.starts_with(&format!("\"user\";r={remaining};t=")),
            "{rl}"
        );
    }
    let refused = app.get("/v1/me", a.token()).await;
    let problem = refused.assert_problem(429, "rate_limited");
    assert!(
        problem["detail"].as_str().unwrap().contains("user"),
        "{problem}"
    );
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((55..=60).contains(&retry), "{retry}");
    assert!(
        refused
            .header("ratelimit")
            .unwrap()
            .starts_with("\"user\";r=0;t=")
    );
    // Another user of the tenant: its own quota, until the tenant's runs out
    // (the admin's two requests creating the users and A's four counted
    // there too: 7 - 6 = 1 left).
    let mut allowed = 0;
    loop {
        let r = app.get("/v1/me", b.token()).await;
        if r.status.as_u16() == 429 {
            let problem = r.assert_problem(429, "rate_limited");
            assert!(
                problem["detail"].as_str().unwrap().contains("tenant"),
                "{problem}"
            );
            break;
        }
        r.assert_status(200);
        allowed += 1;
        assert!(allowed <= 4, "the tenant limit never came");
    }
    assert_eq!(allowed, 1);
    // Other tenants are not affected; unauthenticated routes carry no limit.
    app.get("/v1/me", other.admin.token())
        .await
        .assert_status(200);
    let health = app.send(app.request(Method::GET, "/healthz", None)).await;
    assert_eq!(health.header("ratelimit"), None);
}

async fn login_limited_per_account_and_ip(backend: Backend, redis: bool) {
    let Some((app, _redis)) = spawn(backend, redis, |c| {
        c.cache.limits.login_account = RateQuota {
            per_minute: 3,
            burst: 3,
        };
        c.cache.limits.login_ip = RateQuota {
            per_minute: 8,
            burst: 8,
        };
    })
    .await
    else {
        return;
    };
    // One login of the admin from here already (create_tenant).
    let acme = app.create_tenant("acme").await;
    let email = &acme.admin.email;
    app.login("acme", email, "wrong-password")
        .await
        .assert_status(401);
    let ok = app.login("acme", email, PASSWORD).await;
    ok.assert_status(200);
    assert!(
        ok.header("ratelimit-policy")
            .unwrap()
            .contains("\"login_account\";q=3")
    );
    // The fourth attempt on the account is refused, even with the password.
    let refused = app.login("acme", email, PASSWORD).await;
    refused.assert_problem(429, "rate_limited");
    assert!(refused.header("retry-after").is_some());
    // Other accounts (e-mails compared case-insensitively) go on, until the
    // address runs out: 8 attempts from 127.0.0.1 in all.
    app.login("acme", &email.to_uppercase(), PASSWORD)
        .await
        .assert_problem(429, "rate_limited");
    let mut n = 0;
    loop {
        let r = app
            .login("acme", &format!("nobody{n}@acme.test"), "x-password")
            .await;
        if r.status.as_u16() == 429 {
            assert!(
                r.json()["detail"].as_str().unwrap().contains("login_ip"),
                "{r}"
            );
            break;
        }
        r.assert_status(401);
        n += 1;
        assert!(n < 10, "the IP limit never came");
    }
    // The address counted create_tenant's login and the two allowed
    // attempts; refused attempts count against no later quota: 5 more
    // accounts' attempts fill the 8.
    assert_eq!(n, 5);
}

/// Two instances on one Redis (two replicas behind a load balancer): a write
/// through one is seen by reads through the other (once its announcement
/// arrives), and they share counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_invalidations_and_limits() {
    common::run_scenario(Backend::Postgres, |backend| async move {
        let Some((app, _redis)) =
            spawn(backend, true, |c| limits(c, (60, 1000), (60, 100_000))).await
        else {
            return;
        };
        let mut config = app.config.clone();
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.run_worker = false;
        config.cache.limits.user = RateQuota {
            per_minute: 60,
            burst: 1000,
        };
        let second = buildpeer::app::App::build(config).await.unwrap();
        let base = format!("http://{}", second.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(second.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        let get2 = |path: String, token: String| {
            let client = app.client.clone();
            let base = base.clone();
            async move {
                let r = client
                    .get(format!("{base}{path}"))
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let headers = r.headers().clone();
                let body: Value = r.json().await.unwrap_or(Value::Null);
                (status, headers, body)
            }
        };
        let acme = app.create_tenant("acme").await;
        let admin = acme.admin.token().to_owned();
        let juan = app.create_user(&acme, "supervisor").await;
        let path = format!("/v1/users/{}", juan.id);
        // Cached on the second instance...
        let (_, _, body) = get2(path.clone(), admin.clone()).await;
        assert_eq!(body["name"], "supervisor user");
        // ...changed through the first...
        app.patch(&path, &admin, &json!({ "name": "Juan" }))
            .await
            .assert_status(200);
        // ...seen through the second, as soon as the announcement reaches it
        // (its local copy is dropped; milliseconds on one machine).
        let started = Instant::now();
        loop {
            let (_, _, body) = get2(path.clone(), admin.clone()).await;
            if body["name"] == "Juan" {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(2), "{body}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Disabled through the first: refused by the second as soon.
        app.patch(&path, &admin, &json!({ "disabled": true }))
            .await
            .assert_status(200);
        let started = Instant::now();
        loop {
            let (status, _, _) = get2("/v1/me".into(), juan.token().to_owned()).await;
            if status == 401 {
                break;
            }
            assert_eq!(status, 200);
            assert!(started.elapsed() < Duration::from_secs(2));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // A session ended through the first: its access token is refused
        // by the second as soon (it was cached there as live).
        let ana = app.create_user(&acme, "empleado").await;
        let (status, _, _) = get2("/v1/me".into(), ana.token().to_owned()).await;
        assert_eq!(status, 200);
        app.post(
            "/v1/auth/logout",
            None,
            &json!({ "refresh_token": ana.tokens.refresh }),
        )
        .await
        .assert_status(204);
        let started = Instant::now();
        loop {
            let (status, _, _) = get2("/v1/me".into(), ana.token().to_owned()).await;
            if status == 401 {
                break;
            }
            assert_eq!(status, 200);
            assert!(started.elapsed() < Duration::from_secs(2));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // One quota across both: a user's burst (1000, refilling one a
        // second) is spent once whichever instance answers. 1200 requests,
        // half through each, concurrently: if each instance counted alone,
        // all would pass. Leases may leave up to a tenth of the burst unused
        // per instance (see `FallbackLimiter`), never admit more.
        let viewer = app.create_user(&acme, "viewer").await;
        let token = viewer.token().to_owned();
        let (mut admitted, mut refused) = (0, 0);
        for _ in 0..12 {
            let first = (0..50).map(|_| {
                let app = &app;
                let token = &token;
                async move { app.get("/v1/me", token).await.status.as_u16() }
            });
            let second = (0..50).map(|_| {
                let get2 = &get2;
                let token = token.clone();
                async move { get2("/v1/me".into(), token).await.0 }
            });
            let (a, b) = tokio::join!(
                futures_util::future::join_all(first),
                futures_util::future::join_all(second)
            );
            for status in a.into_iter().chain(b) {
                match status {
                    200 => admitted += 1,
                    429 => refused += 1,
                    other => panic!("{other}"),
                }
            }
        }
        assert!(
            (800..=1010).contains(&admitted),
            "{admitted} admitted, {refused} refused"
        );
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    })
    .await;
}

/// Redis stops in the middle of authenticated reads and writes: no 5xx,
/// `/readyz` says degraded (200), limits keep holding (in-process), and
/// when redis-server is back the cache fills again without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_costs_no_5xx() {
    common::run_scenario(Backend::Sqlite, |backend| async move {
        let Some((app, redis)) = spawn(backend, true, |c| limits(c, (6000, 1000), (60_000, 5000))).await else {
        return;
    };
        let mut redis = redis.unwrap();
        let acme = app.create_tenant("acme").await;
        let admin = acme.admin.token().to_owned();
        let project = app.create_project(&admin, "Torre").await;
        let ready = app.send(app.request(Method::GET, "/readyz", None)).await;
        assert_eq!(
            ready.json(),
            json!({"status": "ok", "checks": {"database": "ok", "cache": "ok", "storage": "ok"}})
        );

        let traffic = |rounds: usize| {
            let app = &app;
            let admin = admin.clone();
            async move {
                let mut statuses = Vec::new();
                for i in 0..rounds {
                    let r = app.get(&format!("/v1/projects/{project}"), &admin).await;
                    statuses.push(r.status.as_u16());
                    let r = app.get("/v1/projects", &admin).await;
                    statuses.push(r.status.as_u16());
                    let r = app
                        .patch(
                            &format!("/v1/projects/{project}"),
                            &admin,
                            &json!({ "name": format!("Torre {i}") }),
                        )
                        .await;
                    statuses.push(r.status.as_u16());
                    let r = app.get("/v1/me", &admin).await;
                    statuses.push(r.status.as_u16());
                }
                statuses
            }
        };
        let (during, ()) = tokio::join!(traffic(60), async {
            tokio::time::sleep(Duration::from_millis(150)).await;
            redis.stop().await;
        });
        let after = traffic(20).await;
        let server_errors = during.iter().chain(&after).filter(|s| **s >= 500).count();
        assert_eq!(server_errors, 0, "{during:?} {after:?}");
        assert!(during.iter().chain(&after).all(|s| *s == 200));
        // Reads still see writes (straight from the database).
        app.patch(
            &format!("/v1/projects/{project}"),
            &admin,
            &json!({ "name": "Sin caché" }),
        )
        .await
        .assert_status(200);
        assert_eq!(
            app.get(&format!("/v1/projects/{project}"), &admin)
                .await
                .json()["name"],
            "Sin caché"
        );
        let ready = app.send(app.request(Method::GET, "/readyz", None)).await;
        ready.assert_status(200);
        assert_eq!(
            ready.json(),
            json!({"status": "degraded", "checks": {"database": "ok", "cache": "down", "storage": "ok"}})
        );

        // Limits fall back to this process: a user over its burst is refused.
        let viewer = app.create_user(&acme, "viewer").await;
        // In concurrent batches, so the burst (1000) is used up faster than
        // it refills (100/s) however slow the machine is.
        let mut refused = false;
        for _ in 0..60 {
            let batch = (0..50).map(|_| app.get("/v1/me", viewer.token()));
            for r in futures_util::future::join_all(batch).await {
                match r.status.as_u16() {
                    429 => refused = true,
                    _ => r.assert_status(200),
                }
            }
            if refused {
                break;
            }
        }
        assert!(refused, "no limit while Redis was down");

        // Back: readiness recovers and reads fill Redis again.
        redis.restart().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ready = app.send(app.request(Method::GET, "/readyz", None)).await;
            if ready.json()["status"] == "ok" {
                break;
            }
            assert!(Instant::now() < deadline, "{ready}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let key = app
            .service
            .caching()
            .key(TenantId::from_uuid(acme.id), "project", project);
        assert_eq!(app.service.caching().port().get(&key).await.unwrap(), None);
        app.get(&format!("/v1/projects/{project}"), &admin)
            .await
            .assert_status(200);
        assert!(
            app.service
                .caching()
                .port()
                .get(&key)
                .await
                .unwrap()
                .is_some()
        );
    })
    .await;
}
