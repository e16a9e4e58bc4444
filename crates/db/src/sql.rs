//! The SQL text of accounts, uploads and tus (sqlx binds `$N` by number on
//! SQLite as well; the few texts that differ are `Sql` pairs), the row shapes
//! and their conversion into domain types, and the error classification that
//! does not depend on the backend.

use std::num::TryFromIntError;

use buildpeer_core::StoreError;
use buildpeer_core::blob::CompletedPart;
use buildpeer_core::error::Conflict;
use buildpeer_core::ids::{MembershipId, ProjectId, TenantId, UploadId, UserId};
use buildpeer_core::model::{Member, Project, Role, Tenant, User};
use buildpeer_core::pagination::PageRequest;
use buildpeer_core::ports::{
    Creation, IdempotencyKey, NewUpload, StoreResult, TenantLimits, TusConcat, TusMultipart,
    TusPart, TusState,
};
use buildpeer_core::upload::{Processed, Sha256Hex, Transfer, Upload, UploadFailure, UploadStatus};
use chrono::{DateTime, Utc};
use sqlx::FromRow;
use sqlx::error::DatabaseError;
use uuid::Uuid;

use crate::exec::Sql;

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

macro_rules! upload_columns {
    () => {
        "id, tenant_id, project_id, uploaded_by, status, filename, content_type, size, sha256, \
         object_key, multipart_upload_id, part_size, part_count, expires_at, uploaded_at, \
         deleted_at, error_code, error_message, detected_type, media_metadata, thumbnails, \
         taken_at, created_at, updated_at"
    };
}

/// The statuses of `UploadStatus::has_bytes`, as an SQL list (a unit test
/// keeps the two in step).
macro_rules! has_bytes_statuses {
    () => {
        "'UPLOADED', 'PROCESSING', 'COMPLETED', 'FAILED'"
    };
}

/// A job insert; `$payload` is the placeholder of the JSON payload, which
/// PostgreSQL needs cast to JSONB since sqlx sends it as text.
macro_rules! job_insert {
    ($payload:literal) => {
        concat!(
            "INSERT INTO jobs (id, tenant_id, upload_id, kind, payload, state, attempts, ",
            "max_attempts, run_at, trace_context, created_at, updated_at) ",
            "VALUES ($1, $2, $3, $4, ",
            $payload,
            ", 'queued', 0, $6, $7, $8, $9, $9)"
        )
    };
}

/// Expiry of due pending uploads; `$lock` is the row-locking clause, if the
/// backend has one. The CTE is materialised so that the candidates are
/// chosen (and, on PostgreSQL, locked) exactly once.
macro_rules! expire_due {
    ($lock:literal) => {
        concat!(
            "WITH due AS MATERIALIZED (SELECT id FROM uploads ",
            "WHERE status = 'PENDING' AND expires_at <= $1 ",
            // A completion the client asked for is finished (or cleared) first.
            "AND completion_requested_at IS NULL ",
            // A tus upload whose bytes are all stored is finished, not expired.
            "AND NOT EXISTS (SELECT 1 FROM tus_uploads t WHERE t.tenant_id = uploads.tenant_id ",
            "AND t.upload_id = uploads.id AND t.upload_offset = t.length) ",
            "ORDER BY expires_at LIMIT $2",
            $lock,
            ") UPDATE uploads SET status = 'EXPIRED', updated_at = $1 ",
            "WHERE id IN (SELECT id FROM due) RETURNING ",
            upload_columns!()
        )
    };
}

pub(crate) const PING: &str = "SELECT 1";

pub(crate) const TENANT_COUNT: &str = "SELECT COUNT(*) FROM tenants";
pub(crate) const TENANT_INSERT: &str =
    "INSERT INTO tenants (id, slug, name, created_at) VALUES ($1, $2, $3, $4)";
pub(crate) const TENANT_BY_SLUG: &str =
    "SELECT id, slug, name, created_at FROM tenants WHERE slug = $1";
pub(crate) const TENANT_BY_ID: &str =
    "SELECT id, slug, name, created_at FROM tenants WHERE id = $1";

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
/// Revoking runs concurrently with rotations that add tokens to the family.
/// Under PostgreSQL's READ COMMITTED an UPDATE cannot see rows committed after
/// it started, so a token minted by a rotation that commits meanwhile would
/// survive. Locking the rows first (`Tx::lock`; in id order, so two revokers
/// cannot deadlock) waits for any rotation holding one of them; the UPDATE
/// that follows then runs on a fresh snapshot that includes the minted token.
pub(crate) const FAMILY_LOCK: &str =
    "SELECT 1 FROM refresh_tokens WHERE family_id = $1 ORDER BY id FOR UPDATE";
/// The same, for revoking all of a user's tokens.
pub(crate) const USER_TOKENS_LOCK: &str =
    "SELECT 1 FROM refresh_tokens WHERE tenant_id = $1 AND user_id = $2 ORDER BY id FOR UPDATE";
/// Revoking marks every token of the family, so one marked is enough.
pub(crate) const FAMILY_REVOKED: &str = "SELECT EXISTS (SELECT 1 FROM refresh_tokens \
     WHERE family_id = $1 AND revoked_at IS NOT NULL)";
pub(crate) const FAMILY_REVOKE: &str = "UPDATE refresh_tokens SET revoked_at = $2 \
     WHERE family_id = $1 AND revoked_at IS NULL";
pub(crate) const USER_TOKENS_REVOKE: &str = "UPDATE refresh_tokens SET revoked_at = $3 \
     WHERE tenant_id = $1 AND user_id = $2 AND revoked_at IS NULL";

pub(crate) const TENANT_LIMITS: &str =
    "SELECT max_upload_bytes, quota_bytes FROM tenants WHERE id = $1";
pub(crate) const TENANT_SET_LIMITS: &str =
    "UPDATE tenants SET max_upload_bytes = $2, quota_bytes = $3 WHERE id = $1";

/// Claims an idempotency key before its upload exists (the foreign key is
/// deferred to commit). A concurrent claim of the same key waits for this
/// transaction and then inserts nothing, so only one request writes an upload.
pub(crate) const IDEMPOTENCY_CLAIM: &str = "INSERT INTO upload_idempotency_keys \
     (tenant_id, user_id, key, request_hash, upload_id, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, user_id, key) DO NOTHING";
/// The upload an idempotency key was first used for, with the request digest
/// it came with. The derived table exposes no column an upload has, so the
/// upload columns need no qualifying.
pub(crate) const IDEMPOTENCY_REPLAY: &str = concat!(
    "SELECT ",
    upload_columns!(),
    ", k.request_hash FROM uploads JOIN (SELECT upload_id, request_hash ",
    "FROM upload_idempotency_keys WHERE tenant_id = $1 AND user_id = $2 AND key = $3) k ",
    "ON k.upload_id = id WHERE tenant_id = $1"
);

/// Claims a key for a creating request (`scope`: what it creates) inside the
/// transaction that creates it; as `IDEMPOTENCY_CLAIM`, a concurrent claim
/// of the same key waits for this one and then inserts nothing.
pub(crate) const KEY_CLAIM: &str = "INSERT INTO idempotency_keys \
     (tenant_id, user_id, scope, key, request_hash, resource_id, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant_id, user_id, scope, key) DO NOTHING";
/// What a claimed key was first used for.
pub(crate) const KEY_REPLAY: &str = "SELECT request_hash, resource_id FROM idempotency_keys \
     WHERE tenant_id = $1 AND user_id = $2 AND scope = $3 AND key = $4";

pub(crate) const UPLOAD_INSERT: &str = concat!(
    "INSERT INTO uploads (id, tenant_id, project_id, uploaded_by, status, filename, ",
    "content_type, size, sha256, object_key, multipart_upload_id, part_size, part_count, ",
    "expires_at, created_at, updated_at) ",
    "VALUES ($1, $2, $3, $4, 'PENDING', $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14) ",
    "RETURNING ",
    upload_columns!()
);
pub(crate) const UPLOAD_GET: &str = concat!(
    "SELECT ",
    upload_columns!(),
    " FROM uploads WHERE tenant_id = $1 AND id = $2"
);
pub(crate) const UPLOAD_DUPLICATE: &str = concat!(
    "SELECT ",
    upload_columns!(),
    " FROM uploads WHERE tenant_id = $1 AND project_id = $2 AND uploaded_by = $3 ",
    "AND sha256 = $4 AND deleted_at IS NULL AND status IN (",
    has_bytes_statuses!(),
    ") ORDER BY id DESC LIMIT 1"
);
/// `SUM` of a PostgreSQL `BIGINT` is `NUMERIC`; the cast brings it back
/// (and fails rather than wraps past `i64::MAX`).
pub(crate) const UPLOAD_USAGE: &str = "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) \
     FROM uploads WHERE tenant_id = $1 AND status <> 'EXPIRED'";
/// Every filter is optional: a NULL parameter drops its condition.
pub(crate) const UPLOAD_LIST: &str = concat!(
    "SELECT ",
    upload_columns!(),
    " FROM uploads WHERE tenant_id = $1 AND project_id = $2 AND id < $3 ",
    "AND ($4 IS NULL OR status = $4) AND ($5 IS NULL OR uploaded_by = $5) ",
    "AND ($6 IS NULL OR created_at >= $6) AND ($7 IS NULL OR created_at < $7) ",
    "AND (deleted_at IS NOT NULL) = $8 ",
    "AND ($10 IS NULL OR taken_at >= $10) AND ($11 IS NULL OR taken_at < $11) ",
    "AND ($12 IS NULL OR has_gps = $12) ",
    "ORDER BY id DESC LIMIT $9"
);
pub(crate) const UPLOAD_START_PROCESSING: &str = concat!(
    "UPDATE uploads SET status = 'PROCESSING', updated_at = $3 ",
    "WHERE tenant_id = $1 AND id = $2 AND status IN ('UPLOADED', 'PROCESSING', 'FAILED') RETURNING ",
    upload_columns!()
);
pub(crate) const UPLOAD_FINISH_PROCESSING: &str = concat!(
    "UPDATE uploads SET status = 'COMPLETED', updated_at = $3, detected_type = $4, ",
    "media_metadata = $5, thumbnails = $6, taken_at = $7, has_gps = $8, ",
    "error_code = NULL, error_message = NULL ",
    "WHERE tenant_id = $1 AND id = $2 AND status = 'PROCESSING' RETURNING ",
    upload_columns!()
);
pub(crate) const UPLOAD_FAIL_PROCESSING: &str = concat!(
    "UPDATE uploads SET status = 'FAILED', updated_at = $3, error_code = $4, error_message = $5 ",
    "WHERE tenant_id = $1 AND id = $2 AND status IN ('UPLOADED', 'PROCESSING') RETURNING ",
    upload_columns!()
);
/// Of concurrent callers only one finds the upload still pending, and only
/// that one goes on to enqueue the job.
pub(crate) const UPLOAD_MARK_UPLOADED: &str = concat!(
    "UPDATE uploads SET status = 'UPLOADED', uploaded_at = $3, updated_at = $3 ",
    "WHERE tenant_id = $1 AND id = $2 AND status = 'PENDING' RETURNING ",
    upload_columns!()
);
/// A second trash must leave the row exactly as the first one left it.
pub(crate) const UPLOAD_TRASH: &str = concat!(
    "UPDATE uploads SET deleted_at = COALESCE(deleted_at, $3), ",
    "updated_at = CASE WHEN deleted_at IS NULL THEN $3 ELSE updated_at END ",
    "WHERE tenant_id = $1 AND id = $2 RETURNING ",
    upload_columns!()
);
/// Restoring a live upload changes nothing.
pub(crate) const UPLOAD_RESTORE: &str = concat!(
    "UPDATE uploads SET deleted_at = NULL, ",
    "updated_at = CASE WHEN deleted_at IS NOT NULL THEN $3 ELSE updated_at END ",
    "WHERE tenant_id = $1 AND id = $2 RETURNING ",
    upload_columns!()
);
/// One statement: on SQLite one write transaction, so concurrent sweepers
/// take turns and the second no longer finds the first one's uploads
/// pending; on PostgreSQL concurrent sweepers skip each other's candidates
/// instead of waiting for them. Neither expires (or returns) an upload twice.
pub(crate) const UPLOADS_EXPIRE_DUE: Sql =
    Sql::pair(expire_due!(""), expire_due!(" FOR UPDATE SKIP LOCKED"));
pub(crate) const UPLOADS_PURGE_DUE: &str = concat!(
    "SELECT ",
    upload_columns!(),
    " FROM uploads WHERE deleted_at < $1 ORDER BY deleted_at, id LIMIT $2"
);
/// Its idempotency keys and jobs go with it (`ON DELETE CASCADE`).
pub(crate) const UPLOAD_PURGE: &str =
    "DELETE FROM uploads WHERE tenant_id = $1 AND id = $2 AND deleted_at < $3";

/// Records (or with NULLs clears) the completion a client asked for, while
/// the upload is pending.
pub(crate) const UPLOAD_SET_COMPLETION: &str = "UPDATE uploads \
     SET completion_requested_at = $3, completion_parts = $4 \
     WHERE tenant_id = $1 AND id = $2 AND status = 'PENDING'";
/// Pending uploads whose completion was asked for before `$1` and is not done.
pub(crate) const UPLOADS_COMPLETION_DUE: &str = concat!(
    "SELECT ",
    upload_columns!(),
    ", completion_parts FROM uploads WHERE status = 'PENDING' ",
    "AND completion_requested_at <= $1 ORDER BY completion_requested_at LIMIT $2"
);

/// Pending tus uploads whose bytes are all stored and whose lease is free
/// (or ran out: its holder died before it could finish them).
pub(crate) const TUS_FINISH_DUE: &str = concat!(
    "SELECT ",
    upload_columns!(),
    " FROM uploads WHERE status = 'PENDING' AND (tenant_id, id) IN ",
    "(SELECT tenant_id, upload_id FROM tus_uploads WHERE upload_offset = length ",
    "AND (lock_until IS NULL OR lock_until <= $1)) ORDER BY created_at LIMIT $2"
);
pub(crate) const TUS_INSERT: &str = "INSERT INTO tus_uploads \
     (tenant_id, upload_id, length, upload_offset, metadata, staging_key, part_size, \
     multipart_upload_id, concat, concat_parts, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)";
pub(crate) const TUS_GET: &str = "SELECT length, upload_offset, metadata, staging_key, \
     part_size, multipart_upload_id, concat, concat_parts \
     FROM tus_uploads WHERE tenant_id = $1 AND upload_id = $2";
/// Records a part; a part sent again replaces its record.
pub(crate) const TUS_PART_UPSERT: &str = "INSERT INTO tus_parts \
     (tenant_id, upload_id, number, etag, size, sha256, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (tenant_id, upload_id, number) DO UPDATE \
     SET etag = excluded.etag, size = excluded.size, sha256 = excluded.sha256, \
     created_at = excluded.created_at";
pub(crate) const TUS_PARTS: &str = "SELECT CAST(number AS BIGINT) AS number, etag, size, sha256 FROM tus_parts \
     WHERE tenant_id = $1 AND upload_id = $2 ORDER BY number";
/// Takes a free or lapsed lease, or renews one `$3` holds.
pub(crate) const TUS_LOCK: &str = "UPDATE tus_uploads SET lock_token = $3, lock_until = $4 \
     WHERE tenant_id = $1 AND upload_id = $2 \
     AND (lock_token IS NULL OR lock_token = $3 OR lock_until <= $5)";
pub(crate) const TUS_UNLOCK: &str = "UPDATE tus_uploads SET lock_token = NULL, lock_until = NULL \
     WHERE tenant_id = $1 AND upload_id = $2 AND lock_token = $3";
/// Fenced: only the lease holder, only from the offset it read, only while
/// the upload is pending (a termination in between wins).
pub(crate) const TUS_ADVANCE: &str = "UPDATE tus_uploads SET upload_offset = $5, updated_at = $6 \
     WHERE tenant_id = $1 AND upload_id = $2 AND lock_token = $3 AND upload_offset = $4 \
     AND (length IS NULL OR $5 <= length) \
     AND EXISTS (SELECT 1 FROM uploads u WHERE u.tenant_id = $1 AND u.id = $2 AND u.status = 'PENDING')";
pub(crate) const TUS_DECLARE_LENGTH: &str = "UPDATE tus_uploads SET length = $3, updated_at = $4 \
     WHERE tenant_id = $1 AND upload_id = $2 AND length IS NULL AND upload_offset <= $3";
pub(crate) const UPLOAD_SET_SIZE: &str = "UPDATE uploads SET size = $3, updated_at = $4 \
     WHERE tenant_id = $1 AND id = $2 AND status = 'PENDING'";
pub(crate) const TUS_TERMINATE: &str = concat!(
    "UPDATE uploads SET status = 'EXPIRED', expires_at = $3, updated_at = $3 ",
    "WHERE tenant_id = $1 AND id = $2 AND status = 'PENDING' RETURNING ",
    upload_columns!()
);

/// A `tus_uploads` row.
#[derive(FromRow)]
pub(crate) struct TusRow {
    length: Option<i64>,
    upload_offset: i64,
    metadata: String,
    staging_key: String,
    part_size: Option<i64>,
    multipart_upload_id: Option<String>,
    concat: Option<String>,
    concat_parts: Option<String>,
}

/// `tus_uploads.concat` and `concat_parts` for `concat`.
pub(crate) fn tus_concat_columns(
    concat: Option<&TusConcat>,
) -> (Option<&'static str>, Option<String>) {
    match concat {
        None => (None, None),
        Some(TusConcat::Partial) => (Some("partial"), None),
        Some(TusConcat::Final(ids)) => (
            Some("final"),
            Some(
                ids.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
        ),
    }
}

impl TryFrom<TusRow> for TusState {
    type Error = StoreError;

    fn try_from(r: TusRow) -> Result<Self, StoreError> {
        let bad = |what: &str| StoreError::Other(format!("corrupt tus row: {what}").into());
        let multipart = match (r.part_size, r.multipart_upload_id) {
            (Some(size), Some(upload_id)) => Some(TusMultipart {
                part_size: int(size)?,
                upload_id,
            }),
            (None, None) => None,
            _ => return Err(bad("part_size without multipart_upload_id")),
        };
        let concat = match (r.concat.as_deref(), r.concat_parts) {
            (None, _) => None,
            (Some("partial"), _) => Some(TusConcat::Partial),
            (Some("final"), Some(ids)) => Some(TusConcat::Final(
                ids.split(' ')
                    .map(|s| s.parse().map_err(|_| bad("concat_parts")))
                    .collect::<Result<_, _>>()?,
            )),
            _ => return Err(bad("concat")),
        };
        Ok(TusState {
            length: r.length.map(int).transpose()?,
            offset: int(r.upload_offset)?,
            metadata: r.metadata,
            staging_key: r.staging_key,
            multipart,
            concat,
        })
    }
}

/// A `tus_parts` row.
#[derive(FromRow)]
pub(crate) struct TusPartRow {
    number: i64,
    etag: String,
    size: i64,
    sha256: String,
}

impl TryFrom<TusPartRow> for TusPart {
    type Error = StoreError;

    fn try_from(r: TusPartRow) -> Result<Self, StoreError> {
        Ok(TusPart {
            number: int(r.number)?,
            etag: r.etag,
            size: int(r.size)?,
            sha256: Sha256Hex::parse(&r.sha256)
                .map_err(|_| StoreError::Other("corrupt tus part: sha256".into()))?,
        })
    }
}

pub(crate) const JOB_INSERT: Sql = Sql::pair(job_insert!("$5"), job_insert!("$5::jsonb"));

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

#[derive(FromRow)]
pub(crate) struct UploadRow {
    id: Uuid,
    tenant_id: Uuid,
    project_id: Uuid,
    uploaded_by: Uuid,
    status: String,
    filename: String,
    content_type: String,
    size: i64,
    sha256: Option<String>,
    object_key: String,
    multipart_upload_id: Option<String>,
    part_size: Option<i64>,
    part_count: Option<i32>,
    expires_at: DateTime<Utc>,
    uploaded_at: Option<DateTime<Utc>>,
    deleted_at: Option<DateTime<Utc>>,
    error_code: Option<String>,
    error_message: Option<String>,
    detected_type: Option<String>,
    media_metadata: Option<String>,
    thumbnails: Option<String>,
    taken_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<UploadRow> for Upload {
    type Error = StoreError;

    fn try_from(r: UploadRow) -> Result<Self, StoreError> {
        // The schema's CHECK constraints make the mixed cases impossible; a row
        // that has one anyway is corrupt rather than half of either.
        let transfer = match (r.multipart_upload_id, r.part_size, r.part_count) {
            (None, None, None) => Transfer::Single,
            (Some(upload_id), Some(part_size), Some(part_count)) => Transfer::Multipart {
                upload_id,
                part_size: int(part_size)?,
                part_count: int(part_count)?,
            },
            _ => return Err(corrupt(r.id, "multipart columns partly set")),
        };
        let failure = match (r.error_code, r.error_message) {
            (None, None) => None,
            (Some(code), Some(message)) => Some(UploadFailure { code, message }),
            _ => return Err(corrupt(r.id, "error columns partly set")),
        };
        let processed = match (r.detected_type, r.media_metadata, r.thumbnails) {
            (None, None, None) => None,
            (Some(detected_type), Some(metadata), Some(thumbnails)) => Some(Processed {
                detected_type,
                metadata: serde_json::from_str(&metadata)
                    .map_err(|e| corrupt(r.id, &format!("media_metadata: {e}")))?,
                thumbnails: serde_json::from_str(&thumbnails)
                    .map_err(|e| corrupt(r.id, &format!("thumbnails: {e}")))?,
                taken_at: r.taken_at,
            }),
            _ => return Err(corrupt(r.id, "processing columns partly set")),
        };
        Ok(Upload {
            id: UploadId::from_uuid(r.id),
            tenant_id: TenantId::from_uuid(r.tenant_id),
            project_id: ProjectId::from_uuid(r.project_id),
            uploaded_by: UserId::from_uuid(r.uploaded_by),
            status: r.status.parse::<UploadStatus>().map_err(|e| {
                StoreError::Other(format!("stored status {:?}: {}", r.status, e.message).into())
            })?,
            filename: r.filename,
            content_type: r.content_type,
            size: int(r.size)?,
            sha256: r.sha256,
            object_key: r.object_key,
            transfer,
            expires_at: r.expires_at,
            uploaded_at: r.uploaded_at,
            deleted_at: r.deleted_at,
            failure,
            processed,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

/// The JSON documents `UPLOAD_FINISH_PROCESSING` stores.
pub(crate) fn processed_documents(p: &Processed) -> StoreResult<(String, String)> {
    let json = |e: serde_json::Error| StoreError::Other(e.into());
    Ok((
        serde_json::to_string(&p.metadata).map_err(json)?,
        serde_json::to_string(&p.thumbnails).map_err(json)?,
    ))
}

fn corrupt(id: Uuid, what: &str) -> StoreError {
    StoreError::Other(format!("upload {id}: {what}").into())
}

/// A pending upload with the completion its client asked for.
#[derive(FromRow)]
pub(crate) struct CompletionRow {
    #[sqlx(flatten)]
    upload: UploadRow,
    completion_parts: String,
}

impl TryFrom<CompletionRow> for (Upload, Vec<CompletedPart>) {
    type Error = StoreError;

    fn try_from(row: CompletionRow) -> StoreResult<Self> {
        let parts: Vec<(u32, String)> =
            serde_json::from_str(&row.completion_parts).map_err(|e| StoreError::Other(e.into()))?;
        let parts = parts
            .into_iter()
            .map(|(number, etag)| CompletedPart { number, etag })
            .collect();
        Ok((row.upload.try_into()?, parts))
    }
}

/// The JSON a completion's parts are kept as.
pub(crate) fn completion_parts(parts: &[CompletedPart]) -> StoreResult<String> {
    let pairs: Vec<(u32, &str)> = parts.iter().map(|p| (p.number, p.etag.as_str())).collect();
    serde_json::to_string(&pairs).map_err(|e| StoreError::Other(e.into()))
}

/// An upload found through its idempotency key.
#[derive(FromRow)]
pub(crate) struct ReplayRow {
    #[sqlx(flatten)]
    upload: UploadRow,
    request_hash: Vec<u8>,
}

impl ReplayRow {
    pub(crate) fn outcome(self, key: &IdempotencyKey) -> StoreResult<Creation<Upload>> {
        Ok(Creation::Replayed {
            same_request: self.request_hash == key.request_hash,
            existing: self.upload.try_into()?,
        })
    }
}

/// The columns of a `NewUpload` that need converting before they are bound.
pub(crate) struct UploadParams<'a> {
    pub(crate) size: i64,
    pub(crate) multipart_upload_id: Option<&'a str>,
    pub(crate) part_size: Option<i64>,
    pub(crate) part_count: Option<i32>,
}

impl<'a> UploadParams<'a> {
    pub(crate) fn new(upload: &'a NewUpload) -> StoreResult<Self> {
        let (multipart_upload_id, part_size, part_count) = match &upload.transfer {
            Transfer::Single => (None, None, None),
            Transfer::Multipart {
                upload_id,
                part_size,
                part_count,
            } => (
                Some(upload_id.as_str()),
                Some(int(*part_size)?),
                Some(int(*part_count)?),
            ),
        };
        Ok(Self {
            size: int(upload.size)?,
            multipart_upload_id,
            part_size,
            part_count,
        })
    }
}

/// Tenant limits as stored: a pair of nullable `BIGINT`s.
pub(crate) type LimitsRow = (Option<i64>, Option<i64>);

pub(crate) fn limits_from_row(
    (max_upload_bytes, quota_bytes): LimitsRow,
) -> StoreResult<TenantLimits> {
    Ok(TenantLimits {
        max_upload_bytes: max_upload_bytes.map(int).transpose()?,
        quota_bytes: quota_bytes.map(int).transpose()?,
    })
}

pub(crate) fn limits_to_row(limits: TenantLimits) -> StoreResult<LimitsRow> {
    Ok((
        limits.max_upload_bytes.map(int).transpose()?,
        limits.quota_bytes.map(int).transpose()?,
    ))
}

/// Converts between the domain's unsigned integers and SQL's signed ones. A
/// value that does not fit is refused as `StoreError::Other`, never wrapped.
pub(crate) fn int<T, U>(n: U) -> StoreResult<T>
where
    T: TryFrom<U, Error = TryFromIntError>,
{
    T::try_from(n).map_err(|e| StoreError::Other(Box::new(e)))
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
        sqlx::Error::PoolTimedOut => StoreError::Busy(Box::new(e)),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(Box::new(e)),
        _ => StoreError::Other(Box::new(e)),
    }
}

#[cfg(test)]
mod tests {
    use buildpeer_core::upload::UploadStatus;

    #[test]
    fn has_bytes_statuses_match_the_domain() {
        let listed: Vec<&str> = has_bytes_statuses!()
            .split(", ")
            .map(|s| s.trim_matches('\''))
            .collect();
        let domain: Vec<&str> = UploadStatus::ALL
            .into_iter()
            .filter(|s| s.has_bytes())
            .map(UploadStatus::as_str)
            .collect();
        assert_eq!(listed, domain);
    }
}
