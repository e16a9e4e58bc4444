//! The wire format: request and response bodies, with their OpenAPI schemas.
//! Domain types never cross the HTTP boundary directly, so the core can change
//! without changing the API by accident.

use buildpeer_core::model::{Member, Project, Role, User};
use buildpeer_core::pagination::Page;
use buildpeer_core::queue::{Job, JobState};
use buildpeer_core::service::{JobDetail, UploadInstructions};
use buildpeer_core::upload::{Upload, UploadStatus};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

mod rfc3339;
pub mod strings;

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// An integer field as JSON Schema reads `"type": "integer"`: any number
/// without a fractional part, so `4336.0` is `4336` (serde alone refuses
/// it, and generated clients and fuzzers send it). A fraction, a negative
/// number, or one past the type's range is still refused.
fn integer<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<T, D::Error> {
    use serde::de::{Error as _, Unexpected};
    let n = serde_json::Number::deserialize(d)?;
    let whole = n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u64::MAX as f64)
            .map(|f| f as u64)
    });
    let unexpected = || match (n.as_i64(), n.as_f64()) {
        (Some(i), _) => Unexpected::Signed(i),
        (None, Some(f)) => Unexpected::Float(f),
        (None, None) => Unexpected::Other("a number"),
    };
    let whole = whole.ok_or_else(|| D::Error::invalid_type(unexpected(), &"an integer"))?;
    T::try_from(whole).map_err(|_| D::Error::invalid_value(unexpected(), &"an integer in range"))
}

/// Any strings: whatever does not name an account is the same 401.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The tenant's slug, e.g. `acme`.
    pub tenant: String,
    pub email: String,
    pub password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    /// A JWT, valid for `expires_in` seconds.
    pub access_token: String,
    /// Opaque; valid once: every refresh returns a new one.
    pub refresh_token: String,
    /// Always `Bearer`.
    #[schema(value_type = String, pattern = "^Bearer$")]
    pub token_type: &'static str,
    /// Seconds the access token is valid for.
    pub expires_in: i64,
}

#[derive(Serialize, Deserialize, ToSchema, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum RoleDto {
    Admin,
    Supervisor,
    Empleado,
    Viewer,
}

impl From<Role> for RoleDto {
    fn from(r: Role) -> Self {
        match r {
            Role::Admin => RoleDto::Admin,
            Role::Supervisor => RoleDto::Supervisor,
            Role::Empleado => RoleDto::Empleado,
            Role::Viewer => RoleDto::Viewer,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct UserDto {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub email: String,
    pub name: String,
    pub role: RoleDto,
    pub disabled: bool,
    #[serde(serialize_with = "rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339::serialize")]
    pub updated_at: DateTime<Utc>,
}

impl From<User> for UserDto {
    fn from(u: User) -> Self {
        Self {
            id: u.id.as_uuid(),
            tenant_id: u.tenant_id.as_uuid(),
            email: u.email,
            name: u.name,
            role: u.role.into(),
            disabled: u.disabled,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    #[schema(value_type = strings::Email)]
    pub email: String,
    #[schema(value_type = strings::Password)]
    pub password: String,
    #[schema(value_type = strings::Name)]
    pub name: String,
    #[schema(value_type = RoleDto)]
    pub role: String,
}

/// Absent or `null` fields stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    #[schema(value_type = Option<strings::Name>)]
    pub name: Option<String>,
    #[schema(value_type = Option<RoleDto>)]
    pub role: Option<String>,
    /// A disabled user can neither log in nor refresh, and its sessions end.
    pub disabled: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct ProjectDto {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub code: Option<String>,
    pub address: Option<String>,
    pub created_by: Uuid,
    pub archived: bool,
    #[serde(serialize_with = "rfc3339::option")]
    pub archived_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339::serialize")]
    pub updated_at: DateTime<Utc>,
}

impl From<Project> for ProjectDto {
    fn from(p: Project) -> Self {
        Self {
            id: p.id.as_uuid(),
            tenant_id: p.tenant_id.as_uuid(),
            name: p.name,
            code: p.code,
            address: p.address,
            created_by: p.created_by.as_uuid(),
            archived: p.archived_at.is_some(),
            archived_at: p.archived_at,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProjectRequest {
    #[schema(value_type = strings::Name)]
    pub name: String,
    #[schema(value_type = Option<strings::ProjectCode>)]
    pub code: Option<String>,
    #[schema(value_type = Option<strings::Address>)]
    pub address: Option<String>,
}

/// Absent fields stay as they are (so does a `null` name); `null` clears
/// `code` or `address`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProjectRequest {
    #[schema(value_type = Option<strings::Name>)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<strings::ProjectCode>)]
    pub code: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<strings::Address>)]
    pub address: Option<Option<String>>,
}

#[derive(Serialize, ToSchema)]
pub struct MemberDto {
    pub user_id: Uuid,
    pub email: String,
    pub name: String,
    pub role: RoleDto,
    #[serde(serialize_with = "rfc3339::serialize")]
    pub added_at: DateTime<Utc>,
}

impl From<Member> for MemberDto {
    fn from(m: Member) -> Self {
        Self {
            user_id: m.user_id.as_uuid(),
            email: m.email,
            name: m.name,
            role: m.role.into(),
            added_at: m.added_at,
        }
    }
}

/// Every list answers this envelope, newest first.
#[derive(Serialize, ToSchema)]
pub struct ListEnvelope<T> {
    pub items: Vec<T>,
    /// Pass as `?cursor=` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> ListEnvelope<T> {
    pub fn from_page<U>(page: Page<U>) -> Self
    where
        T: From<U>,
    {
        Self {
            items: page.items.into_iter().map(T::from).collect(),
            next_cursor: page.next_cursor,
        }
    }
}

/// A page of a list. Any other query parameter is refused (422).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Items per page, 1 to 100; default 50.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<strings::Cursor>)]
    pub cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ProjectListParams {
    /// Items per page, 1 to 100; default 50.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<strings::Cursor>)]
    pub cursor: Option<String>,
    /// Include archived projects (default false).
    pub include_archived: Option<bool>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InitiateUploadRequest {
    #[schema(value_type = strings::Filename)]
    pub filename: String,
    #[schema(value_type = strings::ContentType)]
    pub content_type: String,
    /// Exact size in bytes; the signed URLs bind it. Above the tenant's
    /// largest upload (5 GiB by default) it is refused with 413 `too_large`.
    #[schema(minimum = 1)]
    #[serde(deserialize_with = "integer")]
    pub size: u64,
    /// SHA-256 of the file: lets a re-sent photo be recognised, and
    /// processing checks it.
    #[schema(value_type = Option<strings::Sha256>)]
    pub sha256: Option<String>,
}

#[derive(Serialize, ToSchema, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "UPPERCASE")]
pub enum UploadStatusDto {
    Pending,
    Uploaded,
    Processing,
    Completed,
    Failed,
    Expired,
}

impl From<UploadStatus> for UploadStatusDto {
    fn from(s: UploadStatus) -> Self {
        match s {
            UploadStatus::Pending => Self::Pending,
            UploadStatus::Uploaded => Self::Uploaded,
            UploadStatus::Processing => Self::Processing,
            UploadStatus::Completed => Self::Completed,
            UploadStatus::Failed => Self::Failed,
            UploadStatus::Expired => Self::Expired,
        }
    }
}

/// Why an upload failed.
#[derive(Serialize, ToSchema)]
pub struct UploadErrorDto {
    pub code: String,
    pub message: String,
}

#[derive(Serialize, ToSchema)]
pub struct UploadDto {
    pub id: Uuid,
    pub project_id: Uuid,
    pub status: UploadStatusDto,
    pub filename: String,
    /// The type recorded at initiation (normalised).
    pub content_type: String,
    pub size: u64,
    pub sha256: Option<String>,
    pub uploaded_by: Uuid,
    #[serde(serialize_with = "rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339::serialize")]
    pub updated_at: DateTime<Utc>,
    /// When the bytes were confirmed in storage.
    #[serde(serialize_with = "rfc3339::option")]
    pub uploaded_at: Option<DateTime<Utc>>,
    /// When the signed upload URLs stop working (pending uploads).
    #[serde(serialize_with = "rfc3339::serialize")]
    pub expires_at: DateTime<Utc>,
    /// Set while the upload is in the trash.
    #[serde(serialize_with = "rfc3339::option")]
    pub deleted_at: Option<DateTime<Utc>>,
    /// Why processing failed (status FAILED).
    pub error: Option<UploadErrorDto>,
    /// The type sniffed from the content once processed; may differ from
    /// `content_type` (then `type_mismatch` is true).
    pub detected_type: Option<String>,
    pub type_mismatch: bool,
    /// What processing read from the content (status COMPLETED).
    pub metadata: Option<MediaMetadataDto>,
    /// Derivatives (status COMPLETED; none for PDFs).
    pub thumbnails: Vec<ThumbnailDto>,
}

#[derive(Serialize, ToSchema)]
pub struct MediaMetadataDto {
    /// As displayed (after the EXIF orientation).
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// EXIF capture time: RFC 3339 with the camera's offset when it recorded
    /// one, else local time without an offset.
    pub taken_at: Option<String>,
    pub gps: Option<GpsDto>,
    pub camera: Option<CameraDto>,
    /// EXIF orientation (1-8).
    pub orientation: Option<u16>,
    /// PDFs.
    pub page_count: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct GpsDto {
    pub latitude: f64,
    pub longitude: f64,
    /// Metres above sea level.
    pub altitude: Option<f64>,
}

#[derive(Serialize, ToSchema)]
pub struct CameraDto {
    pub make: Option<String>,
    pub model: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ThumbnailDto {
    /// `thumb`, `preview`, … (configured).
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    /// Redirects (307) to a short-lived signed URL of the JPEG.
    pub url: String,
}

impl From<Upload> for UploadDto {
    fn from(u: Upload) -> Self {
        let type_mismatch = u
            .processed
            .as_ref()
            .is_some_and(|p| p.type_mismatch(&u.content_type));
        Self {
            id: u.id.as_uuid(),
            project_id: u.project_id.as_uuid(),
            status: u.status.into(),
            filename: u.filename,
            content_type: u.content_type,
            size: u.size,
            sha256: u.sha256,
            uploaded_by: u.uploaded_by.as_uuid(),
            created_at: u.created_at,
            updated_at: u.updated_at,
            uploaded_at: u.uploaded_at,
            expires_at: u.expires_at,
            deleted_at: u.deleted_at,
            error: u.failure.map(|f| UploadErrorDto {
                code: f.code,
                message: f.message,
            }),
            type_mismatch,
            detected_type: u.processed.as_ref().map(|p| p.detected_type.clone()),
            thumbnails: u
                .processed
                .as_ref()
                .map(|p| {
                    p.thumbnails
                        .iter()
                        .map(|t| ThumbnailDto {
                            url: format!("/v1/uploads/{}/thumbnails/{}", u.id, t.name),
                            name: t.name.clone(),
                            width: t.width,
                            height: t.height,
                            bytes: t.bytes,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            metadata: u.processed.map(|p| {
                let m = p.metadata;
                MediaMetadataDto {
                    width: m.width,
                    height: m.height,
                    taken_at: m.taken_at,
                    gps: m.gps.map(|g| GpsDto {
                        latitude: g.latitude,
                        longitude: g.longitude,
                        altitude: g.altitude,
                    }),
                    camera: (m.camera_make.is_some() || m.camera_model.is_some()).then_some(
                        CameraDto {
                            make: m.camera_make,
                            model: m.camera_model,
                        },
                    ),
                    orientation: m.orientation,
                    page_count: m.page_count,
                }
            }),
        }
    }
}

/// One signed part URL of a multipart upload.
#[derive(Serialize, ToSchema)]
pub struct PartUrlDto {
    pub number: u32,
    pub url: String,
    /// The exact `Content-Length` this part must have.
    pub size: u64,
}

/// How to send the bytes: one signed PUT, or signed PUTs per part.
#[derive(Serialize, ToSchema)]
#[serde(tag = "method")]
pub enum UploadInstructionsDto {
    #[serde(rename = "PUT")]
    Put {
        url: String,
        /// Send exactly these headers with the PUT.
        headers: std::collections::BTreeMap<String, String>,
        #[serde(serialize_with = "rfc3339::serialize")]
        expires_at: DateTime<Utc>,
    },
    #[serde(rename = "MULTIPART")]
    Multipart {
        part_size: u64,
        parts: Vec<PartUrlDto>,
        #[serde(serialize_with = "rfc3339::serialize")]
        expires_at: DateTime<Utc>,
    },
}

impl From<UploadInstructions> for UploadInstructionsDto {
    fn from(i: UploadInstructions) -> Self {
        match i {
            UploadInstructions::Put(url) => Self::Put {
                url: url.url,
                headers: url.headers.into_iter().collect(),
                expires_at: url.expires_at,
            },
            UploadInstructions::Multipart {
                part_size,
                parts,
                expires_at,
            } => Self::Multipart {
                part_size,
                parts: parts
                    .into_iter()
                    .map(|(number, url)| PartUrlDto {
                        number,
                        size: url
                            .headers
                            .iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                            .and_then(|(_, v)| v.parse().ok())
                            .unwrap_or(part_size),
                        url: url.url,
                    })
                    .collect(),
                expires_at,
            },
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct InitiatedUploadDto {
    #[serde(flatten)]
    pub upload: UploadDto,
    /// Absent when there is nothing to send (de-duplicated, or no longer pending).
    #[serde(rename = "upload", skip_serializing_if = "Option::is_none")]
    pub instructions: Option<UploadInstructionsDto>,
    /// `true` when the same photo was already uploaded: this is that upload.
    pub deduplicated: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompletedPartDto {
    /// The part's number, from 1.
    #[serde(deserialize_with = "integer")]
    pub number: u32,
    /// The `ETag` header storage returned for the part.
    pub etag: String,
}

/// Single uploads complete without a body; multipart uploads send their parts.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteUploadRequest {
    /// Multipart uploads only: every part with the ETag storage returned.
    pub parts: Option<Vec<CompletedPartDto>>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UploadListParams {
    /// Items per page, 1 to 100; default 50.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<strings::Cursor>)]
    pub cursor: Option<String>,
    /// Only uploads in this status.
    #[param(value_type = Option<UploadStatusDto>)]
    pub status: Option<String>,
    /// Only uploads by this user.
    #[param(value_type = Option<Uuid>)]
    pub uploaded_by: Option<String>,
    /// Created at or after (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Created before (RFC 3339).
    pub to: Option<DateTime<Utc>>,
    /// List the trash instead (default false).
    pub deleted: Option<bool>,
    /// Captured at or after (RFC 3339; processed photos with a capture time).
    pub taken_from: Option<DateTime<Utc>>,
    /// Captured before (RFC 3339).
    pub taken_to: Option<DateTime<Utc>>,
    /// Only uploads with (true) or without (false) a GPS position.
    pub has_gps: Option<bool>,
}

#[derive(Serialize, ToSchema, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum JobStateDto {
    Queued,
    Running,
    Done,
    Dead,
}

impl From<JobState> for JobStateDto {
    fn from(s: JobState) -> Self {
        match s {
            JobState::Queued => Self::Queued,
            JobState::Running => Self::Running,
            JobState::Done => Self::Done,
            JobState::Dead => Self::Dead,
        }
    }
}

/// A job of the processing queue.
#[derive(Serialize, ToSchema)]
pub struct JobDto {
    pub id: Uuid,
    /// What it does, e.g. `process_upload`.
    pub kind: String,
    /// `queued` (waiting for `run_at`), `running`, `done` or `dead` (out of
    /// attempts or failed permanently; an admin can retry it).
    pub state: JobStateDto,
    /// Runs so far, the current one included.
    pub attempts: u32,
    pub max_attempts: u32,
    /// When it is (or was) due.
    #[serde(serialize_with = "rfc3339::serialize")]
    pub run_at: DateTime<Utc>,
    /// While running: when its worker's lease runs out.
    #[serde(serialize_with = "rfc3339::option")]
    pub lease_until: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// The upload it works on, if any.
    pub upload_id: Option<Uuid>,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    #[serde(serialize_with = "rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339::serialize")]
    pub updated_at: DateTime<Utc>,
}

impl From<Job> for JobDto {
    fn from(j: Job) -> Self {
        Self {
            id: j.id.as_uuid(),
            payload: serde_json::from_str(&j.payload)
                .unwrap_or(serde_json::Value::String(j.payload)),
            kind: j.kind,
            state: j.state.into(),
            attempts: j.attempts,
            max_attempts: j.max_attempts,
            run_at: j.run_at,
            lease_until: j.lease_until,
            last_error: j.last_error,
            upload_id: j.upload_id.map(|u| u.as_uuid()),
            created_at: j.created_at,
            updated_at: j.updated_at,
        }
    }
}

/// One failed run of a job.
#[derive(Serialize, ToSchema)]
pub struct JobErrorDto {
    pub attempt: u32,
    pub error: String,
    #[serde(serialize_with = "rfc3339::serialize")]
    pub at: DateTime<Utc>,
}

/// A job with every failed run, oldest first.
#[derive(Serialize, ToSchema)]
pub struct JobDetailDto {
    #[serde(flatten)]
    pub job: JobDto,
    pub errors: Vec<JobErrorDto>,
}

impl From<JobDetail> for JobDetailDto {
    fn from(d: JobDetail) -> Self {
        Self {
            job: d.job.into(),
            errors: d
                .errors
                .into_iter()
                .map(|f| JobErrorDto {
                    attempt: f.attempt,
                    error: f.error,
                    at: f.at,
                })
                .collect(),
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct JobListParams {
    /// Items per page, 1 to 100; default 50.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<strings::Cursor>)]
    pub cursor: Option<String>,
    /// Only jobs in this state.
    #[param(value_type = Option<JobStateDto>)]
    pub state: Option<String>,
}

/// The `Idempotency-Key` request header of the creating operations.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Read by `extract::idempotency_key`; here for the document.
pub struct IdempotencyKeyHeader {
    #[param(rename = "Idempotency-Key", value_type = Option<strings::IdempotencyKey>)]
    pub idempotency_key: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RetriedDto {
    /// How many dead jobs were queued again.
    pub retried: u64,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn size(json: &str) -> Result<u64, String> {
        serde_json::from_str::<InitiateUploadRequest>(&format!(
            r#"{{"filename":"a.jpg","content_type":"image/jpeg","size":{json}}}"#
        ))
        .map(|r| r.size)
        .map_err(|e| e.to_string())
    }

    #[test]
    fn integers_as_json_schema_reads_them() {
        assert_eq!(size("4336").unwrap(), 4336);
        assert_eq!(size("4336.0").unwrap(), 4336);
        assert_eq!(size("4.336e3").unwrap(), 4336);
        assert!(size("4336.5").unwrap_err().contains("expected an integer"));
        assert!(size("-1").unwrap_err().contains("integer `-1`"));
        assert!(size("1e300").is_err());
        assert!(size("\"4336\"").is_err());
        let part = |n: &str| {
            serde_json::from_str::<CompletedPartDto>(&format!(r#"{{"number":{n},"etag":"e"}}"#))
                .map(|p| p.number)
        };
        assert_eq!(part("2.0").unwrap(), 2);
        assert!(part("4294967296").is_err());
    }
}
