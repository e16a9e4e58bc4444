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

use crate::error::StoreError;
use crate::ids::{ProjectId, RefreshTokenId, SessionFamilyId, TenantId, UserId};
use crate::model::{
    Address, Email, Member, Name, Project, ProjectCode, Role, Slug, Tenant, User, UserCredentials,
};
use crate::pagination::PageRequest;

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

/// The metadata store: tenants, users, projects, memberships and sessions.
#[async_trait]
pub trait MetadataStore: Send + Sync + 'static {
    /// `"sqlite"` or `"postgres"`, for logs and metrics.
    fn backend(&self) -> &'static str;
    fn pool_stats(&self) -> PoolStats;
    /// Succeeds when the database answers a trivial query.
    async fn ping(&self) -> StoreResult<()>;

    // Tenants (the root of ownership; not tenant-scoped themselves).
    async fn tenant_count(&self) -> StoreResult<u64>;
    /// Writes the tenant and its first user in one transaction.
    /// `Conflict::TenantSlug` when the slug is taken.
    async fn tenant_create(&self, tenant: &NewTenant, admin: &NewUser) -> StoreResult<()>;
    async fn tenant_by_slug(&self, slug: &Slug) -> StoreResult<Option<Tenant>>;

    // Users.
    /// `Conflict::UserEmail` when the e-mail exists in the tenant.
    async fn user_create(&self, tenant: TenantId, user: &NewUser) -> StoreResult<User>;
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
    /// membership in one transaction. `Conflict::ProjectCode` on a taken code.
    async fn project_create(
        &self,
        tenant: TenantId,
        project: &NewProject,
        creator_member: bool,
    ) -> StoreResult<Project>;
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
    async fn member_add(
        &self,
        tenant: TenantId,
        project: ProjectId,
        user: UserId,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
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
    /// Revokes the family of the presented token; `false` if unknown.
    async fn session_revoke(&self, presented: &[u8; 32], now: DateTime<Utc>) -> StoreResult<bool>;
    /// Revokes a family by id (after reuse by a disabled user, for instance).
    async fn session_revoke_family(
        &self,
        family: SessionFamilyId,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;
}
