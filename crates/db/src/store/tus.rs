//! `TusStore`: the resumable uploads' state, lease and parts ledger.

use async_trait::async_trait;
use buildpeer_core::ids::{TenantId, UploadId};
use buildpeer_core::ports::{
    Creation, IdempotencyKey, NewTus, NewUpload, StoreResult, TusPart, TusState, TusStore,
};
use buildpeer_core::upload::Upload;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::uploads::{claim_upload_key, insert_upload, uploads};
use super::{Store, get_upload, owned, update_upload};
use crate::exec::q;
use crate::sql::{self, TusPartRow, TusRow};

#[async_trait]
impl TusStore for Store {
    async fn tus_create(
        &self,
        tenant: TenantId,
        upload: &NewUpload,
        tus: &NewTus,
        idempotency: Option<&IdempotencyKey>,
    ) -> StoreResult<Creation<Upload>> {
        let length: Option<i64> = tus.length.map(sql::int).transpose()?;
        let offset: i64 = sql::int(tus.offset)?;
        let part_size: Option<i64> = tus
            .multipart
            .as_ref()
            .map(|m| sql::int(m.part_size))
            .transpose()?;
        let (concat, concat_parts) = sql::tus_concat_columns(tus.concat.as_ref());
        let mut tx = self.write().await?;
        if let Some(key) = idempotency
            && let Some(replayed) = claim_upload_key(&mut tx, tenant, upload, key).await?
        {
            return Ok(replayed);
        }
        let created = insert_upload(&mut tx, tenant, upload).await?;
        q(sql::TUS_INSERT)
            .bind(tenant.as_uuid())
            .bind(upload.id.as_uuid())
            .bind(length)
            .bind(offset)
            .bind(&tus.metadata)
            .bind(tus.staging_key.as_str())
            .bind(part_size)
            .bind(tus.multipart.as_ref().map(|m| m.upload_id.as_str()))
            .bind(concat)
            .bind(concat_parts.as_deref())
            .bind(upload.created_at)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(Creation::Created(created))
    }

    async fn tus_get(&self, tenant: TenantId, id: UploadId) -> StoreResult<Option<TusState>> {
        owned(sql::TUS_GET, tenant, id.as_uuid())
            .fetch_optional::<TusRow>(&self.pool)
            .await?
            .map(TryInto::try_into)
            .transpose()
    }

    async fn tus_finish_due(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Upload>> {
        uploads(
            self,
            q(sql::TUS_FINISH_DUE).bind(now).bind(i64::from(limit)),
        )
        .await
    }

    async fn tus_lock(
        &self,
        tenant: TenantId,
        id: UploadId,
        token: Uuid,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.one_changed(
            owned(sql::TUS_LOCK, tenant, id.as_uuid())
                .bind(token)
                .bind(until)
                .bind(now),
        )
        .await
    }

    async fn tus_unlock(&self, tenant: TenantId, id: UploadId, token: Uuid) -> StoreResult<()> {
        owned(sql::TUS_UNLOCK, tenant, id.as_uuid())
            .bind(token)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn tus_advance(
        &self,
        tenant: TenantId,
        id: UploadId,
        token: Uuid,
        from: u64,
        to: u64,
        parts: &[TusPart],
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        let advanced = owned(sql::TUS_ADVANCE, tenant, id.as_uuid())
            .bind(token)
            .bind(sql::int::<i64, _>(from)?)
            .bind(sql::int::<i64, _>(to)?)
            .bind(now)
            .execute(&mut tx)
            .await?
            == 1;
        if !advanced {
            return Ok(false);
        }
        for part in parts {
            owned(sql::TUS_PART_UPSERT, tenant, id.as_uuid())
                .bind(i64::from(part.number))
                .bind(&part.etag)
                .bind(sql::int::<i64, _>(part.size)?)
                .bind(part.sha256.as_str())
                .bind(now)
                .execute(&mut tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn tus_parts(&self, tenant: TenantId, id: UploadId) -> StoreResult<Vec<TusPart>> {
        let rows: Vec<TusPartRow> = owned(sql::TUS_PARTS, tenant, id.as_uuid())
            .fetch_all(&self.pool)
            .await?;
        sql::convert(rows)
    }

    async fn tus_declare_length(
        &self,
        tenant: TenantId,
        id: UploadId,
        length: u64,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let length: i64 = sql::int(length)?;
        let mut tx = self.write().await?;
        let set = owned(sql::TUS_DECLARE_LENGTH, tenant, id.as_uuid())
            .bind(length)
            .bind(now)
            .execute(&mut tx)
            .await?
            == 1;
        if set {
            owned(sql::UPLOAD_SET_SIZE, tenant, id.as_uuid())
                .bind(length)
                .bind(now)
                .execute(&mut tx)
                .await?;
        }
        tx.commit().await?;
        Ok(set)
    }

    async fn tus_terminate(
        &self,
        tenant: TenantId,
        id: UploadId,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Upload>> {
        match update_upload(&self.pool, sql::TUS_TERMINATE, tenant, id, now).await? {
            Some(terminated) => Ok(Some(terminated)),
            None => get_upload(&self.pool, tenant, id).await,
        }
    }
}
