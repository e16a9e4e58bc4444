//! Uploads: the state machine, the accepted types, and the values a client
//! declares when it starts an upload.
//!
//! ```text
//! PENDING ──complete──► UPLOADED ──worker──► PROCESSING ──► COMPLETED
//!    │                                            └───────► FAILED
//!    └──URLs expired (sweeper)──► EXPIRED
//! ```
//!
//! A job retried from the dead-letter queue takes a `FAILED` upload back to
//! `PROCESSING` and runs from the start.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Invalid;
use crate::ids::{ProjectId, TenantId, UploadId, UserId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UploadStatus {
    Pending,
    Uploaded,
    Processing,
    Completed,
    Failed,
    Expired,
}

impl UploadStatus {
    pub const ALL: [UploadStatus; 6] = [
        UploadStatus::Pending,
        UploadStatus::Uploaded,
        UploadStatus::Processing,
        UploadStatus::Completed,
        UploadStatus::Failed,
        UploadStatus::Expired,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            UploadStatus::Pending => "PENDING",
            UploadStatus::Uploaded => "UPLOADED",
            UploadStatus::Processing => "PROCESSING",
            UploadStatus::Completed => "COMPLETED",
            UploadStatus::Failed => "FAILED",
            UploadStatus::Expired => "EXPIRED",
        }
    }

    /// Whether the state machine allows `self → to`.
    pub fn can_become(self, to: UploadStatus) -> bool {
        use UploadStatus::*;
        matches!(
            (self, to),
            (Pending, Uploaded)
                | (Pending, Expired)
                | (Uploaded, Processing)
                | (Processing, Completed)
                | (Processing, Failed)
                // A retried job starts over.
                | (Processing, Uploaded)
                | (Processing, Processing)
                | (Failed, Uploaded)
                | (Failed, Processing)
        )
    }

    /// The bytes are in storage: an upload in one of these states counts
    /// as a stored copy (for de-duplication and quota).
    pub fn has_bytes(self) -> bool {
        matches!(
            self,
            UploadStatus::Uploaded
                | UploadStatus::Processing
                | UploadStatus::Completed
                | UploadStatus::Failed
        )
    }
}

impl FromStr for UploadStatus {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        UploadStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                Invalid::new(
                    "unknown_status",
                    "one of PENDING, UPLOADED, PROCESSING, COMPLETED, FAILED, EXPIRED",
                )
            })
    }
}

impl fmt::Display for UploadStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A media type on the allowlist: photos (JPEG, PNG, WebP, HEIC/HEIF, GIF,
/// TIFF) and documents (PDF). Parameters are dropped and the name is
/// normalised, so `image/JPG; q=1` becomes `image/jpeg`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContentType(&'static str);

impl ContentType {
    pub const ALLOWED: [&'static str; 8] = [
        "image/jpeg",
        "image/png",
        "image/webp",
        "image/heic",
        "image/heif",
        "image/gif",
        "image/tiff",
        "application/pdf",
    ];

    /// What a tus upload records when its metadata names no `filetype`:
    /// not on the allowlist, which processing applies to the sniffed
    /// content instead.
    pub const UNDECLARED: ContentType = ContentType("application/octet-stream");

    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let essence = s
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let canonical = match essence.as_str() {
            "image/jpg" | "image/pjpeg" => "image/jpeg",
            "image/heic-sequence" => "image/heic",
            "image/heif-sequence" => "image/heif",
            other => other,
        };
        Self::ALLOWED
            .into_iter()
            .find(|t| *t == canonical)
            .map(Self)
            .ok_or_else(|| {
                Invalid::new(
                    "unsupported_type",
                    format!("accepted types: {}", Self::ALLOWED.join(", ")),
                )
            })
    }

    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

/// A user's filename, made harmless: path separators, control characters and
/// NUL become `_`, leading dots are dropped, and it is capped at 255 bytes.
/// It is metadata only; it never becomes part of a storage path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filename(String);

impl Filename {
    pub const MAX_BYTES: usize = 255;

    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let cleaned: String = s
            .chars()
            .map(|c| {
                if c == '/' || c == '\\' || c.is_control() {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        let cleaned = cleaned.trim().trim_start_matches('.').trim();
        if cleaned.is_empty() {
            return Err(Invalid::new("empty", "must name the file"));
        }
        let mut end = cleaned.len().min(Self::MAX_BYTES);
        while !cleaned.is_char_boundary(end) {
            end -= 1;
        }
        Ok(Self(cleaned[..end].to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A SHA-256 in lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sha256Hex(String);

impl Sha256Hex {
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let s = s.trim().to_ascii_lowercase();
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(s))
        } else {
            Err(Invalid::new("invalid_sha256", "64 hexadecimal characters"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How the bytes of an upload reach storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Transfer {
    /// One signed PUT.
    Single,
    /// A multipart upload of `part_count` parts of `part_size` bytes (the last
    /// one shorter).
    Multipart {
        upload_id: String,
        part_size: u64,
        part_count: u32,
    },
}

/// A machine reason and a human message for a failed upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadFailure {
    pub code: String,
    pub message: String,
}

impl fmt::Display for UploadFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// What the worker read from an upload's content.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MediaMetadata {
    /// As displayed, after the EXIF orientation.
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// EXIF `DateTimeOriginal`: RFC 3339 with its offset when the file has
    /// one, else local time without an offset.
    pub taken_at: Option<String>,
    pub gps: Option<GpsPoint>,
    pub camera_make: Option<String>,
    pub camera_model: Option<String>,
    /// EXIF orientation, 1..=8.
    pub orientation: Option<u16>,
    /// PDFs.
    pub page_count: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GpsPoint {
    pub latitude: f64,
    pub longitude: f64,
    /// Metres above sea level.
    pub altitude: Option<f64>,
}

/// A derivative stored next to the original.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thumbnail {
    /// `thumb`, `preview`, … (the configured sizes' names).
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    pub object_key: String,
}

/// The outcome of processing, set when an upload becomes `COMPLETED`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Processed {
    /// The type sniffed from the content (never the declared one).
    pub detected_type: String,
    pub metadata: MediaMetadata,
    pub thumbnails: Vec<Thumbnail>,
    /// `metadata.taken_at` as an instant, for the list's `taken_from` /
    /// `taken_to` filters; a time without an offset is taken as UTC.
    pub taken_at: Option<DateTime<Utc>>,
}

impl Processed {
    /// Whether the sniffed type differs from the one the client declared
    /// (recorded, not an error: the sniffed type is what counts).
    pub fn type_mismatch(&self, declared: &str) -> bool {
        let same = self.detected_type.eq_ignore_ascii_case(declared)
            || (self.detected_type == "image/heic" && declared.eq_ignore_ascii_case("image/heif"));
        !same
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Upload {
    pub id: UploadId,
    pub tenant_id: TenantId,
    pub project_id: ProjectId,
    pub uploaded_by: UserId,
    pub status: UploadStatus,
    pub filename: String,
    pub content_type: String,
    pub size: u64,
    pub sha256: Option<String>,
    pub object_key: String,
    pub transfer: Transfer,
    /// When the signed URLs of a pending upload stop working.
    pub expires_at: DateTime<Utc>,
    pub uploaded_at: Option<DateTime<Utc>>,
    /// Set while the upload is in the trash.
    pub deleted_at: Option<DateTime<Utc>>,
    pub failure: Option<UploadFailure>,
    /// Set once processing completed.
    pub processed: Option<Processed>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Splits `size` bytes into parts: at least `min_part` each (S3 refuses
/// smaller non-final parts below 5 MiB) and at most 10,000 parts.
pub fn plan_parts(size: u64, min_part: u64) -> (u64, u32) {
    const MAX_PARTS: u64 = 10_000;
    const MIB: u64 = 1024 * 1024;
    let min_part = min_part.max(5 * MIB);
    let needed = size.div_ceil(MAX_PARTS);
    // Whole MiB parts keep the arithmetic obvious for clients.
    let part_size = needed.max(min_part).div_ceil(MIB) * MIB;
    let count = size.div_ceil(part_size).max(1);
    (part_size, u32::try_from(count).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_machine() {
        use UploadStatus::*;
        assert!(Pending.can_become(Uploaded));
        assert!(Pending.can_become(Expired));
        assert!(!Pending.can_become(Completed));
        assert!(!Uploaded.can_become(Pending));
        assert!(!Expired.can_become(Uploaded));
        assert!(!Completed.can_become(Failed));
        for s in UploadStatus::ALL {
            assert_eq!(s.as_str().parse::<UploadStatus>().ok(), Some(s));
        }
    }

    #[test]
    fn content_types() {
        assert_eq!(
            ContentType::parse("image/JPG; q=1")
                .map(|c| c.as_str())
                .ok(),
            Some("image/jpeg")
        );
        assert_eq!(
            ContentType::parse("application/pdf")
                .map(|c| c.as_str())
                .ok(),
            Some("application/pdf")
        );
        for bad in [
            "",
            "text/html",
            "image/svg+xml",
            "application/octet-stream",
            "video/mp4",
        ] {
            assert!(ContentType::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn filenames_are_sanitised() {
        let f = |s: &str| Filename::parse(s).map(|f| f.0).unwrap_or_default();
        assert_eq!(f("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(f("foto\u{0}obra.jpg"), "foto_obra.jpg");
        assert_eq!(f("C:\\fotos\\a.jpg"), "C:_fotos_a.jpg");
        assert_eq!(f(".hidden.jpg"), "hidden.jpg");
        assert_eq!(f("línea\n2.jpg"), "línea_2.jpg");
        assert!(Filename::parse("  ").is_err());
        assert!(Filename::parse("...").is_err());
        let long = f(&"ñ".repeat(300));
        assert!(long.len() <= 255 && long.chars().all(|c| c == 'ñ'));
    }

    #[test]
    fn sha256() {
        assert!(Sha256Hex::parse(&"A".repeat(64)).is_ok());
        assert!(Sha256Hex::parse(&"a".repeat(63)).is_err());
        assert!(Sha256Hex::parse(&"g".repeat(64)).is_err());
    }

    #[test]
    fn part_plans() {
        const MIB: u64 = 1024 * 1024;
        assert_eq!(plan_parts(100 * MIB, 8 * MIB), (8 * MIB, 13));
        assert_eq!(plan_parts(64 * MIB, 8 * MIB), (8 * MIB, 8));
        let (size, count) = plan_parts(5 * 1024 * 1024 * MIB, 8 * MIB);
        assert!(count <= 10_000 && size * u64::from(count) >= 5 * 1024 * 1024 * MIB);
        assert_eq!(plan_parts(1, 1), (5 * MIB, 1));
    }
}
