//! `AccountStore`: tenants, users, projects, members and sessions.

use async_trait::async_trait;
use buildpeer_core::error::StoreError;
use buildpeer_core::ids::{MembershipId, ProjectId, SessionFamilyId, TenantId, UserId};
use buildpeer_core::model::{Email, Member, Project, Slug, Tenant, User, UserCredentials};
use buildpeer_core::pagination::PageRequest;
use buildpeer_core::ports::{
    AccountStore, Creation, IdempotencyKey, NewProject, NewRefreshToken, NewTenant, NewUser,
    ProjectFilter, ProjectPatch, RotateOutcome, StoreResult, UserPatch,
};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Store, owned};
use crate::exec::{On, Query, Tx, q};
use crate::sql::{self, CredentialsRow, MemberRow, ProjectRow, TenantRow, UserRow};

/// Claims `key` for a creating request of `by` (`scope`: what it creates,
/// `id`: its id) in the creating transaction. `Some((id, same_request))`:
/// the key was used before, for that resource (committed and visible here,
/// as for upload keys: SQLite serialises writers, and on PostgreSQL the claim
/// waited for the transaction holding the key).
async fn claim(
    tx: &mut Tx,
    tenant: TenantId,
    by: UserId,
    scope: &str,
    key: &IdempotencyKey,
    id: Uuid,
    at: DateTime<Utc>,
) -> StoreResult<Option<(Uuid, bool)>> {
    let claimed = q(sql::KEY_CLAIM)
        .bind(tenant.as_uuid())
        .bind(by.as_uuid())
        .bind(scope)
        .bind(&key.key)
        .bind(&key.request_hash[..])
        .bind(id)
        .bind(at)
        .execute(&mut *tx)
        .await?
        == 1;
    if claimed {
        return Ok(None);
    }
    match key_use(tx, tenant, by, scope, key).await? {
        Some(used) => Ok(Some(used)),
        None => Err(StoreError::Unavailable(
            "idempotency key released during the request".into(),
        )),
    }
}

/// What `by` first used `key` for in `scope`, and whether with the same
/// request: `Some((id, same_request))`.
async fn key_use(
    tx: &mut Tx,
    tenant: TenantId,
    by: UserId,
    scope: &str,
    key: &IdempotencyKey,
) -> StoreResult<Option<(Uuid, bool)>> {
    let row: Option<(Vec<u8>, Uuid)> = q(sql::KEY_REPLAY)
        .bind(tenant.as_uuid())
        .bind(by.as_uuid())
        .bind(scope)
        .bind(&key.key)
        .fetch_optional(&mut *tx)
        .await?;
    Ok(row.map(|(hash, id)| (id, hash == key.request_hash)))
}

async fn insert_user<'c>(
    on: impl Into<On<'c>>,
    tenant: TenantId,
    user: &NewUser,
) -> StoreResult<User> {
    q(sql::USER_INSERT)
        .bind(user.id.as_uuid())
        .bind(tenant.as_uuid())
        .bind(user.email.as_str())
        .bind(user.name.as_str())
        .bind(user.role.as_str())
        .bind(&user.password_hash)
        .bind(user.created_at)
        .fetch_one::<UserRow>(on)
        .await?
        .try_into()
}

async fn insert_token<'c>(
    on: impl Into<On<'c>>,
    tenant: Uuid,
    user: Uuid,
    family: Uuid,
    token: &NewRefreshToken,
) -> StoreResult<()> {
    q(sql::TOKEN_INSERT)
        .bind(token.id.as_uuid())
        .bind(tenant)
        .bind(user)
        .bind(family)
        .bind(&token.hash[..])
        .bind(token.created_at)
        .bind(token.expires_at)
        .execute(on)
        .await?;
    Ok(())
}

async fn revoke_family(tx: &mut Tx, family: Uuid, now: DateTime<Utc>) -> StoreResult<()> {
    tx.lock(q(sql::FAMILY_LOCK).bind(family)).await?;
    q(sql::FAMILY_REVOKE)
        .bind(family)
        .bind(now)
        .execute(tx)
        .await?;
    Ok(())
}

/// A refresh token's family, and whether it was spent.
async fn token_state(tx: &mut Tx, presented: &[u8; 32]) -> StoreResult<Option<(Uuid, bool)>> {
    q(sql::TOKEN_STATE)
        .bind(&presented[..])
        .fetch_optional(tx)
        .await
}

impl Store {
    /// The project a statement returns, if any.
    async fn project_of(&self, query: Query<'_>) -> StoreResult<Option<Project>> {
        let row: Option<ProjectRow> = query.fetch_optional(&self.pool).await?;
        Ok(row.map(Project::from))
    }
}

#[async_trait]
impl AccountStore for Store {
    async fn tenant_count(&self) -> StoreResult<u64> {
        let (n,): (i64,) = q(sql::TENANT_COUNT).fetch_one(&self.pool).await?;
        sql::int(n)
    }

    async fn tenant_create(&self, tenant: &NewTenant, admin: &NewUser) -> StoreResult<()> {
        let mut tx = self.write().await?;
        q(sql::TENANT_INSERT)
            .bind(tenant.id.as_uuid())
            .bind(tenant.slug.as_str())
            .bind(tenant.name.as_str())
            .bind(tenant.created_at)
            .execute(&mut tx)
            .await?;
        insert_user(&mut tx, tenant.id, admin).await?;
        tx.commit().await
    }

    async fn tenant_by_slug(&self, slug: &Slug) -> StoreResult<Option<Tenant>> {
        let row: Option<TenantRow> = q(sql::TENANT_BY_SLUG)
            .bind(slug.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(Tenant::from))
    }

    async fn tenant_by_id(&self, id: TenantId) -> StoreResult<Option<Tenant>> {
        let row: Option<TenantRow> = q(sql::TENANT_BY_ID)
            .bind(id.as_uuid())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(Tenant::from))
    }

    async fn user_create(
        &self,
        tenant: TenantId,
        user: &NewUser,
        by: UserId,
        idempotency: Option<&IdempotencyKey>,
    ) -> StoreResult<Creation<User>> {
        let Some(key) = idempotency else {
            return insert_user(&self.pool, tenant, user)
                .await
                .map(Creation::Created);
        };
        let mut tx = self.write().await?;
        let claimed = claim(
            &mut tx,
            tenant,
            by,
            "user",
            key,
            user.id.as_uuid(),
            user.created_at,
        )
        .await?;
        if let Some((id, same_request)) = claimed {
            let existing: Option<UserRow> = owned(sql::USER_GET, tenant, id)
                .fetch_optional(&mut tx)
                .await?;
            let existing =
                existing.ok_or_else(|| StoreError::Unavailable("the key's user is gone".into()))?;
            return Ok(Creation::Replayed {
                existing: existing.try_into()?,
                same_request,
            });
        }
        let created = insert_user(&mut tx, tenant, user).await?;
        tx.commit().await?;
        Ok(Creation::Created(created))
    }

    async fn user_get(&self, tenant: TenantId, id: UserId) -> StoreResult<Option<User>> {
        owned(sql::USER_GET, tenant, id.as_uuid())
            .fetch_optional::<UserRow>(&self.pool)
            .await?
            .map(User::try_from)
            .transpose()
    }

    async fn user_credentials(
        &self,
        tenant: TenantId,
        email: &Email,
    ) -> StoreResult<Option<UserCredentials>> {
        let row: Option<CredentialsRow> = q(sql::USER_CREDENTIALS)
            .bind(tenant.as_uuid())
            .bind(email.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(UserCredentials {
                user: r.user.try_into()?,
                password_hash: r.password_hash,
            })
        })
        .transpose()
    }

    async fn user_list(&self, tenant: TenantId, page: PageRequest) -> StoreResult<Vec<User>> {
        let rows: Vec<UserRow> = q(sql::USER_LIST)
            .bind(tenant.as_uuid())
            .bind(sql::before(page))
            .bind(sql::limit(page))
            .fetch_all(&self.pool)
            .await?;
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
        let row: Option<UserRow> = owned(sql::USER_UPDATE, tenant, id.as_uuid())
            .bind(patch.name.as_ref().map(|n| n.as_str()))
            .bind(patch.role.map(|r| r.as_str()))
            .bind(patch.disabled)
            .bind(now)
            .fetch_optional(&mut tx)
            .await?;
        if row.is_some() && patch.disabled == Some(true) {
            let user = owned(sql::USER_TOKENS_LOCK, tenant, id.as_uuid());
            tx.lock(user).await?;
            owned(sql::USER_TOKENS_REVOKE, tenant, id.as_uuid())
                .bind(now)
                .execute(&mut tx)
                .await?;
        }
        tx.commit().await?;
        row.map(User::try_from).transpose()
    }

    async fn project_create(
        &self,
        tenant: TenantId,
        project: &NewProject,
        creator_member: bool,
        idempotency: Option<&IdempotencyKey>,
    ) -> StoreResult<Creation<Project>> {
        let mut tx = self.write().await?;
        if let Some(key) = idempotency
            && let Some((id, same_request)) = claim(
                &mut tx,
                tenant,
                project.created_by,
                "project",
                key,
                project.id.as_uuid(),
                project.created_at,
            )
            .await?
        {
            let existing: Option<ProjectRow> = owned(sql::PROJECT_GET, tenant, id)
                .fetch_optional(&mut tx)
                .await?;
            let existing = existing
                .ok_or_else(|| StoreError::Unavailable("the key's project is gone".into()))?;
            return Ok(Creation::Replayed {
                existing: existing.into(),
                same_request,
            });
        }
        let row: ProjectRow = q(sql::PROJECT_INSERT)
            .bind(project.id.as_uuid())
            .bind(tenant.as_uuid())
            .bind(project.name.as_str())
            .bind(project.code.as_ref().map(|c| c.as_str()))
            .bind(project.address.as_ref().map(|a| a.as_str()))
            .bind(project.created_by.as_uuid())
            .bind(project.created_at)
            .fetch_one(&mut tx)
            .await?;
        if creator_member {
            let by = project.created_by;
            add_member(&mut tx, tenant, project.id, by, project.created_at).await?;
        }
        tx.commit().await?;
        Ok(Creation::Created(row.into()))
    }

    async fn project_get(&self, tenant: TenantId, id: ProjectId) -> StoreResult<Option<Project>> {
        self.project_of(owned(sql::PROJECT_GET, tenant, id.as_uuid()))
            .await
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
        let mut query = q(text)
            .bind(tenant.as_uuid())
            .bind(sql::before(page))
            .bind(filter.include_archived)
            .bind(sql::limit(page));
        if let Some(user) = filter.member {
            query = query.bind(user.as_uuid());
        }
        let rows: Vec<ProjectRow> = query.fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(Project::from).collect())
    }

    async fn project_update(
        &self,
        tenant: TenantId,
        id: ProjectId,
        patch: &ProjectPatch,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Project>> {
        let code = patch.code.as_ref().map(|c| c.as_ref().map(|c| c.as_str()));
        let address = patch
            .address
            .as_ref()
            .map(|a| a.as_ref().map(|a| a.as_str()));
        let query = owned(sql::PROJECT_UPDATE, tenant, id.as_uuid())
            .bind(patch.name.as_ref().map(|n| n.as_str()))
            .bind(code.is_some())
            .bind(code.flatten())
            .bind(address.is_some())
            .bind(address.flatten())
            .bind(now);
        self.project_of(query).await
    }

    async fn project_archive(
        &self,
        tenant: TenantId,
        id: ProjectId,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Project>> {
        let query = owned(sql::PROJECT_ARCHIVE, tenant, id.as_uuid()).bind(now);
        self.project_of(query).await
    }

    async fn member_is(
        &self,
        tenant: TenantId,
        project: ProjectId,
        user: UserId,
    ) -> StoreResult<bool> {
        let (is,): (bool,) = member(sql::MEMBER_IS, tenant, project, user)
            .fetch_one(&self.pool)
            .await?;
        Ok(is)
    }

    async fn member_add(
        &self,
        tenant: TenantId,
        project: ProjectId,
        user: UserId,
        now: DateTime<Utc>,
        idempotency: Option<(UserId, &IdempotencyKey)>,
    ) -> StoreResult<Creation<bool>> {
        let Some((by, key)) = idempotency else {
            return add_member(&self.pool, tenant, project, user, now)
                .await
                .map(Creation::Created);
        };
        let mut tx = self.write().await?;
        let added = add_member(&mut tx, tenant, project, user, now).await?;
        let replayed = if added {
            // Only a request that creates the membership records its key; if
            // the key was recorded before, this one rolls back.
            claim(&mut tx, tenant, by, "membership", key, user.as_uuid(), now)
                .await?
                .map(|(_, same_request)| same_request)
        } else {
            key_use(&mut tx, tenant, by, "membership", key)
                .await?
                .map(|(_, same_request)| same_request)
        };
        match replayed {
            Some(same_request) => Ok(Creation::Replayed {
                existing: true,
                same_request,
            }),
            None => {
                tx.commit().await?;
                Ok(Creation::Created(added))
            }
        }
    }

    async fn member_remove(
        &self,
        tenant: TenantId,
        project: ProjectId,
        user: UserId,
    ) -> StoreResult<bool> {
        self.one_changed(member(sql::MEMBER_DELETE, tenant, project, user))
            .await
    }

    async fn member_list(
        &self,
        tenant: TenantId,
        project: ProjectId,
        page: PageRequest,
    ) -> StoreResult<Vec<Member>> {
        let rows: Vec<MemberRow> = q(sql::MEMBER_LIST)
            .bind(tenant.as_uuid())
            .bind(project.as_uuid())
            .bind(sql::before(page))
            .bind(sql::limit(page))
            .fetch_all(&self.pool)
            .await?;
        sql::convert(rows)
    }

    async fn session_start(
        &self,
        tenant: TenantId,
        user: UserId,
        family: SessionFamilyId,
        token: &NewRefreshToken,
    ) -> StoreResult<()> {
        let (tenant, user, family) = (tenant.as_uuid(), user.as_uuid(), family.as_uuid());
        insert_token(&self.pool, tenant, user, family, token).await
    }

    async fn session_rotate(
        &self,
        presented: &[u8; 32],
        next: &NewRefreshToken,
        now: DateTime<Utc>,
    ) -> StoreResult<RotateOutcome> {
        let mut tx = self.write().await?;
        let used: Option<(Uuid, Uuid, Uuid)> = q(sql::TOKEN_USE)
            .bind(&presented[..])
            .bind(now)
            .fetch_optional(&mut tx)
            .await?;
        let outcome = match used {
            Some((tenant, user, family)) => {
                insert_token(&mut tx, tenant, user, family, next).await?;
                RotateOutcome::Rotated {
                    tenant_id: TenantId::from_uuid(tenant),
                    user_id: UserId::from_uuid(user),
                    family_id: SessionFamilyId::from_uuid(family),
                }
            }
            None => match token_state(&mut tx, presented).await? {
                None => RotateOutcome::Unknown,
                Some((family, true)) => {
                    revoke_family(&mut tx, family, now).await?;
                    RotateOutcome::Reused {
                        family_id: SessionFamilyId::from_uuid(family),
                    }
                }
                Some((_, false)) => RotateOutcome::Expired,
            },
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn session_revoke(
        &self,
        presented: &[u8; 32],
        now: DateTime<Utc>,
    ) -> StoreResult<Option<SessionFamilyId>> {
        let mut tx = self.write().await?;
        let state = token_state(&mut tx, presented).await?;
        if let Some((family, _)) = state {
            revoke_family(&mut tx, family, now).await?;
        }
        tx.commit().await?;
        Ok(state.map(|(family, _)| SessionFamilyId::from_uuid(family)))
    }

    async fn session_revoked(&self, family: SessionFamilyId) -> StoreResult<bool> {
        let (revoked,): (bool,) = q(sql::FAMILY_REVOKED)
            .bind(family.as_uuid())
            .fetch_one(&self.pool)
            .await?;
        Ok(revoked)
    }

    async fn session_revoke_family(
        &self,
        family: SessionFamilyId,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let mut tx = self.write().await?;
        revoke_family(&mut tx, family.as_uuid(), now).await?;
        tx.commit().await
    }
}

/// A `(tenant, project, user)` membership statement.
fn member(
    text: &'static str,
    tenant: TenantId,
    project: ProjectId,
    user: UserId,
) -> Query<'static> {
    q(text)
        .bind(tenant.as_uuid())
        .bind(project.as_uuid())
        .bind(user.as_uuid())
}

async fn add_member<'c>(
    on: impl Into<On<'c>>,
    tenant: TenantId,
    project: ProjectId,
    user: UserId,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let added = q(sql::MEMBER_INSERT)
        .bind(MembershipId::new().as_uuid())
        .bind(tenant.as_uuid())
        .bind(project.as_uuid())
        .bind(user.as_uuid())
        .bind(now)
        .execute(on)
        .await?;
    Ok(added == 1)
}
