//! The OpenAPI 3.1 document served at `/openapi.json`: the contract of the
//! server, generated from the handlers' `#[utoipa::path]` annotations.
//!
//! The JSON API's routes are documented through the utoipa router
//! (`api_routes`); the routes `router()` serves beside it (operational
//! endpoints, tus, signed blobs) are annotated where they are handled and
//! listed in [`Unrouted`]. Then [`contract`] adds to every operation the
//! answers every route of its kind gives, from `components.responses`:
//!
//! - a protected operation (bearer token): 401;
//! - every operation whose requests count against a quota when they carry a
//!   bearer token (`ratelimit::quota`), public ones too: 429;
//! - a JSON body (`extract::Json`): 400, 413, 415 and 422;
//! - query parameters of a protected operation (`extract::Query`): 422;
//! - path parameters: 404 (a malformed id names nothing, `extract::parse_id`);
//! - everything under `/v1/` but OPTIONS: 503 (`error.rs`);
//! - tus requests but OPTIONS: 412 without `Tus-Resumable: 1.0.0`, and on an
//!   upload (`/v1/tus/{id}`) 423 while another request holds it.
//!
//! An answer a route documents itself (with its own description) is kept.
//! Every error is a problem document (`application/problem+json`, schema
//! `Problem`), but on HEAD, which has no body. And two readings of utoipa's
//! output are corrected: an optional parameter (`Option<T>`) may be absent
//! but is never `null`; an optional body (`Option<T>`, `OptionalJson`) may
//! be left out but is never `null` either.

use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::request_body::RequestBody;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ArrayItems, Discriminator, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{Modify, OpenApi};

use crate::dto::strings;
use crate::ratelimit::{self, Quota};
use crate::routes;

/// The media type of every error answer.
pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "BuildPeer API",
        description = "Multi-tenant uploads and media processing for construction companies. \
            Log in at /v1/auth/login and send the access token as `Authorization: Bearer <token>`. \
            Errors are RFC 9457 problem documents (`application/problem+json`) with a stable `code`.",
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(
        strings::Name,
        strings::Address,
        strings::ProjectCode,
        strings::Email,
        strings::Password,
        strings::ContentType,
        strings::Filename,
        strings::Sha256,
        strings::IdempotencyKey,
        strings::Cursor,
        strings::Binary,
        crate::dto::RoleDto,
        crate::dto::UploadStatusDto,
        crate::dto::JobStateDto,
        crate::error::Problem,
        crate::error::ProblemField,
    )),
    tags(
        (name = "auth", description = "Log in, refresh and end sessions; the caller's profile."),
        (name = "users", description = "User administration inside the caller's tenant."),
        (name = "projects", description = "Projects and their members."),
        (name = "uploads", description = "Uploads through signed URLs: initiate, send the bytes, complete, read."),
        (name = "tus", description = "Resumable uploads with the tus 1.0 protocol \
            (https://tus.io/protocols/resumable-upload). Extensions: creation, \
            creation-with-upload, creation-defer-length, termination, checksum (sha1, sha256), \
            expiration, concatenation."),
        (name = "blobs", description = "The local blob store's signed URLs (as handed out by \
            upload initiation and downloads); the signature in the query is the credential. \
            On S3 storage the signed URLs point at S3 and these routes answer 404."),
        (name = "admin", description = "The tenant admin's view of the processing queue."),
        (name = "ops", description = "Liveness, readiness, metrics and this document; no token."),
    ),
)]
pub(crate) struct ApiDoc;

/// The routes `router()` registers outside the utoipa router: documented
/// here, handled as `router()` says.
#[derive(OpenApi)]
#[openapi(paths(
    routes::ops::healthz,
    routes::ops::readyz,
    routes::ops::metrics,
    routes::ops::openapi,
    routes::ops::docs,
    routes::tus::create,
    routes::tus::options,
    routes::tus::head,
    routes::tus::patch,
    routes::tus::delete,
    routes::tus::overridden,
    routes::blobs::get,
    routes::blobs::head,
    routes::blobs::put,
))]
struct Unrouted;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The OpenAPI 3.1 document, generated from the handlers' annotations.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = crate::api_routes().into_openapi();
    doc.merge(Unrouted::openapi());
    contract(&mut doc);
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// The answers shared by many operations, as `components.responses`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shared {
    MalformedJson,
    Unauthorized,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
    RateLimited,
    TooManyUploads,
    Unavailable,
    UnsupportedVersion,
    Locked,
}

impl Shared {
    const ALL: [Shared; 11] = [
        Shared::MalformedJson,
        Shared::Unauthorized,
        Shared::NotFound,
        Shared::PayloadTooLarge,
        Shared::UnsupportedMediaType,
        Shared::ValidationFailed,
        Shared::RateLimited,
        Shared::TooManyUploads,
        Shared::Unavailable,
        Shared::UnsupportedVersion,
        Shared::Locked,
    ];

    fn name(self) -> &'static str {
        match self {
            Shared::MalformedJson => "MalformedJson",
            Shared::Unauthorized => "Unauthorized",
            Shared::NotFound => "NotFound",
            Shared::PayloadTooLarge => "PayloadTooLarge",
            Shared::UnsupportedMediaType => "UnsupportedMediaType",
            Shared::ValidationFailed => "ValidationFailed",
            Shared::RateLimited => "RateLimited",
            Shared::TooManyUploads => "TooManyUploads",
            Shared::Unavailable => "Unavailable",
            Shared::UnsupportedVersion => "UnsupportedVersion",
            Shared::Locked => "Locked",
        }
    }

    fn status(self) -> &'static str {
        match self {
            Shared::MalformedJson => "400",
            Shared::Unauthorized => "401",
            Shared::NotFound => "404",
            Shared::PayloadTooLarge => "413",
            Shared::UnsupportedMediaType => "415",
            Shared::ValidationFailed => "422",
            Shared::RateLimited | Shared::TooManyUploads => "429",
            Shared::Unavailable => "503",
            Shared::UnsupportedVersion => "412",
            Shared::Locked => "423",
        }
    }

    /// The response, with its body unless it answers a HEAD.
    fn response(self, with_body: bool) -> Response {
        let (description, code, detail) = match self {
            Shared::MalformedJson => (
                "`malformed_json`: the body is not one well-formed JSON document.",
                "malformed_json",
                "the body is not valid JSON: EOF while parsing an object at line 1 column 9",
            ),
            Shared::Unauthorized => (
                "`unauthorized`: no bearer token, or an invalid or expired one.",
                "unauthorized",
                "missing, invalid or expired credentials",
            ),
            Shared::NotFound => (
                "`not_found`: no such resource, or none the caller may see (a malformed id \
                 included).",
                "not_found",
                "no such resource",
            ),
            Shared::PayloadTooLarge => (
                "`payload_too_large`: the JSON body is larger than 64 KiB.",
                "payload_too_large",
                "the body exceeds 65536 bytes",
            ),
            Shared::UnsupportedMediaType => (
                "`unsupported_media_type`: the body is not sent as `application/json` (or \
                 another `+json` type), or has no `Content-Type`.",
                "unsupported_media_type",
                "expected Content-Type: application/json",
            ),
            Shared::ValidationFailed => (
                "`validation_failed`: the request is well-formed, but some fields are unknown, \
                 missing, of the wrong type or refused; `errors` names each (`field`, `code`). \
                 An `Idempotency-Key` used before with another request is refused here too \
                 (`idempotency_key_reused`).",
                "validation_failed",
                "some fields are invalid; see errors",
            ),
            Shared::RateLimited => (
                "`rate_limited`: over the caller's or the tenant's request quota; retry after \
                 `Retry-After` seconds. Every request that carries a valid bearer token counts, \
                 on public operations too.",
                "rate_limited",
                "too many requests (the user limit); retry in 3 s",
            ),
            Shared::TooManyUploads => (
                "`too_many_uploads`: the caller's or the tenant's uploads in flight are at \
                 their limit; retry in a second.",
                "too_many_uploads",
                "64 uploads are already in flight (the uploads_user limit); retry in 1 s",
            ),
            Shared::Unavailable => (
                "`unavailable` (the database), `database_busy` (no free database connection) \
                 or `storage_unavailable` (storage failing, or its circuit breaker open): retry \
                 after `Retry-After` seconds.",
                "unavailable",
                "a dependency is unavailable; retry later",
            ),
            Shared::UnsupportedVersion => (
                "`unsupported_version`: no `Tus-Resumable: 1.0.0`.",
                "unsupported_version",
                "send Tus-Resumable: 1.0.0",
            ),
            Shared::Locked => (
                "`upload_locked`: another request holds the upload; retry after `Retry-After`.",
                "upload_locked",
                "the upload's last bytes are being stored; ask again",
            ),
        };
        let mut response = ResponseBuilder::new().description(description);
        let integer = || {
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1))
        };
        let text = || ObjectBuilder::new().schema_type(Type::String);
        match self {
            Shared::Unauthorized => {
                response = response.header(
                    "WWW-Authenticate",
                    HeaderBuilder::new()
                        .schema(Some(text()))
                        .description(Some("`Bearer`."))
                        .build(),
                );
            }
            Shared::UnsupportedVersion => {
                response = response.header(
                    "Tus-Version",
                    HeaderBuilder::new()
                        .schema(Some(text()))
                        .description(Some("`1.0.0`."))
                        .build(),
                );
            }
            Shared::RateLimited | Shared::TooManyUploads | Shared::Unavailable | Shared::Locked => {
                response = response.header(
                    "Retry-After",
                    HeaderBuilder::new()
                        .schema(Some(integer()))
                        .description(Some("Seconds to wait before trying again."))
                        .build(),
                );
            }
            _ => {}
        }
        if matches!(self, Shared::RateLimited | Shared::TooManyUploads) {
            response = response
                .header(
                    "RateLimit-Policy",
                    HeaderBuilder::new()
                        .schema(Some(text()))
                        .description(Some(
                            "The quotas checked (draft-ietf-httpapi-ratelimit-headers), e.g. \
                             `\"user\";q=200;w=10, \"tenant\";q=2000;w=6`.",
                        ))
                        .build(),
                )
                .header(
                    "RateLimit",
                    HeaderBuilder::new()
                        .schema(Some(text()))
                        .description(Some("The tightest quota's state, e.g. `\"user\";r=0;t=3`."))
                        .build(),
                );
        }
        if with_body {
            let status: u16 = self.status().parse().unwrap_or(500);
            let mut example = serde_json::json!({
                "type": format!("urn:buildpeer:problem:{code}"),
                "title": axum::http::StatusCode::from_u16(status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("Error"),
                "status": status,
                "code": code,
                "detail": detail,
            });
            if self == Shared::ValidationFailed {
                example["errors"] = serde_json::json!([
                    {"field": "email", "code": "invalid_email", "message": "not a valid e-mail address"}
                ]);
            }
            response = response.content(
                PROBLEM_JSON,
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .example(Some(example))
                    .build(),
            );
        }
        response.build()
    }
}

/// One operation of the document, with what the rules look at.
struct Op<'a> {
    path: &'a str,
    method: &'static str,
    operation: &'a mut Operation,
}

fn operations(doc: &mut utoipa::openapi::OpenApi) -> Vec<Op<'_>> {
    let mut out = Vec::new();
    for (path, item) in doc.paths.paths.iter_mut() {
        let methods = [
            ("get", &mut item.get),
            ("put", &mut item.put),
            ("post", &mut item.post),
            ("delete", &mut item.delete),
            ("options", &mut item.options),
            ("head", &mut item.head),
            ("patch", &mut item.patch),
            ("trace", &mut item.trace),
        ];
        for (method, operation) in methods {
            if let Some(operation) = operation.as_mut() {
                out.push(Op {
                    path,
                    method,
                    operation,
                });
            }
        }
    }
    out
}

/// Whether an operation needs the bearer token: it does unless it says
/// `security: []` (or lists only the empty requirement).
fn protected(operation: &Operation) -> bool {
    match &operation.security {
        None => true,
        Some(reqs) => reqs.iter().any(|r| *r != SecurityRequirement::default()),
    }
}

fn has_json_body(body: Option<&RequestBody>) -> bool {
    body.is_some_and(|b| b.content.contains_key("application/json"))
}

/// Adds the shared answers to every operation and makes every error answer
/// a problem document (see the module's documentation).
fn contract(doc: &mut utoipa::openapi::OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    for shared in Shared::ALL {
        components
            .responses
            .insert(shared.name().to_owned(), RefOr::T(shared.response(true)));
    }
    for op in operations(doc) {
        let Op {
            path,
            method,
            operation,
        } = op;
        let mut applies = Vec::new();
        let protected = protected(operation);
        if protected {
            applies.push(Shared::Unauthorized);
        }
        match ratelimit::quota(path, method) {
            Quota::Requests => applies.push(Shared::RateLimited),
            Quota::UploadsInFlight => applies.push(Shared::TooManyUploads),
            Quota::None => {}
        }
        let request_body = match &operation.request_body {
            Some(RefOr::T(body)) => Some(body),
            _ => None,
        };
        if has_json_body(request_body) {
            applies.extend([
                Shared::MalformedJson,
                Shared::PayloadTooLarge,
                Shared::UnsupportedMediaType,
                Shared::ValidationFailed,
            ]);
        }
        let parameters = operation.parameters.as_deref().unwrap_or_default();
        let has_query = parameters.iter().any(|p| match p {
            RefOr::T(p) => p.parameter_in == ParameterIn::Query,
            RefOr::Ref(_) => false,
        });
        if protected && has_query {
            applies.push(Shared::ValidationFailed);
        }
        if path.contains('{') {
            applies.push(Shared::NotFound);
        }
        if path.starts_with("/v1/") && method != "options" {
            applies.push(Shared::Unavailable);
        }
        if path.starts_with("/v1/tus") && method != "options" {
            applies.push(Shared::UnsupportedVersion);
        }
        if path == "/v1/tus/{id}" {
            applies.push(Shared::Locked);
        }
        let head = method == "head";
        let responses = &mut operation.responses.responses;
        for shared in applies {
            if responses.contains_key(shared.status()) {
                continue;
            }
            let response = if head {
                RefOr::T(shared.response(false))
            } else {
                RefOr::Ref(Ref::from_response_name(shared.name()))
            };
            responses.insert(shared.status().to_owned(), response);
        }
        for (status, response) in responses.iter_mut() {
            let RefOr::T(response) = response else {
                continue;
            };
            // Required by OpenAPI; utoipa leaves it empty when a route gives none.
            if response.description.is_empty() {
                response.description = axum::http::StatusCode::from_bytes(status.as_bytes())
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("Response")
                    .to_owned();
            }
            if status.starts_with('2') || status.starts_with('3') {
                continue;
            }
            if head {
                response.content.clear();
            } else if response
                .content
                .get("application/json")
                .is_some_and(is_problem)
                && let Some(content) = response.content.shift_remove("application/json")
            {
                response.content.insert(PROBLEM_JSON.to_owned(), content);
            }
        }
    }
    for op in operations(doc) {
        for parameter in op.operation.parameters.iter_mut().flatten() {
            if let RefOr::T(parameter) = parameter
                && let Some(schema) = parameter.schema.as_mut()
            {
                not_null(schema);
            }
        }
    }
    optional_bodies(doc);
    list_items_by_reference(doc);
    named_variants(doc, "UploadInstructionsDto", "method");
}

/// A list's items as a reference to their schema, not an inline copy:
/// utoipa inlines a generic's argument (`ListEnvelope<UploadDto>`), and
/// client generators then make a second, differently named class of the
/// item type (`ListEnvelopeUploadDtoItemsItem` beside `UploadDto`).
fn list_items_by_reference(doc: &mut utoipa::openapi::OpenApi) {
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    let names = components.schemas.keys().cloned().collect::<Vec<_>>();
    for name in names {
        let Some(item) = name.strip_prefix("ListEnvelope_") else {
            continue;
        };
        if !components.schemas.contains_key(item) {
            continue;
        }
        if let Some(RefOr::T(Schema::Object(envelope))) = components.schemas.get_mut(&name)
            && let Some(RefOr::T(Schema::Array(items))) = envelope.properties.get_mut("items")
        {
            items.items =
                ArrayItems::RefOrSchema(Box::new(RefOr::Ref(Ref::from_schema_name(item))));
        }
    }
}

/// An internally tagged enum's variants (`oneOf` of inline objects) as
/// schemas of their own, named `{Tag}{Schema}` after their tag value
/// (`PutUploadInstructionsDto`), with a discriminator on `tag`: generators
/// fail on, or make unnamed classes of, inline variants.
fn named_variants(doc: &mut utoipa::openapi::OpenApi, schema: &str, tag: &str) {
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    let Some(RefOr::T(Schema::OneOf(one_of))) = components.schemas.get_mut(schema) else {
        return;
    };
    let mut named = Vec::new();
    let mut discriminator = Discriminator::new(tag);
    for variant in &mut one_of.items {
        let RefOr::T(Schema::Object(object)) = variant else {
            continue;
        };
        let value = match object.properties.get(tag) {
            Some(RefOr::T(Schema::Object(t))) => t
                .enum_values
                .as_ref()
                .and_then(|v| v.first())
                .and_then(|v| v.as_str())
                .map(str::to_owned),
            _ => None,
        };
        let Some(value) = value else { continue };
        let mut word = value.to_lowercase();
        if let Some(first) = word.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        let name = format!("{word}{schema}");
        let reference = Ref::from_schema_name(&name);
        discriminator
            .mapping
            .insert(value, reference.ref_location.clone());
        named.push((name, std::mem::replace(variant, RefOr::Ref(reference))));
    }
    one_of.discriminator = Some(discriminator);
    components.schemas.extend(named);
}

/// The schema without its `null` alternative: `type: [T, null]` becomes
/// `type: T`, `oneOf: [S, null]` becomes `S`.
fn not_null(schema: &mut RefOr<Schema>) {
    match schema {
        RefOr::T(Schema::Object(object)) => {
            if let SchemaType::Array(types) = &object.schema_type {
                let mut rest = types.iter().filter(|t| **t != Type::Null);
                if let (Some(only), None) = (rest.next(), rest.next()) {
                    object.schema_type = SchemaType::Type(only.clone());
                }
            }
        }
        RefOr::T(Schema::OneOf(one_of)) => {
            let mut rest = one_of.items.iter().filter(|s| !is_null(s));
            if let (Some(only), None) = (rest.next(), rest.next()) {
                *schema = only.clone();
            }
        }
        _ => {}
    }
}

/// `Option<T>` as a request body (`uploads::OptionalJson`) means a body that
/// may be left out, not one that may be `null`: utoipa writes it as
/// `oneOf: [null, T]`; this makes it `T`, not required.
fn optional_bodies(doc: &mut utoipa::openapi::OpenApi) {
    for op in operations(doc) {
        let Some(RefOr::T(body)) = op.operation.request_body.as_mut() else {
            continue;
        };
        if body.required.is_some() {
            continue;
        }
        for content in body.content.values_mut() {
            let RefOr::T(content) = content else {
                continue;
            };
            if let Some(schema) = content.schema.as_mut() {
                not_null(schema);
            }
        }
    }
}

/// A body of the `Problem` schema, as `body = Problem` writes it.
fn is_problem(content: &RefOr<utoipa::openapi::content::Content>) -> bool {
    matches!(content, RefOr::T(c)
        if matches!(&c.schema, Some(RefOr::Ref(r)) if r.ref_location == "#/components/schemas/Problem"))
}

fn is_null(schema: &RefOr<Schema>) -> bool {
    matches!(schema, RefOr::T(Schema::Object(o)) if o.schema_type == SchemaType::Type(Type::Null))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::{BTreeMap, BTreeSet};

    use serde_json::Value;

    use super::*;

    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

    fn document() -> Value {
        serde_json::to_value(openapi()).unwrap()
    }

    /// Every operation: (path, method, operation).
    fn operations(doc: &Value) -> Vec<(String, &'static str, &Value)> {
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in METHODS {
                if let Some(op) = item.get(method) {
                    out.push((path.clone(), method, op));
                }
            }
        }
        out
    }

    /// A response, its `$ref` to `components.responses` followed.
    fn resolve<'a>(doc: &'a Value, response: &'a Value) -> &'a Value {
        match response.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r
                    .strip_prefix("#/components/responses/")
                    .unwrap_or_else(|| panic!("unexpected response $ref {r}"));
                let target = &doc["components"]["responses"][name];
                assert!(target.is_object(), "$ref {r} does not resolve");
                target
            }
            None => response,
        }
    }

    fn protected(op: &Value) -> bool {
        match op.get("security") {
            None => true,
            Some(reqs) => reqs
                .as_array()
                .unwrap()
                .iter()
                .any(|r| !r.as_object().unwrap().is_empty()),
        }
    }

    fn statuses(op: &Value) -> BTreeSet<&str> {
        op["responses"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect()
    }

    #[test]
    fn operation_ids_are_unique() {
        let doc = document();
        let mut seen = BTreeMap::new();
        for (path, method, op) in operations(&doc) {
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            if let Some(other) = seen.insert(id.to_owned(), format!("{method} {path}")) {
                panic!("operationId {id} on both {other} and {method} {path}");
            }
        }
    }

    #[test]
    fn path_parameters_match_the_template() {
        let doc = document();
        for (path, method, op) in operations(&doc) {
            let template: BTreeSet<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let mut declared = BTreeSet::new();
            for p in &params {
                let name = p["name"].as_str().unwrap();
                match p["in"].as_str().unwrap() {
                    "path" => {
                        assert!(
                            template.contains(name),
                            "{method} {path}: `{name}` is `in: path` but not in the path"
                        );
                        assert_eq!(p["required"], true, "{method} {path}: {name}");
                        declared.insert(name.to_owned());
                    }
                    "query" | "header" => {
                        assert!(
                            !template.contains(name),
                            "{method} {path}: `{name}` is in the path but not `in: path`"
                        );
                        // Absent or a value: a parameter is never `null`.
                        let schema = serde_json::to_string(&p["schema"]).unwrap();
                        assert!(
                            !schema.contains("\"null\""),
                            "{method} {path}: `{name}` may be null: {schema}"
                        );
                    }
                    other => panic!("{method} {path}: `{name}` is in {other}"),
                }
            }
            for name in template {
                assert!(
                    declared.contains(name),
                    "{method} {path}: `{{{name}}}` is not declared"
                );
            }
        }
    }

    /// Error answers that are not problem documents, on purpose.
    const NOT_PROBLEMS: [(&str, &str); 1] = [
        // The readiness report, with the state of each check.
        ("/readyz", "503"),
    ];

    #[test]
    fn every_error_is_a_problem_document() {
        let doc = document();
        for (path, method, op) in operations(&doc) {
            for (status, response) in op["responses"].as_object().unwrap() {
                if status.starts_with('2') || status.starts_with('3') {
                    continue;
                }
                let response = resolve(&doc, response);
                assert!(
                    response["description"]
                        .as_str()
                        .is_some_and(|d| !d.is_empty()),
                    "{method} {path} {status}: no description"
                );
                let content = response.get("content");
                if method == "head" {
                    assert!(content.is_none(), "{method} {path} {status} has a body");
                    continue;
                }
                if NOT_PROBLEMS.contains(&(path.as_str(), status.as_str())) {
                    continue;
                }
                let content = content
                    .and_then(Value::as_object)
                    .unwrap_or_else(|| panic!("{method} {path} {status}: no content"));
                let types: Vec<&String> = content.keys().collect();
                assert_eq!(
                    types,
                    [PROBLEM_JSON],
                    "{method} {path} {status}: error content is not problem+json"
                );
                assert_eq!(
                    content[PROBLEM_JSON]["schema"]["$ref"], "#/components/schemas/Problem",
                    "{method} {path} {status}"
                );
            }
        }
        // The problem schema names its per-field errors.
        let problem = &doc["components"]["schemas"]["Problem"];
        assert_eq!(
            problem["properties"]["errors"]["items"]["$ref"],
            "#/components/schemas/ProblemField"
        );
    }

    #[test]
    fn protected_operations_document_401_and_429() {
        let doc = document();
        let mut public = BTreeSet::new();
        for (path, method, op) in operations(&doc) {
            let statuses = statuses(op);
            // A request with a bearer token is counted on any route.
            let counted = ratelimit::quota(&path, method) != Quota::None;
            if !protected(op) {
                // Public means `security: []`, not an empty requirement.
                assert_eq!(op["security"], serde_json::json!([]), "{method} {path}");
                public.insert(op["operationId"].as_str().unwrap().to_owned());
                assert_eq!(statuses.contains("429"), counted, "{method} {path}");
                continue;
            }
            assert!(statuses.contains("401"), "{method} {path} lacks 401");
            assert_eq!(
                statuses.contains("429"),
                counted,
                "{method} {path}: 429 documented {} but the request is {}counted",
                statuses.contains("429"),
                if counted { "" } else { "not " },
            );
        }
        let expected: BTreeSet<String> = [
            "login",
            "refreshTokens",
            "logout",
            "getHealth",
            "getReadiness",
            "getMetrics",
            "getOpenApi",
            "getDocs",
            "tusOptions",
            "getBlob",
            "headBlob",
            "putBlob",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        assert_eq!(public, expected);
    }

    #[test]
    fn json_bodies_document_their_refusals() {
        let doc = document();
        let mut bodies = 0;
        for (path, method, op) in operations(&doc) {
            let Some(content) = op["requestBody"]["content"].as_object() else {
                continue;
            };
            if !content.contains_key("application/json") {
                continue;
            }
            bodies += 1;
            let statuses = statuses(op);
            for status in ["400", "413", "415", "422"] {
                assert!(statuses.contains(status), "{method} {path} lacks {status}");
            }
            // Never `null`: an optional body is one that may be left out.
            let schema = serde_json::to_string(&content["application/json"]["schema"]).unwrap();
            assert!(!schema.contains("\"null\""), "{method} {path}: {schema}");
        }
        assert!(bodies >= 9, "only {bodies} JSON bodies");
        let complete = &doc["paths"]["/v1/uploads/{id}/complete"]["post"]["requestBody"];
        assert!(complete.get("required").is_none_or(|r| r == false));
    }

    #[test]
    fn every_schema_a_generator_makes_a_class_of_is_named() {
        let doc = document();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for (name, schema) in schemas {
            for variant in schema["oneOf"].as_array().into_iter().flatten() {
                let inline_object = variant.get("$ref").is_none() && variant["type"] == "object";
                assert!(!inline_object, "{name}: an inline object variant {variant}");
            }
            if name.starts_with("ListEnvelope_") {
                let items = &schema["properties"]["items"]["items"];
                assert!(items.get("$ref").is_some(), "{name}: inline items {items}");
            }
        }
        let instructions = &schemas["UploadInstructionsDto"];
        assert_eq!(instructions["discriminator"]["propertyName"], "method");
        assert_eq!(
            instructions["discriminator"]["mapping"]["PUT"],
            "#/components/schemas/PutUploadInstructionsDto"
        );
        assert!(schemas.contains_key("MultipartUploadInstructionsDto"));
    }

    #[test]
    fn query_parameters_of_lists_are_bounded() {
        let doc = document();
        let mut lists = 0;
        for (path, method, op) in operations(&doc) {
            for p in op["parameters"].as_array().into_iter().flatten() {
                if p["name"] == "limit" {
                    lists += 1;
                    assert_eq!(p["in"], "query", "{method} {path}");
                    assert_eq!(p["schema"]["minimum"], 1, "{method} {path}");
                    assert_eq!(p["schema"]["maximum"], 100, "{method} {path}");
                }
            }
        }
        assert_eq!(lists, 5);
    }

    #[test]
    fn routes_outside_the_json_api_are_documented() {
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        for (path, methods) in [
            ("/v1/tus", &["post", "options"][..]),
            ("/v1/tus/{id}", &["head", "patch", "delete", "post"]),
            ("/v1/blobs/{key}", &["get", "head", "put"]),
            ("/healthz", &["get"]),
            ("/readyz", &["get"]),
            ("/metrics", &["get"]),
            ("/openapi.json", &["get"]),
            ("/docs", &["get"]),
        ] {
            for method in methods {
                assert!(
                    paths.get(path).and_then(|p| p.get(*method)).is_some(),
                    "{method} {path} is not documented"
                );
            }
        }
        let metrics = &paths["/metrics"]["get"]["responses"]["200"]["content"];
        assert!(metrics.get("text/plain").is_some(), "{metrics}");
        // The creating operations take an Idempotency-Key.
        for (path, method) in [
            ("/v1/projects", "post"),
            ("/v1/users", "post"),
            ("/v1/projects/{id}/members/{user_id}", "put"),
            ("/v1/projects/{id}/uploads", "post"),
            ("/v1/tus", "post"),
        ] {
            let params = paths[path][method]["parameters"].as_array().unwrap();
            assert!(
                params
                    .iter()
                    .any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header"),
                "{method} {path}"
            );
        }
    }

    #[test]
    fn every_reference_resolves() {
        fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
            match v {
                Value::Object(map) => {
                    for (k, v) in map {
                        match (k.as_str(), v) {
                            ("$ref", Value::String(r)) => out.push(r),
                            _ => refs(v, out),
                        }
                    }
                }
                Value::Array(items) => items.iter().for_each(|i| refs(i, out)),
                _ => {}
            }
        }
        let doc = document();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        for r in found {
            let pointer = r
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("external $ref {r}"));
            assert!(doc.pointer(pointer).is_some(), "$ref {r} does not resolve");
        }
    }
}
