//! Operational endpoints: liveness, readiness, metrics, the OpenAPI document
//! and its offline documentation page. None needs a token.

use std::time::Duration;

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
    let cache = state.service.caching().port();
    let (db, cache_ok) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(2), state.service.store().ping()),
        tokio::time::timeout(Duration::from_secs(1), cache.ping()),
    );
    let db_ok = matches!(db, Ok(Ok(())));
    let cache_ok = matches!(cache_ok, Ok(Ok(())));
    let storage_ok = state.service.blobs().circuit_open().is_none();
    let word = |ok: bool| if ok { "ok" } else { "down" };
    let (status, overall) = match (db_ok, cache_ok && storage_ok) {
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        (true, false) => (StatusCode::OK, "degraded"),
        (true, true) => (StatusCode::OK, "ok"),
    };
    (
        status,
        Json(Readiness {
            status: overall,
            checks: Checks {
                database: word(db_ok),
                cache: word(cache_ok),
                storage: word(storage_ok),
            },
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
    refresh_queue_gauges(store.as_ref()).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// How long a scrape waits for the queue counts before it answers with the
/// previous values.
const QUEUE_DEPTH_TIMEOUT: Duration = Duration::from_millis(500);

/// `queue_depth{kind,state}` and `queue_dead_letter_size`, counted at scrape
/// time (one `GROUP BY` on an index) so they are as fresh as the scrape and
/// cost nothing between scrapes. Every state of every kind ever seen is set,
/// so a count that drops to zero shows as zero. If the database is slow or
/// down, the previous values stay and the scrape still answers.
async fn refresh_queue_gauges(store: &dyn buildpeer_core::ports::MetadataStore) {
    use std::collections::BTreeSet;
    use std::sync::{Mutex, PoisonError};

    use buildpeer_core::queue::JobState;

    static KINDS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let depth = match tokio::time::timeout(QUEUE_DEPTH_TIMEOUT, store.job_depth()).await {
        Ok(Ok(depth)) => depth,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "queue depth not refreshed");
            return;
        }
        Err(_) => {
            tracing::warn!("queue depth not refreshed: the database did not answer in time");
            return;
        }
    };
    let mut kinds = KINDS.lock().unwrap_or_else(PoisonError::into_inner);
    kinds.extend(depth.iter().map(|d| d.kind.clone()));
    let mut dead = 0;
    for kind in kinds.iter() {
        for state in JobState::ALL {
            let count = depth
                .iter()
                .find(|d| d.kind == *kind && d.state == state)
                .map_or(0, |d| d.count);
            if state == JobState::Dead {
                dead += count;
            }
            metrics::gauge!("queue_depth", "kind" => kind.clone(), "state" => state.as_str())
                .set(count as f64);
        }
    }
    metrics::gauge!("queue_dead_letter_size").set(dead as f64);
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
