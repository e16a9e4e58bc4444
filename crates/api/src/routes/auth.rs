//! `/v1/auth/*` and `/v1/me`.

use axum::extract::State;
use axum::http::StatusCode;
use buildpeer_core::service::{LoginInput, TokenPair};

use crate::AppState;
use crate::dto::{LoginRequest, RefreshRequest, TokenResponse, UserDto};
use crate::error::{ApiError, Problem};
use crate::extract::{Auth, Json};

fn tokens(pair: TokenPair) -> Json<TokenResponse> {
    Json(TokenResponse {
        access_token: pair.access_token,
        refresh_token: pair.refresh_token,
        token_type: "Bearer",
        expires_in: pair.expires_in,
    })
}

/// Log in with a tenant slug, e-mail and password.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", security(()),
    request_body = LoginRequest,
    responses(
        (status = 200, body = TokenResponse),
        (status = 401, description = "Wrong tenant, e-mail or password, or a disabled user (one answer for all)", body = Problem),
        (status = 422, body = Problem),
        (status = 429, description = "Too many attempts for this account or from this address", body = Problem),
    ))]
pub async fn login(
    State(state): State<AppState>,
    extensions: axum::http::Extensions,
    Json(body): Json<LoginRequest>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse as _;
    let peer = crate::ratelimit::peer(&extensions);
    let limits = match crate::ratelimit::login(&state, peer, &body.tenant, &body.email).await {
        Ok(status) => status,
        Err(refused) => return Ok(refused),
    };
    let pair = state
        .service
        .login(LoginInput {
            tenant: body.tenant,
            email: body.email,
            password: body.password,
        })
        .await?;
    let mut response = tokens(pair).into_response();
    if let Some(status) = limits {
        crate::ratelimit::set_headers(response.headers_mut(), &status);
    }
    Ok(response)
}

/// Trade a refresh token for a new pair. Each refresh token works once;
/// presenting a used one ends the whole session.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", security(()),
    request_body = RefreshRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = Problem)))]
pub async fn refresh(
    State(state): State<AppState>,
    Json(body): Json<RefreshRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    Ok(tokens(state.service.refresh(&body.refresh_token).await?))
}

/// End the session a refresh token belongs to. Always 204.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", security(()),
    request_body = RefreshRequest,
    responses((status = 204, description = "Logged out")))]
pub async fn logout(
    State(state): State<AppState>,
    Json(body): Json<RefreshRequest>,
) -> Result<StatusCode, ApiError> {
    state.service.logout(&body.refresh_token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's own profile.
#[utoipa::path(get, path = "/v1/me", tag = "auth",
    responses((status = 200, body = UserDto), (status = 401, body = Problem)))]
pub async fn me(
    State(state): State<AppState>,
    Auth(actor): Auth,
) -> Result<Json<UserDto>, ApiError> {
    Ok(Json(state.service.me(&actor).await?.into()))
}
