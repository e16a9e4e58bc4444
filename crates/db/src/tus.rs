//! The `TusStore` port for both adapters. The SQL is shared (`sql.rs`); the
//! implementation differs only in the module's `store_err` and `write()`
//! transaction, so one macro expands it in each adapter's module.

/// Implements `TusStore` for `$store`, using the calling module's
/// `store_err`, `get_upload` and `$store::write`.
macro_rules! tus_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl buildpeer_core::ports::TusStore for $store {
            async fn tus_create(
                &self,
                tenant: TenantId,
                upload: &buildpeer_core::ports::NewUpload,
                tus: &buildpeer_core::ports::NewTus,
            ) -> StoreResult<Upload> {
                let params = crate::sql::UploadParams::new(upload)?;
                let length: Option<i64> = tus.length.map(sql::int).transpose()?;
                let offset: i64 = sql::int(tus.offset)?;
                let part_size: Option<i64> = tus
                    .multipart
                    .as_ref()
                    .map(|m| sql::int(m.part_size))
                    .transpose()?;
                let (concat, concat_parts) = crate::sql::tus_concat_columns(tus.concat.as_ref());
                let mut tx = self.write().await?;
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
                sqlx::query(sql::TUS_INSERT)
                    .bind(tenant.as_uuid())
                    .bind(upload.id.as_uuid())
                    .bind(length)
                    .bind(offset)
                    .bind(&tus.metadata)
                    .bind(tus.staging_key.as_str())
                    .bind(part_size)
                    .bind(tus.multipart.as_ref().map(|m| m.upload_id.as_str()))
                    .bind(concat)
                    .bind(concat_parts)
                    .bind(upload.created_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(store_err)?;
                tx.commit().await.map_err(store_err)?;
                row.try_into()
            }

            async fn tus_get(
                &self,
                tenant: TenantId,
                id: UploadId,
            ) -> StoreResult<Option<buildpeer_core::ports::TusState>> {
                sqlx::query_as::<_, crate::sql::TusRow>(sql::TUS_GET)
                    .bind(tenant.as_uuid())
                    .bind(id.as_uuid())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(store_err)?
                    .map(TryInto::try_into)
                    .transpose()
            }

            async fn tus_lock(
                &self,
                tenant: TenantId,
                id: UploadId,
                token: uuid::Uuid,
                until: DateTime<Utc>,
                now: DateTime<Utc>,
            ) -> StoreResult<bool> {
                let done = sqlx::query(sql::TUS_LOCK)
                    .bind(tenant.as_uuid())
                    .bind(id.as_uuid())
                    .bind(token)
                    .bind(until)
                    .bind(now)
                    .execute(&self.pool)
                    .await
                    .map_err(store_err)?;
                Ok(done.rows_affected() == 1)
            }

            async fn tus_unlock(
                &self,
                tenant: TenantId,
                id: UploadId,
                token: uuid::Uuid,
            ) -> StoreResult<()> {
                sqlx::query(sql::TUS_UNLOCK)
                    .bind(tenant.as_uuid())
                    .bind(id.as_uuid())
                    .bind(token)
                    .execute(&self.pool)
                    .await
                    .map_err(store_err)?;
                Ok(())
            }

            async fn tus_advance(
                &self,
                tenant: TenantId,
                id: UploadId,
                token: uuid::Uuid,
                from: u64,
                to: u64,
                parts: &[buildpeer_core::ports::TusPart],
                now: DateTime<Utc>,
            ) -> StoreResult<bool> {
                let mut tx = self.write().await?;
                let done = sqlx::query(sql::TUS_ADVANCE)
                    .bind(tenant.as_uuid())
                    .bind(id.as_uuid())
                    .bind(token)
                    .bind(sql::int::<i64, _>(from)?)
                    .bind(sql::int::<i64, _>(to)?)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(store_err)?
                    .rows_affected()
                    == 1;
                if !done {
                    return Ok(false);
                }
                for part in parts {
                    sqlx::query(sql::TUS_PART_UPSERT)
                        .bind(tenant.as_uuid())
                        .bind(id.as_uuid())
                        .bind(i64::from(part.number))
                        .bind(&part.etag)
                        .bind(sql::int::<i64, _>(part.size)?)
                        .bind(part.sha256.as_str())
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(store_err)?;
                }
                tx.commit().await.map_err(store_err)?;
                Ok(true)
            }

            async fn tus_parts(
                &self,
                tenant: TenantId,
                id: UploadId,
            ) -> StoreResult<Vec<buildpeer_core::ports::TusPart>> {
                sqlx::query_as::<_, crate::sql::TusPartRow>(sql::TUS_PARTS)
                    .bind(tenant.as_uuid())
                    .bind(id.as_uuid())
                    .fetch_all(&self.pool)
                    .await
                    .map_err(store_err)?
                    .into_iter()
                    .map(TryInto::try_into)
                    .collect()
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
                let set = sqlx::query(sql::TUS_DECLARE_LENGTH)
                    .bind(tenant.as_uuid())
                    .bind(id.as_uuid())
                    .bind(length)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(store_err)?
                    .rows_affected()
                    == 1;
                if set {
                    sqlx::query(sql::UPLOAD_SET_SIZE)
                        .bind(tenant.as_uuid())
                        .bind(id.as_uuid())
                        .bind(length)
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(store_err)?;
                }
                tx.commit().await.map_err(store_err)?;
                Ok(set)
            }

            async fn tus_terminate(
                &self,
                tenant: TenantId,
                id: UploadId,
                now: DateTime<Utc>,
            ) -> StoreResult<Option<Upload>> {
                let row = sqlx::query_as::<_, UploadRow>(sql::TUS_TERMINATE)
                    .bind(tenant.as_uuid())
                    .bind(id.as_uuid())
                    .bind(now)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(store_err)?;
                match row {
                    Some(row) => Ok(Some(row.try_into()?)),
                    None => get_upload(&self.pool, tenant, id).await,
                }
            }
        }
    };
}

pub(crate) use tus_store;
