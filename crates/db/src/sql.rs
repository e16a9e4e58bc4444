//! What both backends share: the SQL text (sqlx binds `$N` by number on
//! SQLite as well), the row shapes and their conversion into domain types, and
//! the error classification that does not depend on the backend.

use buildpeer_core::StoreError;
use buildpeer_core::error::Conflict;
use buildpeer_core::ids::{MembershipId, ProjectId, TenantId, UserId};
use buildpeer_core::model::{Member, Project, Role, Tenant, User};
use buildpeer_core::pagination::PageRequest;
use chrono::{DateTime, Utc};
use sqlx::FromRow;
use sqlx::error::DatabaseError;
use uuid::Uuid;

macro_rules! user_columns {
    () => {
        "id, tenant_id, email, name, role, disabled, created_at, updated_at"
    };
}

macro_rules! project_columns {
    () => {
        "id, tenant_id, name, code, address, created_by, archived_at, created_at, updated_at"
    };
}

pub(crate) const PING: &str = "SELECT 1";

pub(crate) const TENANT_COUNT: &str = "SELECT COUNT(*) FROM tenants";
pub(crate) const TENANT_INSERT: &str =
    "INSERT INTO tenants (id, slug, name, created_at) VALUES ($1, $2, $3, $4)";
pub(crate) const TENANT_BY_SLUG: &str =
    "SELECT id, slug, name, created_at FROM tenants WHERE slug = $1";

pub(crate) const USER_INSERT: &str = concat!(
    "INSERT INTO users (id, tenant_id, email, name, role, password_hash, disabled, created_at, updated_at) ",
    "VALUES ($1, $2, $3, $4, $5, $6, FALSE, $7, $7) RETURNING ",
    user_columns!()
);
pub(crate) const USER_GET: &str = concat!(
    "SELECT ",
    user_columns!(),
    " FROM users WHERE tenant_id = $1 AND id = $2"
);
pub(crate) const USER_CREDENTIALS: &str = concat!(
    "SELECT ",
    user_columns!(),
    ", password_hash FROM users WHERE tenant_id = $1 AND email = $2"
);
pub(crate) const USER_LIST: &str = concat!(
    "SELECT ",
    user_columns!(),
    " FROM users WHERE tenant_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
);
pub(crate) const USER_UPDATE: &str = concat!(
    "UPDATE users SET name = COALESCE($3, name), role = COALESCE($4, role), ",
    "disabled = COALESCE($5, disabled), updated_at = $6 ",
    "WHERE tenant_id = $1 AND id = $2 RETURNING ",
    user_columns!()
);

pub(crate) const PROJECT_INSERT: &str = concat!(
    "INSERT INTO projects (id, tenant_id, name, code, address, created_by, created_at, updated_at) ",
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING ",
    project_columns!()
);
pub(crate) const PROJECT_GET: &str = concat!(
    "SELECT ",
    project_columns!(),
    " FROM projects WHERE tenant_id = $1 AND id = $2"
);
pub(crate) const PROJECT_LIST: &str = concat!(
    "SELECT ",
    project_columns!(),
    " FROM projects WHERE tenant_id = $1 AND id < $2 AND ($3 OR archived_at IS NULL) ",
    "ORDER BY id DESC LIMIT $4"
);
pub(crate) const PROJECT_LIST_MEMBER: &str = concat!(
    "SELECT ",
    project_columns!(),
    " FROM projects p WHERE tenant_id = $1 AND id < $2 AND ($3 OR archived_at IS NULL) ",
    "AND EXISTS (SELECT 1 FROM project_members m ",
    "WHERE m.tenant_id = $1 AND m.project_id = p.id AND m.user_id = $5) ",
    "ORDER BY id DESC LIMIT $4"
);
/// `$4`/`$6` say whether to touch `code`/`address` at all, since `$5`/`$7`
/// may legitimately be NULL (clearing the field).
pub(crate) const PROJECT_UPDATE: &str = concat!(
    "UPDATE projects SET name = COALESCE($3, name), ",
    "code = CASE WHEN $4 THEN $5 ELSE code END, ",
    "address = CASE WHEN $6 THEN $7 ELSE address END, updated_at = $8 ",
    "WHERE tenant_id = $1 AND id = $2 RETURNING ",
    project_columns!()
);
/// A second archive must leave the row exactly as the first one left it.
pub(crate) const PROJECT_ARCHIVE: &str = concat!(
    "UPDATE projects SET archived_at = COALESCE(archived_at, $3), ",
    "updated_at = CASE WHEN archived_at IS NULL THEN $3 ELSE updated_at END ",
    "WHERE tenant_id = $1 AND id = $2 RETURNING ",
    project_columns!()
);

pub(crate) const MEMBER_IS: &str = "SELECT EXISTS (SELECT 1 FROM project_members \
     WHERE tenant_id = $1 AND project_id = $2 AND user_id = $3)";
pub(crate) const MEMBER_INSERT: &str = "INSERT INTO project_members \
     (id, tenant_id, project_id, user_id, added_at) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (tenant_id, project_id, user_id) DO NOTHING";
pub(crate) const MEMBER_DELETE: &str =
    "DELETE FROM project_members WHERE tenant_id = $1 AND project_id = $2 AND user_id = $3";
pub(crate) const MEMBER_LIST: &str = "SELECT m.id AS membership_id, m.project_id, m.user_id, \
     u.email, u.name, u.role, m.added_at \
     FROM project_members m JOIN users u ON u.tenant_id = m.tenant_id AND u.id = m.user_id \
     WHERE m.tenant_id = $1 AND m.project_id = $2 AND m.id < $3 \
     ORDER BY m.id DESC LIMIT $4";

pub(crate) const TOKEN_INSERT: &str = "INSERT INTO refresh_tokens \
     (id, tenant_id, user_id, family_id, token_hash, created_at, expires_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";
/// The whole of rotation's race safety: of concurrent callers, only one finds
/// the token still live and marks it used.
pub(crate) const TOKEN_USE: &str = "UPDATE refresh_tokens SET used_at = $2 \
     WHERE token_hash = $1 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $2 \
     RETURNING tenant_id, user_id, family_id";
/// The family of a token, and whether it was spent (used or revoked).
pub(crate) const TOKEN_STATE: &str = "SELECT family_id, \
     (used_at IS NOT NULL OR revoked_at IS NOT NULL) AS spent \
     FROM refresh_tokens WHERE token_hash = $1";
pub(crate) const FAMILY_REVOKE: &str = "UPDATE refresh_tokens SET revoked_at = $2 \
     WHERE family_id = $1 AND revoked_at IS NULL";
pub(crate) const USER_TOKENS_REVOKE: &str = "UPDATE refresh_tokens SET revoked_at = $3 \
     WHERE tenant_id = $1 AND user_id = $2 AND revoked_at IS NULL";

/// `id < $before` for every page: the first page uses the largest UUID, so the
/// query is the same index range scan with or without a cursor.
pub(crate) fn before(page: PageRequest) -> Uuid {
    page.before.unwrap_or(Uuid::max())
}

pub(crate) fn limit(page: PageRequest) -> i64 {
    i64::from(page.fetch_limit())
}

#[derive(FromRow)]
pub(crate) struct TenantRow {
    id: Uuid,
    slug: String,
    name: String,
    created_at: DateTime<Utc>,
}

impl From<TenantRow> for Tenant {
    fn from(r: TenantRow) -> Self {
        Tenant {
            id: TenantId::from_uuid(r.id),
            slug: r.slug,
            name: r.name,
            created_at: r.created_at,
        }
    }
}

#[derive(FromRow)]
pub(crate) struct UserRow {
    id: Uuid,
    tenant_id: Uuid,
    email: String,
    name: String,
    role: String,
    disabled: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<UserRow> for User {
    type Error = StoreError;

    fn try_from(r: UserRow) -> Result<Self, StoreError> {
        Ok(User {
            id: UserId::from_uuid(r.id),
            tenant_id: TenantId::from_uuid(r.tenant_id),
            email: r.email,
            name: r.name,
            role: role(&r.role)?,
            disabled: r.disabled,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

#[derive(FromRow)]
pub(crate) struct CredentialsRow {
    #[sqlx(flatten)]
    pub(crate) user: UserRow,
    pub(crate) password_hash: String,
}

#[derive(FromRow)]
pub(crate) struct ProjectRow {
    id: Uuid,
    tenant_id: Uuid,
    name: String,
    code: Option<String>,
    address: Option<String>,
    created_by: Uuid,
    archived_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<ProjectRow> for Project {
    fn from(r: ProjectRow) -> Self {
        Project {
            id: ProjectId::from_uuid(r.id),
            tenant_id: TenantId::from_uuid(r.tenant_id),
            name: r.name,
            code: r.code,
            address: r.address,
            created_by: UserId::from_uuid(r.created_by),
            archived_at: r.archived_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(FromRow)]
pub(crate) struct MemberRow {
    membership_id: Uuid,
    project_id: Uuid,
    user_id: Uuid,
    email: String,
    name: String,
    role: String,
    added_at: DateTime<Utc>,
}

impl TryFrom<MemberRow> for Member {
    type Error = StoreError;

    fn try_from(r: MemberRow) -> Result<Self, StoreError> {
        Ok(Member {
            membership_id: MembershipId::from_uuid(r.membership_id),
            project_id: ProjectId::from_uuid(r.project_id),
            user_id: UserId::from_uuid(r.user_id),
            email: r.email,
            name: r.name,
            role: role(&r.role)?,
            added_at: r.added_at,
        })
    }
}

fn role(s: &str) -> Result<Role, StoreError> {
    Role::parse(s)
        .map_err(|e| StoreError::Other(format!("stored role {s:?}: {}", e.message).into()))
}

/// Converts rows into domain values, failing on the first corrupt one.
pub(crate) fn convert<R, T: TryFrom<R, Error = StoreError>>(
    rows: Vec<R>,
) -> Result<Vec<T>, StoreError> {
    rows.into_iter().map(T::try_from).collect()
}

/// The backend-independent part of error mapping. `conflict` names the
/// uniqueness rule a database error broke, if it is one a client can hit;
/// `transient` says whether a database error means "try again later".
pub(crate) fn store_error(
    e: sqlx::Error,
    conflict: impl FnOnce(&dyn DatabaseError) -> Option<Conflict>,
    transient: impl FnOnce(&dyn DatabaseError) -> bool,
) -> StoreError {
    match &e {
        sqlx::Error::Database(db) => {
            if db.is_unique_violation()
                && let Some(c) = conflict(db.as_ref())
            {
                return StoreError::Conflict(c);
            }
            if transient(db.as_ref()) {
                return StoreError::Unavailable(Box::new(e));
            }
            StoreError::Other(Box::new(e))
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(Box::new(e)),
        _ => StoreError::Other(Box::new(e)),
    }
}
