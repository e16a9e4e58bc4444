//! `/v1/users`: user administration inside the caller's tenant.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use buildpeer_core::ids::UserId;
use buildpeer_core::pagination::PageRequest;
use buildpeer_core::service::{CreateUserInput, UpdateUserInput};

use crate::AppState;
use crate::dto::{
    CreateUserRequest, IdempotencyKeyHeader, ListEnvelope, ListParams, UpdateUserRequest, UserDto,
};
use crate::error::{ApiError, Problem};
use crate::extract::{Auth, Json, Query, parse_id};

/// Create a user (admins).
///
/// With an `Idempotency-Key`, a retried request (same key, same e-mail, name
/// and role) gets the user the first one created, with 200; the same key
/// with a different body is refused (422 `idempotency_key_reused`).
#[utoipa::path(post, path = "/v1/users", tag = "users", operation_id = "createUser",
    params(IdempotencyKeyHeader),
    request_body(content = CreateUserRequest,
        example = json!({"email": "juan@demo.local", "password": "obra-segura-1", "name": "Juan Pérez", "role": "empleado"})),
    responses(
        (status = 201, description = "Created", body = UserDto,
            headers(("Location" = String, description = "`/v1/users/{id}`")),
            example = json!({"id": "0196b1f2-5c3e-7a10-9d4b-2f8e6a1c3b57", "tenant_id": "0196b1e0-0a00-7000-8000-000000000001",
                "email": "juan@demo.local", "name": "Juan Pérez", "role": "empleado", "disabled": false,
                "created_at": "2026-05-02T15:14:03.120Z", "updated_at": "2026-05-02T15:14:03.120Z"})),
        (status = 200, description = "An idempotent replay: the user the first request created", body = UserDto,
            headers(("Location" = String, description = "`/v1/users/{id}`"))),
        (status = 403, description = "`forbidden`: only admins create users", body = Problem),
        (status = 409, description = "`conflict`: the e-mail is taken in this tenant", body = Problem),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Auth(actor): Auth,
    headers: axum::http::HeaderMap,
    Json(body): Json<CreateUserRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let (user, created) = state
        .service
        .create_user(
            &actor,
            CreateUserInput {
                email: body.email,
                password: body.password,
                name: body.name,
                role: body.role,
                idempotency_key: crate::extract::idempotency_key(&headers),
            },
        )
        .await?;
    let location = format!("/v1/users/{}", user.id);
    Ok((
        crate::extract::created_or_replayed(created),
        [(header::LOCATION, location)],
        Json(UserDto::from(user)),
    ))
}

/// List the tenant's users (admins and supervisors), newest first.
#[utoipa::path(get, path = "/v1/users", tag = "users", operation_id = "listUsers", params(ListParams),
    responses(
        (status = 200, body = ListEnvelope<UserDto>),
        (status = 403, description = "`forbidden`: only admins and supervisors list users", body = Problem),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Query(q): Query<ListParams>,
) -> Result<Json<ListEnvelope<UserDto>>, ApiError> {
    let page = PageRequest::parse(q.limit, q.cursor.as_deref())?;
    let users = state.service.list_users(&actor, page).await?;
    Ok(Json(ListEnvelope::from_page(users)))
}

/// Read a user (yourself, or anyone as admin or supervisor).
#[utoipa::path(get, path = "/v1/users/{id}", tag = "users", operation_id = "getUser",
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 200, body = UserDto),
        (status = 403, description = "`forbidden`: reading another user needs the admin or supervisor role", body = Problem),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
) -> Result<Json<UserDto>, ApiError> {
    let id: UserId = parse_id(&id)?;
    Ok(Json(state.service.get_user(&actor, id).await?.into()))
}

/// Change a user's name, role or disabled flag (admins).
#[utoipa::path(patch, path = "/v1/users/{id}", tag = "users", operation_id = "updateUser",
    params(("id" = uuid::Uuid, Path)),
    request_body = UpdateUserRequest,
    responses(
        (status = 200, body = UserDto),
        (status = 403, description = "`forbidden`: only admins change users", body = Problem),
    ))]
pub async fn update(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<String>,
    Json(body): Json<UpdateUserRequest>,
) -> Result<Json<UserDto>, ApiError> {
    let id: UserId = parse_id(&id)?;
    let input = UpdateUserInput {
        name: body.name,
        role: body.role,
        disabled: body.disabled,
    };
    Ok(Json(
        state.service.update_user(&actor, id, input).await?.into(),
    ))
}
