//! Jobs: what they are (`spec`: typed, versioned payloads), how one lives
//! from claim to done or dead (`lifecycle`), and what a tenant's admin sees
//! and may do with them (`admin`).
//!
//! Adding a job kind: a variant of `JobSpec` with its payload type, and an
//! `impl Handler` for that type next to the use-case it runs (see
//! `processing.rs`). The lifecycle, the worker and the admin API need no
//! change.

mod admin;
mod lifecycle;
mod spec;

pub use admin::JobDetail;
pub use lifecycle::JobSettings;
pub(crate) use lifecycle::{Handler, Outcome};
pub use spec::{JobSpec, ProcessUpload, SpecError};
