//! The log lines keep the seed's shape, and the seed's two log queries
//! answer over them: docs/observability.md's blocks marked ```` ```sh
//! log-query ```` (failed uploads of a tenant; success rate by hour) run as
//! written with `jq` over what a `buildpeer serve` child process logged
//! while one photo completed and one file that is not an image failed.

use crate::common;

use std::time::Duration;

use buildpeer_testkit::required_tool;
use common::process::{DemoAdmin, Server, serve_env};
use serde_json::{Value, json};

const DOC: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/observability.md"
));
const PHOTO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/photos/jpeg/gps/DSCN0010.jpg"
);

/// The doc's query blocks, in order.
fn queries() -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in DOC.lines() {
        match &mut current {
            None if line.trim() == "```sh log-query" => current = Some(String::new()),
            Some(q) if line.trim() == "```" => {
                out.push(std::mem::take(q));
                current = None;
            }
            Some(q) => {
                q.push_str(line);
                q.push('\n');
            }
            None => {}
        }
    }
    assert_eq!(
        out.len(),
        2,
        "docs/observability.md should have two log-query blocks"
    );
    out
}

/// Uploads `bytes` as `filename` (declared a JPEG) and waits for its end.
async fn upload(
    admin: &DemoAdmin,
    base: &str,
    project: &str,
    filename: &str,
    bytes: Vec<u8>,
) -> Value {
    let client = &admin.client;
    let initiated: Value = client
        .post(format!("{base}/v1/projects/{project}/uploads"))
        .bearer_auth(&admin.token)
        .json(&json!({"filename": filename, "content_type": "image/jpeg", "size": bytes.len()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = initiated["id"].as_str().unwrap().to_owned();
    let mut put = client
        .put(initiated["upload"]["url"].as_str().unwrap())
        .body(bytes);
    for (k, v) in initiated["upload"]["headers"].as_object().unwrap() {
        put = put.header(k, v.as_str().unwrap());
    }
    assert!(put.send().await.unwrap().status().is_success());
    let done = client
        .post(format!("{base}/v1/uploads/{id}/complete"))
        .bearer_auth(&admin.token)
        .send()
        .await
        .unwrap();
    assert!(done.status().is_success());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let upload: Value = client
            .get(format!("{base}/v1/uploads/{id}"))
            .bearer_auth(&admin.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if upload["status"] == "COMPLETED" || upload["status"] == "FAILED" {
            return upload;
        }
        assert!(tokio::time::Instant::now() < deadline, "{upload}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_log_queries_answer() {
    let queries = queries();
    let (Some(jq), Some(bash)) = (required_tool("jq"), required_tool("bash")) else {
        return;
    };
    let root = tempfile::Builder::new()
        .prefix("buildpeer-logs-")
        .tempdir()
        .unwrap();
    let server = Server::spawn(&[], &serve_env(&root.path().join("data")));
    let addr = server.wait_listening().await;
    let base = format!("http://{addr}");
    let admin = DemoAdmin::login(&server, &base).await;
    let project = admin.create_project(&base, "Torre Norte").await;
    let good = upload(
        &admin,
        &base,
        &project,
        "foto-obra.jpg",
        std::fs::read(PHOTO).unwrap(),
    )
    .await;
    assert_eq!(good["status"], "COMPLETED", "{good}");
    let bad = upload(
        &admin,
        &base,
        &project,
        "notas.jpg",
        b"not a photo at all".to_vec(),
    )
    .await;
    assert_eq!(bad["status"], "FAILED", "{bad}");
    let me: Value = admin
        .client
        .get(format!("{base}/v1/me"))
        .bearer_auth(&admin.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tenant = me["tenant_id"].as_str().unwrap().to_owned();

    // The request lines carry who asked (the log is written by a thread of
    // its own: wait for the lines).
    let request = server
        .wait_for_log("the request line for /v1/me", |l| {
            l["message"] == "request completed" && l["route"] == "/v1/me"
        })
        .await;
    for field in [
        "requestId",
        "tenantId",
        "userId",
        "timestamp",
        "level",
        "service",
    ] {
        assert!(request[field].is_string(), "{field} missing: {request}");
    }
    // The upload events carry their context.
    let initiated = server
        .wait_for_log("the upload initiated line", |l| {
            l["message"] == "upload initiated" && l["context"]["uploadId"] == good["id"]
        })
        .await;
    assert_eq!(
        initiated["context"]["filename"], "foto-obra.jpg",
        "{initiated}"
    );
    assert_eq!(initiated["context"]["size"], good["size"], "{initiated}");
    assert_eq!(
        initiated["context"]["projectId"],
        project.as_str(),
        "{initiated}"
    );
    assert!(initiated["requestId"].is_string(), "{initiated}");
    server
        .wait_for_log("the upload failed line", |l| {
            l["message"] == "upload failed" && l["context"]["uploadId"] == bad["id"]
        })
        .await;

    let log = root.path().join("buildpeer.log");
    std::fs::write(&log, server.lines().join("\n") + "\n").unwrap();
    let run = |query: &str| {
        let out = std::process::Command::new(&bash)
            .arg("-c")
            .arg(query)
            .current_dir(root.path())
            .env("TENANT_ID", &tenant)
            .env(
                "PATH",
                format!("{}:/usr/bin:/bin", jq.parent().unwrap().display()),
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{query}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    let failed = run(&queries[0]);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["uploadId"], bad["id"]);
    assert_eq!(failed[0]["filename"], "notas.jpg");
    assert_eq!(failed[0]["error"], bad["error"]["code"], "{bad}");
    let hours = run(&queries[1]);
    let total: u64 = hours.iter().map(|h| h["total"].as_u64().unwrap()).sum();
    let success: u64 = hours.iter().map(|h| h["success"].as_u64().unwrap()).sum();
    assert_eq!((total, success), (2, 1), "{hours:?}");
}
