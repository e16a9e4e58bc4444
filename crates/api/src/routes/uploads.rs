//! The upload lifecycle over HTTP: initiate, complete, read, list, download,
//! trash and restore. The bytes never pass through here.

use std::sync::Arc;

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use buildpeer_core::blob::CompletedPart;
use buildpeer_core::ids::{ProjectId, UploadId};
use buildpeer_core::pagination::PageRequest;
use buildpeer_core::service::{Download, InitiateUploadInput, UploadListQuery};
use buildpeer_core::upload::Upload;

use crate::AppState;
use crate::dto::{
    CompleteUploadRequest, IdempotencyKeyHeader, InitiateUploadRequest, InitiatedUploadDto,
    ListEnvelope, UploadDto, UploadListParams,
};
use crate::error::{ApiError, Problem};
use crate::extract::{Auth, Json, JsonBytes, Query, parse_id, to_json};

/// Start an upload: returns signed URLs to send the bytes to.
///
/// Above the multipart threshold (64 MiB by default) the answer is a
/// multipart plan with one signed URL per part. With an `Idempotency-Key`, a
/// retried request gets the same upload; the same key with a different body
/// is refused. A file whose declared SHA-256 this uploader already stored in
/// this project comes back as that upload with `"deduplicated": true`.
#[utoipa::path(post, path = "/v1/projects/{id}/uploads", tag = "uploads", operation_id = "initiateUpload",
    params(("id" = uuid::Uuid, Path), IdempotencyKeyHeader),
    request_body(content = InitiateUploadRequest,
        example = json!({"filename": "foto-obra.jpg", "content_type": "image/jpeg", "size": 161713,
            "sha256": "3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b"})),
    responses(
        (status = 201, description = "A new upload, with where to send its bytes", body = InitiatedUploadDto,
            headers(("Location" = String, description = "`/v1/uploads/{id}`")),
            example = json!({"id": "0196b1f3-8d21-7c4a-b5e0-3f1a9c7d2e64", "project_id": "0196b1f0-2a7c-7b3e-8f51-6c0d9e4a2b18",
                "status": "PENDING", "filename": "foto-obra.jpg", "content_type": "image/jpeg", "size": 161713,
                "sha256": "3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b",
                "uploaded_by": "0196b1e0-0a00-7000-8000-000000000002",
                "created_at": "2026-05-02T15:20:11.084Z", "updated_at": "2026-05-02T15:20:11.084Z",
                "uploaded_at": null, "expires_at": "2026-05-02T16:20:11.084Z", "deleted_at": null, "error": null,
                "detected_type": null, "type_mismatch": false, "metadata": null, "thumbnails": [],
                "upload": {"method": "PUT",
                    "url": "http://localhost:8080/v1/blobs/t/0196b1e0-0a00-7000-8000-000000000001/p/0196b1f0-2a7c-7b3e-8f51-6c0d9e4a2b18/u/0196b1f3-8d21-7c4a-b5e0-3f1a9c7d2e64/original?op=put&exp=1777738811&len=161713&ct=image%2Fjpeg&sig=5d0c…",
                    "headers": {"Content-Length": "161713", "Content-Type": "image/jpeg"},
                    "expires_at": "2026-05-02T16:20:11.084Z"},
                "deduplicated": false})),
        (status = 200, description = "An idempotent replay, or a de-duplicated upload (`deduplicated`: the same file, by SHA-256, this user already stored in this project)", body = InitiatedUploadDto,
            headers(("Location" = String, description = "`/v1/uploads/{id}`"))),
        (status = 403, description = "`forbidden`: the caller may not upload to this project (viewers, non-members)", body = Problem),
        (status = 409, description = "`quota_exceeded` (the tenant's storage quota) or `project_archived`", body = Problem),
        (status = 413, description = "`too_large`: `size` is above the tenant's largest upload; or `payload_too_large`: the JSON body is larger than 64 KiB", body = Problem),
        (status = 415, description = "`unsupported_type`: `content_type` is not on the allowlist; or `unsupported_media_type`: the body is not sent as JSON", body = Problem),
    ))]
pub async fn initiate(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<InitiateUploadRequest>,
) -> Result<Response, ApiError> {
    let project: ProjectId = parse_id(&id)?;
    let idempotency_key = crate::extract::idempotency_key(&headers);
    let out = state
        .service
        .initiate_upload(
            &actor,
            project,
            InitiateUploadInput {
                filename: body.filename,
                content_type: body.content_type,
                size: body.size,
                sha256: body.sha256,
                idempotency_key,
            },
        )
        .await?;
    let status = if out.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let location = format!("/v1/uploads/{}", out.upload.id);
    let dto = InitiatedUploadDto {
        upload: out.upload.into(),
        instructions: out.instructions.map(Into::into),
        deduplicated: out.deduplicated,
    };
    Ok((status, [(header::LOCATION, location)], Json(dto)).into_response())
}

/// An optional JSON body: empty means `None`.
pub struct OptionalJson<T>(pub Option<T>);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let empty = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() == b"0")
            || (req.headers().get(header::CONTENT_LENGTH).is_none()
                && req.headers().get(header::TRANSFER_ENCODING).is_none());
        if empty {
            return Ok(Self(None));
        }
        Json::from_request(req, state)
            .await
            .map(|Json(v)| Self(Some(v)))
    }
}

/// Confirm the bytes are in storage. Single uploads need no body (send none,
/// or `{}`); multipart uploads send `{"parts": [{"number", "etag"}]}` with
/// the ETags storage returned for each part. Moves the upload to `UPLOADED`
/// and queues its processing; repeating it returns the same result.
///
/// A body is optional: without `Content-Length` and `Transfer-Encoding`, or
/// with `Content-Length: 0`, there is none; any other is JSON like every
/// body (so `null` is refused: it is not an object).
#[utoipa::path(post, path = "/v1/uploads/{id}/complete", tag = "uploads", operation_id = "completeUpload",
    params(("id" = uuid::Uuid, Path)),
    request_body(content = Option<CompleteUploadRequest>,
        example = json!({"parts": [{"number": 1, "etag": "\"9b2cf535f27731c974343645a3985328\""}]})),
    responses(
        (status = 200, description = "`UPLOADED` (or where it stands, if completed before)", body = UploadDto),
        (status = 403, description = "`forbidden`: only the uploader, or whoever manages the project, completes it", body = Problem),
        (status = 409, description = "`upload_incomplete` (the bytes are not there yet; the upload is unchanged), `upload_expired` or `upload_deleted`", body = Problem),
    ))]
pub async fn complete(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
    OptionalJson(body): OptionalJson<CompleteUploadRequest>,
) -> Result<Json<UploadDto>, ApiError> {
    let id: UploadId = parse_id(&id)?;
    let parts = body.and_then(|b| b.parts).map(|parts| {
        parts
            .into_iter()
            .map(|p| CompletedPart {
                number: p.number,
                etag: p.etag,
            })
            .collect()
    });
    let traceparent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 128 && v.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'))
        .map(str::to_owned);
    let upload = state
        .service
        .complete_upload(&actor, id, parts, traceparent)
        .await?;
    Ok(Json(upload.into()))
}

/// Read an upload.
///
/// The status poll, the busiest request there is: its JSON is served again
/// while the upload is unchanged (`Service::rendered_uploads`).
#[utoipa::path(get, path = "/v1/uploads/{id}", tag = "uploads", operation_id = "getUpload",
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 200, body = UploadDto,
            example = json!({"id": "0196b1f3-8d21-7c4a-b5e0-3f1a9c7d2e64", "project_id": "0196b1f0-2a7c-7b3e-8f51-6c0d9e4a2b18",
                "status": "COMPLETED", "filename": "foto-obra.jpg", "content_type": "image/jpeg", "size": 161713,
                "sha256": "3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b",
                "uploaded_by": "0196b1e0-0a00-7000-8000-000000000002",
                "created_at": "2026-05-02T15:20:11.084Z", "updated_at": "2026-05-02T15:20:13.912Z",
                "uploaded_at": "2026-05-02T15:20:12.530Z", "expires_at": "2026-05-02T16:20:11.084Z",
                "deleted_at": null, "error": null, "detected_type": "image/jpeg", "type_mismatch": false,
                "metadata": {"width": 4032, "height": 3024, "taken_at": "2024-05-02T09:14:03-06:00",
                    "gps": {"latitude": 19.43, "longitude": -99.13, "altitude": 2240.0},
                    "camera": {"make": "Apple", "model": "iPhone 13"}, "orientation": 6, "page_count": null},
                "thumbnails": [
                    {"name": "thumb", "width": 192, "height": 256, "bytes": 9817,
                        "url": "/v1/uploads/0196b1f3-8d21-7c4a-b5e0-3f1a9c7d2e64/thumbnails/thumb"},
                    {"name": "preview", "width": 960, "height": 1280, "bytes": 118204,
                        "url": "/v1/uploads/0196b1f3-8d21-7c4a-b5e0-3f1a9c7d2e64/thumbnails/preview"}]})),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> Result<JsonBytes, ApiError> {
    let id: UploadId = parse_id(&id)?;
    let upload = state.service.get_upload(&actor, id).await?;
    let rendered = state.service.rendered_uploads();
    if let Some(json) = rendered.get(&id, &upload) {
        return Ok(JsonBytes(json));
    }
    // Only an upload somebody else holds too (the cache's local tier) can
    // be handed out again; one that is ours alone (loaded, or decoded from
    // a cache without a local tier) is serialized and not kept.
    let upload = match Arc::try_unwrap(upload) {
        Ok(upload) => return Ok(JsonBytes(to_json(&UploadDto::from(upload))?)),
        Err(shared) => shared,
    };
    let json = to_json(&UploadDto::from(Upload::clone(&upload)))?;
    rendered.keep(id, upload, json.clone());
    Ok(JsonBytes(json))
}

/// List a project's uploads, newest first.
#[utoipa::path(get, path = "/v1/projects/{id}/uploads", tag = "uploads", operation_id = "listUploads",
    params(("id" = uuid::Uuid, Path), UploadListParams),
    responses((status = 200, body = ListEnvelope<UploadDto>)))]
pub async fn list(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    Query(q): Query<UploadListParams>,
) -> Result<Json<ListEnvelope<UploadDto>>, ApiError> {
    let project: ProjectId = parse_id(&id)?;
    let page = PageRequest::parse(q.limit, q.cursor.as_deref())?;
    let query = UploadListQuery {
        status: q.status,
        uploaded_by: q.uploaded_by,
        from: q.from,
        to: q.to,
        deleted: q.deleted.unwrap_or(false),
        taken_from: q.taken_from,
        taken_to: q.taken_to,
        has_gps: q.has_gps,
    };
    let uploads = state
        .service
        .list_uploads(&actor, project, query, page)
        .await?;
    Ok(Json(ListEnvelope::from_page(uploads)))
}

/// Download the original: a redirect to a short-lived signed URL that serves
/// it as an attachment with the recorded type.
#[utoipa::path(get, path = "/v1/uploads/{id}/content", tag = "uploads", operation_id = "downloadUpload",
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 307, description = "Redirect to a signed download URL",
            headers(("Location" = String, description = "The signed URL"), ("Cache-Control" = String, description = "`no-store`"))),
        (status = 409, description = "`upload_incomplete` (no bytes stored yet) or `upload_deleted`", body = Problem),
    ))]
pub async fn content(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: UploadId = parse_id(&id)?;
    let download = state.service.download_upload(&actor, id).await?;
    redirect(&download)
}

/// Download a derivative (`thumb`, `preview`, …) of a processed upload: a
/// redirect to a short-lived signed URL of the JPEG.
#[utoipa::path(get, path = "/v1/uploads/{id}/thumbnails/{name}", tag = "uploads", operation_id = "downloadThumbnail",
    params(("id" = uuid::Uuid, Path), ("name" = String, Path, description = "A derivative's name, e.g. `thumb` or `preview`")),
    responses(
        (status = 307, description = "Redirect to a signed URL of the JPEG",
            headers(("Location" = String, description = "The signed URL"), ("Cache-Control" = String, description = "`no-store`"))),
        (status = 404, description = "No such upload, or no such derivative (yet)", body = Problem),
        (status = 409, description = "`upload_deleted`", body = Problem),
    ))]
pub async fn thumbnail(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id: UploadId = parse_id(&id)?;
    let download = state.service.download_thumbnail(&actor, id, &name).await?;
    redirect(&download)
}

/// 307 to a signed URL; never cached, as the URL expires.
fn redirect(download: &Download) -> Result<Response, ApiError> {
    let location = HeaderValue::from_str(&download.url.url)
        .map_err(|e| ApiError::Core(buildpeer_core::CoreError::Internal(Box::new(e))))?;
    Ok((
        StatusCode::TEMPORARY_REDIRECT,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
    )
        .into_response())
}

/// Move an upload to the trash (its uploader, or whoever manages the
/// project). It is deleted for good after the retention period.
#[utoipa::path(delete, path = "/v1/uploads/{id}", tag = "uploads", operation_id = "trashUpload",
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 204, description = "In the trash"),
        (status = 403, description = "`forbidden`: only the uploader, or whoever manages the project, trashes it", body = Problem),
    ))]
pub async fn trash(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: UploadId = parse_id(&id)?;
    state.service.trash_upload(&actor, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Take an upload out of the trash.
#[utoipa::path(post, path = "/v1/uploads/{id}/restore", tag = "uploads", operation_id = "restoreUpload",
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 200, body = UploadDto),
        (status = 403, description = "`forbidden`: only the uploader, or whoever manages the project, restores it", body = Problem),
    ))]
pub async fn restore(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> Result<Json<UploadDto>, ApiError> {
    let id: UploadId = parse_id(&id)?;
    Ok(Json(state.service.restore_upload(&actor, id).await?.into()))
}
