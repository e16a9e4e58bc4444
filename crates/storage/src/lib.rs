//! Blob-store adapters for the `BlobStore` port of `buildpeer-core`: the local
//! file system (`file:` URLs), which serves its own HMAC-signed links through
//! `SignedEndpoint`, and any S3-compatible store (`s3:` URLs), whose SigV4
//! presigned URLs clients use directly.
//!
//! `open` picks the adapter from a URL so that configuration stays one string:
//!
//! - `file:PATH` or `file://PATH`: a directory, relative to the working
//!   directory or absolute, created if missing. An empty URL means
//!   `file:{data_dir}/blobs`, the default.
//! - `s3://BUCKET?endpoint=http://127.0.0.1:3900&region=garage`: credentials
//!   from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and optionally
//!   `AWS_SESSION_TOKEN`; see the `s3` module for every parameter.

use std::error::Error as StdError;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use buildpeer_core::blob::{BlobError, BlobStore, CompletedPart};
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretSlice};

pub use breaker::{BreakerConfig, CircuitBreaker};

pub mod breaker;
mod local;
mod s3;
mod sigv4;

/// What the adapters need besides the URL.
pub struct StorageOptions {
    /// Base of the local adapter's signed links, e.g. `http://127.0.0.1:8080`:
    /// the address clients reach this service at.
    pub public_url: String,
    /// HMAC key of the local adapter's signed links, at least 32 bytes.
    pub signing_key: SecretSlice<u8>,
    /// The service's data directory; the default store lives in `blobs/` there.
    pub data_dir: PathBuf,
}

/// Why a store could not be opened. Messages never repeat credentials.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("invalid storage URL: {0}")]
    InvalidUrl(String),
    #[error("invalid storage options: {0}")]
    InvalidOptions(String),
    #[error("environment variable {0} must be set for S3 storage")]
    MissingCredential(&'static str),
    #[error("cannot prepare the storage directory {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up the S3 client")]
    S3(#[source] Box<dyn StdError + Send + Sync>),
}

/// The shortest local signing key: HMAC-SHA256 gains nothing past its block
/// size, and loses strength below its output size.
const MIN_SIGNING_KEY_LEN: usize = 32;

/// Opens the store `url` names (see the crate doc for the forms).
pub async fn open(url: &str, opts: &StorageOptions) -> Result<Arc<dyn BlobStore>, StorageError> {
    if url.is_empty() {
        let root = opts.data_dir.join("blobs");
        return Ok(Arc::new(local::LocalStore::open(root, opts).await?));
    }
    if let Some(path) = url.strip_prefix("file:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        if path.is_empty() {
            return Err(StorageError::InvalidUrl("a file: URL needs a path".into()));
        }
        return Ok(Arc::new(local::LocalStore::open(path.into(), opts).await?));
    }
    if url.starts_with("s3:") {
        return Ok(Arc::new(s3::S3Store::open(url)?));
    }
    // Only the scheme is repeated: the rest of a URL may hold a secret.
    let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
    Err(StorageError::InvalidUrl(format!(
        "unsupported scheme `{scheme}` (expected file: or s3:)"
    )))
}

/// S3's limits on multipart uploads, which the local adapter enforces too so
/// that a client that works against one works against the other.
const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
const MAX_PARTS: u32 = 10_000;

/// Checks a client's multipart completion before storage sees it: at least one
/// part, numbered 1, 2, … in order. Gaps are refused because S3 through
/// `object_store` numbers the parts it completes by position.
fn check_completion(parts: &[CompletedPart]) -> Result<(), BlobError> {
    if parts.is_empty() {
        return Err(BlobError::InvalidParts("no parts".into()));
    }
    for (i, part) in parts.iter().enumerate() {
        if u64::from(part.number) != i as u64 + 1 {
            return Err(BlobError::InvalidParts(format!(
                "parts must be numbered 1, 2, … in order; position {} has number {}",
                i + 1,
                part.number
            )));
        }
    }
    if parts.len() > MAX_PARTS as usize {
        return Err(BlobError::InvalidParts(format!(
            "more than {MAX_PARTS} parts"
        )));
    }
    Ok(())
}

fn check_part_number(number: u32) -> Result<(), BlobError> {
    if (1..=MAX_PARTS).contains(&number) {
        Ok(())
    } else {
        Err(other(format!(
            "part number {number} is not in 1..={MAX_PARTS}"
        )))
    }
}

/// A byte range must hold at least one byte; both adapters refuse the rest
/// the same way rather than each following its backend's quirks.
fn check_range(range: &Range<u64>) -> Result<(), BlobError> {
    if range.start < range.end {
        Ok(())
    } else {
        Err(other(format!(
            "empty byte range {}..{}",
            range.start, range.end
        )))
    }
}

/// A signed URL must outlive the moment it is signed at.
fn check_expiry(now: DateTime<Utc>, expires_at: DateTime<Utc>) -> Result<(), BlobError> {
    if expires_at > now {
        Ok(())
    } else {
        Err(other("a signed URL must expire after it is signed"))
    }
}

/// ETags travel quoted in HTTP headers and often unquoted in JSON bodies;
/// comparisons ignore the quotes.
fn unquote(etag: &str) -> &str {
    etag.trim_matches('"')
}

fn other(msg: impl Into<String>) -> BlobError {
    BlobError::Other(msg.into().into())
}

fn check_signing_key(key: &SecretSlice<u8>) -> Result<(), StorageError> {
    if key.expose_secret().len() < MIN_SIGNING_KEY_LEN {
        return Err(StorageError::InvalidOptions(format!(
            "the signing key must be at least {MIN_SIGNING_KEY_LEN} bytes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parts(numbers: &[u32]) -> Vec<CompletedPart> {
        numbers
            .iter()
            .map(|&number| CompletedPart {
                number,
                etag: "\"x\"".into(),
            })
            .collect()
    }

    #[test]
    fn completion_needs_parts_numbered_in_order() {
        assert!(check_completion(&parts(&[1, 2, 3])).is_ok());
        for bad in [&[][..], &[2], &[1, 3], &[2, 1], &[1, 1]] {
            assert!(
                matches!(
                    check_completion(&parts(bad)),
                    Err(BlobError::InvalidParts(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[tokio::test]
    async fn urls() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StorageOptions {
            public_url: "http://127.0.0.1:8080".into(),
            signing_key: SecretSlice::from(vec![7u8; 32]),
            data_dir: dir.path().to_owned(),
        };
        let store = open("", &opts).await.unwrap();
        assert_eq!(store.backend(), "local");
        assert!(dir.path().join("blobs").is_dir());

        let url = format!("file://{}/other", dir.path().display());
        assert_eq!(open(&url, &opts).await.unwrap().backend(), "local");
        assert!(dir.path().join("other").is_dir());

        for bad in ["file:", "file://", "ftp://user:secret@host/x", "secret"] {
            let err = open(bad, &opts).await.err().unwrap().to_string();
            assert!(!err.contains("secret"), "{err}");
        }

        let weak = StorageOptions {
            signing_key: SecretSlice::from(vec![7u8; 31]),
            ..opts
        };
        assert!(matches!(
            open("", &weak).await,
            Err(StorageError::InvalidOptions(_))
        ));
    }
}
