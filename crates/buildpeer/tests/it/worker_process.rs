//! `buildpeer serve --no-worker` and separate `buildpeer worker` processes on
//! one SQLite data dir: a worker that cannot reach storage (an S3 endpoint on
//! a closed loopback port) retries each job with backoff and dead-letters it
//! after its three attempts, the upload ends `FAILED`; an admin re-queues it
//! from the dead-letter queue and a healthy worker completes it. Each worker
//! stops cleanly on SIGTERM. A worker with `BUILDPEER_WORKER_OPS_LISTEN`
//! serves its own health, readiness and metrics.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use common::process::{self, Server, worker_env};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_and_retry_across_processes() {
    tokio::time::timeout(Duration::from_secs(150), async {
        let dir = tempfile::tempdir().unwrap();
        let (mut server, api, upload_path) = process::upload_for_a_worker(dir.path()).await;
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
        let retried = api.post(&format!("/v1/admin/jobs/{job}/retry")).await;
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
