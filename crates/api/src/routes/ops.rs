//! Operational endpoints: liveness, readiness, metrics, the OpenAPI document
//! and its offline documentation page. None needs a token.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse};
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::extract::Json;

#[derive(Serialize, ToSchema)]
pub struct Health {
    status: Alive,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Alive {
    Ok,
}

/// Process alive. Touches no dependency, so a slow database never gets a
/// healthy process killed.
#[utoipa::path(get, path = "/healthz", tag = "ops", operation_id = "getHealth", security(),
    responses((status = 200, description = "Alive", body = Health, example = json!({"status": "ok"}))))]
pub async fn healthz() -> impl IntoResponse {
    Json(Health { status: Alive::Ok })
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    status: Ready,
    checks: Checks,
}

/// `ok`; `degraded` while the cache or storage is down (still ready);
/// `unavailable` while the database is.
#[derive(Serialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum Ready {
    Ok,
    Degraded,
    Unavailable,
}

#[derive(Serialize, ToSchema)]
pub struct Checks {
    database: Up,
    cache: Up,
    storage: Up,
}

#[derive(Serialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum Up {
    Ok,
    Down,
}

/// Ready to serve: the database answers within two seconds (503 otherwise).
/// A cache that does not answer makes the service slower, not unable: it
/// reports `degraded` and stays ready (200). So does storage whose circuit
/// breaker is open: browsing goes on while uploads answer 503.
#[utoipa::path(get, path = "/readyz", tag = "ops", operation_id = "getReadiness", security(),
    responses(
        (status = 200, description = "Ready (`ok`, or `degraded` while the cache or storage is down)", body = Readiness,
            example = json!({"status": "ok", "checks": {"database": "ok", "cache": "ok", "storage": "ok"}})),
        (status = 503, description = "Not ready: the database does not answer (`unavailable`). Not a problem document", body = Readiness,
            example = json!({"status": "unavailable", "checks": {"database": "down", "cache": "ok", "storage": "ok"}})),
    ))]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let ready = state.service.readiness().await;
    let word = |ok: bool| if ok { Up::Ok } else { Up::Down };
    let (status, overall) = match (ready.database, ready.cache && ready.storage) {
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, Ready::Unavailable),
        (true, false) => (StatusCode::OK, Ready::Degraded),
        (true, true) => (StatusCode::OK, Ready::Ok),
    };
    (
        status,
        Json(Readiness {
            status: overall,
            checks: Checks {
                database: word(ready.database),
                cache: word(ready.cache),
                storage: word(ready.storage),
            },
        }),
    )
}

/// Prometheus text format. The pool, queue and process gauges are read at
/// scrape time, so they are never stale.
#[utoipa::path(get, path = "/metrics", tag = "ops", operation_id = "getMetrics", security(),
    responses((status = 200, description = "The metrics, in the Prometheus text exposition format 0.0.4",
        content_type = "text/plain", body = String,
        example = "# TYPE uploads_initiated_total counter\nuploads_initiated_total 3\n")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    static PROCESS: std::sync::LazyLock<metrics_process::Collector> =
        std::sync::LazyLock::new(|| {
            let collector = metrics_process::Collector::default();
            collector.describe();
            collector
        });
    // `process_cpu_seconds_total`, `process_resident_memory_bytes`, … as of now.
    PROCESS.collect();
    state.service.refresh_gauges().await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "ops", operation_id = "getOpenApi", security(),
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)))]
pub async fn openapi(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi.clone(),
    )
}

/// A self-contained page that renders `/openapi.json`: no CDN, no internet.
#[utoipa::path(get, path = "/docs", tag = "ops", operation_id = "getDocs", security(),
    responses((status = 200, description = "An HTML page rendering this document", content_type = "text/html", body = String)))]
pub async fn docs() -> Html<&'static str> {
    Html(include_str!("docs.html"))
}
