//! Extractors that turn requests into core inputs and their failures into
//! problem responses in our own format (axum's rejections are plain text).

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use buildpeer_core::Actor;
use buildpeer_core::error::{CoreError, FieldError, Invalid};
use bytes::BytesMut;
use futures_util::StreamExt as _;
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::ApiError;
use crate::ratelimit::{Verified, bearer};

/// The largest JSON body we accept. Every JSON request of the API is small;
/// file bytes never travel through JSON.
pub const JSON_LIMIT: usize = 64 * 1024;

/// A JSON body: `415` without a JSON content type, `413` over the limit,
/// `400 malformed_json` when it does not parse, `422 validation_failed` when
/// it parses but has unknown, missing or mistyped fields.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json" || mime.ends_with("+json")
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > DRAIN_LIMIT) {
            return Err(ApiError::PayloadTooLarge(JSON_LIMIT));
        }
        let bytes = read_limited(req.into_body()).await?;
        parse_json(&bytes).map(Json)
    }
}

/// A JSON response. axum's own starts its buffer at 128 bytes and grows it
/// (an upload is ~600 bytes: several reallocations per status read, visible
/// in profiles); this one starts at 1 KiB.
impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        match to_json(&self.0) {
            Ok(body) => JsonBytes(body).into_response(),
            Err(e) => e.into_response(),
        }
    }
}

/// `value` serialized, for a [`JsonBytes`] response.
pub fn to_json<T: serde::Serialize>(value: &T) -> Result<Bytes, ApiError> {
    let mut body = Vec::with_capacity(1024);
    serde_json::to_writer(&mut body, value)
        .map_err(|e| ApiError::Core(CoreError::Internal(Box::new(e))))?;
    Ok(body.into())
}

/// A JSON response serialized beforehand (by [`to_json`]).
pub struct JsonBytes(pub Bytes);

impl axum::response::IntoResponse for JsonBytes {
    fn into_response(self) -> axum::response::Response {
        (
            [(
                header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            )],
            self.0,
        )
            .into_response()
    }
}

/// An oversized body up to this size is read and thrown away before the 413
/// goes out: a server that answers while the client is still sending and then
/// closes makes the client's TCP stack see a reset, and many clients then
/// report a broken connection instead of our answer. Beyond it, we stop
/// reading and close; that much garbage is not worth the bandwidth.
const DRAIN_LIMIT: usize = 1024 * 1024;

async fn read_limited(body: Body) -> Result<Bytes, ApiError> {
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::new();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::MalformedJson(e.to_string()))?;
        total = total.saturating_add(chunk.len());
        if total > DRAIN_LIMIT {
            break;
        }
        if total <= JSON_LIMIT {
            buf.extend_from_slice(&chunk);
        }
    }
    if total > JSON_LIMIT {
        return Err(ApiError::PayloadTooLarge(JSON_LIMIT));
    }
    Ok(buf.freeze())
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Every body of the API is an object, but serde also reads a struct from
    // an array of its fields in order (`["demo", "a@b.c", "pw"]` was a login).
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        well_formed(bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
        return Err(ApiError::Core(CoreError::Validation(vec![
            FieldError::new(
                "body",
                Invalid::new("invalid_type", "expected a JSON object, not an array"),
            ),
        ])));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        match inner.classify() {
            // A field error found in a document that turns out not to parse
            // (e.g. a truncated body) is still a malformed document.
            serde_json::error::Category::Data => match well_formed(bytes) {
                Ok(()) => ApiError::Core(CoreError::Validation(vec![field_error(&path, &inner)])),
                Err(syntax) => ApiError::MalformedJson(syntax.to_string()),
            },
            _ => ApiError::MalformedJson(inner.to_string()),
        }
    })?;
    // Trailing bytes after the value make the document malformed.
    de.end()
        .map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    Ok(value)
}

/// Checks that the bytes are one syntactically valid JSON document.
fn well_formed(bytes: &[u8]) -> Result<(), serde_json::Error> {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes).map(drop)
}

/// Names the field a serde data error is about: serde reports unknown and
/// missing fields at the parent's path, with the name in backticks.
fn field_error(path: &str, err: &serde_json::Error) -> FieldError {
    let msg = err.to_string();
    let msg = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
    let quoted = msg.split('`').nth(1).map(str::to_owned);
    let join = |name: String| {
        if path == "." || path.is_empty() {
            name
        } else {
            format!("{path}.{name}")
        }
    };
    let (field, code) = if msg.starts_with("unknown field") {
        // serde_path_to_error already ends the path with the unknown name.
        let name = quoted.unwrap_or_default();
        let field = if path.ends_with(name.as_str()) && path != "." {
            path.to_owned()
        } else {
            join(name)
        };
        (field, "unknown_field")
    } else if msg.starts_with("missing field") {
        (join(quoted.unwrap_or_default()), "required")
    } else {
        let field = if path == "." {
            "body".to_owned()
        } else {
            path.to_owned()
        };
        (field, "invalid_type")
    };
    FieldError::new(field, Invalid::new(code, msg))
}

/// The authenticated caller, from `Authorization: Bearer <access token>`.
/// Records `tenant_id` and `user_id` on the request span.
pub struct Auth(pub Actor);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let actor = match parts.extensions.get::<Verified>() {
            Some(Verified(claims)) => state.service.authenticate_verified(claims).await?,
            None => {
                let token = bearer(&parts.headers).ok_or(CoreError::Unauthorized)?;
                state.service.authenticate(token).await?
            }
        };
        if let Some(slot) = parts.extensions.get::<crate::telemetry::TenantSlot>() {
            slot.set(actor.tenant_id);
        }
        let span = tracing::Span::current();
        span.record("tenant_id", tracing::field::display(actor.tenant_id));
        span.record("user_id", tracing::field::display(actor.user_id));
        Ok(Auth(actor))
    }
}

/// A query string: a bad value is `422 validation_failed`, not axum's 400.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str(query).map(Query).map_err(|e| {
            ApiError::Core(CoreError::Validation(vec![FieldError::new(
                "query",
                Invalid::new("invalid_query", e.to_string()),
            )]))
        })
    }
}

/// Parses an id from the path. A malformed id names nothing that exists, so
/// it is a 404 like any unknown id.
pub fn parse_id<T: std::str::FromStr>(raw: &str) -> Result<T, ApiError> {
    raw.parse().map_err(|_| ApiError::Core(CoreError::NotFound))
}

/// The request's `Idempotency-Key` header (checked by the use-case).
pub fn idempotency_key(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get("idempotency-key")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// 201 for what a request created, 200 for an idempotent replay of it.
pub fn created_or_replayed(created: bool) -> axum::http::StatusCode {
    if created {
        axum::http::StatusCode::CREATED
    } else {
        axum::http::StatusCode::OK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        count: Option<u32>,
    }

    fn code(r: Result<Body, ApiError>) -> (&'static str, Vec<String>) {
        match r {
            Err(ApiError::MalformedJson(_)) => ("malformed_json", vec![]),
            Err(ApiError::Core(CoreError::Validation(errs))) => (
                "validation_failed",
                errs.into_iter()
                    .map(|e| format!("{}:{}", e.field, e.code))
                    .collect(),
            ),
            Ok(_) => ("ok", vec![]),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn classifies_json_errors() {
        assert_eq!(code(parse_json(br#"{"name":"a"}"#)).0, "ok");
        assert_eq!(code(parse_json(br#"{"name":"#)).0, "malformed_json");
        assert_eq!(code(parse_json(br#"{"name":"a"} x"#)).0, "malformed_json");
        assert_eq!(code(parse_json(b"")).0, "malformed_json");
        // An unknown field ahead of a syntax error: still malformed.
        assert_eq!(code(parse_json(br#"{"extra":"#)).0, "malformed_json");
        assert_eq!(code(parse_json(br#"{"extra":1} x"#)).0, "malformed_json");
        assert_eq!(
            code(parse_json(br#"{"name":"a","extra":1}"#)),
            ("validation_failed", vec!["extra:unknown_field".to_owned()])
        );
        assert_eq!(
            code(parse_json(br#"{}"#)),
            ("validation_failed", vec!["name:required".to_owned()])
        );
        assert_eq!(
            code(parse_json(br#"{"name":"a","count":"x"}"#)),
            ("validation_failed", vec!["count:invalid_type".to_owned()])
        );
        assert_eq!(
            code(parse_json(br#"[]"#)),
            ("validation_failed", vec!["body:invalid_type".to_owned()])
        );
        // Not a struct read from its fields in order.
        assert_eq!(
            code(parse_json(br#" ["a", 1]"#)),
            ("validation_failed", vec!["body:invalid_type".to_owned()])
        );
        assert_eq!(code(parse_json(br#"["a", 1"#)).0, "malformed_json");
    }
}
