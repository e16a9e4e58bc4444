//! The admin API of the processing queue over real HTTP on both
//! deployments: listing by state, a job's error history, retrying one dead
//! job or all of them, tenant isolation, roles, query validation and the
//! queue gauges on `/metrics`.
//!
//! Jobs are made the way the port makes them (an upload's `UPLOADED`
//! transition) through the harness's second store handle, with a kind no
//! worker runs (`test_job`), so an in-process worker can never race the
//! test; the same handle plays the worker (claim, fail) to kill them.

use crate::common;

use std::time::Duration;

use buildpeer_core::ids::{JobId, TenantId, UploadId};
use buildpeer_core::ports::NewJob;
use buildpeer_core::queue::FailOutcome;
use chrono::Utc;
use common::{Backend, TestApp, TestTenant, uuid};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

scenarios!(
    list_jobs_by_state,
    job_detail_has_the_error_history,
    retry_one_dead_job,
    retry_every_dead_job,
    jobs_are_tenant_scoped,
    only_admins_see_jobs,
    bad_list_queries_are_refused,
    queue_gauges_on_metrics,
);

const KIND: &str = "test_job";
const LEASE: Duration = Duration::from_secs(60);

async fn app(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |c| c.run_worker = false).await
}

/// A pending upload over the API, then its `UPLOADED` transition with a
/// job of `max_attempts`, as `complete` does (without moving any bytes).
async fn job(app: &TestApp, tenant: &TestTenant, project: Uuid, max_attempts: u32) -> JobId {
    let resp = app
        .post(
            &format!("/v1/projects/{project}/uploads"),
            Some(tenant.admin.token()),
            &json!({ "filename": "losa.jpg", "content_type": "image/jpeg", "size": 1024 }),
        )
        .await;
    resp.assert_status(201);
    let upload = UploadId::from_uuid(uuid(&resp.json()["id"]));
    let now = Utc::now();
    let new = NewJob {
        id: JobId::new(),
        kind: KIND,
        payload: json!({ "upload_id": upload.as_uuid() }).to_string(),
        max_attempts,
        run_at: now,
        trace_context: None,
        created_at: now,
    };
    let marked = app
        .store
        .upload_mark_uploaded(TenantId::from_uuid(tenant.id), upload, &new, now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(marked.status.as_str(), "UPLOADED");
    new.id
}

/// Runs `job` as a worker would and fails it for good.
async fn kill(app: &TestApp, id: JobId, error: &str) {
    let store = &app.store;
    let claimed = store
        .job_claim(&[KIND], Utc::now(), LEASE, 100)
        .await
        .unwrap();
    let run = claimed.iter().find(|j| j.id == id).expect("the job is due");
    let outcome = store
        .job_fail(id, run.attempts, error, None, Utc::now())
        .await
        .unwrap();
    assert_eq!(outcome, FailOutcome::Dead);
    // Anything else claimed on the way goes back as it was.
    for other in claimed.iter().filter(|j| j.id != id) {
        store
            .job_defer(other.id, other.attempts, other.run_at, Utc::now())
            .await
            .unwrap();
    }
}

/// A tenant with a project.
async fn setup(app: &TestApp, slug: &str) -> (TestTenant, Uuid) {
    let tenant = app.create_tenant(slug).await;
    let project = app.create_project(tenant.admin.token(), "Torre").await;
    (tenant, project)
}

fn listed(body: &Value) -> Vec<Uuid> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| uuid(&j["id"]))
        .collect()
}

async fn list_jobs_by_state(backend: Backend) {
    let app = app(backend).await;
    let (acme, p) = setup(&app, "acme").await;
    let token = acme.admin.token();
    let a = job(&app, &acme, p, 5).await;
    let b = job(&app, &acme, p, 5).await;
    let c = job(&app, &acme, p, 5).await;
    kill(&app, b, "corrupt image").await;

    let resp = app.get("/v1/admin/jobs", token).await;
    resp.assert_status(200);
    let body = resp.json();
    assert_eq!(
        listed(&body),
        [c.as_uuid(), b.as_uuid(), a.as_uuid()],
        "newest first"
    );
    assert_eq!(body["next_cursor"], Value::Null);
    let item = &body["items"][2];
    assert_eq!(item["kind"], KIND);
    assert_eq!(item["state"], "queued");
    assert_eq!(item["attempts"], 0);
    assert_eq!(item["max_attempts"], 5);
    assert_eq!(item["lease_until"], Value::Null);
    assert_eq!(item["last_error"], Value::Null);
    assert!(item["upload_id"].is_string(), "{item}");
    assert_eq!(item["payload"]["upload_id"], item["upload_id"]);
    for field in ["run_at", "created_at", "updated_at"] {
        assert!(item[field].is_string(), "{field}: {item}");
    }

    let dead = app.get("/v1/admin/jobs?state=dead", token).await.json();
    assert_eq!(listed(&dead), [b.as_uuid()]);
    assert_eq!(dead["items"][0]["state"], "dead");
    assert_eq!(dead["items"][0]["attempts"], 1);
    assert_eq!(dead["items"][0]["last_error"], "corrupt image");
    let queued = app.get("/v1/admin/jobs?state=queued", token).await.json();
    assert_eq!(listed(&queued), [c.as_uuid(), a.as_uuid()]);
    for state in ["running", "done"] {
        let none = app
            .get(&format!("/v1/admin/jobs?state={state}"), token)
            .await
            .json();
        assert!(listed(&none).is_empty(), "{state}: {none}");
    }
    // Pages follow the cursor.
    let pages = app.pages("/v1/admin/jobs", token, 2).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 1]);
}

async fn job_detail_has_the_error_history(backend: Backend) {
    let app = app(backend).await;
    let (acme, p) = setup(&app, "acme").await;
    let id = job(&app, &acme, p, 3).await;
    let store = &app.store;
    for n in 1..=2u32 {
        let got = store
            .job_claim(&[KIND], Utc::now(), LEASE, 1)
            .await
            .unwrap();
        assert_eq!(got[0].attempts, n);
        let outcome = store
            .job_fail(id, n, &format!("timeout {n}"), Some(Utc::now()), Utc::now())
            .await
            .unwrap();
        assert_eq!(outcome, FailOutcome::Retrying);
    }
    let resp = app
        .get(&format!("/v1/admin/jobs/{id}"), acme.admin.token())
        .await;
    resp.assert_status(200);
    let body = resp.json();
    assert_eq!(uuid(&body["id"]), id.as_uuid());
    assert_eq!(body["state"], "queued");
    assert_eq!(body["attempts"], 2);
    assert_eq!(body["last_error"], "timeout 2");
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{body}");
    for (n, e) in errors.iter().enumerate() {
        assert_eq!(e["attempt"], n + 1);
        assert_eq!(e["error"], format!("timeout {}", n + 1));
        assert!(e["at"].is_string());
    }
    app.get(
        &format!("/v1/admin/jobs/{}", Uuid::now_v7()),
        acme.admin.token(),
    )
    .await
    .assert_problem(404, "not_found");
    app.get("/v1/admin/jobs/not-an-id", acme.admin.token())
        .await
        .assert_problem(404, "not_found");
}

async fn retry_one_dead_job(backend: Backend) {
    let app = app(backend).await;
    let (acme, p) = setup(&app, "acme").await;
    let token = acme.admin.token();
    let id = job(&app, &acme, p, 5).await;
    let path = format!("/v1/admin/jobs/{id}/retry");
    // Not dead: refused, unchanged.
    let before = app.get(&format!("/v1/admin/jobs/{id}"), token).await.json();
    app.call(Method::POST, &path, Some(token), None)
        .await
        .assert_problem(409, "job_not_dead");
    assert_eq!(
        app.get(&format!("/v1/admin/jobs/{id}"), token).await.json(),
        before
    );

    kill(&app, id, "corrupt image").await;
    let resp = app.call(Method::POST, &path, Some(token), None).await;
    resp.assert_status(200);
    let body = resp.json();
    assert_eq!(uuid(&body["id"]), id.as_uuid());
    assert_eq!(body["state"], "queued");
    assert_eq!(body["attempts"], 0);
    assert_eq!(body["lease_until"], Value::Null);
    assert_eq!(body["last_error"], "corrupt image");
    // The history stays, and the job runs again.
    let detail = app.get(&format!("/v1/admin/jobs/{id}"), token).await.json();
    assert_eq!(detail["errors"].as_array().unwrap().len(), 1);
    let got = app
        .store
        .job_claim(&[KIND], Utc::now(), LEASE, 10)
        .await
        .unwrap();
    assert_eq!(got.iter().map(|j| j.id).collect::<Vec<_>>(), [id]);
    // Retrying it again is refused: it is running now.
    app.call(Method::POST, &path, Some(token), None)
        .await
        .assert_problem(409, "job_not_dead");
    app.call(
        Method::POST,
        &format!("/v1/admin/jobs/{}/retry", Uuid::now_v7()),
        Some(token),
        None,
    )
    .await
    .assert_problem(404, "not_found");
}

async fn retry_every_dead_job(backend: Backend) {
    let app = app(backend).await;
    let (acme, p) = setup(&app, "acme").await;
    let token = acme.admin.token();
    let mut dead = Vec::new();
    for _ in 0..3 {
        dead.push(job(&app, &acme, p, 1).await);
    }
    let alive = job(&app, &acme, p, 1).await;
    for id in &dead {
        kill(&app, *id, "gone").await;
    }
    let resp = app
        .call(Method::POST, "/v1/admin/jobs/retry-dead", Some(token), None)
        .await;
    resp.assert_status(200);
    assert_eq!(resp.json(), json!({ "retried": 3 }));
    let queued = app.get("/v1/admin/jobs?state=queued", token).await.json();
    let mut expected: Vec<Uuid> = dead.iter().chain([&alive]).map(JobId::as_uuid).collect();
    expected.sort();
    expected.reverse();
    assert_eq!(listed(&queued), expected);
    let again = app
        .call(Method::POST, "/v1/admin/jobs/retry-dead", Some(token), None)
        .await;
    assert_eq!(again.json(), json!({ "retried": 0 }));
}

async fn jobs_are_tenant_scoped(backend: Backend) {
    let app = app(backend).await;
    let (acme, p) = setup(&app, "acme").await;
    let (globex, _) = setup(&app, "globex").await;
    let id = job(&app, &acme, p, 1).await;
    kill(&app, id, "corrupt image").await;
    let theirs = globex.admin.token();

    let list = app.get("/v1/admin/jobs", theirs).await;
    list.assert_status(200);
    assert!(listed(&list.json()).is_empty());
    let dead = app.get("/v1/admin/jobs?state=dead", theirs).await.json();
    assert!(listed(&dead).is_empty());
    app.get(&format!("/v1/admin/jobs/{id}"), theirs)
        .await
        .assert_problem(404, "not_found");
    app.call(
        Method::POST,
        &format!("/v1/admin/jobs/{id}/retry"),
        Some(theirs),
        None,
    )
    .await
    .assert_problem(404, "not_found");
    let bulk = app
        .call(
            Method::POST,
            "/v1/admin/jobs/retry-dead",
            Some(theirs),
            None,
        )
        .await;
    assert_eq!(bulk.json(), json!({ "retried": 0 }));
    // Still dead for its own tenant.
    let mine = app
        .get(&format!("/v1/admin/jobs/{id}"), acme.admin.token())
        .await
        .json();
    assert_eq!(mine["state"], "dead");
}

async fn only_admins_see_jobs(backend: Backend) {
    let app = app(backend).await;
    let (acme, p) = setup(&app, "acme").await;
    let id = job(&app, &acme, p, 1).await;
    kill(&app, id, "corrupt image").await;
    for role in ["supervisor", "empleado", "viewer"] {
        let user = app.create_user(&acme, role).await;
        let token = user.token();
        app.get("/v1/admin/jobs", token).await.assert_outcome(403);
        app.get(&format!("/v1/admin/jobs/{id}"), token)
            .await
            .assert_outcome(403);
        app.call(
            Method::POST,
            &format!("/v1/admin/jobs/{id}/retry"),
            Some(token),
            None,
        )
        .await
        .assert_outcome(403);
        app.call(Method::POST, "/v1/admin/jobs/retry-dead", Some(token), None)
            .await
            .assert_outcome(403);
    }
    let detail = app
        .get(&format!("/v1/admin/jobs/{id}"), acme.admin.token())
        .await
        .json();
    assert_eq!(detail["state"], "dead");
    app.request(Method::GET, "/v1/admin/jobs", None)
        .send()
        .await
        .map(|r| assert_eq!(r.status().as_u16(), 401))
        .unwrap();
}

async fn bad_list_queries_are_refused(backend: Backend) {
    let app = app(backend).await;
    let (acme, _) = setup(&app, "acme").await;
    let token = acme.admin.token();
    app.get("/v1/admin/jobs?state=bogus", token)
        .await
        .assert_invalid_field("state", "invalid_state");
    app.get("/v1/admin/jobs?state=DEAD", token)
        .await
        .assert_invalid_field("state", "invalid_state");
    app.get("/v1/admin/jobs?limit=0", token)
        .await
        .assert_invalid_field("limit", "out_of_range");
    app.get("/v1/admin/jobs?cursor=%21%21", token)
        .await
        .assert_invalid_field("cursor", "invalid_cursor");
    app.get("/v1/admin/jobs?colour=red", token)
        .await
        .assert_problem(422, "validation_failed");
}

/// The value of the sample `name{labels}` in a Prometheus text page.
fn sample(page: &str, name_and_labels: &str) -> Option<f64> {
    page.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn queue_gauges_on_metrics(backend: Backend) {
    let app = app(backend).await;
    let (acme, p) = setup(&app, "acme").await;
    let dead = job(&app, &acme, p, 1).await;
    job(&app, &acme, p, 1).await;
    kill(&app, dead, "corrupt image").await;
    let page = app.send(app.request(Method::GET, "/metrics", None)).await;
    page.assert_status(200);
    let text = &page.text;
    assert_eq!(
        sample(text, r#"queue_depth{kind="test_job",state="dead"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(text, r#"queue_depth{kind="test_job",state="queued"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(text, r#"queue_depth{kind="test_job",state="running"}"#),
        Some(0.0)
    );
    // The recorder is process-wide: other tests' jobs may count too.
    assert!(sample(text, "queue_dead_letter_size").is_some_and(|n| n >= 1.0));
}
