//! The concatenation extension: partial uploads, and a final upload built
//! from them at its creation. The design is in the parent module's
//! documentation.

use futures_util::{StreamExt, TryStreamExt};

use super::{CreateMetadata, TusInfo, codes, conflict, initial_state, internal, internal_key};
use crate::blob::{ByteStream, ObjectKey};
use crate::error::CoreError;
use crate::ids::UploadId;
use crate::model::Project;
use crate::policy::ProjectAction;
use crate::ports::{Creation, IdempotencyKey, TusConcat};
use crate::service::uploads::storage;
use crate::service::{Actor, Service};
use crate::upload::{Upload, UploadStatus};

fn invalid(msg: &str) -> CoreError {
    conflict(codes::INVALID_CONCAT, msg)
}

impl Service {
    /// Creates a final upload from `partials`, in order, and makes it
    /// `UPLOADED`. Every partial is leased for the duration, so two finals
    /// cannot consume the same partial at once (the second gets 423).
    pub(super) async fn tus_concat_final(
        &self,
        actor: &Actor,
        meta: CreateMetadata,
        raw: String,
        partials: Vec<UploadId>,
        idempotency: Option<&IdempotencyKey>,
    ) -> Result<(TusInfo, bool), CoreError> {
        if partials.is_empty() {
            return Err(invalid("a final upload names at least one partial upload"));
        }
        if partials
            .iter()
            .enumerate()
            .any(|(i, id)| partials[..i].contains(id))
        {
            return Err(invalid("a partial upload is named twice"));
        }
        let project = self
            .authorized_project(actor, meta.project_id, ProjectAction::Upload)
            .await?;
        let token = uuid::Uuid::now_v7();
        let mut locked = Vec::with_capacity(partials.len());
        let result = self
            .concat_locked(
                actor,
                &project,
                &meta,
                raw,
                &partials,
                token,
                &mut locked,
                idempotency,
            )
            .await;
        for id in locked {
            self.unlock(actor, id, token).await;
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn concat_locked(
        &self,
        actor: &Actor,
        project: &Project,
        meta: &CreateMetadata,
        raw: String,
        partials: &[UploadId],
        token: uuid::Uuid,
        locked: &mut Vec<UploadId>,
        idempotency: Option<&IdempotencyKey>,
    ) -> Result<(TusInfo, bool), CoreError> {
        let mut length = 0u64;
        for &id in partials {
            let (upload, tus) = match self.tus_upload(actor, id, true).await {
                Ok(found) => found,
                Err(CoreError::NotFound) => {
                    return Err(invalid(&format!("{id} is not a tus upload of yours")));
                }
                Err(CoreError::Conflict { code, .. }) if code == codes::GONE => {
                    return Err(invalid(&format!("{id} expired or was used up")));
                }
                Err(e) => return Err(e),
            };
            if tus.concat != Some(TusConcat::Partial) {
                return Err(invalid(&format!("{id} is not a partial upload")));
            }
            if upload.project_id != meta.project_id {
                return Err(invalid(&format!("{id} belongs to another project")));
            }
            if upload.status != UploadStatus::Pending || tus.length != Some(tus.offset) {
                return Err(invalid(&format!("{id} is not complete")));
            }
            self.lease(
                actor,
                id,
                token,
                "a partial upload is being written or concatenated",
            )
            .await?;
            locked.push(id);
            // Its object is normally there since its last PATCH; after a
            // crash in between, it is made now.
            self.tus_finish(&upload, &tus, None).await?;
            length = length.saturating_add(tus.offset);
        }
        // No quota check: the partials are counted already, and the final
        // replaces them.
        self.check_size(actor, project, length).await?;

        let (new, mut tus) = meta.rows(actor, Some(length), length, raw, self.clock.now());
        tus.concat = Some(TusConcat::Final(partials.to_vec()));
        let upload = match self
            .store
            .tus_create(actor.tenant_id, &new, &tus, idempotency)
            .await?
        {
            Creation::Created(upload) => upload,
            replayed @ Creation::Replayed { .. } => {
                return self.tus_replayed(actor, replayed).await;
            }
        };
        self.observe_initiated(&upload).await;
        tracing::info!(upload_id = %new.id, project_id = %meta.project_id, length, parts = partials.len(), "tus final upload created");
        let state = initial_state(&tus);
        let upload = self.tus_finish(&upload, &state, None).await?;
        Ok((TusInfo::new(&upload, &state), true))
    }

    /// Streams the partials' objects, in order, into the final object. A
    /// partial that is gone (it expired before a crashed creation was
    /// redone) makes the final upload gone too.
    pub(super) async fn concat_assemble(
        &self,
        upload: &Upload,
        partials: &[UploadId],
        length: u64,
        key: &ObjectKey,
    ) -> Result<(), CoreError> {
        let mut keys = Vec::with_capacity(partials.len());
        for &id in partials {
            match self.store.upload_get(upload.tenant_id, id).await? {
                Some(p) if p.status == UploadStatus::Pending && p.deleted_at.is_none() => {
                    keys.push(internal_key(&p.object_key)?);
                }
                _ => {
                    self.tus_expire(upload.tenant_id, upload.id).await?;
                    return Err(conflict(
                        codes::GONE,
                        "a partial upload of this final upload is gone",
                    ));
                }
            }
        }
        let blobs = self.blobs.clone();
        let body: ByteStream = Box::pin(
            futures_util::stream::iter(keys)
                .then(move |k| {
                    let blobs = blobs.clone();
                    async move { blobs.get(&k, None).await.map(|(_, stream)| stream) }
                })
                .try_flatten(),
        );
        let meta = self
            .blobs
            .put(key, upload.content_type.as_str(), body)
            .await
            .map_err(storage)?;
        if meta.size != length {
            self.blobs.delete(key).await.map_err(storage)?;
            return Err(internal(format!(
                "upload {}: its partials hold {} bytes, not {length}",
                upload.id, meta.size
            )));
        }
        Ok(())
    }

    /// After the final upload is `UPLOADED`: the partials are used up. A
    /// failure here leaves a partial `PENDING`; it expires and the sweeper
    /// deletes it, so it is only logged.
    pub(super) async fn concat_consume(&self, upload: &Upload, partials: &[UploadId]) {
        for &id in partials {
            if let Err(e) = self.tus_expire(upload.tenant_id, id).await {
                tracing::warn!(error = %e, upload_id = %id, final_id = %upload.id, "could not remove a used partial upload; it will expire");
            }
        }
    }
}
