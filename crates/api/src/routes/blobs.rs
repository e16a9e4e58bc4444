//! `/v1/blobs/{key}`: the local blob store's signed URLs. On S3 storage the
//! signed URLs point at S3 and this route answers 404. No bearer token: the
//! signature in the query is the credential, checked by the adapter.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, BodyDataStream};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use buildpeer_core::CoreError;
use buildpeer_core::blob::{BlobError, ObjectKey, SignedMethod, SignedRequest};
use futures_util::StreamExt as _;

use crate::AppState;
use crate::error::{ApiError, Problem};

/// The most of a refused PUT's body that is read and thrown away before the
/// answer goes out: the largest body a client is told to send in one request
/// with the default settings (a single PUT just under the multipart threshold).
/// A server that answers while the client is still sending and then closes
/// makes the client see a reset (a broken pipe) instead of the 403 that tells
/// it to start over; past this size the bandwidth is not worth it.
const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;
/// How long draining a refused body may take.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// GET, HEAD and PUT of a signed URL. Documented by [`get`], [`head`] and
/// [`put`].
pub async fn handle(
    State(state): State<AppState>,
    Path(key): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let endpoint = state
        .service
        .signed_endpoint()
        .ok_or(ApiError::Core(CoreError::NotFound))?;
    let method = match *req.method() {
        Method::PUT => SignedMethod::Put,
        Method::GET | Method::HEAD => SignedMethod::Get,
        _ => return Err(ApiError::MethodNotAllowed),
    };
    let headers = req.headers().clone();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let content_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let signed = SignedRequest {
        method,
        key: &key,
        query: &query,
        content_type,
        content_length,
        now: chrono::Utc::now(),
    };
    match method {
        SignedMethod::Put => {
            // A place among the tenant's uploads in flight, as a tus PATCH
            // takes (see `Service::upload_slot`); given back before a
            // refused body is drained.
            let slot = match ObjectKey::parse(&key).ok().and_then(|k| k.tenant()) {
                Some(tenant) => match state.service.upload_slot(tenant, None) {
                    Ok(slot) => Some(slot),
                    Err(busy) => return Ok(crate::ratelimit::too_many_uploads(busy)),
                },
                None => None,
            };
            // Shared, so that what the store leaves unread can be drained.
            let body = Arc::new(tokio::sync::Mutex::new(req.into_body().into_data_stream()));
            let feed = futures_util::stream::unfold(body.clone(), |body| async move {
                let next = body.lock().await.next().await;
                next.map(|chunk| (chunk.map_err(|e| BlobError::Other(Box::new(e))), body))
            });
            let put = endpoint.signed_put(signed, Box::pin(feed)).await;
            drop(slot);
            let etag = match put {
                Ok(etag) => etag,
                Err(e) => {
                    if content_length.is_none_or(|n| n <= DRAIN_LIMIT) {
                        drain(&body).await;
                    }
                    return Err(e.into());
                }
            };
            let mut response = StatusCode::OK.into_response();
            if let Ok(v) = HeaderValue::from_str(&etag) {
                response.headers_mut().insert(header::ETAG, v);
            }
            Ok(response)
        }
        SignedMethod::Get => {
            let got = endpoint.signed_get(signed).await?;
            let mut response = Response::new(Body::from_stream(got.body));
            let h = response.headers_mut();
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(got.meta.size));
            h.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            if let Ok(v) = HeaderValue::from_str(&got.content_type) {
                h.insert(header::CONTENT_TYPE, v);
            }
            if let Ok(v) = HeaderValue::from_str(&got.content_disposition) {
                h.insert(header::CONTENT_DISPOSITION, v);
            }
            if let Some(etag) = got.meta.etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
                h.insert(header::ETAG, etag);
            }
            Ok(response)
        }
    }
}

/// Reads the rest of a request body, up to [`DRAIN_LIMIT`] bytes and
/// [`DRAIN_TIMEOUT`], and throws it away.
async fn drain(body: &tokio::sync::Mutex<BodyDataStream>) {
    let mut body = body.lock().await;
    let read = async {
        let mut total = 0u64;
        while let Some(Ok(chunk)) = body.next().await {
            total = total.saturating_add(chunk.len() as u64);
            if total > DRAIN_LIMIT {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, read).await;
}

/// The query of a signed URL, as the service wrote it: copy it whole. Which
/// parameters it has depends on what it is for (`op`); an unknown, missing
/// or repeated one makes it invalid (403 `signature_invalid`).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read by the storage adapter; here for the document.
struct Signed {
    /// What the URL is for: `put` (a whole object), `part` (a part of a
    /// multipart upload) or `get` (a download).
    #[param(pattern = "^(?:put|part|get)$")]
    op: String,
    /// When it stops working, in seconds since the Unix epoch.
    exp: i64,
    /// `put`, `part`: the exact `Content-Length` of the body.
    len: Option<u64>,
    /// `put`: the exact `Content-Type` of the body.
    ct: Option<String>,
    /// `part`: the multipart upload.
    upload: Option<String>,
    /// `part`: the part's number.
    part: Option<u32>,
    /// `get`: the `Content-Type` of the answer.
    rct: Option<String>,
    /// `get`: the `Content-Disposition` of the answer.
    rcd: Option<String>,
    /// The signature: HMAC-SHA256 in hex.
    #[param(pattern = "^[0-9A-Fa-f]{64}$")]
    sig: String,
}

/// Download with a signed URL (from `downloadUpload` or `downloadThumbnail`).
#[utoipa::path(get, path = "/v1/blobs/{key}", tag = "blobs", operation_id = "getBlob", security(),
    params(("key" = String, Path, description = "The object's key (it contains `/`)"), Signed),
    responses(
        (status = 200, description = "The bytes, with the type and disposition the URL names",
            content_type = "application/octet-stream", body = crate::dto::strings::Binary,
            headers(
                ("Content-Disposition" = String, description = "As the URL names"),
                ("Content-Length" = u64, description = "The object's size"),
                ("ETag" = String, description = "The object's entity tag"),
                ("X-Content-Type-Options" = String, description = "`nosniff`"),
            )),
        (status = 403, description = "`signature_invalid`, `signature_expired` or `method_not_allowed` (the URL is for a PUT)", body = Problem),
        (status = 404, description = "`not_found`: no such object, or storage is not the local disk", body = Problem),
        (status = 503, description = "`storage_unavailable`: retry after `Retry-After`", body = Problem,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
    ))]
#[allow(dead_code)] // Documentation only: `handle` answers it.
fn get() {}

/// What a GET of the signed URL would answer, without the bytes.
#[utoipa::path(head, path = "/v1/blobs/{key}", tag = "blobs", operation_id = "headBlob", security(),
    params(("key" = String, Path, description = "The object's key (it contains `/`)"), Signed),
    responses(
        (status = 200, description = "As GET, without the body",
            headers(
                ("Content-Disposition" = String, description = "As the URL names"),
                ("Content-Length" = u64, description = "The object's size"),
                ("ETag" = String, description = "The object's entity tag"),
            )),
        (status = 403, description = "`signature_invalid`, `signature_expired` or `method_not_allowed`"),
        (status = 404, description = "`not_found`"),
        (status = 503, description = "`storage_unavailable`",
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
    ))]
#[allow(dead_code)] // Documentation only: `handle` answers it.
fn head() {}

/// Upload with a signed URL (from `initiateUpload`): the whole file, or one
/// part of a multipart upload, with exactly the `Content-Length` (and, for a
/// whole file, the `Content-Type`) the URL binds.
#[utoipa::path(put, path = "/v1/blobs/{key}", tag = "blobs", operation_id = "putBlob", security(),
    params(("key" = String, Path, description = "The object's key (it contains `/`)"), Signed),
    request_body(content = crate::dto::strings::Binary, content_type = "application/octet-stream",
        description = "The bytes, of the type the URL names"),
    responses(
        (status = 200, description = "Stored", headers(("ETag" = String, description = "Keep it to complete a multipart upload"))),
        (status = 400, description = "`invalid_parts`", body = Problem),
        (status = 403, description = "`signature_invalid`, `signature_expired`, `method_not_allowed` (the URL is for a GET), `length_mismatch` or `content_type_mismatch`: start the upload over", body = Problem),
        (status = 404, description = "`not_found`: storage is not the local disk", body = Problem),
        (status = 429, description = "`too_many_uploads`: the tenant's uploads in flight are at their limit; retry in a second. (Or `rate_limited`, if the request carries a bearer token over its quota.)", body = Problem,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
        (status = 503, description = "`storage_unavailable`: retry after `Retry-After`", body = Problem,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
    ))]
#[allow(dead_code)] // Documentation only: `handle` answers it.
fn put() {}
