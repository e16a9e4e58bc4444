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
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", operation_id = "login", security(),
    request_body(content = LoginRequest,
        example = json!({"tenant": "demo", "email": "admin@demo.local", "password": "Xy3kP9qLm2Rt"})),
    responses(
        (status = 200, description = "A new session", body = TokenResponse,
            headers(
                ("RateLimit-Policy" = String, description = "The login quotas checked, e.g. `\"login_account\";q=10;w=60`"),
                ("RateLimit" = String, description = "The tightest login quota's state")
            ),
            example = json!({"access_token": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIuLi4ifQ.c2ln",
                "refresh_token": "d3VxY2xqZ2V4bHVvbWZkYXJ0eQ", "token_type": "Bearer", "expires_in": 900})),
        (status = 401, description = "`unauthorized`: wrong tenant, e-mail or password, or a disabled user (one answer for all)", body = Problem),
        (status = 429, description = "`rate_limited`: too many attempts for this account (tenant and e-mail) or from this address (or, with a bearer token, over that user's request quota); retry after `Retry-After` seconds", body = Problem,
            headers(
                ("Retry-After" = u64, description = "Seconds to wait before trying again"),
                ("RateLimit-Policy" = String, description = "The login quotas checked"),
                ("RateLimit" = String, description = "The tightest login quota's state"),
            )),
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
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", operation_id = "refreshTokens", security(),
    request_body(content = RefreshRequest, example = json!({"refresh_token": "d3VxY2xqZ2V4bHVvbWZkYXJ0eQ"})),
    responses(
        (status = 200, description = "A new pair; the refresh token sent is used up", body = TokenResponse),
        (status = 401, description = "`unauthorized`: an unknown, expired, used or revoked refresh token, or a disabled user", body = Problem),
    ))]
pub async fn refresh(
    State(state): State<AppState>,
    Json(body): Json<RefreshRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    Ok(tokens(state.service.refresh(&body.refresh_token).await?))
}

/// End the session a refresh token belongs to. 204 for any well-formed
/// request, whether the token meant anything or not.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", operation_id = "logout", security(),
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
#[utoipa::path(get, path = "/v1/me", tag = "auth", operation_id = "getMe",
    responses((status = 200, body = UserDto)))]
pub async fn me(
    State(state): State<AppState>,
    Auth(actor): Auth,
) -> Result<Json<UserDto>, ApiError> {
    Ok(Json(state.service.me(&actor).await?.into()))
}
