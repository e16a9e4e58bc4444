//! The PostgreSQL adapter, for multi-node deployments: a connection pool
//! sized by `DbOptions::max_connections`, row locks for the session races and
//! the sweepers.

use std::str::FromStr;

use async_trait::async_trait;
use buildpeer_core::StoreError;
use buildpeer_core::error::Conflict;
use buildpeer_core::ids::{MembershipId, ProjectId, SessionFamilyId, TenantId, UploadId, UserId};
use buildpeer_core::model::{Email, Member, Project, Slug, Tenant, User, UserCredentials};
use buildpeer_core::pagination::PageRequest;
use buildpeer_core::ports::{
    AccountStore, CreateUpload, IdempotencyKey, MetadataStore, NewJob, NewProject, NewRefreshToken,
    NewTenant, NewUpload, NewUser, PoolStats, ProjectFilter, ProjectPatch, RotateOutcome,
    StoreResult, TenantLimits, UploadFilter, UploadStore, UserPatch,
};
use buildpeer_core::upload::{Processed, Sha256Hex, Upload, UploadFailure};
use chrono::{DateTime, Utc};
use sqlx::error::DatabaseError;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{PgExecutor, Transaction};
use uuid::Uuid;

use crate::sql::{
    self, CredentialsRow, LimitsRow, MemberRow, ProjectRow, ReplayRow, TenantRow, UploadParams,
    UploadRow, UserRow,
};
use crate::{DbError, DbOptions};

const BACKEND: &str = "postgres";

/// Revoking runs concurrently with rotations that add tokens to the family.
/// Under READ COMMITTED an UPDATE cannot see rows committed after it started,
/// so a token minted by a rotation that commits meanwhile would survive. Locking
/// the rows first (in id order, so two revokers cannot deadlock) waits for any
/// rotation holding one of them; the UPDATE that follows then runs on a fresh
/// snapshot that includes the minted token.
const FAMILY_LOCK: &str =
    "SELECT 1 FROM refresh_tokens WHERE family_id = $1 ORDER BY id FOR UPDATE";
/// The same, for revoking all of a user's tokens.
const USER_TOKENS_LOCK: &str =
    "SELECT 1 FROM refresh_tokens WHERE tenant_id = $1 AND user_id = $2 ORDER BY id FOR UPDATE";

pub(crate) struct PgStore {
    pool: PgPool,
    /// `job_wait`'s LISTEN connection (its own, not the pool's) and signal.
    wakeup: queue::Wakeup,
}

#[path = "queue/postgres.rs"]
mod queue;

impl PgStore {
    pub(crate) async fn connect(url: &str, opts: &DbOptions) -> Result<Self, DbError> {
        let options = PgConnectOptions::from_str(url).map_err(|e| DbError::InvalidUrl {
            backend: BACKEND,
            source: Box::new(e),
        })?;
        let wakeup = queue::Wakeup::new(options.clone());
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections)
            .acquire_timeout(opts.acquire_timeout)
            .connect_with(options)
            .await
            .map_err(|e| DbError::Connect {
                backend: BACKEND,
                source: Box::new(e),
            })?;
        if opts.run_migrations {
            sqlx::migrate!("migrations/postgres")
                .run(&pool)
                .await
                .map_err(|e| DbError::Migrate {
                    backend: BACKEND,
                    source: Box::new(e),
                })?;
        }
        Ok(Self { pool, wakeup })
    }

    /// READ COMMITTED is enough: conditional updates and the row locks above
    /// carry the concurrency rules, so nothing needs serialisable retries.
    async fn write(&self) -> StoreResult<Transaction<'static, sqlx::Postgres>> {
        self.pool.begin().await.map_err(store_err)
    }
}

fn store_err(e: sqlx::Error) -> StoreError {
    sql::store_error(e, conflict, |db| {
        // Connection exceptions (class 08), an administrator or crash shutting
        // the server down (57P01..57P03), too many connections (53300), and a
        // statement timeout (57014).
        db.code().is_some_and(|c| {
            c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03" | "53300" | "57014")
        })
    })
}

fn conflict(db: &dyn DatabaseError) -> Option<Conflict> {
    match db.constraint()? {
        "tenants_slug_key" => Some(Conflict::TenantSlug),
        "users_tenant_email_key" => Some(Conflict::UserEmail),
        "projects_tenant_code_key" => Some(Conflict::ProjectCode),
        _ => None,
    }
}

async fn insert_user(
    ex: impl PgExecutor<'_>,
    tenant: TenantId,
    user: &NewUser,
) -> StoreResult<User> {
    sqlx::query_as::<_, UserRow>(sql::USER_INSERT)
        .bind(user.id.as_uuid())
        .bind(tenant.as_uuid())
        .bind(user.email.as_str())
        .bind(user.name.as_str())
        .bind(user.role.as_str())
        .bind(&user.password_hash)
        .bind(user.created_at)
        .fetch_one(ex)
        .await
        .map_err(store_err)?
        .try_into()
}

async fn insert_token(
    ex: impl PgExecutor<'_>,
    tenant: Uuid,
    user: Uuid,
    family: Uuid,
    token: &NewRefreshToken,
) -> StoreResult<()> {
    sqlx::query(sql::TOKEN_INSERT)
        .bind(token.id.as_uuid())
        .bind(tenant)
        .bind(user)
        .bind(family)
        .bind(&token.hash[..])
        .bind(token.created_at)
        .bind(token.expires_at)
        .execute(ex)
        .await
        .map_err(store_err)?;
    Ok(())
}

async fn revoke_family(
    conn: &mut PgConnection,
    family: Uuid,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    sqlx::query(FAMILY_LOCK)
        .bind(family)
        .execute(&mut *conn)
        .await
        .map_err(store_err)?;
    sqlx::query(sql::FAMILY_REVOKE)
        .bind(family)
        .bind(now)
        .execute(conn)
        .await
        .map_err(store_err)?;
    Ok(())
}

async fn get_upload(
    ex: impl PgExecutor<'_>,
    tenant: TenantId,
    id: UploadId,
) -> StoreResult<Option<Upload>> {
    sqlx::query_as::<_, UploadRow>(sql::UPLOAD_GET)
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .fetch_optional(ex)
        .await
        .map_err(store_err)?
        .map(Upload::try_from)
        .transpose()
}

/// Runs a `(tenant, id, now)` update that returns the upload as it is after.
async fn update_upload(
    ex: impl PgExecutor<'_>,
    text: &'static str,
    tenant: TenantId,
    id: UploadId,
    now: DateTime<Utc>,
) -> StoreResult<Option<Upload>> {
    sqlx::query_as::<_, UploadRow>(text)
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .bind(now)
        .fetch_optional(ex)
        .await
        .map_err(store_err)?
        .map(Upload::try_from)
        .transpose()
}

#[async_trait]
impl MetadataStore for PgStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn pool_stats(&self) -> PoolStats {
        PoolStats {
            size: self.pool.size(),
            idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
            max: self.pool.options().get_max_connections(),
        }
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query(sql::PING)
            .execute(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(())
    }
}

#[async_trait]
impl AccountStore for PgStore {
    async fn tenant_count(&self) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar(sql::TENANT_COUNT)
            .fetch_one(&self.pool)
            .await
            .map_err(store_err)?;
        u64::try_from(n).map_err(|e| StoreError::Other(Box::new(e)))
    }

    async fn tenant_create(&self, tenant: &NewTenant, admin: &NewUser) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query(sql::TENANT_INSERT)
            .bind(tenant.id.as_uuid())
            .bind(tenant.slug.as_str())
            .bind(tenant.name.as_str())
            .bind(tenant.created_at)
            .execute(&mut *tx)
            .await
            .map_err(store_err)?;
        insert_user(&mut *tx, tenant.id, admin).await?;
        tx.commit().await.map_err(store_err)
    }

    async fn tenant_by_slug(&self, slug: &Slug) -> StoreResult<Option<Tenant>> {
        let row = sqlx::query_as::<_, TenantRow>(sql::TENANT_BY_SLUG)
            .bind(slug.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(row.map(Tenant::from))
    }

    async fn user_create(&self, tenant: TenantId, user: &NewUser) -> StoreResult<User> {
        insert_user(&self.pool, tenant, user).await
    }

    async fn user_get(&self, tenant: TenantId, id: UserId) -> StoreResult<Option<User>> {
        sqlx::query_as::<_, UserRow>(sql::USER_GET)
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(store_err)?
            .map(User::try_from)
            .transpose()
    }

    async fn user_credentials(
        &self,
        tenant: TenantId,
        email: &Email,
    ) -> StoreResult<Option<UserCredentials>> {
        let row = sqlx::query_as::<_, CredentialsRow>(sql::USER_CREDENTIALS)
            .bind(tenant.as_uuid())
            .bind(email.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(store_err)?;
        row.map(|r| {
            Ok(UserCredentials {
                user: r.user.try_into()?,
                password_hash: r.password_hash,
            })
        })
        .transpose()
    }

    async fn user_list(&self, tenant: TenantId, page: PageRequest) -> StoreResult<Vec<User>> {
        let rows = sqlx::query_as::<_, UserRow>(sql::USER_LIST)
            .bind(tenant.as_uuid())
            .bind(sql::before(page))
            .bind(sql::limit(page))
            .fetch_all(&self.pool)
            .await
            .map_err(store_err)?;
        sql::convert(rows)
    }

    async fn user_update(
        &self,
        tenant: TenantId,
        id: UserId,
        patch: &UserPatch,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<User>> {
        let mut tx = self.write().await?;
        let row = sqlx::query_as::<_, UserRow>(sql::USER_UPDATE)
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .bind(patch.name.as_ref().map(|n| n.as_str()))
            .bind(patch.role.map(|r| r.as_str()))
            .bind(patch.disabled)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(store_err)?;
        if row.is_some() && patch.disabled == Some(true) {
            sqlx::query(USER_TOKENS_LOCK)
                .bind(tenant.as_uuid())
                .bind(id.as_uuid())
                .execute(&mut *tx)
                .await
                .map_err(store_err)?;
            sqlx::query(sql::USER_TOKENS_REVOKE)
                .bind(tenant.as_uuid())
                .bind(id.as_uuid())
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(store_err)?;
        }
        tx.commit().await.map_err(store_err)?;
        row.map(User::try_from).transpose()
    }

    async fn project_create(
        &self,
        tenant: TenantId,
        project: &NewProject,
        creator_member: bool,
    ) -> StoreResult<Project> {
        let mut tx = self.write().await?;
        let row = sqlx::query_as::<_, ProjectRow>(sql::PROJECT_INSERT)
            .bind(project.id.as_uuid())
            .bind(tenant.as_uuid())
            .bind(project.name.as_str())
            .bind(project.code.as_ref().map(|c| c.as_str()))
            .bind(project.address.as_ref().map(|a| a.as_str()))
            .bind(project.created_by.as_uuid())
            .bind(project.created_at)
            .fetch_one(&mut *tx)
            .await
            .map_err(store_err)?;
        if creator_member {
            sqlx::query(sql::MEMBER_INSERT)
                .bind(MembershipId::new().as_uuid())
                .bind(tenant.as_uuid())
                .bind(project.id.as_uuid())
                .bind(project.created_by.as_uuid())
                .bind(project.created_at)
                .execute(&mut *tx)
                .await
                .map_err(store_err)?;
        }
        tx.commit().await.map_err(store_err)?;
        Ok(row.into())
    }

    async fn project_get(&self, tenant: TenantId, id: ProjectId) -> StoreResult<Option<Project>> {
        let row = sqlx::query_as::<_, ProjectRow>(sql::PROJECT_GET)
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(row.map(Project::from))
    }

    async fn project_list(
        &self,
        tenant: TenantId,
        filter: ProjectFilter,
        page: PageRequest,
    ) -> StoreResult<Vec<Project>> {
        let text = match filter.member {
            None => sql::PROJECT_LIST,
            Some(_) => sql::PROJECT_LIST_MEMBER,
        };
        let mut query = sqlx::query_as::<_, ProjectRow>(text)
            .bind(tenant.as_uuid())
            .bind(sql::before(page))
            .bind(filter.include_archived)
            .bind(sql::limit(page));
        if let Some(user) = filter.member {
            query = query.bind(user.as_uuid());
        }
        let rows = query.fetch_all(&self.pool).await.map_err(store_err)?;
        Ok(rows.into_iter().map(Project::from).collect())
    }

    async fn project_update(
        &self,
        tenant: TenantId,
        id: ProjectId,
        patch: &ProjectPatch,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Project>> {
        let row = sqlx::query_as::<_, ProjectRow>(sql::PROJECT_UPDATE)
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .bind(patch.name.as_ref().map(|n| n.as_str()))
            .bind(patch.code.is_some())
            .bind(
                patch
                    .code
                    .as_ref()
                    .and_then(Option::as_ref)
                    .map(|c| c.as_str()),
            )
            .bind(patch.address.is_some())
            .bind(
                patch
                    .address
                    .as_ref()
                    .and_then(Option::as_ref)
                    .map(|a| a.as_str()),
            )
            .bind(now)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(row.map(Project::from))
    }

    async fn project_archive(
        &self,
        tenant: TenantId,
        id: ProjectId,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Project>> {
        let row = sqlx::query_as::<_, ProjectRow>(sql::PROJECT_ARCHIVE)
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .bind(now)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(row.map(Project::from))
    }

    async fn member_is(
        &self,
        tenant: TenantId,
        project: ProjectId,
        user: UserId,
    ) -> StoreResult<bool> {
        sqlx::query_scalar(sql::MEMBER_IS)
            .bind(tenant.as_uuid())
            .bind(project.as_uuid())
            .bind(user.as_uuid())
            .fetch_one(&self.pool)
            .await
            .map_err(store_err)
    }

    async fn member_add(
        &self,
        tenant: TenantId,
        project: ProjectId,
        user: UserId,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let done = sqlx::query(sql::MEMBER_INSERT)
            .bind(MembershipId::new().as_uuid())
            .bind(tenant.as_uuid())
            .bind(project.as_uuid())
            .bind(user.as_uuid())
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn member_remove(
        &self,
        tenant: TenantId,
        project: ProjectId,
        user: UserId,
    ) -> StoreResult<bool> {
        let done = sqlx::query(sql::MEMBER_DELETE)
            .bind(tenant.as_uuid())
            .bind(project.as_uuid())
            .bind(user.as_uuid())
            .execute(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn member_list(
        &self,
        tenant: TenantId,
        project: ProjectId,
        page: PageRequest,
    ) -> StoreResult<Vec<Member>> {
        let rows = sqlx::query_as::<_, MemberRow>(sql::MEMBER_LIST)
            .bind(tenant.as_uuid())
            .bind(project.as_uuid())
            .bind(sql::before(page))
            .bind(sql::limit(page))
            .fetch_all(&self.pool)
            .await
            .map_err(store_err)?;
        sql::convert(rows)
    }

    async fn session_start(
        &self,
        tenant: TenantId,
        user: UserId,
        family: SessionFamilyId,
        token: &NewRefreshToken,
    ) -> StoreResult<()> {
        insert_token(
            &self.pool,
            tenant.as_uuid(),
            user.as_uuid(),
            family.as_uuid(),
            token,
        )
        .await
    }

    async fn session_rotate(
        &self,
        presented: &[u8; 32],
        next: &NewRefreshToken,
        now: DateTime<Utc>,
    ) -> StoreResult<RotateOutcome> {
        let mut tx = self.write().await?;
        let used: Option<(Uuid, Uuid, Uuid)> = sqlx::query_as(sql::TOKEN_USE)
            .bind(&presented[..])
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(store_err)?;
        let outcome = match used {
            Some((tenant, user, family)) => {
                insert_token(&mut *tx, tenant, user, family, next).await?;
                RotateOutcome::Rotated {
                    tenant_id: TenantId::from_uuid(tenant),
                    user_id: UserId::from_uuid(user),
                    family_id: SessionFamilyId::from_uuid(family),
                }
            }
            None => {
                let state: Option<(Uuid, bool)> = sqlx::query_as(sql::TOKEN_STATE)
                    .bind(&presented[..])
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(store_err)?;
                match state {
                    None => RotateOutcome::Unknown,
                    Some((family, true)) => {
                        revoke_family(&mut tx, family, now).await?;
                        RotateOutcome::Reused {
                            family_id: SessionFamilyId::from_uuid(family),
                        }
                    }
                    Some((_, false)) => RotateOutcome::Expired,
                }
            }
        };
        tx.commit().await.map_err(store_err)?;
        Ok(outcome)
    }

    async fn session_revoke(&self, presented: &[u8; 32], now: DateTime<Utc>) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        let state: Option<(Uuid, bool)> = sqlx::query_as(sql::TOKEN_STATE)
            .bind(&presented[..])
            .fetch_optional(&mut *tx)
            .await
            .map_err(store_err)?;
        if let Some((family, _)) = state {
            revoke_family(&mut tx, family, now).await?;
        }
        tx.commit().await.map_err(store_err)?;
        Ok(state.is_some())
    }

    async fn session_revoke_family(
        &self,
        family: SessionFamilyId,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let mut tx = self.write().await?;
        revoke_family(&mut tx, family.as_uuid(), now).await?;
        tx.commit().await.map_err(store_err)
    }
}

#[async_trait]
impl UploadStore for PgStore {
    async fn tenant_limits(&self, tenant: TenantId) -> StoreResult<TenantLimits> {
        let row: Option<LimitsRow> = sqlx::query_as(sql::TENANT_LIMITS)
            .bind(tenant.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(store_err)?;
        row.map_or(Ok(TenantLimits::default()), sql::limits_from_row)
    }

    async fn tenant_set_limits(&self, tenant: TenantId, limits: TenantLimits) -> StoreResult<()> {
        let (max_upload_bytes, quota_bytes) = sql::limits_to_row(limits)?;
        sqlx::query(sql::TENANT_SET_LIMITS)
            .bind(tenant.as_uuid())
            .bind(max_upload_bytes)
            .bind(quota_bytes)
            .execute(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(())
    }

    async fn upload_create(
        &self,
        tenant: TenantId,
        upload: &NewUpload,
        idempotency: Option<&IdempotencyKey>,
    ) -> StoreResult<CreateUpload> {
        let params = UploadParams::new(upload)?;
        let mut tx = self.write().await?;
        if let Some(key) = idempotency {
            let claimed = sqlx::query(sql::IDEMPOTENCY_CLAIM)
                .bind(tenant.as_uuid())
                .bind(upload.uploaded_by.as_uuid())
                .bind(&key.key)
                .bind(&key.request_hash[..])
                .bind(upload.id.as_uuid())
                .bind(upload.created_at)
                .execute(&mut *tx)
                .await
                .map_err(store_err)?
                .rows_affected()
                == 1;
            if !claimed {
                // The claim waited for the transaction that holds the key to
                // commit; this statement's fresh snapshot sees its upload.
                let row = sqlx::query_as::<_, ReplayRow>(sql::IDEMPOTENCY_REPLAY)
                    .bind(tenant.as_uuid())
                    .bind(upload.uploaded_by.as_uuid())
                    .bind(&key.key)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(store_err)?;
                tx.rollback().await.map_err(store_err)?;
                // None: the upload was purged (taking its key) in between,
                // so the key is free again and a retry will claim it.
                return match row {
                    Some(row) => row.outcome(key),
                    None => Err(StoreError::Unavailable(
                        "idempotency key released during the request".into(),
                    )),
                };
            }
        }
        let row = sqlx::query_as::<_, UploadRow>(sql::UPLOAD_INSERT)
            .bind(upload.id.as_uuid())
            .bind(tenant.as_uuid())
            .bind(upload.project_id.as_uuid())
            .bind(upload.uploaded_by.as_uuid())
            .bind(upload.filename.as_str())
            .bind(upload.content_type.as_str())
            .bind(params.size)
            .bind(upload.sha256.as_ref().map(Sha256Hex::as_str))
            .bind(upload.object_key.as_str())
            .bind(params.multipart_upload_id)
            .bind(params.part_size)
            .bind(params.part_count)
            .bind(upload.expires_at)
            .bind(upload.created_at)
            .fetch_one(&mut *tx)
            .await
            .map_err(store_err)?;
        tx.commit().await.map_err(store_err)?;
        Ok(CreateUpload::Created(row.try_into()?))
    }

    async fn upload_get(&self, tenant: TenantId, id: UploadId) -> StoreResult<Option<Upload>> {
        get_upload(&self.pool, tenant, id).await
    }

    async fn upload_find_duplicate(
        &self,
        tenant: TenantId,
        project: ProjectId,
        uploaded_by: UserId,
        sha256: &Sha256Hex,
    ) -> StoreResult<Option<Upload>> {
        sqlx::query_as::<_, UploadRow>(sql::UPLOAD_DUPLICATE)
            .bind(tenant.as_uuid())
            .bind(project.as_uuid())
            .bind(uploaded_by.as_uuid())
            .bind(sha256.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(store_err)?
            .map(Upload::try_from)
            .transpose()
    }

    async fn upload_usage(&self, tenant: TenantId) -> StoreResult<u64> {
        let bytes: i64 = sqlx::query_scalar(sql::UPLOAD_USAGE)
            .bind(tenant.as_uuid())
            .fetch_one(&self.pool)
            .await
            .map_err(store_err)?;
        sql::int(bytes)
    }

    async fn upload_list(
        &self,
        tenant: TenantId,
        project: ProjectId,
        filter: &UploadFilter,
        page: PageRequest,
    ) -> StoreResult<Vec<Upload>> {
        let rows = sqlx::query_as::<_, UploadRow>(sql::UPLOAD_LIST)
            .bind(tenant.as_uuid())
            .bind(project.as_uuid())
            .bind(sql::before(page))
            .bind(filter.status.map(|s| s.as_str()))
            .bind(filter.uploaded_by.map(|u| u.as_uuid()))
            .bind(filter.from)
            .bind(filter.to)
            .bind(filter.deleted)
            .bind(sql::limit(page))
            .bind(filter.taken_from)
            .bind(filter.taken_to)
            .bind(filter.has_gps)
            .fetch_all(&self.pool)
            .await
            .map_err(store_err)?;
        sql::convert(rows)
    }

    async fn upload_mark_uploaded(
        &self,
        tenant: TenantId,
        id: UploadId,
        job: &NewJob,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Upload>> {
        let max_attempts: i32 = sql::int(job.max_attempts)?;
        let mut tx = self.write().await?;
        let marked = sqlx::query_as::<_, UploadRow>(sql::UPLOAD_MARK_UPLOADED)
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(store_err)?;
        let upload = match marked {
            Some(row) => {
                sqlx::query(sql::JOB_INSERT_PG)
                    .bind(job.id.as_uuid())
                    .bind(tenant.as_uuid())
                    .bind(id.as_uuid())
                    .bind(job.kind)
                    .bind(&job.payload)
                    .bind(max_attempts)
                    .bind(job.run_at)
                    .bind(job.trace_context.as_deref())
                    .bind(job.created_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(store_err)?;
                queue::notify(&mut tx).await?;
                Some(row.try_into()?)
            }
            None => get_upload(&mut *tx, tenant, id).await?,
        };
        tx.commit().await.map_err(store_err)?;
        Ok(upload)
    }

    async fn upload_start_processing(
        &self,
        tenant: TenantId,
        id: UploadId,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Upload>> {
        update_upload(&self.pool, sql::UPLOAD_START_PROCESSING, tenant, id, now).await
    }

    async fn upload_finish_processing(
        &self,
        tenant: TenantId,
        id: UploadId,
        processed: &Processed,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Upload>> {
        let (metadata, thumbnails) = sql::processed_documents(processed)?;
        sqlx::query_as::<_, UploadRow>(sql::UPLOAD_FINISH_PROCESSING)
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .bind(now)
            .bind(&processed.detected_type)
            .bind(metadata)
            .bind(thumbnails)
            .bind(processed.taken_at)
            .bind(processed.metadata.gps.is_some())
            .fetch_optional(&self.pool)
            .await
            .map_err(store_err)?
            .map(Upload::try_from)
            .transpose()
    }

    async fn upload_fail_processing(
        &self,
        tenant: TenantId,
        id: UploadId,
        failure: &UploadFailure,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Upload>> {
        sqlx::query_as::<_, UploadRow>(sql::UPLOAD_FAIL_PROCESSING)
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .bind(now)
            .bind(&failure.code)
            .bind(&failure.message)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_err)?
            .map(Upload::try_from)
            .transpose()
    }

    async fn upload_trash(
        &self,
        tenant: TenantId,
        id: UploadId,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Upload>> {
        update_upload(&self.pool, sql::UPLOAD_TRASH, tenant, id, now).await
    }

    async fn upload_restore(
        &self,
        tenant: TenantId,
        id: UploadId,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Upload>> {
        update_upload(&self.pool, sql::UPLOAD_RESTORE, tenant, id, now).await
    }

    async fn uploads_expire_due(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Upload>> {
        let rows = sqlx::query_as::<_, UploadRow>(sql::UPLOADS_EXPIRE_DUE_PG)
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(store_err)?;
        sql::convert(rows)
    }

    async fn uploads_purge_due(
        &self,
        deleted_before: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<Upload>> {
        let rows = sqlx::query_as::<_, UploadRow>(sql::UPLOADS_PURGE_DUE)
            .bind(deleted_before)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(store_err)?;
        sql::convert(rows)
    }

    async fn upload_purge(
        &self,
        tenant: TenantId,
        id: UploadId,
        deleted_before: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let done = sqlx::query(sql::UPLOAD_PURGE)
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .bind(deleted_before)
            .execute(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(done.rows_affected() == 1)
    }
}

crate::tus::tus_store!(PgStore);
