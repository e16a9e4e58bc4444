//! Processing an upload: the use-case a `process_upload` job runs.
//!
//! `UPLOADED → PROCESSING`, read the original (SHA-256 as it streams, the
//! bytes kept in memory up to the media port's input cap), sniff and process
//! it, store the derivatives next to the original, then
//! `PROCESSING → COMPLETED` with the metadata.
//!
//! Memory: the original's bytes and what its processing will allocate (the
//! media port's `plan`, from the header) are taken from the process-wide
//! `MemoryBudget` before decoding. More than the whole budget fails at once
//! (`image_too_large`); more than is free now waits, holding nothing, in
//! the same run (no attempt is used), and reads the original again. Every step can run again: a
//! run that died half-way is started over by the next claim, derivatives are
//! overwritten with the same bytes, and the final update only applies to an
//! upload still `PROCESSING`.
//!
//! Failures are sorted into permanent (the content: corrupt, unsupported,
//! a checksum mismatch; the upload fails at once and the job goes to the
//! dead-letter queue without pointless retries) and transient (storage or the
//! database unavailable; retried with backoff by the job lifecycle, which
//! gives up on the upload after the last attempt, as it does when every
//! worker that ran it died: `jobs/lifecycle.rs`).

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use sha2::{Digest as _, Sha256};

use super::Service;
use super::jobs::{Handler, Outcome, ProcessUpload};
use crate::blob::{BlobError, ObjectKey};
use crate::error::StoreError;
use crate::ids::UploadId;
use crate::media::{MediaFailure, Reservation};
use crate::queue::Job;
use crate::upload::{Processed, Thumbnail, Upload, UploadFailure};

/// How much of a too-large original is read to sniff its type.
const SNIFF_LEN: usize = 64 * 1024;

/// Why one run failed.
#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error("{0}")]
    Permanent(UploadFailure),
    #[error("{code}: {message}")]
    Transient { code: &'static str, message: String },
    #[error("storage circuit breaker open; retry in {0:?}")]
    Deferred(std::time::Duration),
}

impl From<StoreError> for RunError {
    fn from(e: StoreError) -> Self {
        RunError::Transient {
            code: "database_unavailable",
            message: error_chain(&e),
        }
    }
}

impl From<MediaFailure> for RunError {
    fn from(e: MediaFailure) -> Self {
        RunError::Permanent(UploadFailure {
            code: e.code,
            message: e.message,
        })
    }
}

fn blob_error(e: BlobError) -> RunError {
    if let Some(wait) = e.circuit_open() {
        return RunError::Deferred(wait);
    }
    match e {
        BlobError::NotFound => RunError::Permanent(UploadFailure {
            code: "original_missing".into(),
            message: "the uploaded file is no longer in storage".into(),
        }),
        e => RunError::Transient {
            code: "storage_unavailable",
            message: error_chain(&e),
        },
    }
}

/// An error with its sources, for `last_error` and the logs.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

impl Handler for ProcessUpload {
    async fn run(&self, service: &Service, job: &Job) -> Outcome {
        service.run_process_upload(job, self.upload_id).await
    }

    async fn give_up(&self, service: &Service, job: &Job, code: &str, message: &str) {
        let failure = UploadFailure {
            code: code.to_owned(),
            message: message.to_owned(),
        };
        service.fail_upload(job, self.upload_id, &failure).await;
    }
}

impl Service {
    async fn run_process_upload(&self, job: &Job, id: UploadId) -> Outcome {
        // Storage is known to be down: leave the upload as it is.
        if let Some(delay) = self.blobs.circuit_open() {
            return Outcome::Defer { delay };
        }
        let started = Instant::now();
        let outcome = self.process_upload(job, id).await;
        let elapsed = started.elapsed().as_secs_f64();
        let result = match outcome {
            Ok(finished) => {
                if let Some(upload) = finished {
                    self.observe_processed(&upload).await;
                }
                return Outcome::Done;
            }
            Err(RunError::Deferred(delay)) => return Outcome::Defer { delay },
            Err(RunError::Permanent(failure)) => {
                let error = failure.to_string();
                self.fail_upload(job, id, &failure).await;
                Outcome::Dead { error }
            }
            Err(RunError::Transient { code, message }) => Outcome::Retry {
                code,
                error: format!("{code}: {message}"),
            },
        };
        tracing::warn!(
            upload_id = %id,
            attempt = job.attempts,
            elapsed_ms = (elapsed * 1000.0) as u64,
            ?result,
            "processing failed"
        );
        result
    }

    /// Marks the upload failed; logged, not returned, if that fails too (the
    /// job's own failure is recorded either way).
    async fn fail_upload(&self, job: &Job, id: UploadId, failure: &UploadFailure) {
        let failed = self
            .store
            .upload_fail_processing(job.tenant_id, id, failure, self.clock.now())
            .await;
        self.invalidate_upload(job.tenant_id, id).await;
        match failed {
            Ok(Some(upload)) => {
                self.observe_failed(job.tenant_id, &failure.code, Some(&upload))
                    .await
            }
            // Failed or finished before: counted then.
            Ok(None) => {}
            Err(e) => {
                self.observe_failed(job.tenant_id, &failure.code, None)
                    .await;
                tracing::error!(upload_id = %id, error = %error_chain(&e), "could not mark the upload failed");
            }
        }
    }

    /// Processes the upload; the upload as marked `COMPLETED`, or `None` when
    /// there was nothing to do.
    async fn process_upload(&self, job: &Job, id: UploadId) -> Result<Option<Upload>, RunError> {
        let tenant = job.tenant_id;
        let started = self
            .store
            .upload_start_processing(tenant, id, self.clock.now())
            .await;
        self.invalidate_upload(tenant, id).await;
        let Some(upload) = started? else {
            // Completed by an earlier run, expired, or purged: nothing to do.
            return Ok(None);
        };
        let original = ObjectKey::parse(&upload.object_key).map_err(|e| RunError::Transient {
            code: "internal",
            message: e.message,
        })?;
        // Too large to hold (over the input cap or the whole memory budget):
        // only typed.
        let whole = upload.size <= self.media.max_input_bytes()
            && upload.size <= self.media.budget().total();
        let processed = if whole {
            let (bytes, reservation) = self.read_within_budget(&upload, &original).await?;
            let output = self.media.process(bytes, reservation).await?;
            let mut thumbnails = Vec::with_capacity(output.derivatives.len());
            for d in output.derivatives {
                let key = ObjectKey::derivative(tenant, upload.project_id, id, &d.name);
                let bytes = d.jpeg.len() as u64;
                let body = futures_util::stream::once(async move { Ok(d.jpeg) }).boxed();
                self.blobs
                    .put(&key, "image/jpeg", body)
                    .await
                    .map_err(blob_error)?;
                thumbnails.push(Thumbnail {
                    name: d.name,
                    width: d.width,
                    height: d.height,
                    bytes,
                    object_key: key.as_str().to_owned(),
                });
            }
            let taken_at = output.metadata.taken_at.as_deref().and_then(parse_taken_at);
            Processed {
                detected_type: output.detected_type,
                metadata: output.metadata,
                thumbnails,
                taken_at,
            }
        } else {
            Processed {
                detected_type: self.read_original(&upload, &original, false).await?.0,
                metadata: Default::default(),
                thumbnails: Vec::new(),
                taken_at: None,
            }
        };
        if processed.type_mismatch(&upload.content_type) {
            tracing::info!(
                upload_id = %id,
                declared = %upload.content_type,
                detected = %processed.detected_type,
                "declared type differs from the content"
            );
            metrics::counter!("uploads_type_mismatch_total").increment(1);
        }
        let finished = self
            .store
            .upload_finish_processing(tenant, id, &processed, self.clock.now())
            .await;
        self.invalidate_upload(tenant, id).await;
        Ok(finished?)
    }

    /// The original in memory with the budget its processing needs: the
    /// bytes are reserved before they are read, the plan's memory after
    /// (it needs the header). If the plan's memory is not free now, all is
    /// given back and the whole is waited for at once: a job never waits
    /// while it holds memory, so jobs cannot wait for each other.
    async fn read_within_budget(
        &self,
        upload: &Upload,
        key: &ObjectKey,
    ) -> Result<(Bytes, Reservation), RunError> {
        let budget = self.media.budget();
        let too_large = |need: u64| {
            RunError::Permanent(UploadFailure {
                code: "image_too_large".into(),
                message: format!(
                    "processing this file needs {} MiB of memory, more than the worker's budget of {} MiB",
                    need.div_ceil(1 << 20),
                    budget.total() >> 20
                ),
            })
        };
        let mut held = budget
            .reserve(upload.size)
            .await
            .ok_or_else(|| too_large(upload.size))?;
        let bytes = self.read_original(upload, key, true).await?.1;
        let need = self.media.plan(&bytes)?;
        let total = upload.size.saturating_add(need);
        if total > budget.total() {
            return Err(too_large(total));
        }
        if budget.try_grow(&mut held, need) {
            return Ok((bytes, held));
        }
        drop((bytes, held));
        metrics::counter!("worker_memory_waits_total").increment(1);
        tracing::info!(
            upload_id = %upload.id,
            need_mib = total >> 20,
            reserved_mib = budget.reserved() >> 20,
            "waiting for worker memory"
        );
        let held = budget
            .reserve(total)
            .await
            .ok_or_else(|| too_large(total))?;
        let bytes = self.read_original(upload, key, true).await?.1;
        Ok((bytes, held))
    }

    /// Streams the original once. Sniffs its type from the first bytes
    /// (refusing anything outside the allowlist before reading further),
    /// hashes all of it against the declared SHA-256, and returns it whole
    /// when `whole` (only its first bytes otherwise: it is then only typed).
    async fn read_original(
        &self,
        upload: &Upload,
        key: &ObjectKey,
        whole: bool,
    ) -> Result<(String, Bytes), RunError> {
        let (_, mut stream) = self.blobs.get(key, None).await.map_err(blob_error)?;
        let mut hasher = Sha256::new();
        let capacity = if whole {
            usize::try_from(upload.size).unwrap_or(0)
        } else {
            SNIFF_LEN
        };
        let mut buf = BytesMut::with_capacity(capacity);
        let mut read = 0u64;
        let mut detected = None;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(blob_error)?;
            read += chunk.len() as u64;
            hasher.update(&chunk);
            if whole || buf.len() < SNIFF_LEN {
                let take = if whole {
                    chunk.len()
                } else {
                    (SNIFF_LEN - buf.len()).min(chunk.len())
                };
                buf.extend_from_slice(&chunk[..take]);
            }
            if detected.is_none() && (buf.len() >= SNIFF_LEN || read == upload.size) {
                detected = Some(self.sniffed(&buf)?);
            }
        }
        if read != upload.size {
            return Err(RunError::Transient {
                code: "storage_unavailable",
                message: format!("read {read} bytes of a {}-byte original", upload.size),
            });
        }
        let detected = match detected {
            Some(d) => d,
            None => self.sniffed(&buf)?,
        };
        let sha256 = hex::encode(hasher.finalize());
        if let Some(declared) = &upload.sha256
            && !declared.eq_ignore_ascii_case(&sha256)
        {
            return Err(RunError::Permanent(UploadFailure {
                code: "checksum_mismatch".into(),
                message: format!(
                    "the stored file's SHA-256 is {sha256}, not the declared {declared}"
                ),
            }));
        }
        Ok((detected, buf.freeze()))
    }

    fn sniffed(&self, head: &[u8]) -> Result<String, RunError> {
        self.media.sniff(head).ok_or_else(|| {
            RunError::Permanent(UploadFailure {
                code: "unsupported_type".into(),
                message: "the file's content is not a supported type".into(),
            })
        })
    }
}

/// `taken_at` as an instant: RFC 3339, or a local time without an offset
/// (taken as UTC: the camera did not say where it was).
fn parse_taken_at(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.to_utc())
        .ok()
        .or_else(|| {
            chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S")
                .ok()
                .map(|t| t.and_utc())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taken_at_with_and_without_offset() {
        let with = parse_taken_at("2024-05-01T10:00:00+02:00").map(|t| t.to_rfc3339());
        assert_eq!(with.as_deref(), Some("2024-05-01T08:00:00+00:00"));
        let without = parse_taken_at("2024-05-01T10:00:00").map(|t| t.to_rfc3339());
        assert_eq!(without.as_deref(), Some("2024-05-01T10:00:00+00:00"));
        assert_eq!(parse_taken_at("yesterday"), None);
    }
}
