//! The upload lifecycle: initiate (signed URLs), complete (check the bytes,
//! `UPLOADED` + processing job in one transaction), read, list, download,
//! trash and restore, and the sweepers that expire and purge.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};

use super::jobs::{JobSpec, ProcessUpload};
use super::{Actor, Service};
use crate::blob::{BlobError, CompletedPart, GetSpec, ObjectKey, PutSpec, SignedUrl};
use crate::error::{CoreError, Invalid};
use crate::ids::{JobId, ProjectId, UploadId, UserId};
use crate::model::Project;
use crate::model::Role;
use crate::pagination::{Page, PageRequest};
use crate::policy::{self, ProjectAction};
use crate::ports::{Creation, IdempotencyKey, NewJob, NewUpload, TenantLimits, UploadFilter};
use crate::upload::{ContentType, Filename, Sha256Hex, Transfer, Upload, UploadStatus, plan_parts};
use crate::validate;

/// Service-wide upload settings; per-tenant limits override the two limits.
#[derive(Debug, Clone)]
pub struct UploadSettings {
    /// Above this size an upload is multipart.
    pub multipart_threshold: u64,
    /// Smallest part of a multipart upload (S3 needs ≥ 5 MiB).
    pub min_part_size: u64,
    /// How long the signed upload URLs of a pending upload work.
    pub upload_url_ttl: Duration,
    /// How long a download link works.
    pub download_url_ttl: Duration,
    /// Default per-tenant maximum file size.
    pub max_upload_bytes: u64,
    /// Default per-tenant storage quota (`None`: unlimited).
    pub quota_bytes: Option<u64>,
    /// How long a trashed upload stays restorable.
    pub trash_retention: Duration,
}

impl Default for UploadSettings {
    fn default() -> Self {
        const MIB: u64 = 1024 * 1024;
        Self {
            multipart_threshold: 64 * MIB,
            min_part_size: 8 * MIB,
            upload_url_ttl: Duration::hours(1),
            download_url_ttl: Duration::minutes(5),
            max_upload_bytes: 5 * 1024 * MIB,
            quota_bytes: None,
            trash_retention: Duration::days(30),
        }
    }
}

#[derive(Debug, Clone)]
pub struct InitiateUploadInput {
    pub filename: String,
    pub content_type: String,
    pub size: u64,
    pub sha256: Option<String>,
    /// The client's `Idempotency-Key`.
    pub idempotency_key: Option<String>,
}

/// How the client sends the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadInstructions {
    Put(SignedUrl),
    Multipart {
        part_size: u64,
        /// One signed PUT per part, in order; the last part may be shorter.
        parts: Vec<(u32, SignedUrl)>,
        expires_at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone)]
pub struct Initiated {
    pub upload: Upload,
    /// `None` when there is nothing to send: a de-duplicated or no longer
    /// pending upload.
    pub instructions: Option<UploadInstructions>,
    pub deduplicated: bool,
    /// `true` when this answer is a new upload (201), `false` for a replay or
    /// a de-duplication (200).
    pub created: bool,
}

#[derive(Debug, Clone, Default)]
pub struct UploadListQuery {
    pub status: Option<String>,
    pub uploaded_by: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub deleted: bool,
    pub taken_from: Option<DateTime<Utc>>,
    pub taken_to: Option<DateTime<Utc>>,
    pub has_gps: Option<bool>,
}

/// A signed download of an upload's bytes.
#[derive(Debug, Clone)]
pub struct Download {
    pub url: SignedUrl,
}

/// What the sweepers did in one pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Uploads whose bytes were complete (tus) or whose completion was asked
    /// for (signed), finished for a process that died before it could.
    pub finished: usize,
    pub expired: usize,
    pub purged: usize,
}

/// How long a recorded completion is left to the request that recorded it
/// before the sweeper takes it over: longer than a completion takes (an S3
/// multipart assembly of many parts), so the two rarely race; a race is
/// harmless, as every step of a completion may be repeated.
const COMPLETION_GRACE: Duration = Duration::seconds(30);

fn incomplete(message: impl Into<String>) -> CoreError {
    CoreError::conflict("upload_incomplete", message)
}

pub(super) fn storage(e: BlobError) -> CoreError {
    match e {
        e @ BlobError::Unavailable(_) => CoreError::StorageUnavailable(e),
        e => CoreError::Internal(Box::new(e)),
    }
}

/// `Content-Disposition: attachment` with an ASCII fallback and the UTF-8
/// name (RFC 6266), so no filename can break the header.
fn attachment(filename: &str) -> String {
    let ascii: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for b in filename.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

impl Service {
    /// The actor may act on this upload's project with `action`; trashed
    /// uploads stay visible (so they can be restored).
    pub(super) async fn authorized_upload(
        &self,
        actor: &Actor,
        id: UploadId,
        action: ProjectAction,
    ) -> Result<Arc<Upload>, CoreError> {
        let upload = self
            .cached_upload(actor.tenant_id, id)
            .await?
            .ok_or(CoreError::NotFound)?;
        self.authorized_project(actor, upload.project_id, action)
            .await?;
        Ok(upload)
    }

    /// Changing an upload (complete, trash, restore) is for its uploader or
    /// for whoever manages the project.
    pub(super) async fn owned_upload(
        &self,
        actor: &Actor,
        id: UploadId,
    ) -> Result<Arc<Upload>, CoreError> {
        let upload = self
            .authorized_upload(actor, id, ProjectAction::Read)
            .await?;
        if upload.uploaded_by == actor.user_id {
            self.authorized_project(actor, upload.project_id, ProjectAction::Upload)
                .await?;
        } else {
            let is_member = actor.role == Role::Admin
                || self
                    .cached_member_is(actor.tenant_id, upload.project_id, actor.user_id)
                    .await?;
            policy::project_allows(actor.role, is_member, ProjectAction::Manage)
                .map_err(|_| CoreError::Forbidden)?;
        }
        Ok(upload)
    }

    /// The first half of the limits every new upload meets, whatever the
    /// protocol (signed URLs or tus): the project is not archived and `size`
    /// is within the tenant's maximum (413). Returns the tenant's limits for
    /// [`Self::check_quota`].
    pub(super) async fn check_size(
        &self,
        actor: &Actor,
        project: &Project,
        size: u64,
    ) -> Result<TenantLimits, CoreError> {
        if project.archived_at.is_some() {
            return Err(CoreError::conflict(
                "project_archived",
                "the project is archived",
            ));
        }
        let limits = self.store.tenant_limits(actor.tenant_id).await?;
        let max = self.max_upload_bytes(limits);
        if size > max {
            self.observe_failed(actor.tenant_id, "too_large", None)
                .await;
            return Err(CoreError::TooLarge { max });
        }
        Ok(limits)
    }

    /// The tenant's maximum size of one upload.
    pub(super) fn max_upload_bytes(&self, limits: TenantLimits) -> u64 {
        limits
            .max_upload_bytes
            .unwrap_or(self.uploads.max_upload_bytes)
    }

    /// The second half: `size` more bytes fit in the tenant's quota (409
    /// `quota_exceeded`).
    pub(super) async fn check_quota(
        &self,
        actor: &Actor,
        limits: TenantLimits,
        size: u64,
    ) -> Result<(), CoreError> {
        if let Some(quota) = limits.quota_bytes.or(self.uploads.quota_bytes) {
            let used = self.store.upload_usage(actor.tenant_id).await?;
            if used.saturating_add(size) > quota {
                self.observe_failed(actor.tenant_id, "quota_exceeded", None)
                    .await;
                return Err(CoreError::conflict(
                    "quota_exceeded",
                    format!("the tenant's storage quota of {quota} bytes would be exceeded"),
                ));
            }
        }
        Ok(())
    }

    pub async fn initiate_upload(
        &self,
        actor: &Actor,
        project_id: ProjectId,
        input: InitiateUploadInput,
    ) -> Result<Initiated, CoreError> {
        let project = self
            .authorized_project(actor, project_id, ProjectAction::Upload)
            .await?;
        let (filename, size, sha256, idempotency_key) = validate!(
            filename = Filename::parse(&input.filename),
            size = if input.size == 0 {
                Err(Invalid::new("empty_file", "must be at least 1 byte"))
            } else {
                Ok(input.size)
            },
            sha256 = input.sha256.as_deref().map(Sha256Hex::parse).transpose(),
            idempotency_key = input
                .idempotency_key
                .as_deref()
                .map(super::parse_idempotency_key)
                .transpose(),
        )?;
        let content_type = ContentType::parse(&input.content_type)
            .map_err(|e| CoreError::UnsupportedType(e.message))?;
        let limits = self.check_size(actor, &project, size).await?;
        let now = self.clock.now();
        let idempotency = idempotency_key.map(|key| IdempotencyKey {
            request_hash: request_digest(project_id, &filename, &content_type, size, &sha256),
            key,
        });

        if let Some(sha) = &sha256
            && idempotency.is_none()
            && let Some(existing) = self
                .store
                .upload_find_duplicate(actor.tenant_id, project_id, actor.user_id, sha)
                .await?
        {
            return Ok(Initiated {
                upload: existing,
                instructions: None,
                deduplicated: true,
                created: false,
            });
        }
        self.check_quota(actor, limits, size).await?;

        let id = UploadId::new();
        let key = ObjectKey::original(actor.tenant_id, project_id, id);
        let transfer = if size > self.uploads.multipart_threshold {
            let (part_size, part_count) = plan_parts(size, self.uploads.min_part_size);
            let upload_id = self
                .blobs
                .multipart_create(&key, content_type.as_str())
                .await
                .map_err(storage)?;
            Transfer::Multipart {
                upload_id,
                part_size,
                part_count,
            }
        } else {
            Transfer::Single
        };
        let new = NewUpload {
            id,
            project_id,
            uploaded_by: actor.user_id,
            filename,
            content_type,
            size,
            sha256,
            object_key: key.clone(),
            transfer: transfer.clone(),
            expires_at: now + self.uploads.upload_url_ttl,
            created_at: now,
        };
        let outcome = self
            .store
            .upload_create(actor.tenant_id, &new, idempotency.as_ref())
            .await;
        if !matches!(outcome, Ok(Creation::Created(_))) {
            self.abandon_multipart(&key, &transfer).await;
        }
        let (upload, created) = super::replayed(outcome?)?;
        if created {
            self.observe_initiated(&upload).await;
        }
        let instructions = if upload.status == UploadStatus::Pending {
            Some(self.instructions(&upload, now)?)
        } else {
            None
        };
        Ok(Initiated {
            upload,
            instructions,
            deduplicated: false,
            created,
        })
    }

    /// A multipart upload started for a row that was never written.
    async fn abandon_multipart(&self, key: &ObjectKey, transfer: &Transfer) {
        if let Transfer::Multipart { upload_id, .. } = transfer
            && let Err(e) = self.blobs.multipart_abort(key, upload_id).await
        {
            tracing::warn!(error = %e, "could not abort an unused multipart upload");
        }
    }

    fn instructions(
        &self,
        upload: &Upload,
        now: DateTime<Utc>,
    ) -> Result<UploadInstructions, CoreError> {
        let key = ObjectKey::parse(&upload.object_key)
            .map_err(|e| CoreError::Internal(e.message.into()))?;
        match &upload.transfer {
            Transfer::Single => {
                let spec = PutSpec {
                    content_type: upload.content_type.clone(),
                    content_length: upload.size,
                };
                let url = self
                    .blobs
                    .sign_put(&key, &spec, now, upload.expires_at)
                    .map_err(storage)?;
                Ok(UploadInstructions::Put(url))
            }
            Transfer::Multipart {
                upload_id,
                part_size,
                part_count,
            } => {
                let mut parts = Vec::with_capacity(*part_count as usize);
                for number in 1..=*part_count {
                    let offset = u64::from(number - 1) * part_size;
                    let len = (*part_size).min(upload.size - offset);
                    let url = self
                        .blobs
                        .sign_part(&key, upload_id, number, len, now, upload.expires_at)
                        .map_err(storage)?;
                    parts.push((number, url));
                }
                Ok(UploadInstructions::Multipart {
                    part_size: *part_size,
                    parts,
                    expires_at: upload.expires_at,
                })
            }
        }
    }

    /// Checks that the declared bytes are in storage, then marks the upload
    /// `UPLOADED` and enqueues its processing job in one transaction.
    /// Repeating it returns the same result.
    pub async fn complete_upload(
        &self,
        actor: &Actor,
        id: UploadId,
        parts: Option<Vec<CompletedPart>>,
        trace_context: Option<String>,
    ) -> Result<Upload, CoreError> {
        let upload = self.owned_upload(actor, id).await?;
        match upload.status {
            UploadStatus::Pending => {}
            UploadStatus::Expired => {
                return Err(CoreError::conflict(
                    "upload_expired",
                    "the upload's URLs expired before it was completed; start a new upload",
                ));
            }
            _ => return Ok(Arc::unwrap_or_clone(upload)),
        }
        if upload.deleted_at.is_some() {
            return Err(CoreError::conflict(
                "upload_deleted",
                "the upload is in the trash",
            ));
        }
        let parts = match &upload.transfer {
            Transfer::Multipart { part_count, .. } => {
                let parts = parts.ok_or_else(|| {
                    CoreError::invalid(
                        "parts",
                        Invalid::new("required", "a multipart upload completes with its parts"),
                    )
                })?;
                validate_parts(&parts, *part_count)?;
                parts
            }
            Transfer::Single => Vec::new(),
        };
        // Recorded before the object is assembled: if this process dies
        // before the upload is marked, the sweeper finishes it (see
        // `finish_completions`), whether or not the client comes back.
        self.store
            .upload_set_completion(
                upload.tenant_id,
                upload.id,
                Some((&parts, self.clock.now())),
            )
            .await?;
        self.assemble_and_mark(&upload, &parts, trace_context).await
    }

    /// The part of a completion that needs no client: assembles a multipart
    /// object from `parts`, checks that storage holds the declared bytes, and
    /// marks the upload `UPLOADED`. Bytes that are not all there clear the
    /// recorded completion (409 `upload_incomplete`: the client sends them
    /// and completes again).
    async fn assemble_and_mark(
        &self,
        upload: &Upload,
        parts: &[CompletedPart],
        trace_context: Option<String>,
    ) -> Result<Upload, CoreError> {
        let key = ObjectKey::parse(&upload.object_key)
            .map_err(|e| CoreError::Internal(e.message.into()))?;
        if let Transfer::Multipart { upload_id, .. } = &upload.transfer {
            match self.blobs.multipart_complete(&key, upload_id, parts).await {
                Ok(_) => {}
                // A retried completion whose first attempt assembled the
                // object: the head check below decides.
                Err(BlobError::NotFound | BlobError::InvalidParts(_)) => {}
                Err(e) => return Err(storage(e)),
            }
        }
        let stored = self.blobs.head(&key).await.map_err(storage)?;
        let missing = match stored {
            None => Some("the bytes have not arrived yet".to_owned()),
            Some(meta) if meta.size != upload.size => Some(format!(
                "storage holds {} bytes; {} were declared",
                meta.size, upload.size
            )),
            Some(_) => None,
        };
        if let Some(missing) = missing {
            self.store
                .upload_set_completion(upload.tenant_id, upload.id, None)
                .await?;
            return Err(incomplete(missing));
        }
        self.mark_uploaded(upload, trace_context).await
    }

    /// Finishes the completions clients asked for that no process finished
    /// (it died in between) within `grace`; returns how many it finished.
    async fn finish_completions(&self, batch: u32) -> Result<usize, CoreError> {
        let due = self.clock.now() - COMPLETION_GRACE;
        let mut finished = 0;
        for (upload, parts) in self.store.uploads_completion_due(due, batch).await? {
            match self.assemble_and_mark(&upload, &parts, None).await {
                Ok(_) => finished += 1,
                Err(e) => {
                    tracing::warn!(upload_id = %upload.id, error = %e, "could not finish a completion")
                }
            }
        }
        Ok(finished)
    }

    /// `PENDING → UPLOADED` with the processing job, in one transaction (the
    /// bytes are in storage: the caller checked). Repeating it returns the
    /// upload as it is.
    pub(super) async fn mark_uploaded(
        &self,
        upload: &Upload,
        trace_context: Option<String>,
    ) -> Result<Upload, CoreError> {
        let now = self.clock.now();
        let spec = JobSpec::ProcessUpload(ProcessUpload {
            upload_id: upload.id,
        });
        let job = NewJob {
            id: JobId::new(),
            kind: spec.kind(),
            payload: spec.payload(),
            max_attempts: self.job_settings().max_attempts,
            run_at: now,
            trace_context,
            created_at: now,
        };
        let done = self
            .store
            .upload_mark_uploaded(upload.tenant_id, upload.id, &job, now)
            .await;
        self.invalidate_upload(upload.tenant_id, upload.id).await;
        let done = done?.ok_or(CoreError::NotFound)?;
        if upload.status == UploadStatus::Pending && done.status == UploadStatus::Uploaded {
            Self::observe_uploaded(&done, now);
        }
        Ok(done)
    }

    pub async fn get_upload(&self, actor: &Actor, id: UploadId) -> Result<Arc<Upload>, CoreError> {
        self.authorized_upload(actor, id, ProjectAction::Read).await
    }

    pub async fn list_uploads(
        &self,
        actor: &Actor,
        project_id: ProjectId,
        query: UploadListQuery,
        page: PageRequest,
    ) -> Result<Page<Upload>, CoreError> {
        let (status, uploaded_by) = validate!(
            status = query
                .status
                .as_deref()
                .map(str::parse::<UploadStatus>)
                .transpose(),
            uploaded_by = query
                .uploaded_by
                .as_deref()
                .map(|s| s
                    .parse::<UserId>()
                    .map_err(|_| Invalid::new("invalid_id", "not a user id")))
                .transpose(),
        )?;
        self.authorized_project(actor, project_id, ProjectAction::Read)
            .await?;
        let filter = UploadFilter {
            status,
            uploaded_by,
            from: query.from,
            to: query.to,
            deleted: query.deleted,
            taken_from: query.taken_from,
            taken_to: query.taken_to,
            has_gps: query.has_gps,
        };
        let rows = self
            .store
            .upload_list(actor.tenant_id, project_id, &filter, page)
            .await?;
        Ok(Page::from_rows(rows, page, |u| u.id.as_uuid()))
    }

    /// A short-lived signed GET of the original, as an attachment with the
    /// type we recorded (never one the client could make the browser sniff).
    pub async fn download_upload(
        &self,
        actor: &Actor,
        id: UploadId,
    ) -> Result<Download, CoreError> {
        let upload = self.readable_live_upload(actor, id).await?;
        if !upload.status.has_bytes() {
            return Err(incomplete("the upload has no stored bytes"));
        }
        let spec = GetSpec {
            content_type: upload.content_type.clone(),
            content_disposition: attachment(&upload.filename),
        };
        self.sign_download(&upload.object_key, &spec)
    }

    /// A short-lived signed GET of a derivative (`thumb`, `preview`, …),
    /// inline: it is our own JPEG, made for display.
    pub async fn download_thumbnail(
        &self,
        actor: &Actor,
        id: UploadId,
        name: &str,
    ) -> Result<Download, CoreError> {
        let upload = self.readable_live_upload(actor, id).await?;
        let thumbnail = upload
            .processed
            .iter()
            .flat_map(|p| &p.thumbnails)
            .find(|t| t.name == name)
            .ok_or(CoreError::NotFound)?;
        let spec = GetSpec {
            content_type: "image/jpeg".into(),
            content_disposition: "inline".into(),
        };
        self.sign_download(&thumbnail.object_key, &spec)
    }

    /// An upload the actor may read that is not in the trash.
    async fn readable_live_upload(
        &self,
        actor: &Actor,
        id: UploadId,
    ) -> Result<Arc<Upload>, CoreError> {
        let upload = self
            .authorized_upload(actor, id, ProjectAction::Read)
            .await?;
        if upload.deleted_at.is_some() {
            return Err(CoreError::conflict(
                "upload_deleted",
                "the upload is in the trash",
            ));
        }
        Ok(upload)
    }

    /// A signed GET of a stored object, valid for the download TTL.
    fn sign_download(&self, object_key: &str, spec: &GetSpec) -> Result<Download, CoreError> {
        let key =
            ObjectKey::parse(object_key).map_err(|e| CoreError::Internal(e.message.into()))?;
        let now = self.clock.now();
        let url = self
            .blobs
            .sign_get(&key, spec, now, now + self.uploads.download_url_ttl)
            .map_err(storage)?;
        Ok(Download { url })
    }

    /// Moves an upload to the trash; the purge sweeper deletes it for good
    /// after the retention period.
    pub async fn trash_upload(&self, actor: &Actor, id: UploadId) -> Result<Upload, CoreError> {
        self.owned_upload(actor, id).await?;
        let trashed = self
            .store
            .upload_trash(actor.tenant_id, id, self.clock.now())
            .await;
        self.invalidate_upload(actor.tenant_id, id).await;
        trashed?.ok_or(CoreError::NotFound)
    }

    pub async fn restore_upload(&self, actor: &Actor, id: UploadId) -> Result<Upload, CoreError> {
        self.owned_upload(actor, id).await?;
        let restored = self
            .store
            .upload_restore(actor.tenant_id, id, self.clock.now())
            .await;
        self.invalidate_upload(actor.tenant_id, id).await;
        restored?.ok_or(CoreError::NotFound)
    }

    /// One pass of the sweepers: tus uploads whose bytes are all stored, and
    /// signed uploads whose completion a client asked for, but whose process
    /// died before finishing them are finished (and never expired); pending uploads whose URLs ran out become
    /// `EXPIRED` (their multipart uploads aborted, partial bytes removed);
    /// uploads trashed longer than the retention are deleted with their
    /// objects. Work is done in batches of `batch`; a failure leaves the rest
    /// for the next pass.
    pub async fn sweep(&self, batch: u32) -> Result<SweepReport, CoreError> {
        let started = Instant::now();
        let now = self.clock.now();
        let mut report = SweepReport {
            finished: self.tus_finish_stalled(batch).await?
                + self.finish_completions(batch).await?,
            ..SweepReport::default()
        };
        for upload in self.store.uploads_expire_due(now, batch).await? {
            self.invalidate_upload(upload.tenant_id, upload.id).await;
            let key = ObjectKey::parse(&upload.object_key)
                .map_err(|e| CoreError::Internal(e.message.into()))?;
            if let Transfer::Multipart { upload_id, .. } = &upload.transfer {
                self.blobs
                    .multipart_abort(&key, upload_id)
                    .await
                    .map_err(storage)?;
            }
            self.blobs.delete(&key).await.map_err(storage)?;
            // A tus upload's partial bytes (nothing to do for other uploads).
            self.tus_discard(&upload).await?;
            self.observe_failed(upload.tenant_id, "expired", Some(&upload))
                .await;
            report.expired += 1;
        }
        let cutoff = now - self.uploads.trash_retention;
        for upload in self.store.uploads_purge_due(cutoff, batch).await? {
            let key = ObjectKey::parse(&upload.object_key)
                .map_err(|e| CoreError::Internal(e.message.into()))?;
            // Row first, and only if it is still trashed since before the
            // cutoff: a restore racing the sweep keeps its bytes. A crash
            // between the two steps leaves an orphaned object, never a live
            // upload without bytes.
            if self
                .store
                .upload_purge(upload.tenant_id, upload.id, cutoff)
                .await?
            {
                self.invalidate_upload(upload.tenant_id, upload.id).await;
                // A multipart upload trashed before it was completed or
                // expired (a retention shorter than the URL lifetime): its
                // parts are not the object, and its part URLs still work.
                if let Transfer::Multipart { upload_id, .. } = &upload.transfer {
                    self.blobs
                        .multipart_abort(&key, upload_id)
                        .await
                        .map_err(storage)?;
                }
                self.blobs.delete(&key).await.map_err(storage)?;
                self.blobs
                    .staging_delete(&ObjectKey::tus_staging(
                        upload.tenant_id,
                        upload.project_id,
                        upload.id,
                    ))
                    .await
                    .map_err(storage)?;
                for thumbnail in upload.processed.iter().flat_map(|p| &p.thumbnails) {
                    let key = ObjectKey::parse(&thumbnail.object_key)
                        .map_err(|e| CoreError::Internal(e.message.into()))?;
                    self.blobs.delete(&key).await.map_err(storage)?;
                }
                report.purged += 1;
            }
        }
        if report != SweepReport::default() {
            tracing::info!(
                finished = report.finished,
                expired = report.expired,
                purged = report.purged,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "sweep"
            );
        }
        Ok(report)
    }
}

/// What makes two initiations "the same request" for an idempotency key.
fn request_digest(
    project: ProjectId,
    filename: &Filename,
    content_type: &ContentType,
    size: u64,
    sha256: &Option<Sha256Hex>,
) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [
        project.to_string().as_str(),
        filename.as_str(),
        content_type.as_str(),
        &size.to_string(),
        sha256.as_ref().map_or("", |s| s.as_str()),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

/// Parts numbered 1..=count, each once, in ascending order, non-empty ETags.
fn validate_parts(parts: &[CompletedPart], count: u32) -> Result<(), CoreError> {
    let ok = parts.len() == count as usize
        && parts
            .iter()
            .enumerate()
            .all(|(i, p)| p.number as usize == i + 1 && !p.etag.trim().is_empty());
    if ok {
        Ok(())
    } else {
        Err(CoreError::invalid(
            "parts",
            Invalid::new(
                "invalid_parts",
                format!("expected parts 1 to {count}, each once, in order, with their ETags"),
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_disposition_is_safe() {
        assert_eq!(
            attachment("foto obra.jpg"),
            "attachment; filename=\"foto obra.jpg\"; filename*=UTF-8''foto%20obra.jpg"
        );
        let d = attachment("año \"1\".jpg");
        assert!(
            d.starts_with("attachment; filename=\"a_o _1_.jpg\";"),
            "{d}"
        );
        assert!(
            d.ends_with("filename*=UTF-8''a%C3%B1o%20%221%22.jpg"),
            "{d}"
        );
    }

    #[test]
    fn idempotency_keys() {
        assert!(crate::service::parse_idempotency_key("abc-123").is_ok());
        assert!(crate::service::parse_idempotency_key("").is_err());
        assert!(crate::service::parse_idempotency_key("a b").is_err());
        assert!(crate::service::parse_idempotency_key(&"a".repeat(256)).is_err());
    }

    #[test]
    fn parts_must_be_complete_and_ordered() {
        let p = |n: u32| CompletedPart {
            number: n,
            etag: format!("\"e{n}\""),
        };
        assert!(validate_parts(&[p(1), p(2)], 2).is_ok());
        assert!(validate_parts(&[p(2), p(1)], 2).is_err());
        assert!(validate_parts(&[p(1)], 2).is_err());
        assert!(validate_parts(&[p(1), p(1)], 2).is_err());
    }

    #[test]
    fn digests_differ_by_field() {
        let f = Filename::parse("a.jpg").ok();
        let t = ContentType::parse("image/jpeg").ok();
        let (Some(f), Some(t)) = (f, t) else {
            panic!("parse")
        };
        let p = ProjectId::new();
        assert_eq!(
            request_digest(p, &f, &t, 1, &None),
            request_digest(p, &f, &t, 1, &None)
        );
        assert_ne!(
            request_digest(p, &f, &t, 1, &None),
            request_digest(p, &f, &t, 2, &None)
        );
    }
}
