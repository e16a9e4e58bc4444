//! Operational endpoints: liveness, readiness, metrics, the OpenAPI document
//! and its offline documentation page. None needs a token.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse};
use serde::Serialize;

use crate::AppState;
use crate::extract::Json;

/// Process alive. Touches no dependency, so a slow database never gets a
/// healthy process killed.
pub async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

#[derive(Serialize)]
struct Readiness {
    status: &'static str,
    checks: Checks,
}

#[derive(Serialize)]
struct Checks {
    database: &'static str,
    cache: &'static str,
    storage: &'static str,
}

/// Ready to serve: the database answers within two seconds (503 otherwise).
/// A cache that does not answer makes the service slower, not unable: it
/// reports `degraded` and stays ready (200). So does storage whose circuit
/// breaker is open: browsing goes on while uploads answer 503.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let ready = state.service.readiness().await;
    let word = |ok: bool| if ok { "ok" } else { "down" };
    let (status, overall) = match (ready.database, ready.cache && ready.storage) {
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        (true, false) => (StatusCode::OK, "degraded"),
        (true, true) => (StatusCode::OK, "ok"),
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

/// Prometheus text format. The pool and queue gauges are read at scrape
/// time, so they are never stale.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.service.refresh_gauges().await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

pub async fn openapi(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi.clone(),
    )
}

/// A self-contained page that renders `/openapi.json`: no CDN, no internet.
pub async fn docs() -> Html<&'static str> {
    Html(include_str!("docs.html"))
}
