//! The seed's business metrics ("Key Metrics": upload success rate, upload
//! latency, throughput, and the per-tenant view), recorded in one place: every
//! upload event of the core goes through a method here, which counts it in the
//! global series and in its tenant's, so the two cannot disagree and a new
//! event cannot forget one of them.
//!
//! Per-tenant series carry a `tenant` label (the tenant's slug). Labels are a
//! Prometheus cost per distinct value, so a process labels at most
//! `max_tenants` tenants (`BUILDPEER_METRICS_TENANTS`), the first it sees;
//! events of any other tenant count under `tenant="_other"`.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Utc};
use metrics::SharedString;

use super::Service;
use crate::ids::TenantId;
use crate::upload::Upload;

/// The label of the tenants beyond the bound.
pub const OTHER_TENANTS: &str = "_other";

/// How many tenants one process labels unless configured.
pub const DEFAULT_MAX_TENANTS: usize = 250;

/// The tenants this process has given a label, with their slugs.
pub(super) struct TenantLabels {
    max: usize,
    labels: Mutex<HashMap<TenantId, SharedString>>,
}

impl TenantLabels {
    pub(super) fn new(max: usize) -> Self {
        Self {
            max,
            labels: Mutex::new(HashMap::new()),
        }
    }

    fn known(&self, tenant: TenantId) -> Option<SharedString> {
        let labels = self.labels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(label) = labels.get(&tenant) {
            return Some(label.clone());
        }
        (labels.len() >= self.max).then(|| SharedString::const_str(OTHER_TENANTS))
    }

    fn insert(&self, tenant: TenantId, slug: String) -> SharedString {
        let mut labels = self.labels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(label) = labels.get(&tenant) {
            return label.clone();
        }
        if labels.len() >= self.max {
            return SharedString::const_str(OTHER_TENANTS);
        }
        let label = SharedString::from_owned(slug);
        register_tenant_series(&label);
        labels.insert(tenant, label.clone());
        label
    }

    /// The tenants labelled so far.
    fn labelled(&self) -> Vec<(TenantId, SharedString)> {
        let labels = self.labels.lock().unwrap_or_else(PoisonError::into_inner);
        labels.iter().map(|(t, l)| (*t, l.clone())).collect()
    }
}

/// The series that count events, registered at zero before the first one:
/// a series that appears at its first event hides that event from `rate()`
/// and `increase()`, which need a sample before it.
pub(super) fn register_series() {
    metrics::counter!("uploads_initiated_total").increment(0);
    metrics::counter!("uploads_completed_total").increment(0);
    metrics::counter!("upload_bytes_ingested_total").increment(0);
    metrics::counter!("uploads_processed_total", "outcome" => "completed").increment(0);
    let _ = metrics::histogram!("upload_latency_seconds");
    for outcome in ["completed", "failed"] {
        let _ = metrics::histogram!("upload_processing_seconds", "outcome" => outcome);
    }
}

/// [`register_series`] for a tenant given a label.
fn register_tenant_series(label: &SharedString) {
    for outcome in ["initiated", "completed", "failed"] {
        metrics::counter!("tenant_uploads_total", "tenant" => label.clone(), "outcome" => outcome)
            .increment(0);
    }
    metrics::counter!("tenant_upload_bytes_total", "tenant" => label.clone()).increment(0);
    let _ = metrics::histogram!("tenant_upload_seconds", "tenant" => label.clone());
    for class in ["2xx", "4xx", "5xx"] {
        metrics::counter!("tenant_http_requests_total", "tenant" => label.clone(), "status_class" => class)
            .increment(0);
    }
}

/// One line per upload event, in the seed's shape: what it is about in
/// `context`, the upload's new `status`, and for a failure its `error`
/// code (the seed's "failed uploads of a tenant" and "success rate by hour"
/// queries read these; see docs/observability.md).
fn log_event(upload: &Upload, status: &'static str, error: Option<&str>, message: &'static str) {
    let level_warn = error.is_some();
    macro_rules! event {
        ($level:ident) => {
            tracing::$level!(
                tenant_id = %upload.tenant_id,
                context.upload_id = %upload.id,
                context.project_id = %upload.project_id,
                context.filename = %upload.filename,
                context.size = upload.size,
                status,
                error,
                "{message}"
            )
        };
    }
    if level_warn {
        event!(warn);
    } else {
        event!(info);
    }
}

fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds().max(0) as f64 / 1000.0
}

/// How often `tenant_stored_bytes` is recounted: storage changes slowly,
/// and each count sums a tenant's uploads.
const STORED_BYTES_EVERY: std::time::Duration = std::time::Duration::from_secs(300);
/// How long one recount may hold a scrape up.
const STORED_BYTES_BUDGET: std::time::Duration = std::time::Duration::from_secs(2);

impl Service {
    /// `tenant_stored_bytes{tenant}` for the tenants this process labels,
    /// recounted at most every few minutes (on a scrape); a tenant whose
    /// count fails keeps its previous value.
    pub(super) async fn refresh_stored_bytes(&self) {
        // When all were last recounted, and which have a value: a tenant
        // labelled since is counted on the next scrape, not minutes later.
        static LAST: Mutex<Option<std::time::Instant>> = Mutex::new(None);
        static COUNTED: Mutex<Vec<TenantId>> = Mutex::new(Vec::new());
        let all = {
            let mut last = LAST.lock().unwrap_or_else(PoisonError::into_inner);
            let due = !last.is_some_and(|t| t.elapsed() < STORED_BYTES_EVERY);
            if due {
                *last = Some(std::time::Instant::now());
            }
            due
        };
        let todo: Vec<_> = {
            let counted = COUNTED.lock().unwrap_or_else(PoisonError::into_inner);
            self.tenant_labels
                .labelled()
                .into_iter()
                .filter(|(t, _)| all || !counted.contains(t))
                .collect()
        };
        let recount = async {
            for (tenant, label) in todo {
                match self.store.upload_usage(tenant).await {
                    Ok(bytes) => {
                        metrics::gauge!("tenant_stored_bytes", "tenant" => label).set(bytes as f64);
                        let mut counted = COUNTED.lock().unwrap_or_else(PoisonError::into_inner);
                        if !counted.contains(&tenant) {
                            counted.push(tenant);
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, %tenant, "stored bytes not recounted"),
                }
            }
        };
        // A slow or unreachable database must not hold the scrape up.
        if tokio::time::timeout(STORED_BYTES_BUDGET, recount)
            .await
            .is_err()
        {
            tracing::warn!(
                "tenant_stored_bytes not all recounted: the database did not answer in time"
            );
        }
    }

    /// The `tenant` label of `tenant`: its slug, looked up once per process.
    /// Should the lookup fail (the database is down), the event is counted
    /// under the tenant's id rather than lost; the id is not remembered, so
    /// the slug is used again once the database answers.
    pub(super) async fn tenant_label(&self, tenant: TenantId) -> SharedString {
        if let Some(label) = self.tenant_labels.known(tenant) {
            return label;
        }
        match self.store.tenant_by_id(tenant).await {
            Ok(Some(t)) => self
                .tenant_labels
                .insert(tenant, t.slug.as_str().to_owned()),
            Ok(None) => SharedString::const_str(OTHER_TENANTS),
            Err(e) => {
                tracing::debug!(error = %e, %tenant, "tenant slug not looked up for a metric label");
                SharedString::from_owned(tenant.to_string())
            }
        }
    }

    /// An authenticated request of `tenant` was answered with a status of
    /// `status_class` (`2xx`, `4xx`, …).
    pub async fn observe_request(&self, tenant: TenantId, status_class: &'static str) {
        let label = self.tenant_label(tenant).await;
        metrics::counter!("tenant_http_requests_total", "tenant" => label, "status_class" => status_class)
            .increment(1);
    }

    /// An upload was created (signed or tus).
    pub(super) async fn observe_initiated(&self, upload: &Upload) {
        let label = self.tenant_label(upload.tenant_id).await;
        metrics::counter!("uploads_initiated_total").increment(1);
        metrics::counter!("tenant_uploads_total", "tenant" => label, "outcome" => "initiated")
            .increment(1);
        log_event(upload, "PENDING", None, "upload initiated");
    }

    /// All of an upload's bytes arrived (`PENDING → UPLOADED`) at `now`.
    pub(super) fn observe_uploaded(upload: &Upload, now: DateTime<Utc>) {
        metrics::counter!("uploads_completed_total").increment(1);
        metrics::counter!("upload_bytes_ingested_total").increment(upload.size);
        metrics::histogram!("upload_latency_seconds")
            .record(seconds_between(upload.created_at, now));
        log_event(upload, "UPLOADED", None, "upload completed");
    }

    /// Processing ended `COMPLETED`: `upload` as it was marked.
    pub(super) async fn observe_processed(&self, upload: &Upload) {
        log_event(upload, "COMPLETED", None, "upload processed");
        let label = self.tenant_label(upload.tenant_id).await;
        let done = upload.updated_at;
        metrics::counter!("uploads_processed_total", "outcome" => "completed").increment(1);
        if let Some(uploaded) = upload.uploaded_at {
            metrics::histogram!("upload_processing_seconds", "outcome" => "completed")
                .record(seconds_between(uploaded, done));
        }
        metrics::counter!("tenant_uploads_total", "tenant" => label.clone(), "outcome" => "completed")
            .increment(1);
        metrics::counter!("tenant_upload_bytes_total", "tenant" => label.clone())
            .increment(upload.size);
        metrics::histogram!("tenant_upload_seconds", "tenant" => label)
            .record(seconds_between(upload.created_at, done));
    }

    /// An upload failed for `reason` (a stable error code): refused at
    /// initiation (`too_large`, `quota_exceeded`), expired, or failed in
    /// processing; `upload` is the failed upload where there is one.
    pub(super) async fn observe_failed(
        &self,
        tenant: TenantId,
        reason: &str,
        upload: Option<&Upload>,
    ) {
        if let Some(upload) = upload {
            let status = if reason == "expired" {
                "EXPIRED"
            } else {
                "FAILED"
            };
            log_event(upload, status, Some(reason), "upload failed");
        }
        let label = self.tenant_label(tenant).await;
        let reason = SharedString::from_owned(reason.to_owned());
        metrics::counter!("uploads_failed_total", "reason" => reason.clone()).increment(1);
        if let Some(uploaded) = upload.and_then(|u| u.uploaded_at) {
            let done = upload.map_or(uploaded, |u| u.updated_at);
            metrics::histogram!("upload_processing_seconds", "outcome" => "failed")
                .record(seconds_between(uploaded, done));
        }
        metrics::counter!("tenant_uploads_total", "tenant" => label.clone(), "outcome" => "failed")
            .increment(1);
        metrics::counter!("tenant_upload_failures_total", "tenant" => label, "reason" => reason)
            .increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        let labels = TenantLabels::new(2);
        let (a, b, c) = (TenantId::new(), TenantId::new(), TenantId::new());
        assert_eq!(labels.known(a), None);
        assert_eq!(labels.insert(a, "acme".into()).as_ref(), "acme");
        assert_eq!(labels.insert(b, "beta".into()).as_ref(), "beta");
        // Full: a third tenant counts as the others, the first two keep theirs.
        assert_eq!(labels.known(c).as_deref(), Some(OTHER_TENANTS));
        assert_eq!(labels.insert(c, "gamma".into()).as_ref(), OTHER_TENANTS);
        assert_eq!(labels.known(a).as_deref(), Some("acme"));
        assert_eq!(labels.labelled().len(), 2);
    }
}
