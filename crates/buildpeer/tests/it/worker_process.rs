//! `buildpeer serve --no-worker` and separate `buildpeer worker` processes on
//! one SQLite data dir: a worker that cannot reach storage (an S3 endpoint on
//! a closed loopback port) retries each job with backoff and dead-letters it
//! after its three attempts, the upload ends `FAILED`; an admin re-queues it
//! from the dead-letter queue and a healthy worker completes it. Each worker
//! stops cleanly on SIGTERM. A worker with `BUILDPEER_WORKER_OPS_LISTEN`
//! serves its own health, readiness and metrics.

use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::process::{DemoAdmin, Server, serve_env};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const PHOTO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/photos/jpeg/gps/DSCN0025.jpg"
);

struct Api {
    base: String,
    token: String,
    client: reqwest::Client,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut rb = self
            .client
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    async fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// Polls `path` until `pred` holds.
    async fn until(&self, what: &str, path: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let v = self.get(path).await;
            if pred(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {v}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn login(server: &Server, addr: SocketAddr) -> Api {
    let base = format!("http://{addr}");
    let admin = DemoAdmin::login(server, &base).await;
    Api {
        base,
        token: admin.token,
        client: admin.client,
    }
}

fn worker_env(data_dir: &std::path::Path, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = serve_env(data_dir);
    env.push(("BUILDPEER_JOB_RETRY_BASE_MS".into(), "100".into()));
    env.push(("BUILDPEER_WORKER_CONCURRENCY".into(), "2".into()));
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_and_retry_across_processes() {
    tokio::time::timeout(Duration::from_secs(150), async {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Server::spawn(&["--no-worker"], &serve_env(dir.path()));
        let addr = server.wait_listening().await;
        let api = login(&server, addr).await;
        let project = api
            .call(
                reqwest::Method::POST,
                "/v1/projects",
                Some(json!({"name": "Obra"})),
            )
            .await["id"]
            .as_str()
            .unwrap()
            .to_owned();

        let bytes = std::fs::read(PHOTO).unwrap();
        let sha: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let started = api
            .call(
                reqwest::Method::POST,
                &format!("/v1/projects/{project}/uploads"),
                Some(json!({"filename": "obra.jpg", "content_type": "image/jpeg",
                            "size": bytes.len(), "sha256": sha})),
            )
            .await;
        let instr = &started["upload"];
        let mut put = api.client.put(instr["url"].as_str().unwrap());
        for (k, v) in instr["headers"].as_object().unwrap() {
            put = put.header(k.as_str(), v.as_str().unwrap());
        }
        assert!(put.body(bytes).send().await.unwrap().status().is_success());
        let id = started["id"].as_str().unwrap().to_owned();
        let upload_path = format!("/v1/uploads/{id}");
        api.call(
            reqwest::Method::POST,
            &format!("{upload_path}/complete"),
            None,
        )
        .await;
        // No worker in the API process: it waits.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(api.get(&upload_path).await["status"], "UPLOADED");

        // A worker whose storage is down: three attempts, then the dead-letter queue.
        let mut broken = Server::spawn_command(
            "worker",
            &[],
            &worker_env(
                dir.path(),
                &[
                    (
                        "BUILDPEER_STORAGE_URL",
                        "s3://nowhere?endpoint=http://127.0.0.1:9&region=local",
                    ),
                    ("AWS_ACCESS_KEY_ID", "test-key-id"),
                    ("AWS_SECRET_ACCESS_KEY", "test-secret-key"),
                ],
            ),
        );
        let failed = api
            .until("the upload to fail", &upload_path, |u| {
                u["status"] == "FAILED"
            })
            .await;
        assert_eq!(failed["error"]["code"], "storage_unavailable", "{failed}");
        let dead = api
            .until("a dead job", "/v1/admin/jobs?state=dead", |l| {
                l["items"].as_array().is_some_and(|i| i.len() == 1)
            })
            .await;
        let job = dead["items"][0]["id"].as_str().unwrap().to_owned();
        let detail = api.get(&format!("/v1/admin/jobs/{job}")).await;
        assert_eq!(detail["attempts"], 3, "{detail}");
        let errors = detail["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 3, "{detail}");
        assert!(
            errors.iter().all(|e| e["error"]
                .as_str()
                .is_some_and(|s| s.starts_with("storage_unavailable"))),
            "{detail}"
        );
        broken.stop().await;

        // Storage is back (a worker with the right configuration): the
        // admin re-queues the job and it runs from the start.
        let (mut healthy, ops) = worker_with_ops(dir.path()).await;
        healthy
            .wait_for_log("the worker to start", |v| v["message"] == "worker started")
            .await;
        let retried = api
            .call(
                reqwest::Method::POST,
                &format!("/v1/admin/jobs/{job}/retry"),
                None,
            )
            .await;
        assert_eq!(retried["state"], "queued", "{retried}");
        let done = api
            .until("the upload to complete", &upload_path, |u| {
                u["status"] == "COMPLETED"
            })
            .await;
        assert_eq!(done["error"], Value::Null, "{done}");
        assert_eq!(done["thumbnails"].as_array().unwrap().len(), 2, "{done}");
        assert!(done["metadata"]["gps"]["latitude"].is_f64(), "{done}");
        // The job's metrics are the worker's, and its endpoint has them.
        let metrics = scrape(&api.client, ops).await;
        for line in [
            "worker_duration_seconds_count{kind=\"process_upload\",outcome=\"done\"} 1",
            "uploads_processed_total{outcome=\"completed\"} 1",
            "storage_circuit_state{backend=",
            "queue_depth{kind=\"process_upload\",state=\"done\"} 1",
        ] {
            assert!(metrics.contains(line), "no {line} in\n{metrics}");
        }
        healthy.stop().await;
        server.stop().await;
    })
    .await
    .expect("timed out");
}

/// A healthy worker serving its operational endpoints on a free port.
async fn worker_with_ops(data_dir: &std::path::Path) -> (Server, SocketAddr) {
    let env = worker_env(data_dir, &[("BUILDPEER_WORKER_OPS_LISTEN", "127.0.0.1:0")]);
    let worker = Server::spawn_command("worker", &[], &env);
    let ops = worker.wait_listening().await;
    (worker, ops)
}

async fn scrape(client: &reqwest::Client, ops: SocketAddr) -> String {
    let resp = client
        .get(format!("http://{ops}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"),
    );
    resp.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_serves_its_operational_endpoints() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        let (mut worker, ops) = worker_with_ops(dir.path()).await;
        let client = reqwest::Client::new();
        let get = |path: &str| client.get(format!("http://{ops}{path}")).send();

        let health = get("/healthz").await.unwrap();
        assert_eq!(health.status(), 200);
        assert_eq!(health.json::<Value>().await.unwrap()["status"], "ok");
        let ready = get("/readyz").await.unwrap();
        assert_eq!(ready.status(), 200);
        let ready: Value = ready.json().await.unwrap();
        assert_eq!(ready["checks"]["database"], "ok", "{ready}");
        let metrics = scrape(&client, ops).await;
        assert!(metrics.contains("db_pool_connections{"), "{metrics}");
        assert!(metrics.contains("storage_circuit_state{"), "{metrics}");

        // Nothing else is served there: not the API, not its documents.
        for path in ["/v1/projects", "/openapi.json", "/nowhere"] {
            let resp = get(path).await.unwrap();
            assert_eq!(resp.status(), 404, "{path}");
            let problem: Value = resp.json().await.unwrap();
            assert_eq!(problem["code"], "not_found", "{path}: {problem}");
        }
        let post = client
            .post(format!("http://{ops}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(post.status(), 405);

        // SIGTERM: the worker drains, exits 0, and the endpoint is gone.
        worker.stop().await;
        assert!(
            tokio::net::TcpStream::connect(ops).await.is_err(),
            "still listening after exit"
        );
    })
    .await
    .expect("timed out");
}
