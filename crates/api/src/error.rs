//! The one mapping from errors to HTTP: RFC 9457 `application/problem+json`
//! bodies with a stable machine `code`. A 5xx never carries internal details;
//! they go to the log, next to the request id.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use buildpeer_core::blob::BlobError;
use buildpeer_core::error::{CoreError, FieldError, StoreError};
use serde::Serialize;
use utoipa::ToSchema;

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// `urn:buildpeer:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    /// Stable, machine-readable reason: `not_found`, `validation_failed`, ...
    pub code: &'static str,
    pub detail: String,
    /// Per-field reasons, on `validation_failed`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<ProblemField>)]
    pub errors: Vec<FieldError>,
}

/// One refused field.
#[derive(Serialize, ToSchema)]
pub struct ProblemField {
    /// The field's name (or path, for nested values).
    pub field: String,
    /// Why: `required`, `invalid_email`, `unknown_role`, `unknown_field`, ...
    pub code: String,
    pub message: String,
}

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("the body exceeds {0} bytes")]
    PayloadTooLarge(usize),
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("no route for this path")]
    RouteNotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("the request handler panicked")]
    Panic,
    /// From the local blob endpoint.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// A protocol answer with its own status (tus: 410, 423, 460, …).
    #[error("{detail}")]
    Status {
        status: StatusCode,
        code: &'static str,
        detail: String,
    },
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Core(e) => match e {
                CoreError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
                CoreError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
                CoreError::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
                CoreError::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
                CoreError::Conflict { code, .. } => (StatusCode::CONFLICT, code),
                CoreError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
                CoreError::UnsupportedType(_) => {
                    (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_type")
                }
                CoreError::NotImplemented(_) => (StatusCode::NOT_IMPLEMENTED, "not_implemented"),
                CoreError::Unavailable(StoreError::Busy(_)) => {
                    (StatusCode::SERVICE_UNAVAILABLE, "database_busy")
                }
                CoreError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
                CoreError::StorageUnavailable(_) => {
                    (StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable")
                }
                CoreError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            },
            ApiError::MalformedJson(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::RouteNotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Panic => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ApiError::Status { status, code, .. } => (*status, code),
            ApiError::Blob(e) => match e {
                BlobError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
                BlobError::Denied(code) => (StatusCode::FORBIDDEN, code),
                BlobError::InvalidParts(_) => (StatusCode::BAD_REQUEST, "invalid_parts"),
                BlobError::Unavailable(_) => {
                    (StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable")
                }
                BlobError::Unsupported(_) => (StatusCode::NOT_IMPLEMENTED, "not_implemented"),
                BlobError::Other(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, _) = self.parts();
        self.answer(status)
    }
}

impl ApiError {
    /// The problem response with another status than the usual one (a
    /// protocol's own: tus answers a bad header 400, not 422), in the body
    /// as well as on the response.
    pub fn with_status(self, status: StatusCode) -> Response {
        self.answer(status)
    }

    fn answer(self, status: StatusCode) -> Response {
        let (_, code) = self.parts();
        let retry_after = match &self {
            ApiError::Blob(e) | ApiError::Core(CoreError::StorageUnavailable(e)) => {
                e.circuit_open()
            }
            // A queue for connections drains in moments.
            ApiError::Core(CoreError::Unavailable(StoreError::Busy(_))) => {
                Some(std::time::Duration::from_secs(1))
            }
            _ => None,
        };
        let transient = matches!(
            &self,
            ApiError::Core(CoreError::Unavailable(StoreError::Unavailable(_)))
        );
        let detail = match &self {
            ApiError::Core(CoreError::NotFound) => "no such resource".to_owned(),
            ApiError::Core(CoreError::Unauthorized) => {
                "missing, invalid or expired credentials".to_owned()
            }
            ApiError::Core(CoreError::Forbidden) => {
                "your role does not allow this action".to_owned()
            }
            ApiError::Core(CoreError::Validation(_)) => {
                "some fields are invalid; see errors".to_owned()
            }
            _ if status.is_server_error() => {
                // The chain goes to the log; the client gets only the request id.
                tracing::error!(error = %ErrorChain(&self), code, "request failed");
                match status {
                    StatusCode::SERVICE_UNAVAILABLE => {
                        "a dependency is unavailable; retry later".to_owned()
                    }
                    _ => "internal error; the request id identifies it in our logs".to_owned(),
                }
            }
            other => other.to_string(),
        };
        let errors = match self {
            ApiError::Core(CoreError::Validation(errors)) => errors,
            _ => Vec::new(),
        };
        let problem = Problem {
            kind: format!("urn:buildpeer:problem:{code}"),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            code,
            detail,
            errors,
        };
        let mut response = (status, axum::Json(problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            metrics::counter!("http_unavailable_total", "reason" => code).increment(1);
            // An open storage breaker knows when it lets calls through again;
            // a busy pool frees a connection in moments; else 5 s.
            let seconds = retry_after.map_or(5, |d| d.as_secs().max(1));
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if transient {
            response.extensions_mut().insert(TransientDatabaseError);
        }
        response
    }
}

/// Marks a response that failed on a transient database error (a dropped
/// connection, a server restarting), which [`crate::retry`] may retry.
#[derive(Debug, Clone, Copy)]
pub struct TransientDatabaseError;

/// Prints an error with all its sources, for logs.
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}
