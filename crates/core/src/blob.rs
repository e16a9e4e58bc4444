//! The blob-store port: objects addressed by server-built keys, streamed in
//! and out, multipart uploads, and signed URLs that let a client move bytes
//! straight to or from storage without the API proxying them.
//!
//! Two adapters live in `buildpeer-storage`: the local file system (signed URLs
//! point at this service's own `/v1/blobs/…` endpoint and carry an HMAC) and
//! any S3-compatible store (SigV4 presigned URLs).

use std::fmt;
use std::ops::Range;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_core::Stream;

use crate::error::Invalid;
use crate::ids::{ProjectId, TenantId, UploadId};

/// A stream of object bytes.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, BlobError>> + Send>>;

/// An object key. Keys are built by the server only (`ObjectKey::original`);
/// a user's filename never becomes part of a path.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// `tenants/{tenant}/projects/{project}/uploads/{upload}/original`.
    pub fn original(tenant: TenantId, project: ProjectId, upload: UploadId) -> Self {
        Self(format!(
            "tenants/{tenant}/projects/{project}/uploads/{upload}/original"
        ))
    }

    /// `…/uploads/{upload}/tus-staging`: where a tus upload's partial bytes
    /// are staged until the last one arrives.
    pub fn tus_staging(tenant: TenantId, project: ProjectId, upload: UploadId) -> Self {
        Self(format!(
            "tenants/{tenant}/projects/{project}/uploads/{upload}/tus-staging"
        ))
    }

    /// `…/tus-staging-tail-{offset}`: on a store without staging, the bytes
    /// of a tus upload past its last full part, when its offset is `offset`.
    /// Every offset has its own object, so writing the next tail never
    /// touches the one the acknowledged offset relies on.
    pub fn tus_tail(staging: &ObjectKey, offset: u64) -> Self {
        Self(format!("{staging}-tail-{offset}"))
    }

    /// `…/uploads/{upload}/{name}.jpg`: a derivative next to its original.
    /// `name` is a configured derivative name (`[a-z0-9_-]`, checked at
    /// start-up).
    pub fn derivative(tenant: TenantId, project: ProjectId, upload: UploadId, name: &str) -> Self {
        Self(format!(
            "tenants/{tenant}/projects/{project}/uploads/{upload}/{name}.jpg"
        ))
    }

    /// Checks a key that arrives from outside (the local blob endpoint's path):
    /// relative, `/`-separated segments of `[a-z0-9._-]`, no `.` or `..`
    /// segment, at most 512 bytes. Every key `original` builds passes.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let ok = !s.is_empty()
            && s.len() <= 512
            && s.split('/').all(|seg| {
                !seg.is_empty()
                    && seg != "."
                    && seg != ".."
                    && seg.bytes().all(|b| {
                        b.is_ascii_lowercase()
                            || b.is_ascii_digit()
                            || matches!(b, b'-' | b'_' | b'.')
                    })
            });
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(Invalid::new("invalid_key", "not an object key"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The tenant a key built by the server belongs to (`tenants/{tenant}/…`).
    pub fn tenant(&self) -> Option<TenantId> {
        let id = self.0.strip_prefix("tenants/")?.split('/').next()?;
        uuid::Uuid::parse_str(id).ok().map(TenantId::from_uuid)
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectKey({})", self.0)
    }
}

/// What storage knows about a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub size: u64,
    pub etag: Option<String>,
}

/// A part the client uploaded, as it reported it on completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedPart {
    pub number: u32,
    pub etag: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignedMethod {
    Put,
    Get,
}

impl SignedMethod {
    pub const fn as_str(self) -> &'static str {
        match self {
            SignedMethod::Put => "PUT",
            SignedMethod::Get => "GET",
        }
    }
}

/// A signed request a client can make without other credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedUrl {
    pub method: SignedMethod,
    pub url: String,
    /// Headers the client must send exactly as given (they are signed).
    pub headers: Vec<(String, String)>,
    pub expires_at: DateTime<Utc>,
}

/// What a signed single-object PUT binds: storage refuses another type or length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutSpec {
    pub content_type: String,
    pub content_length: u64,
}

/// Response headers a signed GET makes storage send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetSpec {
    pub content_type: String,
    pub content_disposition: String,
}

/// What one `staging_append` did.
#[derive(Debug)]
pub struct StagedWrite {
    /// Bytes appended and durable.
    pub written: u64,
    /// The body failed (a dropped connection, a refused chunk) after
    /// `written` bytes.
    pub interrupted: Option<BlobError>,
}

/// The source of a `BlobError::Unavailable` that a circuit breaker returned
/// without calling storage: the store failed too often lately, and no call
/// goes through before `retry_after` has passed.
#[derive(Debug, thiserror::Error)]
#[error("the storage circuit breaker is open; retry in {}s", retry_after.as_secs().max(1))]
pub struct CircuitOpen {
    pub retry_after: std::time::Duration,
}

/// Errors of a blob-store adapter.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("no such object")]
    NotFound,
    /// A signed request that does not hold: bad or expired signature, wrong
    /// method, a body other than the one signed. The code is stable.
    #[error("signed request refused: {0}")]
    Denied(&'static str),
    /// The client's multipart completion names a part storage does not have.
    #[error("invalid multipart completion: {0}")]
    InvalidParts(String),
    /// Storage cannot be reached or timed out: worth retrying later.
    #[error("blob store unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The adapter does not implement this (yet).
    #[error("not supported by this blob store: {0}")]
    Unsupported(&'static str),
    #[error("blob store error")]
    Other(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl BlobError {
    /// When the store refused the call because its circuit breaker is open:
    /// how long until it lets a call through again.
    pub fn circuit_open(&self) -> Option<std::time::Duration> {
        match self {
            BlobError::Unavailable(e) => e.downcast_ref::<CircuitOpen>().map(|c| c.retry_after),
            _ => None,
        }
    }
}

/// Object storage.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// `"local"` or `"s3"`, for logs and metrics.
    fn backend(&self) -> &'static str;

    /// Stores a whole object from a stream. Readers see the old object or the
    /// new one, never a part of it.
    async fn put(
        &self,
        key: &ObjectKey,
        content_type: &str,
        body: ByteStream,
    ) -> Result<ObjectMeta, BlobError>;
    /// Streams an object, or the byte `range` of it.
    async fn get(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
    ) -> Result<(ObjectMeta, ByteStream), BlobError>;
    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, BlobError>;
    /// Idempotent: deleting a missing object succeeds.
    async fn delete(&self, key: &ObjectKey) -> Result<(), BlobError>;
    /// Every object whose key starts with `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<(ObjectKey, ObjectMeta)>, BlobError>;

    /// Starts a multipart upload; returns its id.
    async fn multipart_create(
        &self,
        key: &ObjectKey,
        content_type: &str,
    ) -> Result<String, BlobError>;
    /// Uploads one part from the server side; returns its ETag.
    async fn multipart_put_part(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        number: u32,
        body: Bytes,
    ) -> Result<String, BlobError>;
    /// Assembles the parts, in the order and with the ETags the client
    /// reported (never rebuilt from a listing of what storage holds).
    async fn multipart_complete(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<ObjectMeta, BlobError>;
    /// Idempotent: aborting an unknown or finished upload succeeds.
    async fn multipart_abort(&self, key: &ObjectKey, upload_id: &str) -> Result<(), BlobError>;

    /// A PUT of exactly `spec` to `key`, valid until `expires_at`.
    fn sign_put(
        &self,
        key: &ObjectKey,
        spec: &PutSpec,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<SignedUrl, BlobError>;
    /// A PUT of part `number` (exactly `content_length` bytes) of a multipart upload.
    fn sign_part(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        number: u32,
        content_length: u64,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<SignedUrl, BlobError>;
    /// A GET of `key` answered with the headers of `spec`.
    fn sign_get(
        &self,
        key: &ObjectKey,
        spec: &GetSpec,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<SignedUrl, BlobError>;

    // Resumable staging (tus). A staging object is written in pieces at
    // increasing offsets and finally turned into an ordinary object. The
    // caller (the core) keeps the acknowledged offset in the database; bytes
    // a staging object holds past it are garbage the next append overwrites.

    /// Whether this store implements the staging calls below.
    fn supports_staging(&self) -> bool {
        false
    }
    /// Drops whatever `staging` holds past `offset`, then appends `body`
    /// until it ends or fails, and makes what was written durable (fsync)
    /// before returning. A body that fails halfway is not an error of this
    /// call: the bytes written before it are kept and counted, and the
    /// failure is returned in `StagedWrite::interrupted`.
    async fn staging_append(
        &self,
        staging: &ObjectKey,
        offset: u64,
        body: ByteStream,
    ) -> Result<StagedWrite, BlobError> {
        let _ = (staging, offset, body);
        Err(BlobError::Unsupported("resumable staging"))
    }
    /// Turns the first `length` bytes of `staging` into the object `dest`
    /// (atomically, as `put`), removing the staging object.
    async fn staging_finish(
        &self,
        staging: &ObjectKey,
        length: u64,
        dest: &ObjectKey,
    ) -> Result<ObjectMeta, BlobError> {
        let _ = (staging, length, dest);
        Err(BlobError::Unsupported("resumable staging"))
    }
    /// Idempotent.
    async fn staging_delete(&self, staging: &ObjectKey) -> Result<(), BlobError> {
        let _ = staging;
        Ok(())
    }

    /// `Some(time until it half-opens)` while a circuit breaker in front of
    /// this store refuses calls; `None` for a bare adapter.
    fn circuit_open(&self) -> Option<std::time::Duration> {
        None
    }

    /// The local adapter serves its own signed URLs; S3 serves them itself.
    fn signed_endpoint(&self) -> Option<&dyn SignedEndpoint> {
        None
    }
}

/// A signed request as the local blob endpoint received it.
pub struct SignedRequest<'a> {
    pub method: SignedMethod,
    /// The key from the URL path, unchecked.
    pub key: &'a str,
    /// The raw query string, signature included.
    pub query: &'a str,
    pub content_type: Option<&'a str>,
    pub content_length: Option<u64>,
    pub now: DateTime<Utc>,
}

/// What a signed GET answers.
pub struct SignedGet {
    pub meta: ObjectMeta,
    pub body: ByteStream,
    pub content_type: String,
    pub content_disposition: String,
}

/// Serves signed URLs for a store that cannot serve them itself (the local
/// file system): checks the signature in constant time, then moves the bytes.
#[async_trait]
pub trait SignedEndpoint: Send + Sync {
    /// A signed PUT of an object or part; returns the stored ETag. Nothing
    /// is written unless the whole body matches what was signed.
    async fn signed_put(
        &self,
        req: SignedRequest<'_>,
        body: ByteStream,
    ) -> Result<String, BlobError>;
    async fn signed_get(&self, req: SignedRequest<'_>) -> Result<SignedGet, BlobError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let k = ObjectKey::original(TenantId::new(), ProjectId::new(), UploadId::new());
        assert_eq!(
            ObjectKey::parse(k.as_str()).ok().and_then(|k| k.tenant()),
            k.tenant()
        );
        assert!(k.tenant().is_some());
        assert_eq!(
            ObjectKey::parse("tenants/x/y").ok().map(|k| k.tenant()),
            Some(None)
        );
        for bad in [
            "", "/abs", "a//b", "a/../b", "a/./b", "A/b", "a b", "a/b/", "ñ", "a\\b",
        ] {
            assert!(ObjectKey::parse(bad).is_err(), "{bad}");
        }
        assert!(ObjectKey::parse(&"a".repeat(513)).is_err());
    }
}
