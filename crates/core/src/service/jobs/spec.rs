//! What a job is: its kind (the queue's `kind` column) and its payload (the
//! `payload` column, JSON), as one typed value written and read only here.
//!
//! Payloads carry a version, `{"v":1,…}`, so that during a rolling upgrade
//! each release knows what it may run: a payload written by an older release
//! parses (a missing `v` is version 1, the shape written before versions
//! existed); one written by a newer release is handed back to the queue for
//! a worker of that release instead of being misread. Changing a payload's
//! shape means a new version and a parser that still reads the old one.

use serde::{Deserialize, Serialize};

use crate::ids::UploadId;

/// Every job kind with its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobSpec {
    /// Sniff, hash-check and process an upload whose bytes are in storage.
    ProcessUpload(ProcessUpload),
}

/// The payload of a `process_upload` job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessUpload {
    pub upload_id: UploadId,
}

/// Why a claimed job's payload could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("unknown job kind {0:?}")]
    UnknownKind(String),
    /// Written by a newer release: give it back for one of its workers.
    #[error("{kind} payload version {version} is newer than this release reads ({known})")]
    Newer {
        kind: &'static str,
        version: u32,
        known: u32,
    },
    #[error("malformed {kind} payload: {source}")]
    Malformed {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// The version every payload shape has today; raise a kind's own when its
/// shape changes.
const PROCESS_UPLOAD_VERSION: u32 = 1;

#[derive(Serialize)]
struct Versioned<'a, T> {
    v: u32,
    #[serde(flatten)]
    payload: &'a T,
}

#[derive(Deserialize)]
struct Version {
    #[serde(default = "unversioned")]
    v: u32,
}

/// Payloads written before versions existed are version 1.
fn unversioned() -> u32 {
    1
}

impl JobSpec {
    /// The kinds this release runs: what its workers claim.
    pub const KINDS: &'static [&'static str] = &[ProcessUpload::KIND];

    pub fn kind(&self) -> &'static str {
        match self {
            JobSpec::ProcessUpload(_) => ProcessUpload::KIND,
        }
    }

    /// The payload column's JSON.
    pub fn payload(&self) -> String {
        let written = match self {
            JobSpec::ProcessUpload(p) => serde_json::to_string(&Versioned {
                v: PROCESS_UPLOAD_VERSION,
                payload: p,
            }),
        };
        // A struct of ids and numbers always serializes; the fallback only
        // keeps this total.
        written.unwrap_or_else(|_| String::from("{}"))
    }

    /// Reads a job's kind and payload back.
    pub fn parse(kind: &str, payload: &str) -> Result<Self, SpecError> {
        match kind {
            ProcessUpload::KIND => {
                read(ProcessUpload::KIND, PROCESS_UPLOAD_VERSION, payload).map(Self::ProcessUpload)
            }
            other => Err(SpecError::UnknownKind(other.to_owned())),
        }
    }
}

impl ProcessUpload {
    pub const KIND: &'static str = "process_upload";
}

/// A payload of `kind` that this release reads up to version `known`.
fn read<T: for<'de> Deserialize<'de>>(
    kind: &'static str,
    known: u32,
    payload: &str,
) -> Result<T, SpecError> {
    let malformed = |source| SpecError::Malformed { kind, source };
    let Version { v: version } = serde_json::from_str(payload).map_err(malformed)?;
    if version > known {
        return Err(SpecError::Newer {
            kind,
            version,
            known,
        });
    }
    serde_json::from_str(payload).map_err(malformed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn upload() -> UploadId {
        UploadId::new()
    }

    #[test]
    fn a_payload_round_trips_with_its_version() {
        let spec = JobSpec::ProcessUpload(ProcessUpload {
            upload_id: upload(),
        });
        let json = spec.payload();
        assert!(json.starts_with(r#"{"v":1,"upload_id":""#), "{json}");
        let back = JobSpec::parse(spec.kind(), &json).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn a_payload_from_before_versions_still_parses() {
        let id = upload();
        let legacy = format!(r#"{{"upload_id":"{id}"}}"#);
        let spec = JobSpec::parse("process_upload", &legacy).unwrap();
        assert_eq!(
            spec,
            JobSpec::ProcessUpload(ProcessUpload { upload_id: id })
        );
    }

    #[test]
    fn a_newer_payload_is_not_misread() {
        let id = upload();
        let newer = format!(r#"{{"v":2,"upload_id":"{id}","pages":[1,2]}}"#);
        let err = JobSpec::parse("process_upload", &newer).unwrap_err();
        assert!(
            matches!(
                err,
                SpecError::Newer {
                    version: 2,
                    known: 1,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn bad_kinds_and_payloads_are_errors() {
        assert!(matches!(
            JobSpec::parse("resize_video", "{}"),
            Err(SpecError::UnknownKind(k)) if k == "resize_video"
        ));
        for bad in [
            "",
            "[]",
            r#"{"v":1}"#,
            r#"{"upload_id":"nope"}"#,
            r#"{"v":"1"}"#,
        ] {
            assert!(
                matches!(
                    JobSpec::parse("process_upload", bad),
                    Err(SpecError::Malformed { .. })
                ),
                "{bad}"
            );
        }
    }
}
