//! Refusals that reach the client: a request answered before its body was
//! read (401, 404, 413, 423, 429, …) has the rest of its body read and
//! dropped, up to a bound, before the answer goes out.
//!
//! Why: a server that answers and closes while the client is still sending
//! makes the kernel reset the connection, and the reset can overtake the
//! answer, so the client (through a proxy, about half the time) sees a
//! dropped connection instead of the status and its `Retry-After`. Reading
//! the rest keeps the connection clean, and even reusable. Past the bound
//! (or if the client stops sending) the answer says `Connection: close`,
//! which proxies pass on, instead of the server reading an attacker's
//! gigabytes.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

/// The most of an unread body read before answering.
const DRAIN_BYTES: u64 = 8 << 20;
/// How long a client may take to send it.
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// Where the request's body goes back when the handler drops it unread.
type Slot = Arc<Mutex<Option<Body>>>;

pub async fn refused_bodies(req: Request, next: Next) -> Response {
    if !has_body(req.headers()) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let slot: Slot = Arc::new(Mutex::new(None));
    let lent = Lent {
        body: Some(body),
        slot: slot.clone(),
    };
    let mut response = next.run(Request::from_parts(parts, Body::new(lent))).await;
    let rest = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
    if let Some(rest) = rest
        && !drain(rest).await
    {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A declared length above zero, or a chunked body.
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

/// Reads and drops `body` to its end; `false` past the bound, the time or
/// on an error (the connection is then not worth keeping).
async fn drain(body: Body) -> bool {
    let mut stream = body.into_data_stream();
    let mut read = 0u64;
    let all = async {
        use futures_util::StreamExt as _;
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else { return false };
            read += chunk.len() as u64;
            if read > DRAIN_BYTES {
                return false;
            }
        }
        true
    };
    tokio::time::timeout(DRAIN_TIME, all).await.unwrap_or(false)
}

/// The request's body as the handler sees it; dropped before its end, it
/// puts what is left back in the slot.
struct Lent {
    body: Option<Body>,
    slot: Slot,
}

impl HttpBody for Lent {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let Some(body) = self.body.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            // Read to its end: nothing to give back.
            self.body = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| http_body::SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Some(body) = self.body.take()
            && !body.is_end_stream()
        {
            *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(body);
        }
    }
}
