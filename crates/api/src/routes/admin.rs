//! `/v1/admin`: the tenant admin's view of the processing queue. Jobs of
//! other tenants do not exist here (404); other roles get 403.

use axum::extract::{Path, State};
use buildpeer_core::ids::JobId;
use buildpeer_core::pagination::PageRequest;

use crate::AppState;
use crate::dto::{JobDetailDto, JobDto, JobListParams, ListEnvelope, RetriedDto};
use crate::error::{ApiError, Problem};
use crate::extract::{Auth, Json, Query, parse_id};

/// List the tenant's processing jobs, newest first, optionally in one state (admins).
#[utoipa::path(get, path = "/v1/admin/jobs", tag = "admin", operation_id = "listJobs", params(JobListParams),
    responses(
        (status = 200, body = ListEnvelope<JobDto>),
        (status = 403, description = "`forbidden`: admins only", body = Problem),
    ))]
pub async fn list_jobs(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Query(q): Query<JobListParams>,
) -> Result<Json<ListEnvelope<JobDto>>, ApiError> {
    let page = PageRequest::parse(q.limit, q.cursor.as_deref())?;
    let jobs = state
        .service
        .list_jobs(&actor, q.state.as_deref(), page)
        .await?;
    Ok(Json(ListEnvelope::from_page(jobs)))
}

/// Read a job with the error of every failed run, oldest first (admins).
#[utoipa::path(get, path = "/v1/admin/jobs/{id}", tag = "admin", operation_id = "getJob",
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 200, body = JobDetailDto),
        (status = 403, description = "`forbidden`: admins only", body = Problem),
    ))]
pub async fn get_job(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> Result<Json<JobDetailDto>, ApiError> {
    let id: JobId = parse_id(&id)?;
    Ok(Json(state.service.get_job(&actor, id).await?.into()))
}

/// Queue a dead job again from its first attempt; its error history stays (admins).
#[utoipa::path(post, path = "/v1/admin/jobs/{id}/retry", tag = "admin", operation_id = "retryJob",
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 200, description = "The job, queued", body = JobDto),
        (status = 403, description = "`forbidden`: admins only", body = Problem),
        (status = 409, description = "`job_not_dead`: only dead jobs can be retried; nothing changed", body = Problem),
    ))]
pub async fn retry_job(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> Result<Json<JobDto>, ApiError> {
    let id: JobId = parse_id(&id)?;
    Ok(Json(state.service.retry_job(&actor, id).await?.into()))
}

/// Queue every dead job of the tenant again (admins).
#[utoipa::path(post, path = "/v1/admin/jobs/retry-dead", tag = "admin", operation_id = "retryDeadJobs",
    responses(
        (status = 200, body = RetriedDto),
        (status = 403, description = "`forbidden`: admins only", body = Problem),
    ))]
pub async fn retry_dead_jobs(
    State(state): State<AppState>,
    Auth(actor): Auth,
) -> Result<Json<RetriedDto>, ApiError> {
    let retried = state.service.retry_dead_jobs(&actor).await?;
    Ok(Json(RetriedDto { retried }))
}
