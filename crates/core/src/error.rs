//! The core's error types. `CoreError` is what use-cases return; the API crate
//! maps it to problem responses in exactly one place.

use std::error::Error as StdError;

use serde::Serialize;

use crate::blob::BlobError;

/// Why one input value was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub code: &'static str,
    pub message: String,
}

impl Invalid {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// One refused field of a request, as reported to the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub code: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, invalid: Invalid) -> Self {
        Self {
            field: field.into(),
            code: invalid.code,
            message: invalid.message,
        }
    }
}

/// Errors of a metadata-store adapter, stripped of the adapter's types.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was broken; the payload names which one.
    #[error("conflict on {0}")]
    Conflict(Conflict),
    /// The database could not be reached, or dropped the connection: a
    /// transient failure, worth retrying (at once, with backoff).
    #[error("metadata store unavailable")]
    Unavailable(#[source] Box<dyn StdError + Send + Sync>),
    /// Every connection stayed in use for the whole acquire timeout: the
    /// database is overloaded, not broken, and retrying at once would only
    /// queue again.
    #[error("metadata store busy: no connection free")]
    Busy(#[source] Box<dyn StdError + Send + Sync>),
    /// Anything else: a bug or corrupt data.
    #[error("metadata store error")]
    Other(#[source] Box<dyn StdError + Send + Sync>),
}

/// The uniqueness rules a client can run into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    TenantSlug,
    UserEmail,
    ProjectCode,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Conflict::TenantSlug => "tenant slug",
            Conflict::UserEmail => "user email",
            Conflict::ProjectCode => "project code",
        })
    }
}

/// Errors of the use-cases.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// Missing, or belonging to another tenant, or not visible to the actor:
    /// all three look the same from outside.
    #[error("not found")]
    NotFound,
    /// Bad credentials or a bad, expired or revoked token.
    #[error("unauthorized")]
    Unauthorized,
    /// Authenticated, visible, but the role does not allow the action.
    #[error("forbidden")]
    Forbidden,
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// The request clashes with the current state.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// The file is larger than the tenant may store in one upload.
    #[error("the file exceeds the maximum upload size of {max} bytes")]
    TooLarge { max: u64 },
    /// The declared media type is not on the allowlist.
    #[error("{0}")]
    UnsupportedType(String),
    /// The deployment does not offer this (e.g. tus on a blob store without
    /// resumable staging).
    #[error("{0}")]
    NotImplemented(String),
    #[error("the metadata store is unavailable")]
    Unavailable(#[source] StoreError),
    #[error("object storage is unavailable")]
    StorageUnavailable(#[source] BlobError),
    #[error("internal error")]
    Internal(#[source] Box<dyn StdError + Send + Sync>),
}

impl CoreError {
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        CoreError::Conflict {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(field: &str, invalid: Invalid) -> Self {
        CoreError::Validation(vec![FieldError::new(field, invalid)])
    }
}

impl From<StoreError> for CoreError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(c) => {
                CoreError::conflict("conflict", format!("a {c} with that value already exists"))
            }
            e @ (StoreError::Unavailable(_) | StoreError::Busy(_)) => CoreError::Unavailable(e),
            StoreError::Other(e) => CoreError::Internal(e),
        }
    }
}

impl From<BlobError> for CoreError {
    /// For blob errors a use-case has no better answer for.
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::NotFound => CoreError::NotFound,
            e @ BlobError::Unavailable(_) => CoreError::StorageUnavailable(e),
            e => CoreError::Internal(Box::new(e)),
        }
    }
}

/// Validates several inputs at once, so a client learns about every bad field
/// in one response: `let (a, b) = validate!(a = parse_a(x), b = parse_b(y))?;`
#[macro_export]
macro_rules! validate {
    ($($field:ident = $expr:expr),+ $(,)?) => {
        match ($($expr,)+) {
            ($(Ok($field),)+) => Ok(($($field,)+)),
            ($($field,)+) => {
                let mut errors = Vec::new();
                $(if let Err(e) = $field {
                    errors.push($crate::error::FieldError::new(stringify!($field), e));
                })+
                Err($crate::error::CoreError::Validation(errors))
            }
        }
    };
}
