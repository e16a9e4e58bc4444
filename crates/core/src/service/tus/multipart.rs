//! tus on a store that cannot append (S3): a multipart upload with a part
//! size fixed at creation, the parts recorded in our own ledger, and the
//! bytes past the last full part in a tail object named by its offset. The
//! design is in the parent module's documentation.

use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use super::{Checksum, Tally, codes, conflict, internal, internal_key, verify_checksum};
use crate::blob::{BlobError, ByteStream, CompletedPart, ObjectKey};
use crate::error::CoreError;
use crate::ports::{TusMultipart, TusPart, TusState};
use crate::service::Service;
use crate::service::uploads::storage;
use crate::upload::{Sha256Hex, Upload};

impl Service {
    /// Writes one PATCH body after the acknowledged offset: fills parts,
    /// uploads and records each, and keeps the rest in a new tail object.
    /// Returns the new acknowledged offset and the body's interruption, if
    /// any (what arrived before it is kept, as on the local store).
    ///
    /// Without a checksum every full part is acknowledged as soon as it is
    /// stored, so a long PATCH cut by a crash keeps its full parts. With one,
    /// nothing is recorded before the whole chunk is verified; parts that
    /// were uploaded for a refused chunk are overwritten by the next PATCH
    /// (same numbers) and left out of the completion otherwise.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn multipart_write(
        &self,
        upload: &Upload,
        tus: &TusState,
        mp: &TusMultipart,
        token: uuid::Uuid,
        mut body: ByteStream,
        tally: &Mutex<Tally>,
        checksum: Option<&Checksum>,
    ) -> Result<(u64, Option<BlobError>), CoreError> {
        let key = internal_key(&upload.object_key)?;
        let staging = internal_key(&tus.staging_key)?;
        let part_size = usize::try_from(mp.part_size)
            .map_err(|_| internal(format!("part size {} too large", mp.part_size)))?;
        let recorded = self.store.tus_parts(upload.tenant_id, upload.id).await?;
        // Bytes in parts, recorded or about to be.
        let mut end: u64 = recorded.iter().map(|p| p.size).sum();
        let mut number =
            u32::try_from(recorded.len() + 1).map_err(|_| internal("too many parts".to_owned()))?;
        if end > tus.offset {
            return Err(internal(format!(
                "upload {}: its parts hold {end} bytes, its offset is {}",
                upload.id, tus.offset
            )));
        }
        let mut acked = tus.offset;
        // The tail the acknowledged offset relies on, until it moves past.
        let mut old_tail = (tus.offset > end).then(|| ObjectKey::tus_tail(&staging, tus.offset));
        let mut buf = BytesMut::with_capacity(part_size);
        if let Some(tail) = &old_tail {
            let (_, mut stream) = self.blobs.get(tail, None).await.map_err(storage)?;
            while let Some(chunk) = stream.next().await {
                buf.extend_from_slice(&chunk.map_err(storage)?);
            }
            if buf.len() as u64 != tus.offset - end {
                return Err(internal(format!(
                    "{tail} holds {} bytes, the offset needs {}",
                    buf.len(),
                    tus.offset - end
                )));
            }
        }
        let progressive = checksum.is_none();
        let mut pending = Vec::new();
        let mut received = 0u64;
        let mut interrupted = None;
        loop {
            let chunk = match body.next().await {
                None => break,
                Some(Err(e)) => {
                    interrupted = Some(e);
                    break;
                }
                Some(Ok(chunk)) => chunk,
            };
            received += chunk.len() as u64;
            buf.extend_from_slice(&chunk);
            while buf.len() >= part_size {
                let data = buf.split_to(part_size).freeze();
                let part = self.put_tus_part(&key, mp, number, data).await?;
                number += 1;
                end += part.size;
                if progressive {
                    self.advance(upload, token, acked, end, std::slice::from_ref(&part))
                        .await?;
                    acked = end;
                    if let Some(tail) = old_tail.take() {
                        self.delete_quietly(&tail).await;
                    }
                } else {
                    pending.push(part);
                }
            }
        }
        verify_checksum(tally, checksum, interrupted.is_some())?;
        let offset = tus.offset + received;
        if offset == acked {
            return Ok((offset, interrupted));
        }
        let mut new_tail = None;
        if !buf.is_empty() {
            if tus.length == Some(offset) {
                // The last part may be smaller than the others.
                pending.push(self.put_tus_part(&key, mp, number, buf.freeze()).await?);
            } else {
                let tail = ObjectKey::tus_tail(&staging, offset);
                let data = buf.freeze();
                let body: ByteStream =
                    Box::pin(futures_util::stream::once(async move { Ok(data) }));
                self.blobs
                    .put(&tail, "application/octet-stream", body)
                    .await
                    .map_err(storage)?;
                new_tail = Some(tail);
            }
        }
        if let Err(e) = self.advance(upload, token, acked, offset, &pending).await {
            if let Some(tail) = new_tail {
                self.delete_quietly(&tail).await;
            }
            return Err(e);
        }
        if let Some(tail) = old_tail {
            self.delete_quietly(&tail).await;
        }
        Ok((offset, interrupted))
    }

    /// Completes the multipart upload from the ledger.
    pub(super) async fn multipart_finish(
        &self,
        upload: &Upload,
        mp: &TusMultipart,
        length: u64,
        key: &ObjectKey,
    ) -> Result<(), CoreError> {
        let parts = self.store.tus_parts(upload.tenant_id, upload.id).await?;
        let total: u64 = parts.iter().map(|p| p.size).sum();
        if total != length {
            return Err(internal(format!(
                "upload {}: its parts hold {total} bytes, its length is {length}",
                upload.id
            )));
        }
        let completed: Vec<CompletedPart> = parts
            .into_iter()
            .map(|p| CompletedPart {
                number: p.number,
                etag: p.etag,
            })
            .collect();
        let meta = self
            .blobs
            .multipart_complete(key, &mp.upload_id, &completed)
            .await
            .map_err(storage)?;
        if meta.size != length {
            return Err(internal(format!(
                "upload {}: the completed object has {} bytes, not {length}",
                upload.id, meta.size
            )));
        }
        Ok(())
    }

    /// Uploads part `number`, hashing it meanwhile for the ledger.
    async fn put_tus_part(
        &self,
        key: &ObjectKey,
        mp: &TusMultipart,
        number: u32,
        data: Bytes,
    ) -> Result<TusPart, CoreError> {
        let size = data.len() as u64;
        let hashing = data.clone();
        // Off the async workers: a part is megabytes.
        let digest = tokio::task::spawn_blocking(move || hex::encode(Sha256::digest(&hashing)));
        let put = self
            .blobs
            .multipart_put_part(key, &mp.upload_id, number, data);
        let (digest, etag) = tokio::join!(digest, put);
        let etag = etag.map_err(storage)?;
        let digest = digest.map_err(|e| CoreError::Internal(Box::new(e)))?;
        Ok(TusPart {
            number,
            etag,
            size,
            sha256: Sha256Hex::parse(&digest).map_err(|e| internal(e.message))?,
        })
    }

    /// Moves the acknowledged offset `from → to` with `parts`, under the
    /// lease `token` (423 if it was lost).
    async fn advance(
        &self,
        upload: &Upload,
        token: uuid::Uuid,
        from: u64,
        to: u64,
        parts: &[TusPart],
    ) -> Result<(), CoreError> {
        let now = self.clock.now();
        if self
            .store
            .tus_advance(upload.tenant_id, upload.id, token, from, to, parts, now)
            .await?
        {
            Ok(())
        } else {
            Err(conflict(codes::LOCKED, "the upload's lease was lost"))
        }
    }

    /// A tail no acknowledged offset relies on any more: garbage, so a
    /// failure to delete it is only logged (the sweeper's prefix cleanup
    /// does not reach it; it is small).
    async fn delete_quietly(&self, key: &ObjectKey) {
        if let Err(e) = self.blobs.delete(key).await {
            tracing::warn!(error = %e, key = %key, "could not delete a tus tail");
        }
    }
}
