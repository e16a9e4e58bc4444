//! tus 1.0 (`/v1/tus`, `/v1/tus/{id}`): thin handlers over
//! `Service::tus_*` (see `buildpeer_core::service::tus` for the design).
//! Every response but OPTIONS carries `Tus-Resumable: 1.0.0` (added by
//! [`resumable`]); errors are problem documents with tus's status codes.
//! PATCH bodies stream straight to storage (no JSON limit, no buffering).

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use buildpeer_core::CoreError;
use buildpeer_core::blob::{BlobError, ByteStream};
use buildpeer_core::ids::UploadId;
use buildpeer_core::ports::TusConcat;
use buildpeer_core::service::tus::{
    Checksum, TUS_CHECKSUM_ALGORITHMS, TUS_EXTENSIONS, TUS_VERSION, TusCreateInput, TusInfo,
    TusPatchInput, codes,
};
use futures_util::StreamExt as _;

use crate::AppState;
use crate::dto::IdempotencyKeyHeader;
use crate::error::{ApiError, Problem};
use crate::extract::Auth;

const OFFSET_STREAM: &str = "application/offset+octet-stream";

/// Adds `Tus-Resumable` to every answer but OPTIONS, and refuses another
/// protocol version with 412 before anything else runs, but for a request
/// with no credentials at all: every tus method but OPTIONS needs them, and
/// who asks comes first (401), as on every other route. A method tus does
/// not have is not a tus request: the router answers it 405.
pub async fn resumable(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let tus = matches!(
        method,
        Method::POST | Method::HEAD | Method::PATCH | Method::DELETE
    );
    let anonymous = !req.headers().contains_key(header::AUTHORIZATION);
    if tus && !anonymous {
        let version = req
            .headers()
            .get("tus-resumable")
            .and_then(|v| v.to_str().ok());
        if version != Some(TUS_VERSION) {
            let mut r = tus_error(
                StatusCode::PRECONDITION_FAILED,
                "unsupported_version",
                "send Tus-Resumable: 1.0.0",
            );
            r.headers_mut()
                .insert("tus-version", HeaderValue::from_static(TUS_VERSION));
            return with_resumable(r);
        }
    }
    let response = next.run(req).await;
    if method == Method::OPTIONS {
        response
    } else {
        with_resumable(response)
    }
}

fn with_resumable(mut r: Response) -> Response {
    r.headers_mut()
        .insert("tus-resumable", HeaderValue::from_static(TUS_VERSION));
    r
}

fn tus_error(status: StatusCode, code: &'static str, detail: &str) -> Response {
    ApiError::Status {
        status,
        code,
        detail: detail.to_owned(),
    }
    .into_response()
}

/// Core errors with tus's statuses.
fn error(e: CoreError) -> Response {
    let status = match &e {
        CoreError::Conflict { code, .. } => match *code {
            codes::LOCKED => Some(StatusCode::LOCKED),
            codes::GONE => Some(StatusCode::GONE),
            codes::CHECKSUM_MISMATCH => StatusCode::from_u16(460).ok(),
            codes::EXCEEDS_LENGTH => Some(StatusCode::PAYLOAD_TOO_LARGE),
            codes::LENGTH_CONFLICT | codes::INVALID_CONCAT => Some(StatusCode::BAD_REQUEST),
            codes::FINAL_UPLOAD => Some(StatusCode::FORBIDDEN),
            _ => None,
        },
        CoreError::Validation(_) => Some(StatusCode::BAD_REQUEST),
        _ => None,
    };
    let locked = status == Some(StatusCode::LOCKED);
    let mut r = match (status, &e) {
        (Some(status), CoreError::Conflict { code, message }) => tus_error(status, code, message),
        (Some(status), _) => ApiError::Core(e).with_status(status),
        (None, _) => ApiError::Core(e).into_response(),
    };
    if locked {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

fn header_u64(h: &HeaderMap, name: &str) -> Result<Option<u64>, Box<Response>> {
    match h.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| {
                Box::new(tus_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_header",
                    &format!("{name} must be a non-negative integer"),
                ))
            }),
    }
}

fn info_headers(r: &mut Response, info: &TusInfo) {
    let h = r.headers_mut();
    h.insert("upload-offset", HeaderValue::from(info.offset));
    if let Some(exp) = info.expires_at
        && let Ok(v) = HeaderValue::from_str(&exp.to_rfc2822().replace("+0000", "GMT"))
    {
        h.insert("upload-expires", v);
    }
}

/// The server's tus capabilities. No token, no `Tus-Resumable` needed.
#[utoipa::path(options, path = "/v1/tus", tag = "tus", operation_id = "tusOptions", security(),
    responses((status = 204, description = "What this server supports",
        headers(
            ("Tus-Version" = String, description = "`1.0.0`"),
            ("Tus-Extension" = String, description = "`creation,creation-with-upload,creation-defer-length,termination,checksum,expiration,concatenation`"),
            ("Tus-Checksum-Algorithm" = String, description = "`sha1,sha256`"),
            ("Tus-Max-Size" = u64, description = "The largest upload, in bytes"),
        ))))]
pub async fn options(State(state): State<AppState>) -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    h.insert("tus-version", HeaderValue::from_static(TUS_VERSION));
    h.insert("tus-extension", HeaderValue::from_static(TUS_EXTENSIONS));
    h.insert(
        "tus-checksum-algorithm",
        HeaderValue::from_static(TUS_CHECKSUM_ALGORITHMS),
    );
    h.insert(
        "tus-max-size",
        HeaderValue::from(state.service.tus_max_size()),
    );
    r
}

fn body_stream(body: Body) -> ByteStream {
    Box::pin(
        body.into_data_stream()
            .map(|c| c.map_err(|e| BlobError::Other(Box::new(e)))),
    )
}

fn patch_input(h: &HeaderMap, offset_required: bool) -> Result<TusPatchInput, Box<Response>> {
    let offset = header_u64(h, "upload-offset")?;
    if offset_required && offset.is_none() {
        return Err(Box::new(tus_error(
            StatusCode::BAD_REQUEST,
            "invalid_header",
            "Upload-Offset is required",
        )));
    }
    let checksum = match h.get("upload-checksum") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| {
                    Box::new(tus_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_checksum",
                        "Upload-Checksum",
                    ))
                })
                .and_then(|s| Checksum::parse(s).map_err(|e| Box::new(error(e))))?,
        ),
    };
    Ok(TusPatchInput {
        offset: offset.unwrap_or(0),
        length: header_u64(h, "upload-length")?,
        checksum,
        content_length: header_u64(h, "content-length")?,
    })
}

/// `Upload-Concat: partial`, or `final;<url> <url>…` where each URL (as
/// `Location` gave it, absolute or not) ends in `/v1/tus/{id}`.
fn upload_concat(h: &HeaderMap) -> Result<Option<TusConcat>, Box<Response>> {
    let Some(v) = h.get("upload-concat") else {
        return Ok(None);
    };
    let bad = |detail: &str| {
        Box::new(tus_error(
            StatusCode::BAD_REQUEST,
            codes::INVALID_CONCAT,
            detail,
        ))
    };
    let v = v
        .to_str()
        .map_err(|_| bad("Upload-Concat is not ASCII"))?
        .trim();
    if v == "partial" {
        return Ok(Some(TusConcat::Partial));
    }
    let urls = v
        .strip_prefix("final;")
        .ok_or_else(|| bad("Upload-Concat must be `partial` or `final;<urls>`"))?;
    let ids = urls
        .split_ascii_whitespace()
        .map(|url| {
            url.rsplit_once("/v1/tus/")
                .and_then(|(_, id)| id.trim_end_matches('/').parse::<UploadId>().ok())
                .ok_or_else(|| bad(&format!("{url} is not a tus upload URL of this server")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(TusConcat::Final(ids)))
}

fn concat_header(concat: &TusConcat) -> Option<HeaderValue> {
    match concat {
        TusConcat::Partial => Some(HeaderValue::from_static("partial")),
        TusConcat::Final(ids) => {
            let urls: Vec<String> = ids.iter().map(|id| format!("/v1/tus/{id}")).collect();
            HeaderValue::from_str(&format!("final;{}", urls.join(" "))).ok()
        }
    }
}

fn is_offset_stream(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().map(str::trim) == Some(OFFSET_STREAM))
}

fn traceparent(h: &HeaderMap) -> Option<String> {
    h.get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Create a tus upload (creation, creation-defer-length, concatenation),
/// optionally with its first bytes (creation-with-upload: a body with
/// `Content-Type: application/offset+octet-stream`).
///
/// `Upload-Metadata` carries the upload's `project_id` (required),
/// `filename` and `filetype`. A retried creation with the same
/// `Idempotency-Key` answers the same `Location` at the upload's current
/// `Upload-Offset` (and ignores its body).
#[utoipa::path(post, path = "/v1/tus", tag = "tus", operation_id = "tusCreate",
    params(Resumable, CreateHeaders, IdempotencyKeyHeader),
    request_body(content = Option<crate::dto::strings::Binary>, content_type = "application/offset+octet-stream",
        description = "The first bytes (creation-with-upload); none otherwise"),
    responses(
        (status = 201, description = "Created (or an idempotent replay)",
            headers(
                ("Location" = String, description = "`/v1/tus/{id}`: where to PATCH the bytes"),
                ("Upload-Offset" = u64, description = "The bytes received so far"),
                ("Upload-Expires" = String, description = "When an unfinished upload is deleted (RFC 9110 date)"),
                ("Tus-Resumable" = String, description = "`1.0.0`"),
            )),
        (status = 400, description = "A malformed or contradictory header (`invalid_header`, `invalid_concat`, `invalid_checksum`), or `validation_failed` (`Upload-Metadata` without a valid `project_id`, no `Upload-Length` and no `Upload-Defer-Length: 1`, an empty file, a malformed or reused `Idempotency-Key`…)", body = Problem),
        (status = 403, description = "`forbidden`: the caller may not upload to this project", body = Problem),
        (status = 404, description = "`not_found`: no such project (or a partial upload of a concatenation)", body = Problem),
        (status = 409, description = "`quota_exceeded` or `project_archived`", body = Problem),
        (status = 413, description = "`too_large`: `Upload-Length` is above the tenant's largest upload", body = Problem),
        (status = 415, description = "`unsupported_type`: the `filetype` metadata is not an accepted media type", body = Problem),
    ))]
pub async fn create(State(state): State<AppState>, Auth(actor): Auth, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let h = &parts.headers;
    let length = match header_u64(h, "upload-length") {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let defer = match h.get("upload-defer-length").map(|v| v.as_bytes()) {
        None => false,
        Some(b"1") => true,
        Some(_) => {
            return tus_error(
                StatusCode::BAD_REQUEST,
                "invalid_header",
                "Upload-Defer-Length must be 1",
            );
        }
    };
    let metadata = h
        .get("upload-metadata")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let concat = match upload_concat(h) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let with_upload = is_offset_stream(h);
    let patch = if with_upload {
        match patch_input(h, false) {
            Ok(p) => Some(TusPatchInput { offset: 0, ..p }),
            Err(r) => return *r,
        }
    } else {
        None
    };
    let service = state.service.clone();
    let input = TusCreateInput {
        length,
        defer_length: defer,
        metadata,
        concat,
        idempotency_key: crate::extract::idempotency_key(h),
    };
    let trace = traceparent(h);
    let (created, new) = match service.tus_create(&actor, input).await {
        Ok(created) => created,
        Err(e) => return error(e),
    };
    let mut info = created.clone();
    // A replayed creation answers where the upload stands; the client
    // resumes from there rather than from this request's body.
    if let Some(mut patch) = patch.filter(|_| new) {
        patch.length = None;
        let body = body_stream(body);
        let id = created.id;
        let svc = service.clone();
        let run = tokio::spawn(async move { svc.tus_patch(&actor, id, patch, body, trace).await });
        match run.await {
            Ok(Ok(after)) => info = after,
            // The upload exists: the client resumes from HEAD.
            Ok(Err(e)) => tracing::info!(error = %e, "tus creation-with-upload: chunk refused"),
            Err(e) => tracing::error!(error = %e, "tus PATCH task failed"),
        }
    }
    let mut r = StatusCode::CREATED.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/tus/{}", created.id)) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    info_headers(&mut r, &info);
    r
}

/// HEAD, PATCH and DELETE on `/v1/tus/{id}`, also as POST with
/// `X-HTTP-Method-Override`. Documented by [`head`], [`patch`], [`delete`]
/// and [`overridden`].
pub async fn upload(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let (mut parts, body) = req.into_parts();
    let method = match parts
        .headers
        .get("x-http-method-override")
        .and_then(|v| v.to_str().ok())
    {
        Some(m) if parts.method == Method::POST => match m.to_ascii_uppercase().as_str() {
            "PATCH" => Method::PATCH,
            "DELETE" => Method::DELETE,
            "HEAD" => Method::HEAD,
            _ => return method_not_allowed(),
        },
        _ => parts.method.clone(),
    };
    if !matches!(method, Method::HEAD | Method::PATCH | Method::DELETE) {
        return method_not_allowed();
    }
    let actor = match <Auth as axum::extract::FromRequestParts<AppState>>::from_request_parts(
        &mut parts, &state,
    )
    .await
    {
        Ok(Auth(a)) => a,
        Err(e) => return e.into_response(),
    };
    let Ok(id) = id.parse::<UploadId>() else {
        return ApiError::Core(CoreError::NotFound).into_response();
    };
    let h = &parts.headers;
    let trace = traceparent(h);
    let service = state.service.clone();
    match method {
        Method::HEAD => match service.tus_head(&actor, id, trace).await {
            Ok(info) => {
                let mut r = StatusCode::OK.into_response();
                info_headers(&mut r, &info);
                let hm = r.headers_mut();
                hm.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                match info.length {
                    Some(l) => {
                        hm.insert("upload-length", HeaderValue::from(l));
                    }
                    None => {
                        hm.insert("upload-defer-length", HeaderValue::from_static("1"));
                    }
                }
                if !info.metadata.is_empty()
                    && let Ok(v) = HeaderValue::from_str(&info.metadata)
                {
                    hm.insert("upload-metadata", v);
                }
                if let Some(v) = info.concat.as_ref().and_then(concat_header) {
                    hm.insert("upload-concat", v);
                }
                r
            }
            Err(e) => error(e),
        },
        Method::PATCH => {
            if !is_offset_stream(h) {
                return tus_error(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "PATCH needs Content-Type: application/offset+octet-stream",
                );
            }
            let input = match patch_input(h, true) {
                Ok(i) => i,
                Err(r) => return *r,
            };
            let body = body_stream(body);
            // In a task of its own: a dropped connection must not cancel the
            // PATCH between the append and the offset update.
            let run =
                tokio::spawn(
                    async move { service.tus_patch(&actor, id, input, body, trace).await },
                );
            match run.await {
                Ok(Ok(info)) => {
                    let mut r = StatusCode::NO_CONTENT.into_response();
                    info_headers(&mut r, &info);
                    r
                }
                Ok(Err(e)) => error(e),
                Err(e) => {
                    tracing::error!(error = %e, "tus PATCH task failed");
                    ApiError::Panic.into_response()
                }
            }
        }
        Method::DELETE => match service.tus_terminate(&actor, id).await {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(e) => error(e),
        },
        _ => method_not_allowed(),
    }
}

/// 405 with the methods `/v1/tus/{id}` has (RFC 9110 requires `Allow`).
fn method_not_allowed() -> Response {
    let mut r = ApiError::MethodNotAllowed.into_response();
    r.headers_mut().insert(
        header::ALLOW,
        HeaderValue::from_static("HEAD,PATCH,DELETE,POST"),
    );
    r
}

/// `Tus-Resumable`, on every tus request but OPTIONS.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Read by `resumable`; here for the document.
struct Resumable {
    /// The protocol version: only `1.0.0` (412 otherwise, before anything else).
    #[param(rename = "Tus-Resumable", pattern = r"^1\.0\.0$")]
    tus_resumable: String,
}

/// The headers of a creation.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Read by `create`; here for the document.
struct CreateHeaders {
    /// The upload's size in bytes. Send it or `Upload-Defer-Length: 1`, not
    /// both; a final concatenation sends neither.
    #[param(rename = "Upload-Length", minimum = 1)]
    upload_length: Option<u64>,
    /// `1`: the length follows in a later PATCH.
    #[param(rename = "Upload-Defer-Length", pattern = "^1$")]
    upload_defer_length: Option<String>,
    /// Comma-separated `key base64(value)` pairs: `project_id` (required),
    /// `filename`, `filetype` (an accepted media type; without it the type
    /// is sniffed from the content). Partial uploads of a concatenation need
    /// the `project_id` too.
    #[param(
        rename = "Upload-Metadata",
        pattern = "(?:^|,) *project_id +[A-Za-z0-9+/]+=*"
    )]
    upload_metadata: String,
    /// `partial`, or `final;` and the partial uploads' URLs (as `Location`
    /// gave them), separated by spaces.
    #[param(rename = "Upload-Concat", pattern = "^(?:partial|final;.+)$")]
    upload_concat: Option<String>,
    /// With creation-with-upload: the body's digest, `sha1 <base64>` or
    /// `sha256 <base64>` (460 when it does not match).
    #[param(
        rename = "Upload-Checksum",
        pattern = "^(?:sha1 [A-Za-z0-9+/]{26}|sha256 [A-Za-z0-9+/]{42})[AEIMQUYcgkosw048]=$"
    )]
    upload_checksum: Option<String>,
}

/// The headers of a PATCH.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Read by `upload`; here for the document.
struct PatchHeaders {
    /// Where the body goes: the upload's current offset (409 otherwise).
    #[param(rename = "Upload-Offset", minimum = 0)]
    upload_offset: u64,
    /// The body's digest, `sha1 <base64>` or `sha256 <base64>` (460 when it
    /// does not match; the bytes are then dropped).
    #[param(
        rename = "Upload-Checksum",
        pattern = "^(?:sha1 [A-Za-z0-9+/]{26}|sha256 [A-Za-z0-9+/]{42})[AEIMQUYcgkosw048]=$"
    )]
    upload_checksum: Option<String>,
    /// A deferred length, once known.
    #[param(rename = "Upload-Length", minimum = 1)]
    upload_length: Option<u64>,
}

/// Where an upload stands.
#[utoipa::path(head, path = "/v1/tus/{id}", tag = "tus", operation_id = "tusHead",
    params(("id" = uuid::Uuid, Path), Resumable),
    responses(
        (status = 200, description = "The upload's state",
            headers(
                ("Upload-Offset" = u64, description = "The bytes received so far: resume from here"),
                ("Upload-Length" = u64, description = "The upload's size, unless deferred"),
                ("Upload-Defer-Length" = String, description = "`1` while the size is deferred"),
                ("Upload-Metadata" = String, description = "As sent at creation"),
                ("Upload-Concat" = String, description = "`partial`, or `final;` and the partial uploads"),
                ("Upload-Expires" = String, description = "When an unfinished upload is deleted"),
                ("Cache-Control" = String, description = "`no-store`"),
                ("Tus-Resumable" = String, description = "`1.0.0`"),
            )),
        (status = 403, description = "`forbidden`"),
        (status = 410, description = "`upload_gone`: expired or terminated"),
    ))]
#[allow(dead_code)] // Documentation only: `upload` answers it.
fn head() {}

/// Send bytes at the upload's offset. The body streams to storage; the
/// upload becomes `UPLOADED` (and is processed) with its last byte.
#[utoipa::path(patch, path = "/v1/tus/{id}", tag = "tus", operation_id = "tusPatch",
    params(("id" = uuid::Uuid, Path), Resumable, PatchHeaders),
    request_body(content = crate::dto::strings::Binary, content_type = "application/offset+octet-stream"),
    responses(
        (status = 204, description = "Stored",
            headers(
                ("Upload-Offset" = u64, description = "The bytes received so far"),
                ("Upload-Expires" = String, description = "When an unfinished upload is deleted"),
                ("Tus-Resumable" = String, description = "`1.0.0`"),
            )),
        (status = 400, description = "A malformed header (`invalid_header`, `invalid_checksum`, `unsupported_checksum_algorithm`), or `length_conflict` (an `Upload-Length` that differs from the upload's)", body = Problem),
        (status = 403, description = "`forbidden` (not the uploader), or `final_upload_immutable` (a final concatenation takes no bytes)", body = Problem),
        (status = 409, description = "`offset_mismatch`: `Upload-Offset` is not the upload's offset; HEAD for it", body = Problem),
        (status = 410, description = "`upload_gone`: expired, terminated or already complete", body = Problem),
        (status = 413, description = "`exceeds_length`: the bytes go past `Upload-Length`", body = Problem),
        (status = 415, description = "`unsupported_media_type`: not `Content-Type: application/offset+octet-stream`", body = Problem),
        (status = 460, description = "`checksum_mismatch`: the body does not match `Upload-Checksum`; it was dropped", body = Problem),
    ))]
#[allow(dead_code)] // Documentation only: `upload` answers it.
fn patch() {}

/// Terminate an unfinished upload: it is deleted.
#[utoipa::path(delete, path = "/v1/tus/{id}", tag = "tus", operation_id = "tusDelete",
    params(("id" = uuid::Uuid, Path), Resumable),
    responses(
        (status = 204, description = "Terminated", headers(("Tus-Resumable" = String, description = "`1.0.0`"))),
        (status = 403, description = "`forbidden`: not the uploader", body = Problem),
        (status = 410, description = "`upload_gone`: expired, terminated or already complete", body = Problem),
    ))]
#[allow(dead_code)] // Documentation only: `upload` answers it.
fn delete() {}

/// HEAD, PATCH or DELETE sent as a POST, for clients and proxies that cannot
/// send those methods: answered as the method `X-HTTP-Method-Override` names.
#[utoipa::path(post, path = "/v1/tus/{id}", tag = "tus", operation_id = "tusOverride",
    params(("id" = uuid::Uuid, Path), Resumable,
        ("X-HTTP-Method-Override" = String, Header, pattern = "^(?:[Hh][Ee][Aa][Dd]|[Pp][Aa][Tt][Cc][Hh]|[Dd][Ee][Ll][Ee][Tt][Ee])$",
            description = "`HEAD`, `PATCH` or `DELETE`, in any case (405 otherwise); then the headers of that method"),
        ("Upload-Offset" = Option<u64>, Header, minimum = 0, description = "PATCH: where the body goes"),
        ("Upload-Checksum" = Option<String>, Header, description = "PATCH: the body's digest"),
        ("Upload-Length" = Option<u64>, Header, minimum = 1, description = "PATCH: a deferred length, once known"),
    ),
    request_body(content = Option<crate::dto::strings::Binary>, content_type = "application/offset+octet-stream",
        description = "PATCH: the bytes"),
    responses(
        (status = 200, description = "HEAD: the upload's state, in the headers of `tusHead`"),
        (status = 204, description = "PATCH: stored (`Upload-Offset`); DELETE: terminated"),
        (status = 400, description = "As for PATCH", body = Problem),
        (status = 403, description = "As for the method named", body = Problem),
        (status = 405, description = "`method_not_allowed`: `X-HTTP-Method-Override` names another method", body = Problem),
        (status = 409, description = "`offset_mismatch` (PATCH)", body = Problem),
        (status = 410, description = "`upload_gone`", body = Problem),
        (status = 413, description = "`exceeds_length` (PATCH)", body = Problem),
        (status = 415, description = "`unsupported_media_type` (PATCH without `application/offset+octet-stream`)", body = Problem),
        (status = 429, description = "`rate_limited` (DELETE), or `too_many_uploads` (PATCH)", body = Problem,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
        (status = 460, description = "`checksum_mismatch` (PATCH)", body = Problem),
    ))]
#[allow(dead_code)] // Documentation only: `upload` answers it.
fn overridden() {}
