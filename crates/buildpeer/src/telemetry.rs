//! Logging and metrics set-up.
//!
//! JSON logs follow the seed's schema: one object per line with `timestamp`,
//! `level`, `service`, `message`, and the fields of every enclosing span
//! flattened in (so a request's `requestId`, `tenantId` and `userId` are on
//! every line it logs). Field names are written in camelCase as in the seed;
//! code uses snake_case. tracing-subscriber's own JSON format nests span
//! fields under `span`/`spans`, which log queries cannot filter on easily,
//! hence this small layer.

use std::io::Write;
use std::sync::OnceLock;

use anyhow::Context as _;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::LogFormat;

/// Where log lines go: `serve` logs to stdout (12-factor); one-shot commands
/// log to stderr so their stdout stays machine-readable.
#[derive(Debug, Clone, Copy)]
pub enum Sink {
    Stdout,
    Stderr,
}

pub fn init_logging(
    format: LogFormat,
    filter: &str,
    service: &'static str,
    sink: Sink,
) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(filter).context("invalid log filter")?;
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Json => registry.with(JsonLayer { service, sink }).try_init(),
        LogFormat::Pretty => {
            let layer = tracing_subscriber::fmt::layer().with_target(false);
            match sink {
                Sink::Stdout => registry.with(layer).try_init(),
                Sink::Stderr => registry.with(layer.with_writer(std::io::stderr)).try_init(),
            }
        }
    };
    result.context("a logger is already installed")
}

/// Installs the process-wide metrics recorder once and returns its handle.
pub fn metrics_handle() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    // Buckets around the seed's targets: sub-100 ms responses, 500 ms warning.
    let buckets = [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("http_request_duration_seconds".to_owned()),
            &buckets,
        )
        .context("histogram buckets")?
        .build_recorder();
    let handle = recorder.handle();
    // Losing the race to another caller is fine: keep whichever got in.
    if metrics::set_global_recorder(recorder).is_ok() {
        // A recorder from `build_recorder` (rather than `install`, which
        // wants a runtime of its own) leaves the upkeep to us: histogram
        // samples wait in buckets until a scrape or an upkeep drains them,
        // so a service nobody scrapes grew by every request's sample.
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            })
            .context("starting the metrics upkeep thread")?;
        let _ = HANDLE.set(handle);
    }
    HANDLE
        .get()
        .cloned()
        .context("another metrics recorder is installed")
}

struct JsonLayer {
    service: &'static str,
    sink: Sink,
}

/// The recorded fields of one span.
struct SpanFields(Map<String, Value>);

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.insert(field, Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.insert(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.insert(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.insert(field, Value::from(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.insert(field, Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.insert(field, Value::from(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.insert(field, Value::from(format!("{value:?}")));
    }
}

impl JsonVisitor<'_> {
    fn insert(&mut self, field: &Field, value: Value) {
        self.0.insert(camel_case(field.name()), value);
    }
}

fn camel_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = !out.is_empty();
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

impl<S> Layer<S> for JsonLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Map::new();
        attrs.record(&mut JsonVisitor(&mut fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(fields) = span.extensions_mut().get_mut::<SpanFields>()
        {
            values.record(&mut JsonVisitor(&mut fields.0));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Value::from(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
        line.insert(
            "level".into(),
            Value::from(meta.level().as_str().to_ascii_lowercase()),
        );
        line.insert("service".into(), Value::from(self.service));
        line.insert("target".into(), Value::from(meta.target()));
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    line.extend(fields.0.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
        }
        event.record(&mut JsonVisitor(&mut line));
        let Ok(mut text) = serde_json::to_vec(&Value::Object(line)) else {
            return;
        };
        text.push(b'\n');
        // One write per line keeps concurrent lines from interleaving.
        let _ = match self.sink {
            Sink::Stdout => std::io::stdout().lock().write_all(&text),
            Sink::Stderr => std::io::stderr().lock().write_all(&text),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::camel_case;

    #[test]
    fn camel_cases_field_names() {
        assert_eq!(camel_case("request_id"), "requestId");
        assert_eq!(camel_case("tenant_id"), "tenantId");
        assert_eq!(camel_case("message"), "message");
        assert_eq!(camel_case("latency_ms"), "latencyMs");
        assert_eq!(camel_case("_private"), "private");
    }
}
