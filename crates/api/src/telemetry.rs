//! Per-request telemetry: the request id, the request span (which the auth
//! extractor fills with tenant and user), one log line per request, and the
//! request-duration histogram behind the seed's `api_latency` p50/p95/p99.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use buildpeer_core::ids::TenantId;
use metrics::Histogram;
use tracing::Instrument;
use uuid::Uuid;

use crate::AppState;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A client-chosen request id is kept only if it is short and plain, so it
/// can neither forge log structure nor bloat every line.
fn sane(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Where the `Auth` extractor leaves the caller's tenant for
/// [`mark_route`], which counts the request in the tenant's metrics.
#[derive(Clone, Default)]
pub struct TenantSlot(Arc<OnceLock<TenantId>>);

impl TenantSlot {
    pub fn set(&self, tenant: TenantId) {
        let _ = self.0.set(tenant);
    }
}

/// Runs after routing (in the route layer), where the matched route is
/// known: puts it on the span and hands it out to `track` through the
/// response; counts an authenticated request in its tenant's
/// `tenant_http_requests_total`.
pub async fn mark_route(
    state: &AppState,
    mut req: Request,
    next: impl AsyncFnOnce(Request) -> Response,
) -> Response {
    let matched = req.extensions().get::<MatchedPath>().cloned();
    if let Some(path) = &matched {
        tracing::Span::current().record("route", path.as_str());
    }
    let slot = TenantSlot::default();
    req.extensions_mut().insert(slot.clone());
    let mut response = next(req).await;
    if let Some(tenant) = slot.0.get() {
        let class = status_class(response.status());
        state.service.observe_request(*tenant, class).await;
    }
    if let Some(path) = matched {
        response.extensions_mut().insert(path);
    }
    response
}

fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

/// Runs around everything (as the outermost layer), so even unrouted
/// requests get an id, a log line and a histogram sample.
pub async fn track(mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let given = req
        .headers()
        .get(&REQUEST_ID)
        .filter(|v| v.to_str().is_ok_and(sane))
        .cloned();
    let request_id = match given {
        Some(id) => id,
        None => {
            let id = Uuid::now_v7();
            let id =
                HeaderValue::from_str(id.hyphenated().encode_lower(&mut Uuid::encode_buffer()))
                    .unwrap_or_else(|_| HeaderValue::from_static("-"));
            req.headers_mut().insert(REQUEST_ID, id.clone());
            id
        }
    };
    let method = req.method().clone();
    let span = tracing::info_span!(
        "request",
        request_id = request_id.to_str().unwrap_or_default(),
        method = method.as_str(),
        route = tracing::field::Empty,
        tenant_id = tracing::field::Empty,
        user_id = tracing::field::Empty,
        status = tracing::field::Empty,
        latency_ms = tracing::field::Empty,
    );
    let mut response = next.run(req).instrument(span.clone()).await;
    let elapsed = start.elapsed();
    let status = response.status();
    span.record("status", status.as_u16());
    // Microsecond precision is plenty, and keeps log lines short.
    span.record(
        "latency_ms",
        (elapsed.as_secs_f64() * 1_000_000.0).round() / 1000.0,
    );
    span.in_scope(|| {
        if status.is_server_error() {
            tracing::warn!("request completed");
        } else {
            tracing::info!("request completed");
        }
    });
    let status_class = status_class(status);
    let route = response
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    duration_histogram(&method, route, status_class).record(elapsed.as_secs_f64());
    response.headers_mut().insert(REQUEST_ID, request_id);
    response
}

thread_local! {
    /// The request-duration histograms this thread has recorded into, by
    /// route, then method and status class. `metrics::histogram!` builds and
    /// hashes its key and looks it up in the registry on every call (and the
    /// route label was a fresh `String`): a few percent of a cached read.
    static HISTOGRAMS: RefCell<HashMap<Box<str>, Vec<Labelled>>> = RefCell::new(HashMap::new());
}

/// A histogram with its method and status class.
type Labelled = (&'static str, &'static str, Histogram);

/// `http_request_duration_seconds{method, route, status_class}`.
fn duration_histogram(
    method: &Method,
    route: Option<&str>,
    status_class: &'static str,
) -> Histogram {
    let route = route.unwrap_or("unmatched");
    let register = |method: &'static str| {
        metrics::histogram!(
            "http_request_duration_seconds",
            "method" => method,
            "route" => route.to_owned(),
            "status_class" => status_class,
        )
    };
    // Any token is a method to HTTP: an unusual one counts as `other`, so
    // clients cannot mint series.
    let method = known_method(method).unwrap_or("other");
    HISTOGRAMS.with_borrow_mut(|routes| {
        let known = routes.get(route).and_then(|k| {
            k.iter()
                .find(|(m, c, _)| *m == method && *c == status_class)
        });
        if let Some((_, _, h)) = known {
            return h.clone();
        }
        let h = register(method);
        routes
            .entry(route.into())
            .or_default()
            .push((method, status_class, h.clone()));
        h
    })
}

/// The usual methods, as static labels.
fn known_method(method: &Method) -> Option<&'static str> {
    Some(match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::sane;

    #[test]
    fn request_ids() {
        assert!(sane("req-123_abc.def:1"));
        assert!(sane(&"a".repeat(128)));
        assert!(!sane(""));
        assert!(!sane(&"a".repeat(129)));
        assert!(!sane("a b"));
        assert!(!sane("a\"b"));
        assert!(!sane("ñ"));
    }
}
