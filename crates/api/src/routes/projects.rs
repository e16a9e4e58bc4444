//! `/v1/projects` and their members.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use buildpeer_core::ids::{ProjectId, UserId};
use buildpeer_core::pagination::PageRequest;
use buildpeer_core::service::{CreateProjectInput, ProjectListQuery, UpdateProjectInput};

use crate::AppState;
use crate::dto::{
    CreateProjectRequest, IdempotencyKeyHeader, ListEnvelope, ListParams, MemberDto, ProjectDto,
    ProjectListParams, UpdateProjectRequest,
};
use crate::error::{ApiError, Problem};
use crate::extract::{Auth, Json, Query, parse_id};

/// Create a project (admins and supervisors; a supervisor becomes a member).
///
/// With an `Idempotency-Key`, a retried request (same key, same body) gets
/// the project the first one created, with 200; the same key with a
/// different body is refused (422 `idempotency_key_reused`).
#[utoipa::path(post, path = "/v1/projects", tag = "projects", operation_id = "createProject",
    params(IdempotencyKeyHeader),
    request_body(content = CreateProjectRequest,
        example = json!({"name": "Torre Norte", "code": "TN-01", "address": "Av. Reforma 100, CDMX"})),
    responses(
        (status = 201, description = "Created", body = ProjectDto,
            headers(("Location" = String, description = "`/v1/projects/{id}`")),
            example = json!({"id": "0196b1f0-2a7c-7b3e-8f51-6c0d9e4a2b18", "tenant_id": "0196b1e0-0a00-7000-8000-000000000001",
                "name": "Torre Norte", "code": "TN-01", "address": "Av. Reforma 100, CDMX",
                "created_by": "0196b1e0-0a00-7000-8000-000000000002", "archived": false, "archived_at": null,
                "created_at": "2026-05-02T15:12:41.503Z", "updated_at": "2026-05-02T15:12:41.503Z"})),
        (status = 200, description = "An idempotent replay: the project the first request created", body = ProjectDto,
            headers(("Location" = String, description = "`/v1/projects/{id}`"))),
        (status = 403, description = "`forbidden`: only admins and supervisors create projects", body = Problem),
        (status = 409, description = "`conflict`: the code is taken in this tenant", body = Problem),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Auth(actor): Auth,
    headers: axum::http::HeaderMap,
    Json(body): Json<CreateProjectRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let (project, created) = state
        .service
        .create_project(
            &actor,
            CreateProjectInput {
                name: body.name,
                code: body.code,
                address: body.address,
                idempotency_key: crate::extract::idempotency_key(&headers),
            },
        )
        .await?;
    let location = format!("/v1/projects/{}", project.id);
    Ok((
        crate::extract::created_or_replayed(created),
        [(header::LOCATION, location)],
        Json(ProjectDto::from(project)),
    ))
}

/// List the projects you can see (admins: all of the tenant), newest first.
#[utoipa::path(get, path = "/v1/projects", tag = "projects", operation_id = "listProjects",
    params(ProjectListParams),
    responses((status = 200, body = ListEnvelope<ProjectDto>)))]
pub async fn list(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Query(q): Query<ProjectListParams>,
) -> Result<Json<ListEnvelope<ProjectDto>>, ApiError> {
    let query = ProjectListQuery {
        include_archived: q.include_archived.unwrap_or(false),
        page: PageRequest::parse(q.limit, q.cursor.as_deref())?,
    };
    let projects = state.service.list_projects(&actor, query).await?;
    Ok(Json(ListEnvelope::from_page(projects)))
}

/// Read a project.
#[utoipa::path(get, path = "/v1/projects/{id}", tag = "projects", operation_id = "getProject",
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 200, body = ProjectDto),
        (status = 404, description = "`not_found`: no such project, or one the caller is not a member of", body = Problem),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> Result<Json<ProjectDto>, ApiError> {
    let id: ProjectId = parse_id(&id)?;
    Ok(Json(state.service.get_project(&actor, id).await?.into()))
}

/// Rename a project or change its code or address (admins, member supervisors).
#[utoipa::path(patch, path = "/v1/projects/{id}", tag = "projects", operation_id = "updateProject",
    params(("id" = uuid::Uuid, Path)),
    request_body(content = UpdateProjectRequest, example = json!({"address": null})),
    responses(
        (status = 200, body = ProjectDto),
        (status = 403, description = "`forbidden`: only admins and the project's supervisors change it", body = Problem),
        (status = 409, description = "`conflict` (the code is taken) or `project_archived`", body = Problem),
    ))]
pub async fn update(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    Json(body): Json<UpdateProjectRequest>,
) -> Result<Json<ProjectDto>, ApiError> {
    let id: ProjectId = parse_id(&id)?;
    let input = UpdateProjectInput {
        name: body.name,
        code: body.code,
        address: body.address,
    };
    Ok(Json(
        state
            .service
            .update_project(&actor, id, input)
            .await?
            .into(),
    ))
}

/// Archive a project (admins, member supervisors). Idempotent. An archived
/// project is not deleted: it stays readable (and listed with
/// `include_archived=true`), but takes no changes, members or uploads (409
/// `project_archived`).
#[utoipa::path(delete, path = "/v1/projects/{id}", tag = "projects", operation_id = "archiveProject",
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 204, description = "Archived"),
        (status = 403, description = "`forbidden`: only admins and the project's supervisors archive it", body = Problem),
    ))]
pub async fn archive(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: ProjectId = parse_id(&id)?;
    state.service.archive_project(&actor, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List a project's members, newest membership first.
#[utoipa::path(get, path = "/v1/projects/{id}/members", tag = "projects", operation_id = "listProjectMembers",
    params(("id" = uuid::Uuid, Path), ListParams),
    responses((status = 200, body = ListEnvelope<MemberDto>)))]
pub async fn members(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    Query(q): Query<ListParams>,
) -> Result<Json<ListEnvelope<MemberDto>>, ApiError> {
    let id: ProjectId = parse_id(&id)?;
    let page = PageRequest::parse(q.limit, q.cursor.as_deref())?;
    let members = state.service.list_members(&actor, id, page).await?;
    Ok(Json(ListEnvelope::from_page(members)))
}

/// Add a user to a project (admins, member supervisors). 201 when new, 204
/// when the user already was a member. With an `Idempotency-Key`, a retry
/// (same key, same project and user) answers as the first request did (201
/// if that one added the member); the key with another project or user is
/// refused (422 `idempotency_key_reused`).
#[utoipa::path(put, path = "/v1/projects/{id}/members/{user_id}", tag = "projects", operation_id = "addProjectMember",
    params(("id" = uuid::Uuid, Path), ("user_id" = uuid::Uuid, Path), IdempotencyKeyHeader),
    responses(
        (status = 201, description = "Added"),
        (status = 204, description = "Already a member"),
        (status = 403, description = "`forbidden`: only admins and the project's supervisors manage members", body = Problem),
        (status = 404, description = "`not_found`: no such project or user", body = Problem),
        (status = 409, description = "`project_archived`", body = Problem),
        (status = 422, description = "`validation_failed`: a malformed `Idempotency-Key`, or one used before with another project or user (`idempotency_key_reused`)", body = Problem),
    ))]
pub async fn add_member(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path((id, user_id)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
) -> Result<StatusCode, ApiError> {
    let id: ProjectId = parse_id(&id)?;
    let user_id: UserId = parse_id(&user_id)?;
    let key = crate::extract::idempotency_key(&headers);
    let created = state
        .service
        .add_member(&actor, id, user_id, key.as_deref())
        .await?;
    Ok(if created {
        StatusCode::CREATED
    } else {
        StatusCode::NO_CONTENT
    })
}

/// Remove a user from a project (admins, member supervisors). Idempotent.
#[utoipa::path(delete, path = "/v1/projects/{id}/members/{user_id}", tag = "projects", operation_id = "removeProjectMember",
    params(("id" = uuid::Uuid, Path), ("user_id" = uuid::Uuid, Path)),
    responses(
        (status = 204, description = "Not a member any more"),
        (status = 403, description = "`forbidden`: only admins and the project's supervisors manage members", body = Problem),
        (status = 404, description = "`not_found`: no such project or user", body = Problem),
        (status = 409, description = "`project_archived`", body = Problem),
    ))]
pub async fn remove_member(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path((id, user_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id: ProjectId = parse_id(&id)?;
    let user_id: UserId = parse_id(&user_id)?;
    state.service.remove_member(&actor, id, user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
