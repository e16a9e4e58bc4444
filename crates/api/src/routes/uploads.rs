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
    CompleteUploadRequest, InitiateUploadRequest, InitiatedUploadDto, ListEnvelope, UploadDto,
    UploadListParams,
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
#[utoipa::path(post, path = "/v1/projects/{id}/uploads", tag = "uploads",
    params(("id" = uuid::Uuid, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = InitiateUploadRequest,
    responses(
        (status = 201, description = "A new upload", body = InitiatedUploadDto),
        (status = 200, description = "An idempotent replay, or a de-duplicated upload", body = InitiatedUploadDto),
        (status = 403, body = Problem),
        (status = 404, body = Problem),
        (status = 409, description = "`quota_exceeded` or `project_archived`", body = Problem),
        (status = 413, description = "`too_large`", body = Problem),
        (status = 415, description = "`unsupported_type`", body = Problem),
        (status = 422, body = Problem),
        (status = 503, description = "`storage_unavailable`", body = Problem),
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

/// Confirm the bytes are in storage. Single uploads need no body; multipart
/// uploads send `{"parts": [{"number", "etag"}]}` with the ETags storage
/// returned for each part. Moves the upload to `UPLOADED` and queues its
/// processing; repeating it returns the same result.
#[utoipa::path(post, path = "/v1/uploads/{id}/complete", tag = "uploads",
    params(("id" = uuid::Uuid, Path)),
    request_body(content = Option<CompleteUploadRequest>),
    responses(
        (status = 200, body = UploadDto),
        (status = 404, body = Problem),
        (status = 409, description = "`upload_incomplete` (the bytes are not there yet, upload unchanged) or `upload_expired`", body = Problem),
        (status = 422, body = Problem),
        (status = 503, description = "`storage_unavailable`", body = Problem),
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
#[utoipa::path(get, path = "/v1/uploads/{id}", tag = "uploads",
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = UploadDto), (status = 404, body = Problem)))]
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
#[utoipa::path(get, path = "/v1/projects/{id}/uploads", tag = "uploads",
    params(("id" = uuid::Uuid, Path), UploadListParams),
    responses((status = 200, body = ListEnvelope<UploadDto>), (status = 404, body = Problem), (status = 422, body = Problem)))]
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
#[utoipa::path(get, path = "/v1/uploads/{id}/content", tag = "uploads",
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 307, description = "Redirect to a signed download URL"),
        (status = 404, body = Problem),
        (status = 409, description = "`upload_incomplete` or `upload_deleted`", body = Problem),
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
#[utoipa::path(get, path = "/v1/uploads/{id}/thumbnails/{name}", tag = "uploads",
    params(("id" = uuid::Uuid, Path), ("name" = String, Path)),
    responses(
        (status = 307, description = "Redirect to a signed URL of the JPEG"),
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
#[utoipa::path(delete, path = "/v1/uploads/{id}", tag = "uploads",
    params(("id" = uuid::Uuid, Path)),
    responses((status = 204, description = "In the trash"), (status = 403, body = Problem), (status = 404, body = Problem)))]
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
#[utoipa::path(post, path = "/v1/uploads/{id}/restore", tag = "uploads",
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = UploadDto), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn restore(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> Result<Json<UploadDto>, ApiError> {
    let id: UploadId = parse_id(&id)?;
    Ok(Json(state.service.restore_upload(&actor, id).await?.into()))
}
