//! The media port: what the worker needs to turn an original into metadata
//! and derivatives. The adapter (`buildpeer::media`, over the pure-CPU
//! `buildpeer-media` crate) runs it off the async workers with a time cap.

use async_trait::async_trait;
use bytes::Bytes;

use crate::upload::MediaMetadata;

/// A derivative to store next to the original.
#[derive(Debug, Clone)]
pub struct Derivative {
    pub name: String,
    pub width: u32,
    pub height: u32,
    /// A JPEG without metadata segments.
    pub jpeg: Bytes,
}

#[derive(Debug, Clone)]
pub struct MediaOutput {
    /// The type sniffed from the content, as a MIME type.
    pub detected_type: String,
    pub metadata: MediaMetadata,
    pub derivatives: Vec<Derivative>,
}

/// The content cannot be processed, and trying again will not change that
/// (corrupt, unsupported, over a limit, over the time cap).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct MediaFailure {
    /// Stable machine code, e.g. `unsupported_type`, `corrupt_file`.
    pub code: String,
    pub message: String,
}

#[async_trait]
pub trait MediaProcessor: Send + Sync + 'static {
    /// Originals above this size are not read into memory: they are
    /// completed with the type sniffed from their first bytes only.
    fn max_input_bytes(&self) -> u64;
    /// The type of content starting with `head`, if it is one we accept.
    fn sniff(&self, head: &[u8]) -> Option<String>;
    async fn process(&self, content: Bytes) -> Result<MediaOutput, MediaFailure>;
}
