//! Retries of reads that failed on a transient database error.
//!
//! One place for the whole API: a GET or HEAD whose handler answered 503
//! because the database dropped a connection or was restarting (the error
//! mapping marks those responses with [`TransientDatabaseError`]) runs again,
//! up to [`RETRIES`] times with exponential backoff, before the client sees
//! the 503. Reads only, because they can be repeated without changing
//! anything; a write whose connection died may or may not have committed,
//! so it is answered 503 and the client retries it (with its
//! `Idempotency-Key` where the route takes one). Pool exhaustion
//! (`database_busy`) is not retried here: waiting again for a connection
//! would only lengthen the queue. The worker retries jobs by itself.

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use crate::error::TransientDatabaseError;

/// Retries after the first attempt.
pub const RETRIES: u32 = 3;
/// The first backoff; it doubles each time (50, 100, 200 ms).
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

pub async fn transient(req: Request, next: Next) -> Response {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return next.run(req).await;
    }
    // A GET or HEAD has no body we read; the parts are all a retry needs.
    let (parts, _) = req.into_parts();
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 0;
    loop {
        let mut again = Request::new(Body::empty());
        *again.method_mut() = parts.method.clone();
        *again.uri_mut() = parts.uri.clone();
        *again.version_mut() = parts.version;
        *again.headers_mut() = parts.headers.clone();
        *again.extensions_mut() = parts.extensions.clone();
        let response = next.clone().run(again).await;
        if attempt == RETRIES
            || response
                .extensions()
                .get::<TransientDatabaseError>()
                .is_none()
        {
            return response;
        }
        attempt += 1;
        metrics::counter!("dependency_retries_total", "dependency" => "database").increment(1);
        tracing::warn!(attempt, "transient database error; retrying the read");
        tokio::time::sleep(backoff).await;
        backoff *= 2;
    }
}
