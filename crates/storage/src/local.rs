//! The local file-system adapter: one file per object under a root directory,
//! and the `SignedEndpoint` that serves its signed links (see `link`).
//!
//! Layout under the root:
//!
//! - `objects/{key}`: the objects. Keys are validated `ObjectKey`s (lowercase
//!   segments, no `.` or `..`), so a key is a safe relative path. A key that
//!   is a directory of another (`a` and `a/b`) cannot exist on a file system;
//!   storing it fails. The server only builds keys of one shape, so it never
//!   asks for that.
//! - `tmp/`: files being written. Every write streams into a file here, is
//!   fsynced and renamed into place (then the directory is fsynced), so a
//!   reader sees the old object or the new one and never a part; `tmp/` is on
//!   the same file system as `objects/`, which the rename needs.
//!
//! A write runs as one blocking task that owns the file and is handed the
//! body's chunks through a short queue (see `write_stream`): a write through
//! `tokio::fs` would go to the blocking pool once per chunk, copying it on the
//! way, and ingest would pay for the thread hand-offs and copies rather than
//! for the disk.
//! - `staging/{key with '/' as '+'}`: resumable (tus) staging objects: a
//!   blob file (header and content) appended to in place and fsynced after
//!   each append, renamed into `objects/` when complete.
//! - `multipart/{upload id}/`: a multipart upload: `key` (the key it was
//!   created for) and one file per part, named by its number.
//!
//! Each object and part file starts with a small header holding its ETag: a
//! random 128-bit id drawn for each write, in hex. An ETag is an opaque
//! version id, not a digest (S3's are not content hashes either for multipart
//! or SSE-KMS objects), and multipart completion only checks that the client
//! reports the ETag each part was stored with, so a random id does all an
//! ETag must; hashing the content instead was a third of the server's CPU on
//! ingest. Rewriting the same bytes makes a new version with a new ETag. The
//! id lives in the same file rather than a sidecar because a rename replaces
//! both at once: two writers of one key can never leave one's content with
//! the other's ETag, and `head` stays one open and one short read.
//!
//! The store keeps no content type: signed GETs carry the one to answer with.

mod link;

use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::ops::Range;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use buildpeer_core::blob::{
    BlobError, BlobStore, ByteStream, CompletedPart, GetSpec, ObjectKey, ObjectMeta, PutSpec,
    SignedEndpoint, SignedGet, SignedMethod, SignedRequest, SignedUrl, StagedWrite,
};
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use tokio::fs::{self, File};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

use self::link::{Link, Links, Op};
use crate::{
    MIN_PART_SIZE, StorageError, StorageOptions, check_completion, check_expiry, check_part_number,
    check_range, check_signing_key, other, unquote,
};

/// Starts every object and part file; the hex ETag id and a newline follow.
/// (v1 held a 64-digit SHA-256 there; its files are refused as bad headers.)
const MAGIC: &[u8] = b"buildpeer-blob-v2\n";
/// Bytes of the random id that is a file's ETag.
const ETAG_ID_LEN: usize = 16;
const HEADER_LEN: usize = MAGIC.len() + 2 * ETAG_ID_LEN + 1;
/// Read size when streaming a file out; bounds memory per reader.
const READ_CHUNK: usize = 64 * 1024;
/// Chunks queued between a request and its write's blocking task, besides the
/// one being written and the one waiting to be queued. Each can pin a whole
/// HTTP read buffer, so with many uploads at once the queue is most of their
/// memory; measured, deeper queues added memory and no throughput.
const WRITE_QUEUE: usize = 1;
/// Bytes written between two starts of write-back (`start_writeback`).
const WRITEBACK_STEP: u64 = 8 * 1024 * 1024;
/// Upload ids are 16 random bytes in hex.
const UPLOAD_ID_LEN: usize = 32;

pub(crate) struct LocalStore {
    objects: PathBuf,
    tmp: PathBuf,
    uploads: PathBuf,
    staging: PathBuf,
    links: Links,
}

impl LocalStore {
    pub(crate) async fn open(root: PathBuf, opts: &StorageOptions) -> Result<Self, StorageError> {
        check_signing_key(&opts.signing_key)?;
        let public_url = url::Url::parse(&opts.public_url)
            .map_err(|e| StorageError::InvalidOptions(format!("public URL: {e}")))?;
        if !matches!(public_url.scheme(), "http" | "https")
            || public_url.query().is_some()
            || public_url.fragment().is_some()
        {
            return Err(StorageError::InvalidOptions(
                "the public URL must be an http(s) URL without query or fragment".into(),
            ));
        }
        let store = Self {
            objects: root.join("objects"),
            tmp: root.join("tmp"),
            uploads: root.join("multipart"),
            staging: root.join("staging"),
            links: Links::new(&opts.signing_key, &opts.public_url)?,
        };
        for dir in [&store.objects, &store.tmp, &store.uploads, &store.staging] {
            fs::create_dir_all(dir)
                .await
                .map_err(|source| StorageError::Io {
                    path: dir.clone(),
                    source,
                })?;
        }
        store.remove_stale_temp_files().await;
        Ok(store)
    }

    /// Removes what writes cut off by a crash left in `tmp/`. Only files
    /// older than an hour: another process on this data dir (a worker next
    /// to the API) may be writing the younger ones right now.
    async fn remove_stale_temp_files(&self) {
        const STALE: std::time::Duration = std::time::Duration::from_secs(3600);
        let Ok(mut entries) = fs::read_dir(&self.tmp).await else {
            return;
        };
        let mut removed = 0u32;
        while let Ok(Some(entry)) = entries.next_entry().await {
            let stale = entry
                .metadata()
                .await
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE);
            if stale && fs::remove_file(entry.path()).await.is_ok() {
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(
                removed,
                "removed stale temporary files of interrupted writes"
            );
        }
    }

    /// Keys have no `+`, so the flattened name is unique.
    fn staging_path(&self, key: &ObjectKey) -> PathBuf {
        self.staging.join(key.as_str().replace('/', "+"))
    }

    fn object_path(&self, key: &ObjectKey) -> PathBuf {
        self.objects.join(key.as_str())
    }

    /// The directory of upload `upload_id` if it is one this store could
    /// have issued (ids arrive from clients and become paths).
    fn upload_dir(&self, upload_id: &str) -> Option<PathBuf> {
        let valid = upload_id.len() == UPLOAD_ID_LEN
            && upload_id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        valid.then(|| self.uploads.join(upload_id))
    }

    /// The directory of an upload that exists and was created for `key`;
    /// `NotFound` otherwise, as S3 answers for an upload it does not know.
    async fn existing_upload(
        &self,
        key: &ObjectKey,
        upload_id: &str,
    ) -> Result<PathBuf, BlobError> {
        let dir = self.upload_dir(upload_id).ok_or(BlobError::NotFound)?;
        match fs::read_to_string(dir.join("key")).await {
            Ok(k) if k == key.as_str() => Ok(dir),
            Ok(_) => Err(BlobError::NotFound),
            Err(e) => Err(io_error(e)),
        }
    }

    /// Streams `body` into a new temporary file, written by a blocking task
    /// (`write_blocking`) that this feeds. With `exact_len`, stops as soon as
    /// the body is longer and refuses one of another length
    /// (`length_mismatch`). On any failure, and when the request is dropped
    /// halfway, the queue closes without `Feed::End` and the task removes the
    /// temporary file; on failure this returns only after it has.
    async fn write_stream(
        &self,
        body: ByteStream,
        exact_len: Option<u64>,
    ) -> Result<Blob, BlobError> {
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let tmp = self.tmp.clone();
        let writer = tokio::task::spawn_blocking(move || write_blocking(&tmp, rx));
        let fed = feed(body, tx, exact_len).await;
        let written = writer.await.map_err(|e| BlobError::Other(e.into()))?;
        // The body's fault first: the writer only saw its queue close then.
        fed?;
        written.map_err(io_error)
    }

    /// Moves a finished object into place, creating its directories.
    async fn install_object(&self, blob: Blob, key: &ObjectKey) -> Result<ObjectMeta, BlobError> {
        let dest = self.object_path(key);
        let parent = dest
            .parent()
            .ok_or_else(|| other("an object path without a parent directory"))?;
        // A concurrent `delete` prunes empty directories: it can remove the
        // one just created before the rename lands. Create it again then.
        let mut attempts = 0;
        loop {
            attempts += 1;
            fs::create_dir_all(parent).await.map_err(io_error)?;
            match fs::rename(&blob.temp.path, &dest).await {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 3 => continue,
                Err(e) => return Err(io_error(e)),
            }
        }
        blob.installed(parent).await
    }

    /// Moves a finished part into its upload's directory, which must still
    /// exist: an aborted upload takes no more parts.
    async fn install_part(&self, blob: Blob, dir: &Path, number: u32) -> Result<String, BlobError> {
        let dest = dir.join(number.to_string());
        match fs::rename(&blob.temp.path, &dest).await {
            Ok(()) => Ok(blob.installed(dir).await?.etag.unwrap_or_default()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(BlobError::NotFound),
            Err(e) => Err(io_error(e)),
        }
    }

    /// Removes the directories of `key` that became empty, up to `objects/`,
    /// so that deleted uploads leave nothing behind.
    async fn prune(&self, key: &ObjectKey) {
        let path = self.object_path(key);
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.objects || fs::remove_dir(d).await.is_err() {
                break;
            }
            dir = d.parent();
        }
    }

    /// One part of a signed multipart upload, or a server-side one.
    async fn put_part_stream(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        number: u32,
        body: ByteStream,
        exact_len: Option<u64>,
    ) -> Result<String, BlobError> {
        check_part_number(number)?;
        let dir = self.existing_upload(key, upload_id).await?;
        let blob = self.write_stream(body, exact_len).await?;
        self.install_part(blob, &dir, number).await
    }

    fn signed_url(
        &self,
        method: SignedMethod,
        key: &ObjectKey,
        op: Op,
        headers: Vec<(String, String)>,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<SignedUrl, BlobError> {
        check_expiry(now, expires_at)?;
        let link = Link {
            key: key.as_str().to_owned(),
            op,
            expires: expires_at.timestamp(),
        };
        Ok(SignedUrl {
            method,
            url: self.links.url(&link),
            headers,
            // The link holds whole seconds.
            expires_at: DateTime::from_timestamp(link.expires, 0).unwrap_or(expires_at),
        })
    }
}

#[async_trait]
impl BlobStore for LocalStore {
    fn backend(&self) -> &'static str {
        "local"
    }

    async fn put(
        &self,
        key: &ObjectKey,
        _content_type: &str,
        body: ByteStream,
    ) -> Result<ObjectMeta, BlobError> {
        let blob = self.write_stream(body, None).await?;
        self.install_object(blob, key).await
    }

    async fn get(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
    ) -> Result<(ObjectMeta, ByteStream), BlobError> {
        let (mut file, meta) = open_blob(&self.object_path(key)).await?;
        let (start, len) = match range {
            None => (0, meta.size),
            Some(range) => {
                check_range(&range)?;
                if range.start >= meta.size {
                    return Err(other(format!(
                        "range starts at {} in an object of {} bytes",
                        range.start, meta.size
                    )));
                }
                // Like S3: a range past the end stops at the end.
                (range.start, range.end.min(meta.size) - range.start)
            }
        };
        if start > 0 {
            file.seek(SeekFrom::Start(HEADER_LEN as u64 + start))
                .await
                .map_err(io_error)?;
        }
        Ok((meta, read_stream(file, len)))
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, BlobError> {
        match open_blob(&self.object_path(key)).await {
            Ok((_, meta)) => Ok(Some(meta)),
            Err(BlobError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), BlobError> {
        match fs::remove_file(self.object_path(key)).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => return Err(io_error(e)),
        }
        self.prune(key).await;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(ObjectKey, ObjectMeta)>, BlobError> {
        let objects = self.objects.clone();
        let prefix = prefix.to_owned();
        tokio::task::spawn_blocking(move || list_blocking(&objects, &prefix))
            .await
            .map_err(|e| BlobError::Other(e.into()))?
    }

    async fn multipart_create(
        &self,
        key: &ObjectKey,
        _content_type: &str,
    ) -> Result<String, BlobError> {
        let upload_id = hex::encode(rand::random::<[u8; UPLOAD_ID_LEN / 2]>());
        let dir = self.uploads.join(&upload_id);
        fs::create_dir(&dir).await.map_err(io_error)?;
        fs::write(dir.join("key"), key.as_str())
            .await
            .map_err(io_error)?;
        Ok(upload_id)
    }

    async fn multipart_put_part(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        number: u32,
        body: Bytes,
    ) -> Result<String, BlobError> {
        let body: ByteStream = Box::pin(futures_util::stream::once(async { Ok(body) }));
        self.put_part_stream(key, upload_id, number, body, None)
            .await
    }

    async fn multipart_complete(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<ObjectMeta, BlobError> {
        check_completion(parts)?;
        let dir = self.existing_upload(key, upload_id).await?;
        let (tmp, parts_dir, parts) = (self.tmp.clone(), dir.clone(), parts.to_vec());
        let blob = tokio::task::spawn_blocking(move || assemble_blocking(&tmp, &parts_dir, &parts))
            .await
            .map_err(|e| BlobError::Other(e.into()))??;
        let meta = self.install_object(blob, key).await?;
        if let Err(e) = fs::remove_dir_all(&dir).await {
            // The object is in place; leftover parts only take space.
            tracing::warn!(upload_id, error = %e, "could not remove a completed upload's parts");
        }
        Ok(meta)
    }

    async fn multipart_abort(&self, key: &ObjectKey, upload_id: &str) -> Result<(), BlobError> {
        let dir = match self.existing_upload(key, upload_id).await {
            Ok(dir) => dir,
            Err(BlobError::NotFound) => return Ok(()),
            Err(e) => return Err(e),
        };
        match fs::remove_dir_all(&dir).await {
            Err(e) if !is_not_found(&e) => Err(io_error(e)),
            _ => Ok(()),
        }
    }

    fn sign_put(
        &self,
        key: &ObjectKey,
        spec: &PutSpec,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<SignedUrl, BlobError> {
        let op = Op::Put {
            content_type: spec.content_type.clone(),
            content_length: spec.content_length,
        };
        let headers = vec![
            ("Content-Type".to_owned(), spec.content_type.clone()),
            ("Content-Length".to_owned(), spec.content_length.to_string()),
        ];
        self.signed_url(SignedMethod::Put, key, op, headers, now, expires_at)
    }

    fn sign_part(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        number: u32,
        content_length: u64,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<SignedUrl, BlobError> {
        check_part_number(number)?;
        if self.upload_dir(upload_id).is_none() {
            return Err(BlobError::NotFound);
        }
        let op = Op::Part {
            upload_id: upload_id.to_owned(),
            number,
            content_length,
        };
        let headers = vec![("Content-Length".to_owned(), content_length.to_string())];
        self.signed_url(SignedMethod::Put, key, op, headers, now, expires_at)
    }

    fn sign_get(
        &self,
        key: &ObjectKey,
        spec: &GetSpec,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<SignedUrl, BlobError> {
        let op = Op::Get {
            content_type: spec.content_type.clone(),
            content_disposition: spec.content_disposition.clone(),
        };
        self.signed_url(SignedMethod::Get, key, op, Vec::new(), now, expires_at)
    }

    fn supports_staging(&self) -> bool {
        true
    }

    async fn staging_append(
        &self,
        staging: &ObjectKey,
        offset: u64,
        mut body: ByteStream,
    ) -> Result<StagedWrite, BlobError> {
        let (tx, rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
        let path = self.staging_path(staging);
        let dir = self.staging.clone();
        let writer = tokio::task::spawn_blocking(move || append_blocking(&path, &dir, offset, rx));
        let mut interrupted = None;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => {
                    if tx.send(chunk).await.is_err() {
                        // The writer failed and stopped reading; it says why.
                        break;
                    }
                }
                Err(e) => {
                    interrupted = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        let written = writer
            .await
            .map_err(|e| BlobError::Other(e.into()))?
            .map_err(io_error)?;
        Ok(StagedWrite {
            written,
            interrupted,
        })
    }

    async fn staging_finish(
        &self,
        staging: &ObjectKey,
        length: u64,
        dest: &ObjectKey,
    ) -> Result<ObjectMeta, BlobError> {
        let path = self.staging_path(staging);
        let etag = tokio::task::spawn_blocking(move || -> Result<String, BlobError> {
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io_error)?;
            let file_len = file.metadata().map_err(io_error)?.len();
            let mut head = [0u8; HEADER_LEN];
            file.read_exact(&mut head)
                .map_err(|_| other("not a blob file (too short)"))?;
            let meta = blob_meta(&head, file_len)?;
            if meta.size < length {
                return Err(other("a staging object is shorter than its length"));
            }
            file.set_len(HEADER_LEN as u64 + length).map_err(io_error)?;
            file.sync_all().map_err(io_error)?;
            Ok(meta
                .etag
                .map(|e| unquote(&e).to_owned())
                .unwrap_or_default())
        })
        .await
        .map_err(|e| BlobError::Other(e.into()))??;
        let blob = Blob {
            temp: TempFile {
                path: self.staging_path(staging),
                // A failed rename must not delete the acknowledged bytes.
                installed: true,
            },
            size: length,
            etag,
        };
        self.install_object(blob, dest).await
    }

    async fn staging_delete(&self, staging: &ObjectKey) -> Result<(), BlobError> {
        match fs::remove_file(self.staging_path(staging)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(io_error(e)),
        }
    }

    fn signed_endpoint(&self) -> Option<&dyn SignedEndpoint> {
        Some(self)
    }
}

#[async_trait]
impl SignedEndpoint for LocalStore {
    async fn signed_put(
        &self,
        req: SignedRequest<'_>,
        body: ByteStream,
    ) -> Result<String, BlobError> {
        let link = self.links.verify(req.method, req.key, req.query, req.now)?;
        // Only valid keys are ever signed; a signed one that does not parse
        // was not signed by this store.
        let key =
            ObjectKey::parse(&link.key).map_err(|_| BlobError::Denied("signature_invalid"))?;
        let signed_len = match &link.op {
            Op::Put { content_length, .. } | Op::Part { content_length, .. } => *content_length,
            Op::Get { .. } => return Err(BlobError::Denied("method_not_allowed")),
        };
        if req.content_length != Some(signed_len) {
            return Err(BlobError::Denied("length_mismatch"));
        }
        match link.op {
            Op::Put { content_type, .. } => {
                if req.content_type != Some(content_type.as_str()) {
                    return Err(BlobError::Denied("content_type_mismatch"));
                }
                let blob = self.write_stream(body, Some(signed_len)).await?;
                let meta = self.install_object(blob, &key).await?;
                Ok(meta.etag.unwrap_or_default())
            }
            Op::Part {
                upload_id, number, ..
            } => {
                self.put_part_stream(&key, &upload_id, number, body, Some(signed_len))
                    .await
            }
            Op::Get { .. } => Err(BlobError::Denied("method_not_allowed")),
        }
    }

    async fn signed_get(&self, req: SignedRequest<'_>) -> Result<SignedGet, BlobError> {
        let link = self.links.verify(req.method, req.key, req.query, req.now)?;
        let key =
            ObjectKey::parse(&link.key).map_err(|_| BlobError::Denied("signature_invalid"))?;
        let Op::Get {
            content_type,
            content_disposition,
        } = link.op
        else {
            return Err(BlobError::Denied("method_not_allowed"));
        };
        let (meta, body) = self.get(&key, None).await?;
        Ok(SignedGet {
            meta,
            body,
            content_type,
            content_disposition,
        })
    }
}

/// A file in `tmp/` that is removed when dropped unless it was renamed into
/// place: an error, a refused body or a cancelled request leaves nothing.
struct TempFile {
    path: PathBuf,
    installed: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.installed {
            // Unlinking is quick enough to do in place, even on a runtime thread.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// What a request hands its write's blocking task.
enum Feed {
    Data(Bytes),
    /// The body is complete and accepted: make the file durable.
    End,
}

/// The request's side of `write_stream`: moves `body` into the queue,
/// checking its length; `Feed::End` once all of it is in and accepted.
/// Returning drops `tx`, which is how the writer learns of a refusal.
async fn feed(
    mut body: ByteStream,
    tx: mpsc::Sender<Feed>,
    exact_len: Option<u64>,
) -> Result<(), BlobError> {
    let mut size = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        size += chunk.len() as u64;
        if exact_len.is_some_and(|len| size > len) {
            return Err(BlobError::Denied("length_mismatch"));
        }
        if tx.send(Feed::Data(chunk)).await.is_err() {
            // The writer failed and stopped reading; it says why.
            return Ok(());
        }
    }
    if exact_len.is_some_and(|len| size != len) {
        return Err(BlobError::Denied("length_mismatch"));
    }
    // An error here too means the writer failed, and it says why.
    let _ = tx.send(Feed::End).await;
    Ok(())
}

/// The blocking side of `write_stream`: writes each chunk as it comes, and
/// makes the file durable at `Feed::End`. A queue that closes first means the
/// request failed or went away: the file is removed (with `TempFile`).
fn write_blocking(tmp: &Path, mut rx: mpsc::Receiver<Feed>) -> io::Result<Blob> {
    let mut writer = BlobWriter::create(tmp)?;
    loop {
        match rx.blocking_recv() {
            Some(Feed::Data(chunk)) => writer.write(&chunk)?,
            Some(Feed::End) => return writer.finish(),
            // Not seen by anyone: the request returns its own error, if any.
            None => return Err(io::Error::other("the write was abandoned")),
        }
    }
}

/// `staging_append`'s blocking side: drops what the staging file holds past
/// `offset`, appends every chunk it is handed until the queue closes (the
/// body ended or failed), then fsyncs; returns the bytes appended.
fn append_blocking(
    path: &Path,
    dir: &Path,
    offset: u64,
    mut rx: mpsc::Receiver<Bytes>,
) -> io::Result<u64> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    let len = file.metadata()?.len();
    let created = len < HEADER_LEN as u64;
    if created {
        if offset != 0 {
            return Err(io::Error::other(
                "a staging file is missing bytes of an acknowledged offset",
            ));
        }
        file.set_len(0)?;
        file.write_all(&header(&hex::encode(rand::random::<[u8; ETAG_ID_LEN]>())))?;
    } else if len < HEADER_LEN as u64 + offset {
        return Err(io::Error::other(
            "a staging file is shorter than its acknowledged offset",
        ));
    }
    file.set_len(HEADER_LEN as u64 + offset)?;
    file.seek(SeekFrom::End(0))?;
    let mut written = 0u64;
    let mut flushed = HEADER_LEN as u64 + offset;
    let mut failed = None;
    while let Some(chunk) = rx.blocking_recv() {
        if let Err(e) = file.write_all(&chunk) {
            failed = Some(e);
            break;
        }
        written += chunk.len() as u64;
        let end = HEADER_LEN as u64 + offset + written;
        if end - flushed >= WRITEBACK_STEP {
            start_writeback(&file, flushed, end - flushed);
            flushed = end;
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    file.sync_data()?;
    if created {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(written)
}

/// `multipart_complete` on the blocking pool: checks each part as it is
/// opened and appends it to a new blob file, one part open at a time (an
/// upload may have thousands).
fn assemble_blocking(tmp: &Path, dir: &Path, parts: &[CompletedPart]) -> Result<Blob, BlobError> {
    let mut writer = BlobWriter::create(tmp).map_err(io_error)?;
    for (i, part) in parts.iter().enumerate() {
        let (mut file, meta) = match open_blob_blocking(&dir.join(part.number.to_string())) {
            Ok(found) => found,
            Err(BlobError::NotFound) => {
                return Err(BlobError::InvalidParts(format!(
                    "part {} was not uploaded",
                    part.number
                )));
            }
            Err(e) => return Err(e),
        };
        if meta.etag.as_deref().map(unquote) != Some(unquote(&part.etag)) {
            return Err(BlobError::InvalidParts(format!(
                "part {} does not have the ETag given",
                part.number
            )));
        }
        if i + 1 < parts.len() && meta.size < MIN_PART_SIZE {
            return Err(BlobError::InvalidParts(format!(
                "part {} is smaller than {MIN_PART_SIZE} bytes and not the last",
                part.number
            )));
        }
        writer.append(&mut file).map_err(io_error)?;
    }
    writer.finish().map_err(io_error)
}

/// Writes a blob file with blocking calls: the header with a new ETag id,
/// then the content, straight to the file (each chunk is already large).
struct BlobWriter {
    temp: TempFile,
    file: std::fs::File,
    etag: String,
    size: u64,
    /// File offset up to which write-back was started (`start_writeback`).
    flushed: u64,
}

impl BlobWriter {
    fn create(tmp: &Path) -> io::Result<Self> {
        let path = tmp.join(hex::encode(rand::random::<[u8; 16]>()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        let temp = TempFile {
            path,
            installed: false,
        };
        // Known before the content, so the header goes first and the file is
        // written front to back.
        let etag = hex::encode(rand::random::<[u8; ETAG_ID_LEN]>());
        file.write_all(&header(&etag))?;
        Ok(Self {
            temp,
            file,
            etag,
            size: 0,
            flushed: 0,
        })
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)?;
        self.size += data.len() as u64;
        let end = HEADER_LEN as u64 + self.size;
        if end - self.flushed >= WRITEBACK_STEP {
            start_writeback(&self.file, self.flushed, end - self.flushed);
            self.flushed = end;
        }
        Ok(())
    }

    /// Appends the rest of `src`; between files, `io::copy` lets the kernel
    /// move the bytes (`copy_file_range`).
    fn append(&mut self, src: &mut std::fs::File) -> io::Result<()> {
        self.size += io::copy(src, &mut self.file)?;
        Ok(())
    }

    /// Makes the file durable.
    fn finish(self) -> io::Result<Blob> {
        self.file.sync_all()?;
        Ok(Blob {
            temp: self.temp,
            size: self.size,
            etag: self.etag,
        })
    }
}

/// A complete, durable blob file still in `tmp/`.
struct Blob {
    temp: TempFile,
    size: u64,
    /// Unquoted.
    etag: String,
}

impl Blob {
    /// After the rename into `dir`: makes the rename durable.
    async fn installed(mut self, dir: &Path) -> Result<ObjectMeta, BlobError> {
        self.temp.installed = true;
        File::open(dir)
            .await
            .map_err(io_error)?
            .sync_all()
            .await
            .map_err(io_error)?;
        Ok(ObjectMeta {
            size: self.size,
            etag: Some(format!("\"{}\"", self.etag)),
        })
    }
}

/// Asks the kernel to start writing `len` bytes at `offset` to disk now,
/// without waiting. Left alone, dirty pages wait for the flusher (or the
/// final fsync), so a blob's fsync had to write the whole file at the end and
/// took as long as receiving it; started as the bytes arrive, the disk works
/// while the network does and the fsync only waits for the tail. Measured with
/// bench/ingest. On Linux, `POSIX_FADV_DONTNEED` starts write-back of the
/// dirty range (and drops pages already clean, which nobody reads back soon).
/// Advice only: if it fails, the final fsync still makes the file durable.
fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        let _advice_only = rustix::fs::fadvise(
            file,
            offset,
            std::num::NonZeroU64::new(len),
            rustix::fs::Advice::DontNeed,
        );
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

fn header(etag: &str) -> Vec<u8> {
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(etag.as_bytes());
    header.push(b'\n');
    header
}

/// The metadata a blob file's header and length give.
fn blob_meta(header: &[u8; HEADER_LEN], file_len: u64) -> Result<ObjectMeta, BlobError> {
    let etag = header
        .strip_prefix(MAGIC)
        .and_then(|rest| rest.strip_suffix(b"\n"))
        .filter(|hex| {
            hex.iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        })
        .and_then(|hex| std::str::from_utf8(hex).ok())
        .ok_or_else(|| other("not a blob file (bad header)"))?;
    Ok(ObjectMeta {
        size: file_len - HEADER_LEN as u64,
        etag: Some(format!("\"{etag}\"")),
    })
}

/// `open_blob` with blocking calls, for code already on the blocking pool.
fn open_blob_blocking(path: &Path) -> Result<(std::fs::File, ObjectMeta), BlobError> {
    let mut file = std::fs::File::open(path).map_err(io_error)?;
    let md = file.metadata().map_err(io_error)?;
    if !md.is_file() {
        // A directory: a prefix of other keys, not an object.
        return Err(BlobError::NotFound);
    }
    let mut header = [0u8; HEADER_LEN];
    file.read_exact(&mut header)
        .map_err(|_| other("not a blob file (too short)"))?;
    let meta = blob_meta(&header, md.len())?;
    Ok((file, meta))
}

/// Opens a blob file positioned at its content.
async fn open_blob(path: &Path) -> Result<(File, ObjectMeta), BlobError> {
    let mut file = File::open(path).await.map_err(io_error)?;
    let md = file.metadata().await.map_err(io_error)?;
    if !md.is_file() {
        // A directory: a prefix of other keys, not an object.
        return Err(BlobError::NotFound);
    }
    let mut header = [0u8; HEADER_LEN];
    file.read_exact(&mut header)
        .await
        .map_err(|_| other("not a blob file (too short)"))?;
    let meta = blob_meta(&header, md.len())?;
    Ok((file, meta))
}

/// Streams `len` bytes from `file`'s position, `READ_CHUNK` at a time.
fn read_stream(file: File, len: u64) -> ByteStream {
    Box::pin(futures_util::stream::try_unfold(
        (file, len),
        |(mut file, left)| async move {
            if left == 0 {
                return Ok(None);
            }
            let want = left.min(READ_CHUNK as u64);
            let mut buf = BytesMut::with_capacity(want as usize);
            let n = (&mut file)
                .take(want)
                .read_buf(&mut buf)
                .await
                .map_err(io_error)?;
            if n == 0 {
                return Err(other("object file ended early"));
            }
            Ok(Some((buf.freeze(), (file, left - n as u64))))
        },
    ))
}

/// `list` on the blocking pool: a directory walk is many small syscalls.
fn list_blocking(objects: &Path, prefix: &str) -> Result<Vec<(ObjectKey, ObjectMeta)>, BlobError> {
    // Walk only the directory the prefix names, keeping its entries whose
    // name starts with the prefix's last segment.
    let (dir, name_prefix) = prefix.rsplit_once('/').unwrap_or(("", prefix));
    if !dir.is_empty() && ObjectKey::parse(dir).is_err() {
        // No key has a prefix that is not made of valid segments.
        return Ok(Vec::new());
    }
    let start = if dir.is_empty() {
        objects.to_owned()
    } else {
        objects.join(dir)
    };
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(&start) {
        Ok(entries) => entries,
        Err(e) if is_not_found(&e) => return Ok(found),
        Err(e) => return Err(io_error(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_error)?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !name.starts_with(name_prefix) {
            continue;
        }
        let rel = if dir.is_empty() {
            name
        } else {
            format!("{dir}/{name}")
        };
        walk(&entry.path(), rel, &mut found)?;
    }
    found.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    Ok(found)
}

fn walk(
    path: &Path,
    rel: String,
    found: &mut Vec<(ObjectKey, ObjectMeta)>,
) -> Result<(), BlobError> {
    let md = match std::fs::symlink_metadata(path) {
        Ok(md) => md,
        // Deleted since the directory was read.
        Err(e) if is_not_found(&e) => return Ok(()),
        Err(e) => return Err(io_error(e)),
    };
    if md.is_dir() {
        let entries = match std::fs::read_dir(path) {
            Ok(entries) => entries,
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => return Err(io_error(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_error)?;
            if let Some(name) = entry.file_name().to_str() {
                walk(&entry.path(), format!("{rel}/{name}"), found)?;
            }
        }
    } else if md.is_file() {
        // Only what this store wrote: anything else under objects/ is not an object.
        let Ok(key) = ObjectKey::parse(&rel) else {
            return Ok(());
        };
        let mut header = [0u8; HEADER_LEN];
        let read = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut header));
        match read {
            Ok(()) => found.push((key, blob_meta(&header, md.len())?)),
            Err(e) if is_not_found(&e) => {}
            Err(_) => return Err(other("not a blob file (too short)")),
        }
    }
    Ok(())
}

fn is_not_found(e: &io::Error) -> bool {
    // NotADirectory: a key below another object's key, e.g. `a/b` when `a` is a file.
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

fn io_error(e: io::Error) -> BlobError {
    if is_not_found(&e) {
        BlobError::NotFound
    } else {
        BlobError::Other(e.into())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::time::Duration;

    use chrono::TimeDelta;
    use secrecy::SecretSlice;

    async fn store(dir: &Path) -> LocalStore {
        let opts = StorageOptions {
            public_url: "http://blobs.test".into(),
            signing_key: SecretSlice::from(vec![42u8; 32]),
            data_dir: dir.to_owned(),
        };
        LocalStore::open(dir.join("blobs"), &opts).await.unwrap()
    }

    fn key() -> ObjectKey {
        ObjectKey::parse("tenants/t/projects/p/uploads/u/original").unwrap()
    }

    fn body(data: &'static [u8]) -> ByteStream {
        Box::pin(futures_util::stream::once(async move {
            Ok(Bytes::from_static(data))
        }))
    }

    #[tokio::test]
    async fn stale_temp_files_are_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = store(dir.path()).await.tmp;
        let old = tmp.join("old");
        let young = tmp.join("young");
        for p in [&old, &young] {
            std::fs::write(p, b"half a photo").unwrap();
        }
        let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
        store(dir.path()).await;
        assert!(!old.exists(), "a stale temp file survived");
        assert!(young.exists(), "a write in progress was removed");
    }

    /// The path and query of a signed URL, as the blob endpoint would see them.
    fn split(url: &str) -> (String, String) {
        let url = url::Url::parse(url).unwrap();
        let key = url.path().strip_prefix("/v1/blobs/").unwrap().to_owned();
        (key, url.query().unwrap().to_owned())
    }

    fn put_request<'a>(
        key: &'a str,
        query: &'a str,
        content_type: &'a str,
        len: u64,
        now: DateTime<Utc>,
    ) -> SignedRequest<'a> {
        SignedRequest {
            method: SignedMethod::Put,
            key,
            query,
            content_type: Some(content_type),
            content_length: Some(len),
            now,
        }
    }

    fn get_request<'a>(
        key: &'a str,
        query: &'a str,
        method: SignedMethod,
        now: DateTime<Utc>,
    ) -> SignedRequest<'a> {
        SignedRequest {
            method,
            key,
            query,
            content_type: None,
            content_length: None,
            now,
        }
    }

    fn denied(result: Result<impl std::fmt::Debug, BlobError>) -> &'static str {
        match result {
            Err(BlobError::Denied(code)) => code,
            other => panic!("expected Denied, got {other:?}"),
        }
    }

    fn unquoted(etag: Option<&str>) -> &str {
        etag.and_then(|e| e.strip_prefix('"')?.strip_suffix('"'))
            .unwrap()
    }

    #[tokio::test]
    async fn etag_is_a_new_id_per_write() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path()).await;
        let first = s.put(&key(), "text/plain", body(b"same")).await.unwrap();
        let second = s.put(&key(), "text/plain", body(b"same")).await.unwrap();
        assert_ne!(first.etag, second.etag);
        let id = unquoted(second.etag.as_deref());
        assert_eq!(id.len(), 2 * ETAG_ID_LEN);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(s.head(&key()).await.unwrap().as_ref(), Some(&second));
        // The id is in the object's header, before the content.
        let file = std::fs::read(s.object_path(&key())).unwrap();
        assert_eq!(file[..HEADER_LEN], header(id));
        assert_eq!(&file[HEADER_LEN..], b"same");

        // A part written again with the same bytes is a new version: only
        // the ETag of the one stored completes the upload.
        let upload = s.multipart_create(&key(), "text/plain").await.unwrap();
        let part = Bytes::from_static(b"part");
        let old = s
            .multipart_put_part(&key(), &upload, 1, part.clone())
            .await
            .unwrap();
        let new = s
            .multipart_put_part(&key(), &upload, 1, part)
            .await
            .unwrap();
        assert_ne!(old, new);
        let completed = |etag: &str| {
            [CompletedPart {
                number: 1,
                etag: etag.to_owned(),
            }]
        };
        let res = s
            .multipart_complete(&key(), &upload, &completed(&old))
            .await;
        assert!(matches!(res, Err(BlobError::InvalidParts(_))), "{res:?}");
        let meta = s
            .multipart_complete(&key(), &upload, &completed(&new))
            .await
            .unwrap();
        assert_eq!(meta.size, 4);
        assert_ne!(meta.etag.as_deref(), Some(new.as_str()));
    }

    /// `head`, then a stream that never ends.
    fn stalled(head: &'static [u8]) -> ByteStream {
        let head = futures_util::stream::once(async move { Ok(Bytes::from_static(head)) });
        Box::pin(head.chain(futures_util::stream::pending()))
    }

    #[tokio::test]
    async fn failed_and_abandoned_writes_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path()).await;
        let tmp_files = || std::fs::read_dir(&s.tmp).unwrap().count();

        // The body fails halfway: its error is returned, after the cleanup.
        let failing: ByteStream = Box::pin(futures_util::stream::iter([
            Ok(Bytes::from_static(b"some")),
            Err(other("connection reset")),
        ]));
        let res = s.put(&key(), "text/plain", failing).await;
        assert!(
            matches!(&res, Err(BlobError::Other(e)) if e.to_string() == "connection reset"),
            "{res:?}"
        );
        assert_eq!(tmp_files(), 0);

        // The request goes away halfway (a client that disconnects): the
        // writer, on its own thread, removes the file soon after.
        let key = key();
        let mut put = Box::pin(s.put(&key, "text/plain", stalled(b"some")));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tmp_files() == 0 {
            assert!(tokio::time::Instant::now() < deadline, "no temporary file");
            let res = tokio::time::timeout(Duration::from_millis(10), &mut put).await;
            assert!(res.is_err(), "the write did not stall: {res:?}");
        }
        drop(put);
        while tmp_files() > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "temporary file left"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(s.head(&key).await.unwrap(), None);
    }

    #[tokio::test]
    async fn signed_put_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path()).await;
        let now = Utc::now();
        let spec = PutSpec {
            content_type: "image/jpeg".into(),
            content_length: 5,
        };
        let signed = s
            .sign_put(&key(), &spec, now, now + TimeDelta::hours(1))
            .unwrap();
        let (k, q) = split(&signed.url);
        let at = |now| put_request(&k, &q, "image/jpeg", 5, now);

        // Tampered: another key, another length, a flipped signature bit.
        let other_key = k.replace("/u/", "/v/");
        let req = put_request(&other_key, &q, "image/jpeg", 5, now);
        assert_eq!(
            denied(s.signed_put(req, body(b"hello")).await),
            "signature_invalid"
        );
        let longer = q.replace("len=5", "len=6");
        let req = put_request(&k, &longer, "image/jpeg", 6, now);
        assert_eq!(
            denied(s.signed_put(req, body(b"hello!")).await),
            "signature_invalid"
        );
        let last = q.chars().last().unwrap();
        let flipped = format!(
            "{}{}",
            &q[..q.len() - 1],
            if last == '0' { '1' } else { '0' }
        );
        let req = put_request(&k, &flipped, "image/jpeg", 5, now);
        assert_eq!(
            denied(s.signed_put(req, body(b"hello")).await),
            "signature_invalid"
        );
        let req = put_request(&k, "op=put", "image/jpeg", 5, now);
        assert_eq!(
            denied(s.signed_put(req, body(b"hello")).await),
            "signature_invalid"
        );

        // Expired: at the expiry instant and later.
        let late = now + TimeDelta::hours(2);
        assert_eq!(
            denied(s.signed_put(at(late), body(b"hello")).await),
            "signature_expired"
        );

        // A PUT link used for GET.
        let mut req = at(now);
        req.method = SignedMethod::Get;
        assert_eq!(
            denied(s.signed_get(req).await.map(|g| g.meta)),
            "method_not_allowed"
        );

        // Declared length other than the signed one, or none.
        let req = put_request(&k, &q, "image/jpeg", 6, now);
        assert_eq!(
            denied(s.signed_put(req, body(b"hello!")).await),
            "length_mismatch"
        );
        let mut req = at(now);
        req.content_length = None;
        assert_eq!(
            denied(s.signed_put(req, body(b"hello")).await),
            "length_mismatch"
        );

        // Declared length right, body longer or shorter.
        assert_eq!(
            denied(s.signed_put(at(now), body(b"hello!")).await),
            "length_mismatch"
        );
        assert_eq!(
            denied(s.signed_put(at(now), body(b"hell")).await),
            "length_mismatch"
        );

        // Another content type.
        let req = put_request(&k, &q, "image/png", 5, now);
        assert_eq!(
            denied(s.signed_put(req, body(b"hello")).await),
            "content_type_mismatch"
        );

        // Nothing was stored, and no temporary file is left.
        assert_eq!(s.head(&key()).await.unwrap(), None);
        assert_eq!(std::fs::read_dir(&s.tmp).unwrap().count(), 0);

        // The link itself works.
        let etag = s.signed_put(at(now), body(b"hello")).await.unwrap();
        let meta = s.head(&key()).await.unwrap().unwrap();
        assert_eq!(meta.size, 5);
        assert_eq!(meta.etag.as_deref(), Some(etag.as_str()));
    }

    #[tokio::test]
    async fn signed_get_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path()).await;
        let now = Utc::now();
        s.put(&key(), "text/plain", body(b"hello")).await.unwrap();
        let spec = GetSpec {
            content_type: "text/plain".into(),
            content_disposition: "attachment; filename=\"a.txt\"".into(),
        };
        let signed = s
            .sign_get(&key(), &spec, now, now + TimeDelta::minutes(5))
            .unwrap();
        let (k, q) = split(&signed.url);
        let get = |query, method, now| get_request(&k, query, method, now);

        let res = s.signed_get(get(&q, SignedMethod::Get, now)).await.unwrap();
        assert_eq!(res.content_type, "text/plain");
        assert_eq!(res.content_disposition, spec.content_disposition);
        assert_eq!(res.meta.size, 5);

        let tampered = q.replace("a.txt", "b.txt");
        let res = s.signed_get(get(&tampered, SignedMethod::Get, now)).await;
        assert_eq!(denied(res.map(|g| g.meta)), "signature_invalid");
        let later = now + TimeDelta::minutes(5);
        let res = s.signed_get(get(&q, SignedMethod::Get, later)).await;
        assert_eq!(denied(res.map(|g| g.meta)), "signature_expired");
        // A GET link used for PUT: it must not overwrite the object.
        let mut req = get(&q, SignedMethod::Put, now);
        req.content_type = Some("text/plain");
        req.content_length = Some(5);
        assert_eq!(
            denied(s.signed_put(req, body(b"HELLO")).await),
            "method_not_allowed"
        );
        assert_eq!(s.head(&key()).await.unwrap().unwrap().size, 5);
    }
}
