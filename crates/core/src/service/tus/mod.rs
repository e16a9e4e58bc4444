//! tus 1.0 resumable uploads (<https://tus.io/protocols/resumable-upload>).
//!
//! # Design
//!
//! **A tus upload is an ordinary upload.** Creation writes an `uploads` row
//! (`PENDING`, `Transfer::Single`, the usual `ObjectKey::original`) and, in
//! the same transaction, a `tus_uploads` row (migration `0005_tus.sql`) with
//! what tus adds: the acknowledged offset, the length (NULL until declared,
//! for creation-defer-length), the raw `Upload-Metadata`, the staging key and
//! the PATCH lease. When the last byte is acknowledged the staging object
//! becomes the original and `Service::mark_uploaded` sets `UPLOADED` and
//! enqueues `process_upload` in one transaction, exactly as the signed flow's
//! `complete_upload` does; processing, listing, download, trash and purge
//! then know nothing of tus.
//!
//! **Limits** are those of the signed flow, checked at creation by the same
//! code (`check_size`, `check_quota` in `uploads.rs`): project not archived,
//! size ≤ the tenant's maximum (413), quota (409 `quota_exceeded`), type
//! allowlist on `filetype` when given (415; processing sniffs the content
//! always). With creation-defer-length the size and quota are checked when
//! the length is declared (the first PATCH that carries `Upload-Length`), and
//! until then no PATCH may go past the tenant's maximum.
//!
//! **State lives in the database**, so any replica answers any request: no
//! sticky sessions, no lock service. The offset in `tus_uploads` is the
//! truth; bytes that staging holds past it are garbage that the next append
//! drops first (`BlobStore::staging_append` truncates to the offset).
//!
//! **Concurrent PATCHes** of one upload are serialised by a lease in the
//! `tus_uploads` row (`lock_token`, `lock_until`): a PATCH takes it with a
//! fresh token for [`LEASE`], renews it every [`RENEW_EVERY`] while the body
//! streams, and gives it back at the end. A PATCH that finds another live
//! lease gets **423 Locked with `Retry-After: 1`** and nothing changes
//! (tus-js-client retries 423 by default). The offset is advanced only by a
//! statement that names the token and the expected old offset (fencing), so
//! a writer that lost its lease (stalled past [`LEASE`]) cannot move the
//! offset; it stops appending as soon as a renewal fails. After a crash the
//! lease of the dead process runs out within [`LEASE`] (seconds: inside tus
//! clients' retry delays); until then a resume answers 423. A process that
//! died after acknowledging the last byte but before finishing leaves a
//! complete `PENDING` upload: HEAD answers 423 while its lease lives (tus
//! clients stop at a complete offset, so one is never reported for an
//! upload that is not `UPLOADED`) and then finishes it, and the uploads
//! sweeper finishes those no client comes back for; it never expires them. Residual risk, documented: a writer stalled inside one disk
//! write for longer than [`LEASE`] could still append after another writer
//! took over; its bytes are past no acknowledged offset of the new writer
//! only if the new writer truncated first, which it does, but the two
//! appends may interleave. The same file's bytes are normally sent by both.
//!
//! **Durability.** The local store appends to a staging file and fsyncs
//! before `staging_append` returns; only then does the offset advance and the
//! 204 go out. An acknowledged offset therefore survives kill -9. Bytes that
//! arrived before a dropped connection are fsynced and acknowledged in the
//! database as well (tus "bytes received before an interruption are kept");
//! the PATCH runs in a task of its own so that a dropped connection does not
//! cancel it halfway.
//!
//! **Checksums** (`Upload-Checksum: sha1|sha256 <base64>`): the chunk is
//! hashed as it streams into staging; the offset advances only if the digest
//! matches (460 otherwise, offset unchanged; the bytes past the offset are
//! dropped by the next append). An interrupted chunk with a checksum cannot
//! be verified and is discarded as a whole.
//!
//! **Expiration.** `uploads.expires_at` is the tus expiry ([`EXPIRY`] after
//! creation, sent as `Upload-Expires`); the uploads sweeper turns due
//! `PENDING` rows `EXPIRED` and deletes their staging object too. An expired,
//! terminated or trashed upload answers 410.
//!
//! **Termination** (DELETE): a pending upload becomes `EXPIRED` at once and
//! its staging object is deleted (204, then 410); a finished one goes to the
//! trash like `DELETE /v1/uploads/{id}`.
//!
//! **Authorization on every request**: HEAD needs read access to the
//! project; PATCH and DELETE are for the uploader (while it may still upload
//! there) or whoever manages the project. Another tenant's upload, or one in
//! a project the actor cannot see, answers 404.
//!
//! **Stores without staging (S3)** — `multipart.rs`: creation starts an S3
//! multipart upload for the original with a part size fixed then
//! (`tus_uploads.part_size`: the signed flow's part plan for the upload's
//! length, or the tenant's maximum when deferred; at least 5 MiB). A PATCH
//! fills a buffer of one part; every full part is uploaded and recorded in
//! the `tus_parts` ledger (number, ETag, size, SHA-256) in the transaction
//! that advances the offset. Bytes past the last full part go to a tail
//! object named by the offset they end at (`ObjectKey::tus_tail`), written
//! before the offset advances, so the acknowledged offset always points at
//! a complete tail that no later write touches; the next PATCH reads it back
//! into its buffer. The last byte uploads the rest as the last part and the
//! upload is completed from the ledger, never from ListParts. Termination
//! and expiry abort the multipart upload and delete the tail. Memory: one
//! part per running PATCH.
//!
//! **Concatenation** — `concat.rs`: a partial upload (`Upload-Concat:
//! partial`) is a tus upload like any other, with its own `project_id`,
//! limits and object, except that its last byte does not make it
//! `UPLOADED`: it stays `PENDING` (and expires like any pending upload)
//! until a final upload (`Upload-Concat: final;/v1/tus/a /v1/tus/b`) names
//! it. Creating the final upload checks that every partial is the actor's
//! to write, in the same project, complete and not used up; writes the final
//! row whole (offset = length, the sum); streams the partials' objects, in
//! order, into the final object; marks it `UPLOADED` (processing job
//! enqueued); and only then terminates the partials. A crash in between
//! leaves a final row whose HEAD redoes the assembly. PATCH on a final
//! upload answers 403. Partials must be complete when the final is created
//! (`concatenation-unfinished` is not announced).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use futures_core::Stream;
use sha2::{Digest, Sha256};

mod concat;
mod multipart;

use super::uploads::storage;
use super::{Actor, Service};
use crate::blob::{BlobError, ByteStream, ObjectKey, StagedWrite};
use crate::error::{CoreError, Invalid};
use crate::ids::{ProjectId, TenantId, UploadId};
use crate::policy::ProjectAction;
use crate::ports::{
    Creation, IdempotencyKey, NewTus, NewUpload, TusConcat, TusMultipart, TusState,
};
use crate::upload::plan_parts;
use crate::upload::{ContentType, Filename, Transfer, Upload, UploadStatus};

pub const TUS_VERSION: &str = "1.0.0";
/// What `Tus-Extension` announces.
pub const TUS_EXTENSIONS: &str = "creation,creation-with-upload,creation-defer-length,termination,checksum,expiration,concatenation";
pub const TUS_CHECKSUM_ALGORITHMS: &str = "sha1,sha256";
/// How long a tus upload may take from creation to its last byte.
pub const EXPIRY: Duration = Duration::hours(24);
/// How long a PATCH lease lasts without renewal: after a process dies, its
/// uploads are free again within this, inside tus clients' retry delays
/// (tus-js-client retries after 0, 1, 3 and 5 s).
pub const LEASE: Duration = Duration::seconds(4);
/// How often a streaming PATCH renews its lease (a quarter of it: a renewal
/// may be late by a slow database round trip or two).
pub const RENEW_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Conflict codes the tus driver maps to tus's own statuses.
pub mod codes {
    /// 409: `Upload-Offset` is not the upload's offset.
    pub const OFFSET_MISMATCH: &str = "offset_mismatch";
    /// 423: another PATCH holds the lease.
    pub const LOCKED: &str = "upload_locked";
    /// 460: the chunk does not match `Upload-Checksum`.
    pub const CHECKSUM_MISMATCH: &str = "checksum_mismatch";
    /// 410: expired, terminated or trashed.
    pub const GONE: &str = "upload_gone";
    /// 413: more bytes than the upload's length (or the maximum) allows.
    pub const EXCEEDS_LENGTH: &str = "exceeds_length";
    /// 400: a deferred length declared twice, or differently.
    pub const LENGTH_CONFLICT: &str = "length_conflict";
    /// 403: a final upload is whole at creation; it takes no PATCH.
    pub const FINAL_UPLOAD: &str = "final_upload_immutable";
    /// 400: a final upload names something that is not a complete partial
    /// upload of the actor's in the same project.
    pub const INVALID_CONCAT: &str = "invalid_concat";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    Sha1,
    Sha256,
}

/// A parsed `Upload-Checksum`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    pub algorithm: ChecksumAlgorithm,
    pub digest: Vec<u8>,
}

impl Checksum {
    /// `sha1 <base64>` or `sha256 <base64>`; anything else is refused (400).
    pub fn parse(header: &str) -> Result<Self, CoreError> {
        let bad = |code, msg: &str| CoreError::invalid("Upload-Checksum", Invalid::new(code, msg));
        let (name, value) = header
            .trim()
            .split_once(' ')
            .ok_or_else(|| bad("invalid_checksum", "expected `<algorithm> <base64>`"))?;
        let (algorithm, len) = match name {
            "sha1" => (ChecksumAlgorithm::Sha1, 20),
            "sha256" => (ChecksumAlgorithm::Sha256, 32),
            _ => {
                return Err(bad(
                    "unsupported_checksum_algorithm",
                    "supported algorithms: sha1, sha256",
                ));
            }
        };
        let digest = B64
            .decode(value.trim())
            .ok()
            .filter(|d| d.len() == len)
            .ok_or_else(|| bad("invalid_checksum", "not a base64 digest of that algorithm"))?;
        Ok(Self { algorithm, digest })
    }
}

/// What a creation request says.
#[derive(Debug, Clone, Default)]
pub struct TusCreateInput {
    /// `Upload-Length`.
    pub length: Option<u64>,
    /// `Upload-Defer-Length: 1`.
    pub defer_length: bool,
    /// The raw `Upload-Metadata`.
    pub metadata: Option<String>,
    /// `Upload-Concat`.
    pub concat: Option<TusConcat>,
    /// `Idempotency-Key`: a retried creation (same key, same headers) gets
    /// the upload the first one created, at its current offset.
    pub idempotency_key: Option<String>,
}

impl TusCreateInput {
    /// The key with a digest of what the creation asks for.
    fn idempotency(&self) -> Result<Option<IdempotencyKey>, CoreError> {
        let Some(key) = self.idempotency_key.as_deref() else {
            return Ok(None);
        };
        let key = super::parse_idempotency_key(key)
            .map_err(|e| CoreError::invalid("idempotency_key", e))?;
        let length = self.length.map(|l| l.to_string());
        let concat = self.concat.as_ref().map(|c| match c {
            TusConcat::Partial => "partial".to_owned(),
            TusConcat::Final(ids) => ids.iter().fold("final;".to_owned(), |mut s, id| {
                s.push(' ');
                s.push_str(&id.to_string());
                s
            }),
        });
        Ok(Some(IdempotencyKey {
            request_hash: super::request_digest(&[
                Some("tus"),
                self.metadata.as_deref(),
                length.as_deref(),
                Some(if self.defer_length { "defer" } else { "" }),
                concat.as_deref(),
            ]),
            key,
        }))
    }
}

/// What a PATCH (or a creation-with-upload) says besides its body.
#[derive(Debug, Clone, Default)]
pub struct TusPatchInput {
    pub offset: u64,
    /// `Upload-Length`, to declare a deferred length.
    pub length: Option<u64>,
    pub checksum: Option<Checksum>,
    /// `Content-Length`, when the client sent one.
    pub content_length: Option<u64>,
}

/// What tus responses report about an upload.
#[derive(Debug, Clone)]
pub struct TusInfo {
    pub id: UploadId,
    pub offset: u64,
    pub length: Option<u64>,
    pub metadata: String,
    /// Set while the upload is pending.
    pub expires_at: Option<DateTime<Utc>>,
    pub status: UploadStatus,
    pub concat: Option<TusConcat>,
}

impl TusInfo {
    fn new(upload: &Upload, tus: &TusState) -> Self {
        Self {
            id: upload.id,
            offset: tus.offset,
            length: tus.length,
            metadata: tus.metadata.clone(),
            expires_at: (upload.status == UploadStatus::Pending).then_some(upload.expires_at),
            status: upload.status,
            concat: tus.concat.clone(),
        }
    }
}

/// `Upload-Metadata`: comma-separated `key base64value` pairs (the value may
/// be absent). Keys must be unique.
pub fn parse_metadata(raw: &str) -> Result<Vec<(String, Option<String>)>, CoreError> {
    let bad = |msg: &str| {
        CoreError::invalid(
            "Upload-Metadata",
            Invalid::new("invalid_metadata", msg.to_owned()),
        )
    };
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut it = pair.split(' ').filter(|s| !s.is_empty());
        let key = it.next().ok_or_else(|| bad("empty pair"))?;
        let value = match it.next() {
            Some(v) => {
                let bytes = B64.decode(v).map_err(|_| bad("a value is not base64"))?;
                Some(String::from_utf8(bytes).map_err(|_| bad("a value is not UTF-8"))?)
            }
            None => None,
        };
        if it.next().is_some() || out.iter().any(|(k, _)| k == key) {
            return Err(bad("malformed or repeated key"));
        }
        out.push((key.to_owned(), value));
    }
    Ok(out)
}

/// What creation reads from `Upload-Metadata`.
struct CreateMetadata {
    project_id: ProjectId,
    filename: Filename,
    content_type: ContentType,
}

impl CreateMetadata {
    fn parse(raw: &str) -> Result<Self, CoreError> {
        let metadata = parse_metadata(raw)?;
        let get = |k: &str| {
            metadata
                .iter()
                .find(|(key, _)| key == k)
                .and_then(|(_, v)| v.clone())
        };
        let project_id = get("project_id")
            .ok_or_else(|| {
                CoreError::invalid(
                    "project_id",
                    Invalid::new("required", "Upload-Metadata must carry project_id"),
                )
            })?
            .parse::<ProjectId>()
            .map_err(|_| {
                CoreError::invalid("project_id", Invalid::new("invalid_id", "not a project id"))
            })?;
        let filename = Filename::parse(get("filename").as_deref().unwrap_or("upload"))
            .map_err(|e| CoreError::invalid("filename", e))?;
        let content_type = match get("filetype") {
            Some(t) => ContentType::parse(&t).map_err(|e| CoreError::UnsupportedType(e.message))?,
            None => ContentType::UNDECLARED,
        };
        Ok(Self {
            project_id,
            filename,
            content_type,
        })
    }
}

impl CreateMetadata {
    /// The upload row and tus row of a new tus upload of `length` (`None`
    /// while deferred) with `offset` bytes already there and `metadata` the
    /// raw header; no multipart upload, no concatenation.
    fn rows(
        &self,
        actor: &Actor,
        length: Option<u64>,
        offset: u64,
        metadata: String,
        now: DateTime<Utc>,
    ) -> (NewUpload, NewTus) {
        let id = UploadId::new();
        let upload = NewUpload {
            id,
            project_id: self.project_id,
            uploaded_by: actor.user_id,
            filename: self.filename.clone(),
            content_type: self.content_type.clone(),
            size: length.unwrap_or(0),
            sha256: None,
            object_key: ObjectKey::original(actor.tenant_id, self.project_id, id),
            transfer: Transfer::Single,
            expires_at: now + EXPIRY,
            created_at: now,
        };
        let tus = NewTus {
            length,
            offset,
            metadata,
            staging_key: ObjectKey::tus_staging(actor.tenant_id, self.project_id, id),
            multipart: None,
            concat: None,
        };
        (upload, tus)
    }
}

/// The state a tus row starts in.
fn initial_state(tus: &NewTus) -> TusState {
    TusState {
        length: tus.length,
        offset: tus.offset,
        metadata: tus.metadata.clone(),
        staging_key: tus.staging_key.to_string(),
        multipart: tus.multipart.clone(),
        concat: tus.concat.clone(),
    }
}

fn conflict(code: &'static str, msg: &str) -> CoreError {
    CoreError::conflict(code, msg)
}

fn internal(msg: String) -> CoreError {
    CoreError::Internal(msg.into())
}

fn internal_key(s: &str) -> Result<ObjectKey, CoreError> {
    ObjectKey::parse(s).map_err(|e| internal(e.message))
}

impl Service {
    /// `Tus-Max-Size`: the service-wide maximum (a tenant may have less).
    pub fn tus_max_size(&self) -> u64 {
        self.uploads.max_upload_bytes
    }

    /// Creation: checks metadata, rights and limits, writes the upload and
    /// its tus row. Creation-with-upload then calls [`Self::tus_patch`]. A
    /// final concatenation is built here, whole (`concat.rs`).
    pub async fn tus_create(
        &self,
        actor: &Actor,
        input: TusCreateInput,
    ) -> Result<(TusInfo, bool), CoreError> {
        let idempotency = input.idempotency()?;
        if let Some(key) = &idempotency
            && let Some(replayed) = self
                .store
                .upload_replay(actor.tenant_id, actor.user_id, key)
                .await?
        {
            return self.tus_replayed(actor, replayed).await;
        }
        let raw = input.metadata.unwrap_or_default();
        let meta = CreateMetadata::parse(&raw)?;
        if let Some(TusConcat::Final(partials)) = input.concat {
            if input.length.is_some() || input.defer_length {
                return Err(CoreError::invalid(
                    "Upload-Length",
                    Invalid::new(
                        "not_allowed",
                        "a final upload takes its length from its partial uploads",
                    ),
                ));
            }
            return self
                .tus_concat_final(actor, meta, raw, partials, idempotency.as_ref())
                .await;
        }
        let length = match (input.length, input.defer_length) {
            (Some(_), true) | (None, false) => {
                return Err(CoreError::invalid(
                    "Upload-Length",
                    Invalid::new(
                        "required",
                        "send Upload-Length or Upload-Defer-Length: 1, not both",
                    ),
                ));
            }
            (Some(0), false) => {
                return Err(CoreError::invalid(
                    "Upload-Length",
                    Invalid::new("empty_file", "must be at least 1 byte"),
                ));
            }
            (length, _) => length,
        };
        let project = self
            .authorized_project(actor, meta.project_id, ProjectAction::Upload)
            .await?;
        let size = length.unwrap_or(0);
        let limits = self.check_size(actor, &project, size).await?;
        self.check_quota(actor, limits, size).await?;
        let (new, mut tus) = meta.rows(actor, length, 0, raw, self.clock.now());
        tus.concat = input.concat;
        // A store that cannot append takes the bytes as a multipart upload
        // whose part size is fixed now, for the largest length possible.
        tus.multipart = if self.blobs.supports_staging() {
            None
        } else {
            let most = length.unwrap_or(self.max_upload_bytes(limits));
            let (part_size, _) = plan_parts(most, self.uploads.min_part_size);
            let upload_id = self
                .blobs
                .multipart_create(&new.object_key, new.content_type.as_str())
                .await
                .map_err(storage)?;
            Some(TusMultipart {
                part_size,
                upload_id,
            })
        };
        let outcome = self
            .store
            .tus_create(actor.tenant_id, &new, &tus, idempotency.as_ref())
            .await;
        if !matches!(outcome, Ok(Creation::Created(_)))
            && let Some(mp) = &tus.multipart
            && let Err(abort) = self
                .blobs
                .multipart_abort(&new.object_key, &mp.upload_id)
                .await
        {
            tracing::warn!(error = %abort, "could not abort the multipart upload of a tus creation that wrote nothing");
        }
        let upload = match outcome? {
            Creation::Created(upload) => upload,
            replayed @ Creation::Replayed { .. } => {
                return self.tus_replayed(actor, replayed).await;
            }
        };
        self.observe_initiated(&upload).await;
        Ok((TusInfo::new(&upload, &initial_state(&tus)), true))
    }

    /// The answer to a creation whose idempotency key was used before: the
    /// upload it created, as it stands now.
    async fn tus_replayed(
        &self,
        actor: &Actor,
        replayed: Creation<Upload>,
    ) -> Result<(TusInfo, bool), CoreError> {
        let (upload, _) = super::replayed(replayed)?;
        let tus = self
            .store
            .tus_get(actor.tenant_id, upload.id)
            .await?
            .ok_or(CoreError::NotFound)?;
        Ok((TusInfo::new(&upload, &tus), false))
    }

    /// A tus upload as the actor may see it; 410 when it is gone.
    async fn tus_upload(
        &self,
        actor: &Actor,
        id: UploadId,
        write: bool,
    ) -> Result<(Upload, TusState), CoreError> {
        let upload = if write {
            self.owned_upload(actor, id).await?
        } else {
            self.authorized_upload(actor, id, ProjectAction::Read)
                .await?
        };
        let tus = self
            .store
            .tus_get(actor.tenant_id, id)
            .await?
            .ok_or(CoreError::NotFound)?;
        let expired = upload.status == UploadStatus::Expired
            || (upload.status == UploadStatus::Pending && upload.expires_at <= self.clock.now());
        if expired || upload.deleted_at.is_some() {
            return Err(conflict(
                codes::GONE,
                "the upload expired or was terminated",
            ));
        }
        Ok((Arc::unwrap_or_clone(upload), tus))
    }

    /// HEAD. Also finishes an upload whose last byte was acknowledged by a
    /// process that died before it could finish it. While that process's
    /// lease is live (at most [`LEASE`]), such an upload answers 423 so the
    /// client asks again: a complete offset is never reported for an upload
    /// that is not `UPLOADED`, or tus clients would stop there.
    pub async fn tus_head(
        &self,
        actor: &Actor,
        id: UploadId,
        trace_context: Option<String>,
    ) -> Result<TusInfo, CoreError> {
        let (mut upload, tus) = self.tus_upload(actor, id, false).await?;
        if upload.status == UploadStatus::Pending && tus.length == Some(tus.offset) {
            let token = uuid::Uuid::now_v7();
            let now = self.clock.now();
            if self
                .store
                .tus_lock(actor.tenant_id, id, token, now + LEASE, now)
                .await?
            {
                let finished = self.tus_finish(&upload, &tus, trace_context).await;
                self.unlock(actor, id, token).await;
                upload = finished?;
            } else {
                return Err(conflict(
                    codes::LOCKED,
                    "the upload's last bytes are being stored; ask again",
                ));
            }
        }
        Ok(TusInfo::new(&upload, &tus))
    }

    /// Finishes the pending uploads whose bytes are all stored and whose
    /// lease is free: their last PATCH was acknowledged by a process that
    /// died before it could finish them, and their client, told the offset
    /// is complete, will not come back. Returns how many were finished.
    pub(crate) async fn tus_finish_stalled(&self, batch: u32) -> Result<usize, CoreError> {
        let now = self.clock.now();
        let mut finished = 0;
        for upload in self.store.tus_finish_due(now, batch).await? {
            let (tenant, id) = (upload.tenant_id, upload.id);
            let token = uuid::Uuid::now_v7();
            if !self
                .store
                .tus_lock(tenant, id, token, now + LEASE, now)
                .await?
            {
                continue;
            }
            let done = match self.store.tus_get(tenant, id).await {
                Ok(Some(tus)) if tus.length == Some(tus.offset) => {
                    self.tus_finish(&upload, &tus, None).await.map(|_| ())
                }
                Ok(_) => Ok(()),
                Err(e) => Err(e.into()),
            };
            if let Err(e) = self.store.tus_unlock(tenant, id, token).await {
                tracing::warn!(error = %e, upload_id = %id, "could not release a tus lease");
            }
            self.invalidate_upload(tenant, id).await;
            match done {
                Ok(()) => finished += 1,
                Err(e) => {
                    tracing::warn!(upload_id = %id, error = %e, "could not finish a stalled tus upload")
                }
            }
        }
        Ok(finished)
    }

    /// Takes the upload's lease for `token`, or 423 saying `busy`.
    async fn lease(
        &self,
        actor: &Actor,
        id: UploadId,
        token: uuid::Uuid,
        busy: &str,
    ) -> Result<(), CoreError> {
        let now = self.clock.now();
        if self
            .store
            .tus_lock(actor.tenant_id, id, token, now + LEASE, now)
            .await?
        {
            Ok(())
        } else {
            Err(conflict(codes::LOCKED, busy))
        }
    }

    async fn unlock(&self, actor: &Actor, id: UploadId, token: uuid::Uuid) {
        if let Err(e) = self.store.tus_unlock(actor.tenant_id, id, token).await {
            // The lease runs out by itself.
            tracing::warn!(error = %e, upload_id = %id, "could not release a tus lease");
        }
    }

    /// Staging (or the recorded parts, or the partials) → the original, then
    /// `UPLOADED` + job; a partial upload stays `PENDING`. Idempotent.
    async fn tus_finish(
        &self,
        upload: &Upload,
        tus: &TusState,
        trace_context: Option<String>,
    ) -> Result<Upload, CoreError> {
        let length = tus.length.unwrap_or(tus.offset);
        let key = internal_key(&upload.object_key)?;
        let done =
            matches!(self.blobs.head(&key).await.map_err(storage)?, Some(m) if m.size == length);
        if !done {
            match (&tus.concat, &tus.multipart) {
                (Some(TusConcat::Final(partials)), _) => {
                    self.concat_assemble(upload, partials, length, &key).await?;
                }
                (_, Some(mp)) => self.multipart_finish(upload, mp, length, &key).await?,
                (_, None) => {
                    self.blobs
                        .staging_finish(&internal_key(&tus.staging_key)?, length, &key)
                        .await
                        .map_err(storage)?;
                }
            }
        }
        match &tus.concat {
            Some(TusConcat::Partial) => Ok(upload.clone()),
            Some(TusConcat::Final(partials)) => {
                let done = self.mark_uploaded(upload, trace_context).await?;
                self.concat_consume(upload, partials).await;
                Ok(done)
            }
            None => self.mark_uploaded(upload, trace_context).await,
        }
    }

    /// Deletes the staged bytes of a pending (or just expired) tus upload:
    /// staging, or the multipart upload and its tail. Idempotent; nothing to
    /// do for uploads that are not tus uploads.
    pub(super) async fn tus_discard(&self, upload: &Upload) -> Result<(), CoreError> {
        let Some(tus) = self.store.tus_get(upload.tenant_id, upload.id).await? else {
            return Ok(());
        };
        let key = internal_key(&upload.object_key)?;
        let staging = internal_key(&tus.staging_key)?;
        match &tus.multipart {
            Some(mp) => {
                self.blobs
                    .multipart_abort(&key, &mp.upload_id)
                    .await
                    .map_err(storage)?;
                self.blobs
                    .delete(&ObjectKey::tus_tail(&staging, tus.offset))
                    .await
                    .map_err(storage)?;
            }
            None => self.blobs.staging_delete(&staging).await.map_err(storage)?,
        }
        Ok(())
    }

    /// Expires a pending tus upload now (termination, a used-up partial, a
    /// final whose partials are gone) and deletes all it holds: its staged
    /// bytes and its object, if one was made (a complete partial upload, or
    /// one a process finished before it died). `None` if it is gone; an
    /// upload that is no longer pending comes back untouched.
    async fn tus_expire(
        &self,
        tenant: TenantId,
        id: UploadId,
    ) -> Result<Option<Upload>, CoreError> {
        let expired = self.store.tus_terminate(tenant, id, self.clock.now()).await;
        self.invalidate_upload(tenant, id).await;
        let Some(upload) = expired? else {
            return Ok(None);
        };
        if upload.status == UploadStatus::Expired {
            self.tus_discard(&upload).await?;
            self.blobs
                .delete(&internal_key(&upload.object_key)?)
                .await
                .map_err(storage)?;
        }
        Ok(Some(upload))
    }

    /// PATCH: appends the body at `input.offset` under the lease, and
    /// finishes the upload on its last byte.
    pub async fn tus_patch(
        &self,
        actor: &Actor,
        id: UploadId,
        input: TusPatchInput,
        body: ByteStream,
        trace_context: Option<String>,
    ) -> Result<TusInfo, CoreError> {
        let (upload, mut tus) = self.tus_upload(actor, id, true).await?;
        if matches!(tus.concat, Some(TusConcat::Final(_))) {
            return Err(conflict(
                codes::FINAL_UPLOAD,
                "a final upload is whole at creation and takes no PATCH",
            ));
        }
        if input.offset != tus.offset {
            return Err(conflict(
                codes::OFFSET_MISMATCH,
                "Upload-Offset is not the upload's offset; HEAD it and resume from there",
            ));
        }
        if upload.status != UploadStatus::Pending {
            // Complete already: a repeated last PATCH with an empty body.
            return Ok(TusInfo::new(&upload, &tus));
        }
        if tus.length == Some(tus.offset) {
            // Every byte is in (a partial upload stays pending), or the
            // process that took the last byte died before finishing: HEAD
            // finishes it.
            return self.tus_head(actor, id, trace_context).await;
        }
        match (tus.length, input.length) {
            (Some(a), Some(b)) if a != b => {
                return Err(conflict(codes::LENGTH_CONFLICT, "Upload-Length differs"));
            }
            (None, Some(length)) => {
                if length < tus.offset || length == 0 {
                    return Err(conflict(
                        codes::LENGTH_CONFLICT,
                        "Upload-Length is below the offset",
                    ));
                }
                let project = self
                    .authorized_project(actor, upload.project_id, ProjectAction::Upload)
                    .await?;
                let limits = self.check_size(actor, &project, length).await?;
                self.check_quota(actor, limits, length).await?;
                let now = self.clock.now();
                let declared = self
                    .store
                    .tus_declare_length(actor.tenant_id, id, length, now)
                    .await;
                // The upload row's size changed.
                self.invalidate_upload(actor.tenant_id, id).await;
                if !declared? {
                    return Err(conflict(
                        codes::LENGTH_CONFLICT,
                        "the length is already set",
                    ));
                }
                tus.length = Some(length);
            }
            _ => {}
        }
        let limits = self.store.tenant_limits(actor.tenant_id).await?;
        let end = tus.length.unwrap_or(self.max_upload_bytes(limits));
        let room = end.saturating_sub(tus.offset);
        if input.content_length.is_some_and(|n| n > room) {
            return Err(conflict(
                codes::EXCEEDS_LENGTH,
                "the chunk goes past the upload's length",
            ));
        }

        let token = uuid::Uuid::now_v7();
        self.lease(
            actor,
            id,
            token,
            "another request is writing to this upload",
        )
        .await?;
        let result = self
            .locked_patch(actor, &upload, tus, token, input, room, body, trace_context)
            .await;
        self.unlock(actor, id, token).await;
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn locked_patch(
        &self,
        actor: &Actor,
        upload: &Upload,
        tus: TusState,
        token: uuid::Uuid,
        input: TusPatchInput,
        room: u64,
        body: ByteStream,
        trace_context: Option<String>,
    ) -> Result<TusInfo, CoreError> {
        let id = upload.id;
        // The offset may have moved between the read and the lock.
        let tus = match self.store.tus_get(actor.tenant_id, id).await? {
            Some(fresh) if fresh.offset == input.offset => TusState {
                length: fresh.length.or(tus.length),
                ..fresh
            },
            Some(_) => {
                return Err(conflict(
                    codes::OFFSET_MISMATCH,
                    "Upload-Offset is not the upload's offset; HEAD it and resume from there",
                ));
            }
            None => return Err(CoreError::NotFound),
        };
        let shared = Arc::new(Mutex::new(Tally {
            bytes: 0,
            hasher: input.checksum.as_ref().map(|c| match c.algorithm {
                ChecksumAlgorithm::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
                ChecksumAlgorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            }),
            over: false,
        }));
        let counted: ByteStream = Box::pin(Counted {
            inner: body,
            tally: shared.clone(),
            room,
        });
        let checksum = input.checksum.as_ref();
        let (new_offset, interrupted) = match &tus.multipart {
            Some(mp) => {
                let write =
                    self.multipart_write(upload, &tus, mp, token, counted, &shared, checksum);
                self.with_lease(actor, id, token, write).await?
            }
            None => {
                let staging = internal_key(&tus.staging_key)?;
                let append = async {
                    self.blobs
                        .staging_append(&staging, tus.offset, counted)
                        .await
                        .map_err(storage)
                };
                let staged: StagedWrite = self.with_lease(actor, id, token, append).await?;
                verify_checksum(&shared, checksum, staged.interrupted.is_some())?;
                let new_offset = tus.offset + staged.written;
                if staged.written > 0 {
                    let now = self.clock.now();
                    if !self
                        .store
                        .tus_advance(actor.tenant_id, id, token, tus.offset, new_offset, &[], now)
                        .await?
                    {
                        return Err(conflict(codes::LOCKED, "the upload's lease was lost"));
                    }
                }
                (new_offset, staged.interrupted)
            }
        };
        let over = shared.lock().unwrap_or_else(|e| e.into_inner()).over;
        let tus = TusState {
            offset: new_offset,
            ..tus
        };
        if over {
            return Err(conflict(
                codes::EXCEEDS_LENGTH,
                "the chunk goes past the upload's length; the bytes that fit were kept",
            ));
        }
        if let Some(e) = interrupted {
            tracing::info!(upload_id = %id, offset = new_offset, error = %e, "tus PATCH interrupted; received bytes kept");
        }
        let upload = if tus.length == Some(new_offset) {
            self.tus_finish(upload, &tus, trace_context).await?
        } else {
            upload.clone()
        };
        Ok(TusInfo::new(&upload, &tus))
    }

    /// Runs `work` (a PATCH's writing) while renewing the lease every
    /// [`RENEW_EVERY`]; if a renewal fails the work is dropped (423).
    async fn with_lease<T>(
        &self,
        actor: &Actor,
        id: UploadId,
        token: uuid::Uuid,
        work: impl std::future::Future<Output = Result<T, CoreError>>,
    ) -> Result<T, CoreError> {
        let renew = async {
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                if self.lease(actor, id, token, "lease lost").await.is_err() {
                    return;
                }
            }
        };
        match futures_util::future::select(Box::pin(work), Box::pin(renew)).await {
            futures_util::future::Either::Left((r, _)) => r,
            futures_util::future::Either::Right(_) => {
                Err(conflict(codes::LOCKED, "the upload's lease was lost"))
            }
        }
    }

    /// Termination: a pending upload is expired at once and its staged bytes
    /// deleted; a finished one goes to the trash.
    pub async fn tus_terminate(&self, actor: &Actor, id: UploadId) -> Result<(), CoreError> {
        let (upload, _) = self.tus_upload(actor, id, true).await?;
        if upload.status == UploadStatus::Pending {
            self.tus_expire(actor.tenant_id, id)
                .await?
                .ok_or(CoreError::NotFound)?;
        } else {
            let trashed = self
                .store
                .upload_trash(actor.tenant_id, id, self.clock.now())
                .await;
            self.invalidate_upload(actor.tenant_id, id).await;
            trashed?.ok_or(CoreError::NotFound)?;
        }
        Ok(())
    }
}

/// 460 unless the chunk hashed in `tally` matches `expected`; an
/// interrupted chunk cannot be verified.
fn verify_checksum(
    tally: &Mutex<Tally>,
    expected: Option<&Checksum>,
    interrupted: bool,
) -> Result<(), CoreError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    if interrupted {
        return Err(conflict(
            codes::CHECKSUM_MISMATCH,
            "the chunk was interrupted and cannot be verified; it was discarded",
        ));
    }
    let digest = tally
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .hasher
        .take()
        .map(Hasher::finish);
    if digest.as_deref() != Some(expected.digest.as_slice()) {
        return Err(conflict(
            codes::CHECKSUM_MISMATCH,
            "the chunk does not match Upload-Checksum; it was discarded",
        ));
    }
    Ok(())
}

enum Hasher {
    Sha1(sha1::Sha1),
    Sha256(Sha256),
}

impl Hasher {
    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
        }
    }
}

struct Tally {
    bytes: u64,
    hasher: Option<Hasher>,
    /// The body went past the room it had; it was cut there.
    over: bool,
}

/// The PATCH body on its way to staging: hashed for the checksum, and cut
/// (with an error, so storage keeps what fit) where it would pass `room`.
struct Counted {
    inner: ByteStream,
    tally: Arc<Mutex<Tally>>,
    room: u64,
}

impl Stream for Counted {
    type Item = Result<Bytes, BlobError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let room = self.room;
        let tally = self.tally.clone();
        let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
        if t.over {
            return Poll::Ready(None);
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(mut chunk))) => {
                let left = room - t.bytes;
                if chunk.len() as u64 > left {
                    t.over = true;
                    if left == 0 {
                        return Poll::Ready(Some(Err(BlobError::Denied("exceeds_length"))));
                    }
                    chunk.truncate(left as usize);
                }
                t.bytes += chunk.len() as u64;
                if let Some(h) = t.hasher.as_mut() {
                    h.update(&chunk);
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_parses() {
        let m = parse_metadata("filename Zm9vLmpwZw==,is_confidential, project_id YWJj").ok();
        assert_eq!(
            m,
            Some(vec![
                ("filename".to_owned(), Some("foo.jpg".to_owned())),
                ("is_confidential".to_owned(), None),
                ("project_id".to_owned(), Some("abc".to_owned())),
            ])
        );
        assert!(parse_metadata("a !!!").is_err());
        assert!(parse_metadata("a YQ==,a YQ==").is_err());
        assert!(parse_metadata("a YQ== YQ==").is_err());
    }

    #[test]
    fn checksums_parse() {
        let sha1 = format!("sha1 {}", B64.encode([0u8; 20]));
        assert!(Checksum::parse(&sha1).is_ok());
        assert!(Checksum::parse(&format!("sha256 {}", B64.encode([0u8; 32]))).is_ok());
        assert!(Checksum::parse("md5 AAAA").is_err());
        assert!(Checksum::parse(&format!("sha1 {}", B64.encode([0u8; 32]))).is_err());
    }
}
