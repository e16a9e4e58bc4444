//! Ports: what the core needs from the outside world. Adapters in other crates
//! implement them (`buildpeer-db` for the metadata store).
//!
//! Architecture invariant: every method that touches tenant-owned data takes the
//! `TenantId` as its first argument and adapters put it in every `WHERE`
//! clause, so a row of another tenant is indistinguishable from a missing one.
//! The only tenant-less lookups are the tenant itself (by slug, at login) and a
//! refresh token by its hash (the token is the credential).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::blob::{CompletedPart, ObjectKey};
use crate::error::StoreError;
use crate::ids::{JobId, ProjectId, RefreshTokenId, SessionFamilyId, TenantId, UploadId, UserId};
use crate::model::{
    Address, Email, Member, Name, Project, ProjectCode, Role, Slug, Tenant, User, UserCredentials,
};
use crate::pagination::PageRequest;
use crate::queue::JobQueue;
use crate::upload::{
    ContentType, Filename, Processed, Sha256Hex, Transfer, Upload, UploadFailure, UploadStatus,
};

pub type StoreResult<T> = Result<T, StoreError>;

/// A new tenant with its first admin, written together.
#[derive(Debug, Clone)]
pub struct NewTenant {
    pub id: TenantId,
    pub slug: Slug,
    pub name: Name,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub id: UserId,
    pub email: Email,
    pub name: Name,
    pub role: Role,
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
}

/// Fields to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    pub name: Option<Name>,
    pub role: Option<Role>,
    pub disabled: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct NewProject {
    pub id: ProjectId,
    pub name: Name,
    pub code: Option<ProjectCode>,
    pub address: Option<Address>,
    pub created_by: UserId,
    pub created_at: DateTime<Utc>,
}

/// Fields to change; the outer `None` leaves a field as it is, `Some(None)`
/// clears an optional one.
#[derive(Debug, Clone, Default)]
pub struct ProjectPatch {
    pub name: Option<Name>,
    pub code: Option<Option<ProjectCode>>,
    pub address: Option<Option<Address>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProjectFilter {
    /// Only projects this user belongs to.
    pub member: Option<UserId>,
    pub include_archived: bool,
}

/// A refresh token as stored: only its SHA-256 is kept.
#[derive(Debug, Clone)]
pub struct NewRefreshToken {
    pub id: RefreshTokenId,
    pub hash: [u8; 32],
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotateOutcome {
    /// The token was live: it is now used and `next` belongs to its family.
    Rotated {
        tenant_id: TenantId,
        user_id: UserId,
        family_id: SessionFamilyId,
    },
    /// The token had been used or revoked before: its whole family is now revoked.
    Reused { family_id: SessionFamilyId },
    /// The token is past its expiry; nothing changed.
    Expired,
    /// No such token.
    Unknown,
}

/// Connection-pool gauges for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}

/// The metadata store: one database behind small capability traits (the
/// job queue lives in it too, so a job is enqueued in the transaction of the
/// change that causes it).
#[async_trait]
pub trait MetadataStore: AccountStore + UploadStore + TusStore + JobQueue + 'static {
    /// `"sqlite"` or `"postgres"`, for logs and metrics.
    fn backend(&self) -> &'static str;
    fn pool_stats(&self) -> PoolStats;
    /// Succeeds when the database answers a trivial query.
    async fn ping(&self) -> StoreResult<()>;
}

/// Tenants, users, projects, memberships and sessions.
#[async_trait]
pub trait AccountStore: Send + Sync {
    // Tenants (the root of ownership; not tenant-scoped themselves).
    async fn tenant_count(&self) -> StoreResult<u64>;
    /// Writes the tenant and its first user in one transaction.
    /// `Conflict::TenantSlug` when the slug is taken.
    async fn tenant_create(&self, tenant: &NewTenant, admin: &NewUser) -> StoreResult<()>;
    async fn tenant_by_slug(&self, slug: &Slug) -> StoreResult<Option<Tenant>>;
    async fn tenant_by_id(&self, id: TenantId) -> StoreResult<Option<Tenant>>;

    // Users.
    /// `Conflict::UserEmail` when the e-mail exists in the tenant. With the
    /// creator's idempotency key, in one transaction with the key (a key
    /// used before replays the user it created).
    async fn user_create(
        &self,
        tenant: TenantId,
        user: &NewUser,
        by: UserId,
        idempotency: Option<&IdempotencyKey>,
    ) -> StoreResult<Creation<User>>;
    async fn user_get(&self, tenant: TenantId, id: UserId) -> StoreResult<Option<User>>;
    async fn user_credentials(
        &self,
        tenant: TenantId,
        email: &Email,
    ) -> StoreResult<Option<UserCredentials>>;
    /// Newest first.
    async fn user_list(&self, tenant: TenantId, page: PageRequest) -> StoreResult<Vec<User>>;
    /// Applies the patch and bumps `updated_at`; disabling a user also revokes
    /// every refresh token it holds, in the same transaction.
    async fn user_update(
        &self,
        tenant: TenantId,
        id: UserId,
        patch: &UserPatch,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<User>>;

    // Projects.
    /// Writes the project and, when `creator_member` is set, the creator's
    /// membership in one transaction, with the creator's idempotency key
    /// when given (a key used before replays what it created instead).
    /// `Conflict::ProjectCode` on a taken code.
    async fn project_create(
        &self,
        tenant: TenantId,
        project: &NewProject,
        creator_member: bool,
        idempotency: Option<&IdempotencyKey>,
    ) -> StoreResult<Creation<Project>>;
    async fn project_get(&self, tenant: TenantId, id: ProjectId) -> StoreResult<Option<Project>>;
    /// Newest first.
    async fn project_list(
        &self,
        tenant: TenantId,
        filter: ProjectFilter,
        page: PageRequest,
    ) -> StoreResult<Vec<Project>>;
    async fn project_update(
        &self,
        tenant: TenantId,
        id: ProjectId,
        patch: &ProjectPatch,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Project>>;
    /// Sets `archived_at` unless already set; returns the project as it is after.
    async fn project_archive(
        &self,
        tenant: TenantId,
        id: ProjectId,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Project>>;

    // Memberships.
    async fn member_is(
        &self,
        tenant: TenantId,
        project: ProjectId,
        user: UserId,
    ) -> StoreResult<bool>;
    /// Idempotent; `true` when the membership is new. Both ids must exist in
    /// the tenant (the caller checks; the schema's composite keys enforce it).
    ///
    /// With `idempotency` (who asked, and their key): a key is recorded only
    /// by a request that created the membership, so `Replayed { existing:
    /// true, .. }` means the key's first request created it, and a key never
    /// recorded answers as if none had been sent.
    async fn member_add(
        &self,
        tenant: TenantId,
        project: ProjectId,
        user: UserId,
        now: DateTime<Utc>,
        idempotency: Option<(UserId, &IdempotencyKey)>,
    ) -> StoreResult<Creation<bool>>;
    /// `true` when a membership was removed.
    async fn member_remove(
        &self,
        tenant: TenantId,
        project: ProjectId,
        user: UserId,
    ) -> StoreResult<bool>;
    /// Newest membership first; the cursor is the membership id.
    async fn member_list(
        &self,
        tenant: TenantId,
        project: ProjectId,
        page: PageRequest,
    ) -> StoreResult<Vec<Member>>;

    // Sessions (refresh tokens).
    /// Starts a new session family with its first token.
    async fn session_start(
        &self,
        tenant: TenantId,
        user: UserId,
        family: SessionFamilyId,
        token: &NewRefreshToken,
    ) -> StoreResult<()>;
    /// Atomically marks the presented token used and stores `next` in its
    /// family; on reuse of a used or revoked token, revokes the whole family.
    /// Of two concurrent rotations of one token, exactly one is `Rotated`.
    async fn session_rotate(
        &self,
        presented: &[u8; 32],
        next: &NewRefreshToken,
        now: DateTime<Utc>,
    ) -> StoreResult<RotateOutcome>;
    /// Revokes the family of the presented token; returns it (`None` if
    /// the token is unknown).
    async fn session_revoke(
        &self,
        presented: &[u8; 32],
        now: DateTime<Utc>,
    ) -> StoreResult<Option<SessionFamilyId>>;
    /// Whether a session family was revoked (logout, reuse, a disabled user).
    async fn session_revoked(&self, family: SessionFamilyId) -> StoreResult<bool>;
    /// Revokes a family by id (after reuse by a disabled user, for instance).
    async fn session_revoke_family(
        &self,
        family: SessionFamilyId,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;
}

/// A new upload, as initiated.
#[derive(Debug, Clone)]
pub struct NewUpload {
    pub id: UploadId,
    pub project_id: ProjectId,
    pub uploaded_by: UserId,
    pub filename: Filename,
    pub content_type: ContentType,
    pub size: u64,
    pub sha256: Option<Sha256Hex>,
    pub object_key: ObjectKey,
    pub transfer: Transfer,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// An `Idempotency-Key` with a digest of the request it first came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub key: String,
    pub request_hash: [u8; 32],
}

/// What a creating request with an optional idempotency key came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Creation<T> {
    Created(T),
    /// The creator used this idempotency key before; `same_request` tells
    /// whether with the same request digest.
    Replayed {
        existing: T,
        same_request: bool,
    },
}

/// Filters of the project upload list; every field narrows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UploadFilter {
    pub status: Option<UploadStatus>,
    pub uploaded_by: Option<UserId>,
    /// Created at or after.
    pub from: Option<DateTime<Utc>>,
    /// Created before.
    pub to: Option<DateTime<Utc>>,
    /// List the trash instead of the live uploads.
    pub deleted: bool,
    /// Captured at or after (processed uploads with a capture time only).
    pub taken_from: Option<DateTime<Utc>>,
    /// Captured before.
    pub taken_to: Option<DateTime<Utc>>,
    /// With (`true`) or without (`false`) a GPS position; the latter includes
    /// uploads not processed yet.
    pub has_gps: Option<bool>,
}

/// A job for the processing queue, written with the state change that causes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    pub id: JobId,
    pub kind: &'static str,
    /// JSON.
    pub payload: String,
    pub max_attempts: u32,
    pub run_at: DateTime<Utc>,
    /// W3C `traceparent` of the request that enqueued it.
    pub trace_context: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Per-tenant upload limits; `None` means the service-wide default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantLimits {
    pub max_upload_bytes: Option<u64>,
    pub quota_bytes: Option<u64>,
}

/// Uploads, their idempotency keys, and the jobs their transitions enqueue.
#[async_trait]
pub trait UploadStore: Send + Sync {
    async fn tenant_limits(&self, tenant: TenantId) -> StoreResult<TenantLimits>;
    async fn tenant_set_limits(&self, tenant: TenantId, limits: TenantLimits) -> StoreResult<()>;

    /// Writes the upload and, when given, its idempotency key in one
    /// transaction. If the uploader already used that key, nothing is written
    /// and the earlier upload comes back as `Replayed`.
    async fn upload_create(
        &self,
        tenant: TenantId,
        upload: &NewUpload,
        idempotency: Option<&IdempotencyKey>,
    ) -> StoreResult<Creation<Upload>>;
    async fn upload_get(&self, tenant: TenantId, id: UploadId) -> StoreResult<Option<Upload>>;
    /// The upload `user` first created with this idempotency key, as
    /// `Replayed`; `None` if the key is unused.
    async fn upload_replay(
        &self,
        tenant: TenantId,
        user: UserId,
        key: &IdempotencyKey,
    ) -> StoreResult<Option<Creation<Upload>>>;
    /// The newest live upload of this project and uploader with this declared
    /// SHA-256 whose bytes are stored (`UploadStatus::has_bytes`).
    async fn upload_find_duplicate(
        &self,
        tenant: TenantId,
        project: ProjectId,
        uploaded_by: UserId,
        sha256: &Sha256Hex,
    ) -> StoreResult<Option<Upload>>;
    /// Bytes the tenant's uploads occupy or have reserved: every upload but
    /// the expired ones (trashed uploads count until purged).
    async fn upload_usage(&self, tenant: TenantId) -> StoreResult<u64>;
    /// Newest first.
    async fn upload_list(
        &self,
        tenant: TenantId,
        project: ProjectId,
        filter: &UploadFilter,
        page: PageRequest,
    ) -> StoreResult<Vec<Upload>>;
    /// `PENDING → UPLOADED` and the job insert, in one transaction. An upload
    /// in any other state is returned unchanged and no job is written.
    async fn upload_mark_uploaded(
        &self,
        tenant: TenantId,
        id: UploadId,
        job: &NewJob,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Upload>>;
    /// The worker starts on an upload: `UPLOADED`, `PROCESSING` (a run that
    /// died) or `FAILED` (a job retried from the dead-letter queue) becomes
    /// `PROCESSING`. `None` if the upload is gone or in another state (then
    /// there is nothing to do).
    async fn upload_start_processing(
        &self,
        tenant: TenantId,
        id: UploadId,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Upload>>;
    /// `PROCESSING` → `COMPLETED` with what processing found; clears a
    /// failure of an earlier run. `None` if not processing.
    async fn upload_finish_processing(
        &self,
        tenant: TenantId,
        id: UploadId,
        processed: &Processed,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Upload>>;
    /// `UPLOADED` or `PROCESSING` → `FAILED` with its reason. `None` if in
    /// another state.
    async fn upload_fail_processing(
        &self,
        tenant: TenantId,
        id: UploadId,
        failure: &UploadFailure,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Upload>>;
    /// Moves an upload to the trash (idempotent).
    async fn upload_trash(
        &self,
        tenant: TenantId,
        id: UploadId,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Upload>>;
    /// Takes an upload out of the trash (idempotent).
    async fn upload_restore(
        &self,
        tenant: TenantId,
        id: UploadId,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Upload>>;

    // System sweeps: these act across tenants on purpose, for the sweepers;
    // nothing a request triggers calls them.
    /// Records the completion a client asked for (the parts it reported;
    /// none for a single PUT) on a pending upload, or clears it (`None`).
    async fn upload_set_completion(
        &self,
        tenant: TenantId,
        id: UploadId,
        completion: Option<(&[CompletedPart], DateTime<Utc>)>,
    ) -> StoreResult<()>;
    /// Up to `limit` pending uploads whose completion was asked for at or
    /// before `requested_before`, oldest request first, with their parts.
    async fn uploads_completion_due(
        &self,
        requested_before: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<(Upload, Vec<CompletedPart>)>>;
    /// Marks up to `limit` pending uploads whose URLs expired at or before
    /// `now` as `EXPIRED` (not those with a completion: they are finished or
    /// cleared first), and returns them as they are after.
    async fn uploads_expire_due(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Upload>>;
    /// Up to `limit` uploads trashed before `deleted_before`.
    async fn uploads_purge_due(
        &self,
        deleted_before: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<Upload>>;
    /// Deletes a trashed upload's row for good (with its idempotency keys and
    /// jobs) if it is still in the trash since before `deleted_before`;
    /// `false` if it is gone, restored, or trashed again since.
    async fn upload_purge(
        &self,
        tenant: TenantId,
        id: UploadId,
        deleted_before: DateTime<Utc>,
    ) -> StoreResult<bool>;
}

/// What a tus upload adds to its upload row, as created.
#[derive(Debug, Clone)]
pub struct NewTus {
    /// `None` until declared (creation-defer-length).
    pub length: Option<u64>,
    /// Bytes already there: 0, except for a final concatenation, which is
    /// whole at creation.
    pub offset: u64,
    /// The raw `Upload-Metadata` header, answered back on HEAD.
    pub metadata: String,
    /// Where the partial bytes are staged (`BlobStore::staging_append`), or,
    /// with `multipart`, the prefix of the tail objects.
    pub staging_key: ObjectKey,
    /// A store without staging: the bytes go to this multipart upload.
    pub multipart: Option<TusMultipart>,
    pub concat: Option<TusConcat>,
}

/// An S3 multipart upload behind a tus upload: every part but the last has
/// `part_size` bytes, fixed at creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TusMultipart {
    pub part_size: u64,
    pub upload_id: String,
}

/// The concatenation extension: a partial upload, or a final one made of
/// the partials listed, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TusConcat {
    Partial,
    Final(Vec<UploadId>),
}

/// One part of a tus upload's multipart upload, as we recorded it: the
/// ledger the upload is completed from (never rebuilt from ListParts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TusPart {
    pub number: u32,
    pub etag: String,
    pub size: u64,
    pub sha256: Sha256Hex,
}

/// The tus state of an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TusState {
    pub length: Option<u64>,
    /// Bytes acknowledged: durable in staging (or in recorded parts plus
    /// the tail object).
    pub offset: u64,
    pub metadata: String,
    pub staging_key: String,
    pub multipart: Option<TusMultipart>,
    pub concat: Option<TusConcat>,
}

/// tus 1.0 resumable uploads: the offset and the PATCH lease live in the
/// database, so any replica can answer any request (see `service::tus`).
#[async_trait]
pub trait TusStore: Send + Sync {
    /// Writes the upload row (`PENDING`) and its tus row in one transaction,
    /// with the idempotency key as `upload_create` does (one key space).
    async fn tus_create(
        &self,
        tenant: TenantId,
        upload: &NewUpload,
        tus: &NewTus,
        idempotency: Option<&IdempotencyKey>,
    ) -> StoreResult<Creation<Upload>>;
    async fn tus_get(&self, tenant: TenantId, id: UploadId) -> StoreResult<Option<TusState>>;
    /// Takes the PATCH lease with `token` until `until` if nobody else holds
    /// a live one (or renews it if `token` holds it); `false` if another
    /// token's lease is live.
    async fn tus_lock(
        &self,
        tenant: TenantId,
        id: UploadId,
        token: uuid::Uuid,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Pending uploads whose bytes are all stored (offset = length) and
    /// whose lease is free at `now`: left unfinished by a process that died.
    async fn tus_finish_due(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Upload>>;
    /// Gives the lease back if `token` still holds it.
    async fn tus_unlock(
        &self,
        tenant: TenantId,
        id: UploadId,
        token: uuid::Uuid,
    ) -> StoreResult<()>;
    /// `from → to`, recording `parts` in the ledger, in one transaction and
    /// only while `token` holds the lease and the offset is still `from`
    /// (fencing): `false` changes nothing. A part number recorded again
    /// replaces the earlier record (a re-sent part overwrote it in S3 too).
    #[allow(clippy::too_many_arguments)]
    async fn tus_advance(
        &self,
        tenant: TenantId,
        id: UploadId,
        token: uuid::Uuid,
        from: u64,
        to: u64,
        parts: &[TusPart],
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// The recorded parts, by number.
    async fn tus_parts(&self, tenant: TenantId, id: UploadId) -> StoreResult<Vec<TusPart>>;
    /// Sets a deferred length (and the upload row's size) once; `false` if
    /// it was already set.
    async fn tus_declare_length(
        &self,
        tenant: TenantId,
        id: UploadId,
        length: u64,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Termination: `PENDING → EXPIRED` now. `None` if the upload is gone;
    /// an upload in another state comes back unchanged.
    async fn tus_terminate(
        &self,
        tenant: TenantId,
        id: UploadId,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Upload>>;
}
