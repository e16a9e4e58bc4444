//! `UploadStore`: tenant limits, uploads and their lifecycle.

use async_trait::async_trait;
use buildpeer_core::StoreError;
use buildpeer_core::blob::CompletedPart;
use buildpeer_core::ids::{ProjectId, TenantId, UploadId, UserId};
use buildpeer_core::pagination::PageRequest;
use buildpeer_core::ports::{
    Creation, IdempotencyKey, NewJob, NewUpload, StoreResult, TenantLimits, UploadFilter,
    UploadStore,
};
use buildpeer_core::upload::{Processed, Sha256Hex, Upload, UploadFailure};
use chrono::{DateTime, Utc};

use super::{Store, get_upload, owned, update_upload, upload_of};
use crate::exec::{On, Query, Tx, q};
use crate::sql::{self, CompletionRow, LimitsRow, ReplayRow, UploadParams, UploadRow};

/// Inserts a pending upload (in the transaction that records what else it
/// needs: its idempotency key, its tus state).
pub(super) async fn insert_upload(
    tx: &mut Tx,
    tenant: TenantId,
    upload: &NewUpload,
) -> StoreResult<Upload> {
    let params = UploadParams::new(upload)?;
    let row: UploadRow = q(sql::UPLOAD_INSERT)
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
        .fetch_one(tx)
        .await?;
    row.try_into()
}

/// Claims an upload initiation's idempotency key for `upload`, inside the
/// transaction that creates it; `Some` (nothing claimed) when the uploader
/// used the key before.
pub(super) async fn claim_upload_key(
    tx: &mut Tx,
    tenant: TenantId,
    upload: &NewUpload,
    key: &IdempotencyKey,
) -> StoreResult<Option<Creation<Upload>>> {
    let claimed = q(sql::IDEMPOTENCY_CLAIM)
        .bind(tenant.as_uuid())
        .bind(upload.uploaded_by.as_uuid())
        .bind(&key.key)
        .bind(&key.request_hash[..])
        .bind(upload.id.as_uuid())
        .bind(upload.created_at)
        .execute(&mut *tx)
        .await?
        == 1;
    if claimed {
        return Ok(None);
    }
    // The key's upload is committed and visible here: SQLite serialises
    // writers; on PostgreSQL the claim waited for the transaction that holds
    // the key to commit, and this statement's fresh snapshot sees its upload.
    // None: the upload was purged (taking its key) in between, so the key is
    // free again and a retry will claim it.
    match replay(&mut *tx, tenant, upload.uploaded_by, key).await? {
        Some(replayed) => Ok(Some(replayed)),
        None => Err(StoreError::Unavailable(
            "idempotency key released during the request".into(),
        )),
    }
}

/// The upload `user` first created with `key`, as `Replayed`.
async fn replay<'c>(
    on: impl Into<On<'c>>,
    tenant: TenantId,
    user: UserId,
    key: &IdempotencyKey,
) -> StoreResult<Option<Creation<Upload>>> {
    let row: Option<ReplayRow> = q(sql::IDEMPOTENCY_REPLAY)
        .bind(tenant.as_uuid())
        .bind(user.as_uuid())
        .bind(&key.key)
        .fetch_optional(on)
        .await?;
    row.map(|row| row.outcome(key)).transpose()
}

/// Uploads a statement returns.
pub(super) async fn uploads(store: &Store, query: Query<'_>) -> StoreResult<Vec<Upload>> {
    let rows: Vec<UploadRow> = query.fetch_all(&store.pool).await?;
    sql::convert(rows)
}

#[async_trait]
impl UploadStore for Store {
    async fn tenant_limits(&self, tenant: TenantId) -> StoreResult<TenantLimits> {
        let row: Option<LimitsRow> = q(sql::TENANT_LIMITS)
            .bind(tenant.as_uuid())
            .fetch_optional(&self.pool)
            .await?;
        row.map_or(Ok(TenantLimits::default()), sql::limits_from_row)
    }

    async fn tenant_set_limits(&self, tenant: TenantId, limits: TenantLimits) -> StoreResult<()> {
        let (max_upload_bytes, quota_bytes) = sql::limits_to_row(limits)?;
        q(sql::TENANT_SET_LIMITS)
            .bind(tenant.as_uuid())
            .bind(max_upload_bytes)
            .bind(quota_bytes)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn upload_create(
        &self,
        tenant: TenantId,
        upload: &NewUpload,
        idempotency: Option<&IdempotencyKey>,
    ) -> StoreResult<Creation<Upload>> {
        let mut tx = self.write().await?;
        if let Some(key) = idempotency
            && let Some(replayed) = claim_upload_key(&mut tx, tenant, upload, key).await?
        {
            return Ok(replayed);
        }
        let created = insert_upload(&mut tx, tenant, upload).await?;
        tx.commit().await?;
        Ok(Creation::Created(created))
    }

    async fn upload_get(&self, tenant: TenantId, id: UploadId) -> StoreResult<Option<Upload>> {
        get_upload(&self.pool, tenant, id).await
    }

    async fn upload_replay(
        &self,
        tenant: TenantId,
        user: UserId,
        key: &IdempotencyKey,
    ) -> StoreResult<Option<Creation<Upload>>> {
        replay(&self.pool, tenant, user, key).await
    }

    async fn upload_find_duplicate(
        &self,
        tenant: TenantId,
        project: ProjectId,
        uploaded_by: UserId,
        sha256: &Sha256Hex,
    ) -> StoreResult<Option<Upload>> {
        let query = q(sql::UPLOAD_DUPLICATE)
            .bind(tenant.as_uuid())
            .bind(project.as_uuid())
            .bind(uploaded_by.as_uuid())
            .bind(sha256.as_str());
        upload_of(&self.pool, query).await
    }

    async fn upload_usage(&self, tenant: TenantId) -> StoreResult<u64> {
        let (bytes,): (i64,) = q(sql::UPLOAD_USAGE)
            .bind(tenant.as_uuid())
            .fetch_one(&self.pool)
            .await?;
        sql::int(bytes)
    }

    async fn upload_list(
        &self,
        tenant: TenantId,
        project: ProjectId,
        filter: &UploadFilter,
        page: PageRequest,
    ) -> StoreResult<Vec<Upload>> {
        let query = q(sql::UPLOAD_LIST)
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
            .bind(filter.has_gps);
        uploads(self, query).await
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
        let marked = update_upload(&mut tx, sql::UPLOAD_MARK_UPLOADED, tenant, id, now).await?;
        if marked.is_none() {
            let upload = get_upload(&mut tx, tenant, id).await?;
            tx.commit().await?;
            return Ok(upload);
        }
        q(sql::JOB_INSERT)
            .bind(job.id.as_uuid())
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .bind(job.kind)
            .bind(&job.payload)
            .bind(max_attempts)
            .bind(job.run_at)
            .bind(job.trace_context.as_deref())
            .bind(job.created_at)
            .execute(&mut tx)
            .await?;
        self.commit_queued(tx).await?;
        Ok(marked)
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
        let query = owned(sql::UPLOAD_FINISH_PROCESSING, tenant, id.as_uuid())
            .bind(now)
            .bind(&processed.detected_type)
            .bind(&metadata)
            .bind(&thumbnails)
            .bind(processed.taken_at)
            .bind(processed.metadata.gps.is_some());
        upload_of(&self.pool, query).await
    }

    async fn upload_fail_processing(
        &self,
        tenant: TenantId,
        id: UploadId,
        failure: &UploadFailure,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Upload>> {
        let query = owned(sql::UPLOAD_FAIL_PROCESSING, tenant, id.as_uuid())
            .bind(now)
            .bind(&failure.code)
            .bind(&failure.message);
        upload_of(&self.pool, query).await
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

    async fn upload_set_completion(
        &self,
        tenant: TenantId,
        id: UploadId,
        completion: Option<(&[CompletedPart], DateTime<Utc>)>,
    ) -> StoreResult<()> {
        let (parts, at) = match completion {
            Some((parts, at)) => (Some(sql::completion_parts(parts)?), Some(at)),
            None => (None, None),
        };
        owned(sql::UPLOAD_SET_COMPLETION, tenant, id.as_uuid())
            .bind(at)
            .bind(parts.as_deref())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn uploads_completion_due(
        &self,
        requested_before: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<(Upload, Vec<CompletedPart>)>> {
        let rows: Vec<CompletionRow> = q(sql::UPLOADS_COMPLETION_DUE)
            .bind(requested_before)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    async fn uploads_expire_due(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Upload>> {
        let query = q(sql::UPLOADS_EXPIRE_DUE).bind(now).bind(i64::from(limit));
        uploads(self, query).await
    }

    async fn uploads_purge_due(
        &self,
        deleted_before: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<Upload>> {
        let query = q(sql::UPLOADS_PURGE_DUE)
            .bind(deleted_before)
            .bind(i64::from(limit));
        uploads(self, query).await
    }

    async fn upload_purge(
        &self,
        tenant: TenantId,
        id: UploadId,
        deleted_before: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.one_changed(owned(sql::UPLOAD_PURGE, tenant, id.as_uuid()).bind(deleted_before))
            .await
    }
}
