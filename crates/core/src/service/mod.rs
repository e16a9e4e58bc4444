//! Use-cases: the one place where every read and mutation passes, so policy,
//! validation and (later) auditing live here and nowhere else. Drivers (HTTP,
//! CLI, worker) call these and nothing below them.

mod auth;
mod cached;
mod jobs;
mod limits;
mod observe;
mod ops;
mod processing;
mod projects;
mod tenants;
pub mod tus;
mod uploads;
mod users;

use std::sync::Arc;

use crate::auth::TokenKeys;
use crate::blob::BlobStore;
use crate::cache::{CacheSettings, Caching, NoCache, Renderings};
use crate::clock::Clock;
use crate::error::CoreError;
use crate::ids::{TenantId, UploadId, UserId};
use crate::media::MediaProcessor;
use crate::model::Role;
use crate::policy::{self, TenantAction};
use crate::ports::MetadataStore;
use crate::upload::Upload;

pub use auth::{LoginInput, TokenPair};
pub use jobs::{JobDetail, JobSettings, JobSpec, ProcessUpload, SpecError};
pub use limits::{RateLimits, RateStatus, UploadSlot, UploadsBusy};
pub use observe::{DEFAULT_MAX_TENANTS, OTHER_TENANTS};
pub use ops::Readiness;
pub use projects::{CreateProjectInput, ProjectListQuery, UpdateProjectInput};
pub use tenants::{Bootstrap, CreateTenantInput};
pub use uploads::{
    Download, InitiateUploadInput, Initiated, SweepReport, UploadInstructions, UploadListQuery,
    UploadSettings,
};
pub use users::{CreateUserInput, UpdateUserInput};

/// How many uploads' renderings are kept (with the upload each pins, 1-3
/// KiB apiece).
const RENDERED_UPLOADS: usize = 10_000;
/// How long one is kept; a poll that comes later serializes again.
const RENDERED_UPLOAD_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// The authenticated principal of a request: who, in which tenant, with which
/// role (read from the database on every request, so a role change or a
/// disabled flag takes effect at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actor {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub role: Role,
}

/// What the use-cases run on.
pub struct Deps {
    pub store: Arc<dyn MetadataStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub media: Arc<dyn MediaProcessor>,
    pub clock: Arc<dyn Clock>,
    pub tokens: TokenKeys,
    pub uploads: UploadSettings,
}

/// The use-cases, over the ports.
#[derive(Clone)]
pub struct Service {
    store: Arc<dyn MetadataStore>,
    blobs: Arc<dyn BlobStore>,
    media: Arc<dyn MediaProcessor>,
    clock: Arc<dyn Clock>,
    uploads: Arc<UploadSettings>,
    tokens: Arc<TokenKeys>,
    /// A hash of a random password, verified against when a login names an
    /// unknown tenant or e-mail so that the answer takes as long as a real miss.
    dummy_hash: Arc<tokio::sync::OnceCell<String>>,
    /// Cached reads (see `cached.rs`); no cache until `with_cache`.
    caching: Arc<Caching>,
    /// Request and login rate limits; off until `with_rate_limits`.
    limits: Arc<limits::Limiting>,
    /// Leases, attempts and backoff of the jobs; defaults until `with_jobs`.
    jobs: Arc<JobSettings>,
    /// See `rendered_uploads`.
    rendered_uploads: Arc<Renderings<UploadId, Upload>>,
    /// The tenants labelled in per-tenant metrics (see `observe.rs`).
    tenant_labels: Arc<observe::TenantLabels>,
}

impl Service {
    pub fn new(deps: Deps) -> Self {
        observe::register_series();
        Self {
            store: deps.store,
            blobs: deps.blobs,
            media: deps.media,
            clock: deps.clock,
            uploads: Arc::new(deps.uploads),
            tokens: Arc::new(deps.tokens),
            dummy_hash: Arc::new(tokio::sync::OnceCell::new()),
            caching: Arc::new(Caching::new(Arc::new(NoCache), CacheSettings::default())),
            limits: Arc::new(limits::Limiting::off()),
            jobs: Arc::new(JobSettings::default()),
            rendered_uploads: Arc::new(Renderings::new(RENDERED_UPLOADS, RENDERED_UPLOAD_TTL)),
            tenant_labels: Arc::new(observe::TenantLabels::new(observe::DEFAULT_MAX_TENANTS)),
        }
    }

    /// At most `max` tenants get a label of their own in per-tenant metrics.
    pub fn with_metrics_tenants(mut self, max: usize) -> Self {
        self.tenant_labels = Arc::new(observe::TenantLabels::new(max));
        self
    }

    fn require(&self, actor: &Actor, action: TenantAction) -> Result<(), CoreError> {
        if policy::tenant_allows(actor.role, action) {
            Ok(())
        } else {
            Err(CoreError::Forbidden)
        }
    }
}

/// Runs CPU-heavy work (argon2) on the blocking pool, keeping the async
/// workers free for I/O.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, CoreError> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
        .await
        .map_err(|e| CoreError::Internal(Box::new(e)))
}

/// An `Idempotency-Key`: 1–255 visible ASCII characters.
fn parse_idempotency_key(s: &str) -> Result<String, crate::error::Invalid> {
    if (1..=255).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(s.to_owned())
    } else {
        Err(crate::error::Invalid::new(
            "invalid_idempotency_key",
            "1 to 255 visible ASCII characters",
        ))
    }
}

/// A digest of a creating request's fields, for its idempotency key: absent
/// and empty differ, and a length prefix keeps fields apart.
fn request_digest(parts: &[Option<&str>]) -> [u8; 32] {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    for part in parts {
        match part {
            Some(p) => {
                h.update([1]);
                h.update((p.len() as u64).to_le_bytes());
                h.update(p.as_bytes());
            }
            None => h.update([0]),
        }
    }
    h.finalize().into()
}

/// A creation's outcome as (the resource, whether this request created it);
/// a key used before with another request is refused.
fn replayed<T>(outcome: crate::ports::Creation<T>) -> Result<(T, bool), CoreError> {
    match outcome {
        crate::ports::Creation::Created(created) => Ok((created, true)),
        crate::ports::Creation::Replayed {
            existing,
            same_request: true,
        } => Ok((existing, false)),
        crate::ports::Creation::Replayed { .. } => Err(CoreError::invalid(
            "idempotency_key",
            crate::error::Invalid::new(
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request",
            ),
        )),
    }
}
