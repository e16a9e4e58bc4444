//! Operational endpoints: liveness, readiness, metrics, the OpenAPI document
//! and its offline documentation page. None needs a token.

use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse};
use serde::Serialize;

use crate::AppState;

/// Process alive. Touches no dependency, so a slow database never gets a
/// healthy process killed.
pub async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

#[derive(Serialize)]
struct Readiness {
    status: &'static str,
    checks: Checks,
}

#[derive(Serialize)]
struct Checks {
    database: &'static str,
}

/// Ready to serve: the database answers within two seconds.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let db_ok = matches!(
        tokio::time::timeout(Duration::from_secs(2), state.service.store().ping()).await,
        Ok(Ok(()))
    );
    let (status, body) = if db_ok {
        (StatusCode::OK, ("ok", "ok"))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, ("unavailable", "down"))
    };
    (
        status,
        axum::Json(Readiness {
            status: body.0,
            checks: Checks { database: body.1 },
        }),
    )
}

/// Prometheus text format. Pool gauges are read at scrape time, so they are
/// never stale.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let store = state.service.store();
    let stats = store.pool_stats();
    let backend = store.backend();
    metrics::gauge!("db_pool_connections", "backend" => backend, "state" => "idle")
        .set(f64::from(stats.idle));
    metrics::gauge!("db_pool_connections", "backend" => backend, "state" => "in_use")
        .set(f64::from(stats.size.saturating_sub(stats.idle)));
    metrics::gauge!("db_pool_max_connections", "backend" => backend).set(f64::from(stats.max));
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
