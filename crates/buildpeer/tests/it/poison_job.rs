//! A poison job: every worker process that takes the upload dies on it
//! (SIGKILL, as the kernel's OOM killer or a crashing decoder would end it)
//! before it finishes. After the job's last attempt the next worker does not
//! run it again: the upload ends `FAILED` with `processing_crashed`, the job
//! is in the dead-letter queue with one "lease expired" per attempt, and an
//! admin's retry brings it back to a healthy worker, which completes it.
//!
//! The dying workers read storage from an S3 endpoint that accepts
//! connections and never answers, so each is certainly mid-job when it is
//! killed; the lease is one second so that a dead worker's job is free again
//! at once.

use crate::common;

use std::time::Duration;

use common::process::{self, Server, worker_env};
use serde_json::Value;

/// An S3 endpoint that takes connections and never answers them.
async fn black_hole() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (
        format!("s3://stuck?endpoint=http://{addr}&region=local"),
        task,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_kills_every_worker_fails_its_upload_and_can_be_retried() {
    tokio::time::timeout(Duration::from_secs(150), async {
        let dir = tempfile::tempdir().unwrap();
        let (mut server, api, upload_path) = process::upload_for_a_worker(dir.path()).await;
        let job = api
            .until("the processing job", "/v1/admin/jobs", |l| {
                l["items"].as_array().is_some_and(|i| i.len() == 1)
            })
            .await["items"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let job_path = format!("/v1/admin/jobs/{job}");

        let (stuck_s3, hole) = black_hole().await;
        let lease = [
            ("BUILDPEER_JOB_LEASE_SECS", "1"),
            ("BUILDPEER_STORAGE_URL", stuck_s3.as_str()),
            ("AWS_ACCESS_KEY_ID", "test-key-id"),
            ("AWS_SECRET_ACCESS_KEY", "test-secret-key"),
        ];
        for attempt in 1..=3u64 {
            let mut doomed = Server::spawn_command("worker", &[], &worker_env(dir.path(), &lease));
            // Claimed for this attempt and started: the upload is
            // PROCESSING and the worker is waiting on storage.
            api.until("the worker to take the job", &job_path, |j| {
                j["state"] == "running" && j["attempts"] == attempt
            })
            .await;
            api.until("processing to start", &upload_path, |u| {
                u["status"] == "PROCESSING"
            })
            .await;
            doomed.sigkill().await;
        }

        // A healthy worker finds the job's lease gone on its last attempt:
        // it buries the job instead of running it a fourth time.
        let healthy_env = worker_env(dir.path(), &[("BUILDPEER_JOB_LEASE_SECS", "1")]);
        let mut healthy = Server::spawn_command("worker", &[], &healthy_env);
        let failed = api
            .until("the upload to fail", &upload_path, |u| {
                u["status"] == "FAILED"
            })
            .await;
        assert_eq!(failed["error"]["code"], "processing_crashed", "{failed}");
        let dead = api
            .until("the job to be dead", &job_path, |j| j["state"] == "dead")
            .await;
        assert_eq!(dead["attempts"], 3, "{dead}");
        let errors = dead["errors"].as_array().unwrap();
        let attempts: Vec<&Value> = errors.iter().map(|e| &e["attempt"]).collect();
        assert_eq!(attempts, [1, 2, 3], "{dead}");
        assert!(
            errors.iter().all(|e| e["error"]
                .as_str()
                .is_some_and(|s| s.starts_with("lease expired"))),
            "{dead}"
        );
        let listed = api.get("/v1/admin/jobs?state=dead").await;
        assert_eq!(listed["items"][0]["id"], job.as_str(), "{listed}");

        // The admin retries it; the healthy worker completes it.
        let retried = api.post(&format!("{job_path}/retry")).await;
        assert_eq!(retried["state"], "queued", "{retried}");
        let done = api
            .until("the upload to complete", &upload_path, |u| {
                u["status"] == "COMPLETED"
            })
            .await;
        assert_eq!(done["error"], Value::Null, "{done}");
        assert_eq!(done["thumbnails"].as_array().unwrap().len(), 2, "{done}");

        healthy.stop().await;
        server.stop().await;
        hole.abort();
    })
    .await
    .expect("timed out");
}
