//! Per-request telemetry: the request id, the request span (which the auth
//! extractor fills with tenant and user), one log line per request, and the
//! request-duration histogram behind the seed's `api_latency` p50/p95/p99.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use metrics::SharedString;
use tracing::Instrument;
use uuid::Uuid;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A client-chosen request id is kept only if it is short and plain, so it
/// can neither forge log structure nor bloat every line.
fn sane(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Runs after routing (in the route layer), where the matched route is
/// known: puts it on the span and hands it out to `track` through the
/// response.
pub async fn mark_route(req: Request, next: impl AsyncFnOnce(Request) -> Response) -> Response {
    let matched = req.extensions().get::<MatchedPath>().cloned();
    if let Some(path) = &matched {
        tracing::Span::current().record("route", path.as_str());
    }
    let mut response = next(req).await;
    if let Some(path) = matched {
        response.extensions_mut().insert(path);
    }
    response
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
    let method = method_label(req.method());
    let span = tracing::info_span!(
        "request",
        request_id = request_id.to_str().unwrap_or_default(),
        method = &*method,
        route = tracing::field::Empty,
        tenant_id = tracing::field::Empty,
        user_id = tracing::field::Empty,
        status = tracing::field::Empty,
        latency_ms = tracing::field::Empty,
    );
    let mut response = next.run(req).instrument(span.clone()).await;
    let elapsed = start.elapsed();
    let status = response.status();
    let route = response
        .extensions()
        .get::<MatchedPath>()
        .map_or(SharedString::const_str("unmatched"), |p| {
            SharedString::from_owned(p.as_str().to_owned())
        });
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
    let status_class = match status.as_u16() / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    };
    metrics::histogram!(
        "http_request_duration_seconds",
        "method" => method,
        "route" => route,
        "status_class" => status_class,
    )
    .record(elapsed.as_secs_f64());
    response.headers_mut().insert(REQUEST_ID, request_id);
    response
}

/// The method as a metric label, without an allocation for the usual ones.
fn method_label(method: &Method) -> SharedString {
    let known = match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => return SharedString::from_owned(method.to_string()),
    };
    SharedString::const_str(known)
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
