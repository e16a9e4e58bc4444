//! The media port's adapter: `buildpeer-media` (pure CPU) on the blocking
//! pool, at most `concurrency` at once, each under the per-job time cap,
//! with the process's memory budget.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use buildpeer_core::media::{
    Derivative, MediaFailure, MediaOutput, MediaProcessor, MemoryBudget, Reservation,
};
use buildpeer_core::upload::{GpsPoint, MediaMetadata};
use buildpeer_media::{DerivativeSpec, Limits};
use bytes::Bytes;
use tokio::sync::Semaphore;

#[derive(Debug, Clone)]
pub struct MediaSettings {
    pub sizes: Vec<DerivativeSpec>,
    pub limits: Limits,
    /// Originals larger than this are only sniffed.
    pub max_input_bytes: u64,
    /// Per-file time cap.
    pub time_cap: Duration,
    /// What all the files processed at once in this process may hold
    /// (originals and decoding), in bytes.
    pub memory_budget: u64,
}

/// The default memory budget: with the rest of `buildpeer serve` (about
/// 50 MiB at its peak on the embedded default), the process stays under
/// 256 MiB whatever is uploaded.
pub const DEFAULT_MEMORY_BUDGET: u64 = 160 << 20;

impl Default for MediaSettings {
    fn default() -> Self {
        Self {
            sizes: buildpeer_media::default_sizes(),
            limits: Limits::default(),
            max_input_bytes: 256 << 20,
            time_cap: Duration::from_secs(30),
            memory_budget: DEFAULT_MEMORY_BUDGET,
        }
    }
}

pub struct Media {
    settings: Arc<MediaSettings>,
    /// Decodes at once: the CPU they may take (their memory is the
    /// budget's business).
    slots: Semaphore,
    budget: MemoryBudget,
}

impl Media {
    pub fn new(settings: MediaSettings, concurrency: usize) -> Self {
        Self {
            budget: MemoryBudget::new(settings.memory_budget),
            settings: Arc::new(settings),
            slots: Semaphore::new(concurrency.max(1)),
        }
    }
}

fn failure(e: &buildpeer_media::MediaError) -> MediaFailure {
    MediaFailure {
        code: e.code().to_owned(),
        message: e.to_string(),
    }
}

#[async_trait]
impl MediaProcessor for Media {
    fn max_input_bytes(&self) -> u64 {
        self.settings.max_input_bytes
    }

    fn sniff(&self, head: &[u8]) -> Option<String> {
        buildpeer_media::sniff(head).map(|f| f.mime().to_owned())
    }

    fn budget(&self) -> &MemoryBudget {
        &self.budget
    }

    fn plan(&self, content: &[u8]) -> Result<u64, MediaFailure> {
        buildpeer_media::plan(content, &self.settings.sizes, &self.settings.limits)
            .map_err(|e| failure(&e))
    }

    async fn process(
        &self,
        content: Bytes,
        reservation: Reservation,
    ) -> Result<MediaOutput, MediaFailure> {
        let internal = |message: String| MediaFailure {
            code: "internal_error".into(),
            message,
        };
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|e| internal(e.to_string()))?;
        let settings = self.settings.clone();
        let task = tokio::task::spawn_blocking(move || {
            let processed = buildpeer_media::process(&content, &settings.sizes, &settings.limits);
            drop((content, reservation));
            processed
        });
        // A decoder cannot be interrupted: past the cap, the job fails and the
        // thread finishes (or not) on its own; its result is dropped, and its
        // memory stays reserved until then.
        let processed = match tokio::time::timeout(self.settings.time_cap, task).await {
            Err(_) => {
                return Err(MediaFailure {
                    code: "processing_timeout".into(),
                    message: format!(
                        "processing took longer than {} s",
                        self.settings.time_cap.as_secs()
                    ),
                });
            }
            Ok(Err(e)) => return Err(internal(e.to_string())),
            Ok(Ok(Err(e))) => return Err(failure(&e)),
            Ok(Ok(Ok(p))) => p,
        };
        let m = processed.metadata;
        Ok(MediaOutput {
            detected_type: processed.format.mime().to_owned(),
            metadata: MediaMetadata {
                width: m.width,
                height: m.height,
                taken_at: m.taken_at,
                gps: m.gps.map(|g| GpsPoint {
                    latitude: g.latitude,
                    longitude: g.longitude,
                    altitude: g.altitude,
                }),
                camera_make: m.camera_make,
                camera_model: m.camera_model,
                orientation: m.orientation,
                page_count: m.page_count,
            },
            derivatives: processed
                .derivatives
                .into_iter()
                .map(|d| Derivative {
                    name: d.name,
                    width: d.width,
                    height: d.height,
                    jpeg: Bytes::from(d.jpeg),
                })
                .collect(),
        })
    }
}

/// `thumb:256,preview:1280` (`name=N` works too), or bare sides `256,1280`
/// (named `thumb` and `preview`, any other by its number). Names are
/// `[a-z0-9_-]` (they become object keys and URL segments), sides
/// 1..=16384, names unique.
pub fn parse_sizes(s: &str) -> Result<Vec<DerivativeSpec>, String> {
    let mut sizes: Vec<DerivativeSpec> = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, side) = match item.split_once([':', '=']) {
            Some((name, side)) => (name.trim().to_owned(), side.trim()),
            None => {
                let name = match item {
                    "256" => "thumb".to_owned(),
                    "1280" => "preview".to_owned(),
                    other => other.to_owned(),
                };
                (name, item)
            }
        };
        let name = name.as_str();
        let valid_name = !name.is_empty()
            && name.len() <= 32
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid_name {
            return Err(format!("{name:?}: a name is 1-32 of a-z, 0-9, - and _"));
        }
        let side: u32 = side
            .parse()
            .ok()
            .filter(|n| (1..=buildpeer_media::MAX_DERIVATIVE_SIDE).contains(n))
            .ok_or_else(|| format!("{item:?}: pixels must be 1..=16384"))?;
        if sizes.iter().any(|s| s.name == name) {
            return Err(format!("{name:?} appears twice"));
        }
        sizes.push(DerivativeSpec::new(name, side));
    }
    Ok(sizes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let parsed = parse_sizes("thumb:256, preview:1280").map(|v| {
            v.into_iter()
                .map(|s| (s.name, s.max_side))
                .collect::<Vec<_>>()
        });
        assert_eq!(
            parsed,
            Ok(vec![("thumb".into(), 256), ("preview".into(), 1280)])
        );
        assert!(parse_sizes("thumb:0").is_err());
        assert!(parse_sizes("thumb:99999").is_err());
        assert!(parse_sizes("../x:10").is_err());
        assert!(parse_sizes("a:1,a:2").is_err());
        assert!(parse_sizes("thumb").is_err());
        assert_eq!(parse_sizes(""), Ok(vec![]));
        let bare = parse_sizes("256,1280,640,small=100").map(|v| {
            v.into_iter()
                .map(|s| (s.name, s.max_side))
                .collect::<Vec<_>>()
        });
        assert_eq!(
            bare,
            Ok(vec![
                ("thumb".into(), 256),
                ("preview".into(), 1280),
                ("640".into(), 640),
                ("small".into(), 100)
            ])
        );
    }
}
