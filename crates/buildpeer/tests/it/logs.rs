//! The log lines keep the seed's shape, and the seed's two log queries
//! answer over them: docs/observability.md's blocks marked ```` ```sh
//! log-query ```` (failed uploads of a tenant; success rate by hour) run as
//! written with `jq` over what a `buildpeer serve` child process logged
//! while one photo completed and one file that is not an image failed.

use crate::common;

use buildpeer_testkit::required_tool;
use common::process::{DemoAdmin, Server, serve_env};
use serde_json::Value;

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
    let photo = std::fs::read(PHOTO).unwrap();
    let good = admin.upload(&base, &project, "foto-obra.jpg", photo).await;
    assert_eq!(good["status"], "COMPLETED", "{good}");
    let bad = admin
        .upload(&base, &project, "notas.jpg", b"not a photo at all".to_vec())
        .await;
    assert_eq!(bad["status"], "FAILED", "{bad}");
    let me = admin.get(&base, "/v1/me").await;
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
