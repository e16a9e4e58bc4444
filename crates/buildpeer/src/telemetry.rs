//! Logging and metrics set-up.
//!
//! JSON logs follow the seed's schema: one object per line with `timestamp`,
//! `level`, `service`, `message`, and the fields of every enclosing span
//! flattened in (so a request's `requestId`, `tenantId` and `userId` are on
//! every line it logs). Field names are written in camelCase as in the seed;
//! code uses snake_case. tracing-subscriber's own JSON format nests span
//! fields under `span`/`spans`, which log queries cannot filter on easily,
//! hence this small layer. It renders each span's fields once, builds each
//! line in a reused per-thread buffer, and hands it to a background writer
//! (bounded, lossy, counted): a request's log line costs a copy, not a
//! system call.

use std::cell::RefCell;
use std::io::Write;
use std::sync::{Mutex, OnceLock, PoisonError};

use anyhow::Context as _;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter as _;
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
        LogFormat::Json => {
            let out = match sink {
                Sink::Stdout => Out::Background(log_writer()),
                Sink::Stderr => Out::Stderr,
            };
            registry.with(JsonLayer { service, out }).try_init()
        }
        LogFormat::Pretty => {
            let layer = tracing_subscriber::fmt::layer().with_target(false);
            match sink {
                Sink::Stdout => registry.with(layer.with_writer(log_writer())).try_init(),
                Sink::Stderr => registry.with(layer.with_writer(std::io::stderr)).try_init(),
            }
        }
    };
    result.context("a logger is already installed")
}

/// `buildpeer_info{version, role} 1`: what runs here, so that dashboards can
/// count the replicas of each role (`api`, `worker`) and see versions mix
/// during a rollout.
/// With it, what the process may use, so that CPU and memory can be read as
/// a share of its limit (the seed's "ECS CPU > 80 %"):
/// `buildpeer_cpu_cores` (the cores it may run on, a container's CPU quota
/// included) and `buildpeer_memory_limit_bytes` (the container's memory
/// limit, or the machine's memory).
pub fn announce(role: &'static str) {
    metrics::gauge!("buildpeer_info", "version" => env!("CARGO_PKG_VERSION"), "role" => role)
        .set(1.0);
    if let Ok(cores) = std::thread::available_parallelism() {
        metrics::gauge!("buildpeer_cpu_cores").set(cores.get() as f64);
    }
    if let Some(limit) = memory_limit() {
        metrics::gauge!("buildpeer_memory_limit_bytes").set(limit as f64);
    }
}

/// The cgroup v2 memory limit (`memory.max`), else the machine's memory.
fn memory_limit() -> Option<u64> {
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    cgroup.or_else(|| {
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
        let kib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()?;
        Some(kib * 1024)
    })
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
    // An upload's life is seconds to an hour on a phone's network.
    let upload_buckets = [
        0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
    ];
    // Processing one file, or one job: tens of milliseconds to minutes.
    let work_buckets = [
        0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
    ];
    // Without buckets a histogram is exported as a summary, whose quantiles
    // cannot be aggregated across replicas: every histogram gets some.
    let histograms: [(&str, &[f64]); 5] = [
        ("http_request_duration_seconds", &buckets),
        ("upload_latency_seconds", &upload_buckets),
        ("tenant_upload_seconds", &upload_buckets),
        ("upload_processing_seconds", &work_buckets),
        ("worker_duration_seconds", &work_buckets),
    ];
    let mut builder = PrometheusBuilder::new();
    for (name, buckets) in histograms {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets)
            .with_context(|| format!("histogram buckets of {name}"))?;
    }
    let recorder = builder.build_recorder();
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
                    if let Some(dropped) = DROPPED.get() {
                        metrics::counter!("log_lines_dropped_total")
                            .absolute(dropped.dropped_lines() as u64);
                    }
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
    out: Out,
}

/// Where the JSON layer writes.
enum Out {
    /// A background thread writes the lines (see [`log_writer`]).
    Background(NonBlocking),
    Stderr,
}

/// A span's fields, rendered once as JSON members (`"requestId":"…",`) when
/// the span is created or a field is recorded, and copied as they are into
/// every line logged inside the span. (Rendering them on every line, through
/// a map of `serde_json::Value`s, was most of the cost of a request's log
/// line.) A field recorded twice appears twice; JSON readers keep the last.
/// Fields named `context.…` go into the line's `context` object, the seed's
/// place for what an event is about (`context.upload_id` →
/// `"context":{"uploadId":…}`).
#[derive(Default)]
struct SpanFields {
    top: String,
    context: String,
}

/// Writes recorded fields as JSON members into a line: at the top, or into
/// its `context` object.
struct JsonFields<'a> {
    top: &'a mut String,
    context: &'a mut String,
}

impl JsonFields<'_> {
    /// Writes the field's key into the buffer it belongs in, and returns it.
    fn key(&mut self, field: &Field) -> &mut String {
        let name = field.name();
        let (out, name) = match name.strip_prefix("context.") {
            Some(inner) => (&mut *self.context, inner),
            None => (&mut *self.top, name),
        };
        out.push('"');
        camel_case_into(name, out);
        out.push_str("\":");
        out
    }

    fn string(&mut self, field: &Field, value: &str) {
        let out = self.key(field);
        push_json_str(out, value);
        out.push(',');
    }

    fn display(&mut self, field: &Field, value: impl std::fmt::Display) {
        use std::fmt::Write as _;
        let out = self.key(field);
        let _ = write!(out, "{value}");
        out.push(',');
    }

    fn escaped(&mut self, field: &Field, value: std::fmt::Arguments<'_>) {
        use std::fmt::Write as _;
        let out = self.key(field);
        out.push('"');
        let _ = JsonEscaped(out).write_fmt(value);
        out.push_str("\",");
    }
}

impl Visit for JsonFields<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.display(field, value);
        } else {
            self.display(field, "null");
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.display(field, value);
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.display(field, value);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.display(field, value);
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.string(field, value);
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.escaped(field, format_args!("{value}"));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.escaped(field, format_args!("{value:?}"));
    }
}

/// Escapes what is written through it as the inside of a JSON string.
struct JsonEscaped<'a>(&'a mut String);

impl std::fmt::Write for JsonEscaped<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        escape_into(self.0, s);
        Ok(())
    }
}

fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    escape_into(out, s);
    out.push('"');
}

fn escape_into(out: &mut String, s: &str) {
    use std::fmt::Write as _;
    let mut rest = s;
    // Copy runs of plain characters at once.
    while let Some(i) = rest.find(|c: char| c == '"' || c == '\\' || c < ' ') {
        out.push_str(&rest[..i]);
        let c = rest[i..].chars().next().unwrap_or(' ');
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
        }
        rest = &rest[i + c.len_utf8()..];
    }
    out.push_str(rest);
}

/// `request_id` → `requestId`, written straight into the line.
fn camel_case_into(name: &str, out: &mut String) {
    let mut upper = false;
    let mut wrote = false;
    for c in name.chars() {
        if c == '_' {
            upper = wrote;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
            wrote = true;
        } else {
            out.push(c);
            wrote = true;
        }
    }
}

thread_local! {
    /// Each thread's line buffer and its `context` object's, reused: a line
    /// costs no allocation once the buffers have grown to the longest line.
    static LINE: RefCell<(String, String)> =
        RefCell::new((String::with_capacity(512), String::with_capacity(128)));
    /// The current second as `2026-12-08T03:58:32.`, reformatted only when
    /// the second changes.
    static SECOND: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
}

fn push_timestamp(out: &mut String) {
    use std::fmt::Write as _;
    let now = chrono::Utc::now();
    let secs = now.timestamp();
    SECOND.with_borrow_mut(|(cached, prefix)| {
        if *cached != secs {
            prefix.clear();
            let _ = write!(prefix, "{}", now.format("%Y-%m-%dT%H:%M:%S."));
            *cached = secs;
        }
        out.push_str(prefix);
    });
    let _ = write!(out, "{:03}Z", now.timestamp_subsec_millis().min(999));
}

impl<S> Layer<S> for JsonLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = SpanFields::default();
        attrs.record(&mut JsonFields {
            top: &mut fields.top,
            context: &mut fields.context,
        });
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(fields) = span.extensions_mut().get_mut::<SpanFields>()
        {
            values.record(&mut JsonFields {
                top: &mut fields.top,
                context: &mut fields.context,
            });
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        LINE.with_borrow_mut(|(line, context)| {
            line.clear();
            context.clear();
            line.push_str("{\"timestamp\":\"");
            push_timestamp(line);
            line.push_str("\",\"level\":\"");
            line.push_str(level_name(meta.level()));
            line.push_str("\",\"service\":");
            push_json_str(line, self.service);
            line.push_str(",\"target\":");
            push_json_str(line, meta.target());
            line.push(',');
            if let Some(scope) = ctx.event_scope(event) {
                for span in scope.from_root() {
                    if let Some(fields) = span.extensions().get::<SpanFields>() {
                        line.push_str(&fields.top);
                        context.push_str(&fields.context);
                    }
                }
            }
            event.record(&mut JsonFields { top: line, context });
            if !context.is_empty() {
                context.pop(); // the last member's comma
                line.push_str("\"context\":{");
                line.push_str(context);
                line.push_str("},");
            }
            line.pop(); // the last member's comma
            line.push_str("}\n");
            // One write per line keeps concurrent lines from interleaving.
            let _ = match &self.out {
                Out::Background(writer) => writer.make_writer().write_all(line.as_bytes()),
                Out::Stderr => std::io::stderr().lock().write_all(line.as_bytes()),
            };
        });
    }
}

fn level_name(level: &tracing::Level) -> &'static str {
    match *level {
        tracing::Level::ERROR => "error",
        tracing::Level::WARN => "warn",
        tracing::Level::INFO => "info",
        tracing::Level::DEBUG => "debug",
        tracing::Level::TRACE => "trace",
    }
}

/// Lines wait here for the thread that writes them to stdout, so a request
/// never waits on the terminal or the log collector's pipe. The queue is
/// bounded: when the reader falls that far behind, lines are dropped (and
/// counted in `log_lines_dropped_total`) rather than holding up requests or
/// growing memory.
fn log_writer() -> NonBlocking {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("log-writer")
        .finish(std::io::stdout());
    let _ = DROPPED.set(writer.error_counter());
    *LOG_GUARD.lock().unwrap_or_else(PoisonError::into_inner) = Some(guard);
    writer
}

/// Lines that may wait for the writer thread.
const LOG_QUEUE_LINES: usize = 64 * 1024;

/// Dropping it flushes the lines still queued and stops the writer thread.
static LOG_GUARD: Mutex<Option<WorkerGuard>> = Mutex::new(None);
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Writes out the log lines still queued; call before the process exits.
pub fn flush_logs() {
    drop(
        LOG_GUARD
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(),
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn camel_case(name: &str) -> String {
        let mut out = String::new();
        camel_case_into(name, &mut out);
        out
    }

    #[test]
    fn camel_cases_field_names() {
        assert_eq!(camel_case("request_id"), "requestId");
        assert_eq!(camel_case("tenant_id"), "tenantId");
        assert_eq!(camel_case("message"), "message");
        assert_eq!(camel_case("latency_ms"), "latencyMs");
        assert_eq!(camel_case("_private"), "private");
    }

    #[test]
    fn strings_are_escaped_as_json() {
        for s in [
            "plain",
            "quote \" and \\ back",
            "line\nbreak\ttab\r",
            "\u{1}\u{1f}",
            "ñandú 🏗️",
            "",
        ] {
            let mut out = String::new();
            push_json_str(&mut out, s);
            let back: String = serde_json::from_str(&out).unwrap();
            assert_eq!(back, s, "{out}");
        }
    }

    /// A `Write` the test can read back.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_carry_span_fields_and_a_context_object() {
        let captured = Captured::default();
        let (writer, guard) = NonBlockingBuilder::default().finish(captured.clone());
        let layer = JsonLayer {
            service: "buildpeer-api",
            out: Out::Background(writer),
        };
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "request",
                request_id = "req-1",
                tenant_id = tracing::field::Empty
            );
            let _in = span.enter();
            span.record("tenant_id", "t-1");
            tracing::info!(
                context.upload_id = "u-1",
                context.filename = "foto \"obra\".jpg",
                context.size = 3145728_u64,
                status = "COMPLETED",
                "upload processed"
            );
            tracing::warn!(error = "x\ny", "no context");
        });
        drop(guard); // flushes
        let bytes = captured.0.lock().unwrap().clone();
        let lines = String::from_utf8(bytes).unwrap();
        let lines: Vec<serde_json::Value> = lines
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        let first = &lines[0];
        assert_eq!(first["level"], "info");
        assert_eq!(first["service"], "buildpeer-api");
        assert_eq!(first["message"], "upload processed");
        assert_eq!(first["requestId"], "req-1");
        assert_eq!(first["tenantId"], "t-1");
        assert_eq!(first["status"], "COMPLETED");
        assert_eq!(first["context"]["uploadId"], "u-1");
        assert_eq!(first["context"]["filename"], "foto \"obra\".jpg");
        assert_eq!(first["context"]["size"], 3145728);
        assert_eq!(lines[1]["error"], "x\ny");
        assert!(lines[1].get("context").is_none(), "{}", lines[1]);
    }

    #[test]
    fn timestamps_are_rfc3339_millis() {
        let mut out = String::new();
        push_timestamp(&mut out);
        let parsed = chrono::DateTime::parse_from_rfc3339(&out).unwrap();
        assert!(
            (chrono::Utc::now() - parsed.to_utc()).num_seconds().abs() < 5,
            "{out}"
        );
        assert_eq!(out.len(), "2026-12-08T03:58:32.123Z".len(), "{out}");
    }
}
