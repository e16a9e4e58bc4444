//! Rate limits on the wire: the middleware that counts every request with a
//! bearer token against its user's and its tenant's quotas, the login check,
//! and the `RateLimit-Policy` / `RateLimit` headers
//! (draft-ietf-httpapi-ratelimit-headers) and the 429 problem.
//!
//! A quota of `per_minute` with `burst` is GCRA; on the wire it is the
//! policy "`q` = burst requests per `w` = the seconds the burst takes to
//! refill".

use std::cell::RefCell;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use buildpeer_core::auth::Claims;
use buildpeer_core::cache::RateQuota;
use buildpeer_core::service::RateStatus;

use crate::AppState;
use crate::error::Problem;

/// Counts the request against its bearer's user and tenant quotas; refuses
/// it with 429 over either. A request without a verifiable token passes
/// (it is either public or answered 401 by the `Auth` extractor). The
/// verified claims go on to the `Auth` extractor, so a token is verified once.
pub async fn enforce(
    state: &AppState,
    mut req: Request,
    next: impl AsyncFnOnce(Request) -> Response,
) -> Response {
    let Some(claims) =
        bearer(req.headers()).and_then(|t| state.service.verify_access_token(t).ok())
    else {
        return next(req).await;
    };
    if let Some(kind) = data_request(&req) {
        return upload(state, req, claims, kind, next).await;
    }
    let status = state.service.rate_limit_request(&claims).await;
    req.extensions_mut().insert(Verified(claims));
    let Some(status) = status else {
        return next(req).await;
    };
    if !status.allowed() {
        return too_many(&status);
    }
    let mut response = next(req).await;
    set_headers(response.headers_mut(), &status);
    response
}

/// A data request: what an upload or a resume sends, not an API call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Data {
    /// Sends bytes (a tus PATCH): holds a place among the uploads in flight.
    Sends,
    /// Asks where an upload stands (a tus HEAD), or for a download.
    Asks,
}

/// The tus upload routes' PATCH and HEAD (also as a POST with
/// `X-HTTP-Method-Override`, as some clients send them), and the download
/// redirects (a gallery asks for a thumbnail per photo).
fn data_request(req: &Request) -> Option<Data> {
    let route = req.extensions().get::<axum::extract::MatchedPath>()?;
    let overridden = req
        .headers()
        .get("x-http-method-override")
        .and_then(|v| v.to_str().ok());
    let method = match (req.method().as_str(), overridden) {
        ("POST", Some(m)) => m,
        (m, _) => m,
    };
    data_kind(route.as_str(), method)
}

/// Whether a request to `route` (as the router writes it) with `method` is
/// a data request, and which.
fn data_kind(route: &str, method: &str) -> Option<Data> {
    match route {
        "/v1/uploads/{id}/content" | "/v1/uploads/{id}/thumbnails/{name}" => Some(Data::Asks),
        "/v1/tus/{id}" if method.eq_ignore_ascii_case("PATCH") => Some(Data::Sends),
        "/v1/tus/{id}" if method.eq_ignore_ascii_case("HEAD") => Some(Data::Asks),
        _ => None,
    }
}

/// What a request with a bearer token counts against, by route and method:
/// what [`enforce`] applies, for the OpenAPI document to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Quota {
    /// The user's and the tenant's request quotas (429 `rate_limited`).
    Requests,
    /// A place among the uploads in flight (429 `too_many_uploads`).
    UploadsInFlight,
    /// Nothing: it is never refused for its rate.
    None,
}

pub(crate) fn quota(route: &str, method: &str) -> Quota {
    match data_kind(route, method) {
        None => Quota::Requests,
        Some(Data::Sends) => Quota::UploadsInFlight,
        Some(Data::Asks) => Quota::None,
    }
}

/// A data request counts against no request quota; a PATCH takes a place
/// among its user's and tenant's uploads in flight for as long as it runs,
/// and is refused with 429 `too_many_uploads` when there is none.
async fn upload(
    state: &AppState,
    mut req: Request,
    claims: Claims,
    kind: Data,
    next: impl AsyncFnOnce(Request) -> Response,
) -> Response {
    let slot = match kind {
        Data::Asks => None,
        Data::Sends => match state.service.upload_slot(claims.tid, Some(claims.sub)) {
            Ok(slot) => Some(slot),
            Err(busy) => return too_many_uploads(busy),
        },
    };
    req.extensions_mut().insert(Verified(claims));
    let mut response = next(req).await;
    if let Some(slot) = slot {
        upload_headers(response.headers_mut(), &slot.checked);
    }
    response
}

/// `RateLimit-Policy` / `RateLimit` for the uploads in flight (a bound on
/// concurrency: `q` places, no window).
fn upload_headers(headers: &mut HeaderMap, checked: &[(&'static str, u32, u32)]) {
    let policy = checked
        .iter()
        .map(|(policy, limit, _)| format!("\"{policy}\";q={limit}"))
        .collect::<Vec<_>>()
        .join(", ");
    if let Ok(v) = HeaderValue::from_str(&policy) {
        headers.insert(RATELIMIT_POLICY, v);
    }
    if let Some((policy, _, left)) = checked.iter().min_by_key(|c| c.2)
        && let Ok(v) = HeaderValue::from_str(&format!("\"{policy}\";r={left}"))
    {
        headers.insert(RATELIMIT, v);
    }
}

/// 429 `too_many_uploads` with `Retry-After: 1`: a place frees as soon as
/// one of the uploads in flight ends.
pub(crate) fn too_many_uploads(busy: buildpeer_core::service::UploadsBusy) -> Response {
    let detail = format!(
        "{} uploads are already in flight (the {} limit); retry in 1 s",
        busy.limit, busy.policy
    );
    let mut response = problem_429("too_many_uploads", detail, 1);
    upload_headers(response.headers_mut(), &[(busy.policy, busy.limit, 0)]);
    response
}

/// A 429 problem with `Retry-After`.
fn problem_429(code: &'static str, detail: String, retry: u64) -> Response {
    let problem = Problem {
        kind: format!("urn:buildpeer:problem:{code}"),
        title: "Too Many Requests",
        status: 429,
        code,
        detail,
        errors: Vec::new(),
    };
    let mut response = (StatusCode::TOO_MANY_REQUESTS, axum::Json(problem)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    headers.insert(header::RETRY_AFTER, HeaderValue::from(retry));
    response
}

/// The claims of the request's bearer token, verified by [`enforce`].
#[derive(Clone)]
pub struct Verified(pub Claims);

/// The login attempt's account and address quotas: `Err` is the 429.
pub async fn login(
    state: &AppState,
    peer: Option<SocketAddr>,
    tenant: &str,
    email: &str,
) -> Result<Option<RateStatus>, Response> {
    let status = state
        .service
        .rate_limit_login(tenant, email, peer.map(|p| p.ip()))
        .await;
    match status {
        Some(s) if !s.allowed() => Err(too_many(&s)),
        other => Ok(other),
    }
}

/// The client's address, as the server loop recorded it.
pub fn peer(req_extensions: &axum::http::Extensions) -> Option<SocketAddr> {
    req_extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)
}

pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

// Constants, because a name given as `&str` is parsed on every insert.
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

fn ceil_secs(d: std::time::Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

pub fn set_headers(headers: &mut HeaderMap, status: &RateStatus) {
    if status.checked.is_empty() {
        return;
    }
    if let Some(v) = policy_header(status) {
        headers.insert(RATELIMIT_POLICY, v);
    }
    if let Some(t) = status.tightest() {
        let reset = if t.decision.allowed {
            t.decision.reset
        } else {
            t.decision.retry_after
        };
        // Built by hand: this runs on every request, and `format!` showed
        // in profiles.
        let mut value = String::with_capacity(48);
        value.push('"');
        value.push_str(t.policy);
        value.push_str("\";r=");
        value.push_str(itoa::Buffer::new().format(t.decision.remaining));
        value.push_str(";t=");
        value.push_str(itoa::Buffer::new().format(ceil_secs(reset)));
        if let Ok(v) = HeaderValue::try_from(value) {
            headers.insert(RATELIMIT, v);
        }
    }
}

type PolicyKey = Vec<(&'static str, RateQuota)>;

thread_local! {
    /// The last `RateLimit-Policy` value this thread built, and the quotas it
    /// says: nearly every request checks the same two, so it is the same
    /// header each time, and building it showed in profiles.
    static LAST_POLICY: RefCell<Option<(PolicyKey, HeaderValue)>> = const { RefCell::new(None) };
}

fn policy_header(status: &RateStatus) -> Option<HeaderValue> {
    let same = |key: &PolicyKey| {
        key.len() == status.checked.len()
            && key
                .iter()
                .zip(&status.checked)
                .all(|(k, c)| *k == (c.policy, c.quota))
    };
    if let Some(v) = LAST_POLICY.with_borrow(|last| {
        last.as_ref()
            .filter(|(key, _)| same(key))
            .map(|(_, v)| v.clone())
    }) {
        return Some(v);
    }
    let policy = status
        .checked
        .iter()
        .map(|c| {
            let window = ceil_secs(c.quota.emission() * c.quota.burst);
            format!("\"{}\";q={};w={}", c.policy, c.quota.burst, window.max(1))
        })
        .collect::<Vec<_>>()
        .join(", ");
    let value = HeaderValue::from_str(&policy).ok()?;
    let key = status.checked.iter().map(|c| (c.policy, c.quota)).collect();
    LAST_POLICY.set(Some((key, value.clone())));
    Some(value)
}

/// 429 `rate_limited` with `Retry-After` and the rate-limit headers.
pub fn too_many(status: &RateStatus) -> Response {
    let retry = ceil_secs(status.retry_after()).max(1);
    let policy = status.tightest().map_or("request", |t| t.policy);
    let detail = format!("too many requests (the {policy} limit); retry in {retry} s");
    let mut response = problem_429("rate_limited", detail, retry);
    set_headers(response.headers_mut(), status);
    response
}

/// Records the client's address on every request of a connection (for the
/// per-IP login limit).
pub fn with_peer<B>(
    peer: SocketAddr,
) -> impl Fn(axum::http::Request<B>) -> axum::http::Request<B> + Clone {
    move |mut req| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req
    }
}
