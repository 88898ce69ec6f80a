//! Tracing, OpenTelemetry and metrics set-up, shared by every binary so log format, trace export and
//! metric names stay uniform. All OpenTelemetry crates are used here only: services pass W3C
//! `traceparent` strings (HTTP headers, bus event headers) through the helpers below.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Log output format: JSON lines for production, human-readable for development.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

impl LogFormat {
    /// `LOG_FORMAT=json|pretty`; JSON unless asked otherwise, because production is the careful default.
    pub fn from_env() -> Self {
        match chat_settings::var("LOG_FORMAT").as_deref() {
            Some("pretty") | Some("text") => LogFormat::Pretty,
            _ => LogFormat::Json,
        }
    }
}

static OTEL_ON: AtomicBool = AtomicBool::new(false);

/// Flushes exported spans when dropped (keep it alive for the whole `main`).
pub struct TelemetryGuard(Option<SdkTracerProvider>);

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = p.shutdown();
        }
    }
}

/// Installs the global tracing subscriber (`RUST_LOG` filters, default `info`), and the OTLP span
/// exporter when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the standard `OTEL_*` variables apply:
/// `OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_SERVICE_NAME`, `OTEL_BSP_*`). Safe to call twice.
pub fn init_tracing(service: &str, format: LogFormat) -> TelemetryGuard {
    // The metrics recorder first: anything recorded before it exists is lost.
    metrics_handle();
    let filter = chat_settings::var("RUST_LOG")
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let provider = otlp_provider(service);
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    // Spans are exported at info and above whatever RUST_LOG says: RUST_LOG filters log lines only.
    let otel_layer = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("chat"))
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    });
    let registry = tracing_subscriber::registry().with(otel_layer);
    // Log lines go to stderr: stdout stays for what a command prints (`config`, `openapi`, the
    // importer's `--json` report), and container runtimes collect both.
    let result = match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_writer(std::io::stderr)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_filter(filter),
            )
            .try_init(),
        LogFormat::Pretty => {
            registry.with(fmt::layer().compact().with_writer(std::io::stderr).with_filter(filter)).try_init()
        }
    };
    if result.is_ok() {
        OTEL_ON.store(provider.is_some(), Ordering::Relaxed);
        tracing::info!(service, otlp = provider.is_some(), "telemetry initialised");
    }
    TelemetryGuard(provider)
}

fn otlp_provider(service: &str) -> Option<SdkTracerProvider> {
    let endpoint = chat_settings::var("OTEL_EXPORTER_OTLP_ENDPOINT")?;
    let mut builder = opentelemetry_otlp::SpanExporter::builder().with_http();
    // The SDK reads the environment variable itself (and appends the signal's path); a value given
    // as a flag is passed explicitly, with that path.
    if chat_settings::source("OTEL_EXPORTER_OTLP_ENDPOINT") == chat_settings::Source::Flag {
        use opentelemetry_otlp::WithExportConfig;
        builder = builder.with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')));
    }
    let exporter = match builder.build() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("OTLP exporter not started: {e}");
            return None;
        }
    };
    let name = chat_settings::var("OTEL_SERVICE_NAME").unwrap_or_else(|| service.to_string());
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(name).build();
    Some(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
}

/// Whether spans are exported (lets hot paths skip trace-context work otherwise).
pub fn tracing_exported() -> bool {
    OTEL_ON.load(Ordering::Relaxed)
}

/// The W3C `traceparent` of the current span, to carry over HTTP or inside a bus event.
pub fn current_traceparent() -> Option<String> {
    if !tracing_exported() {
        return None;
    }
    let cx = tracing::Span::current().context();
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the remote span described by `traceparent`.
pub fn set_remote_parent(span: &tracing::Span, traceparent: &str) {
    if !tracing_exported() {
        return;
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    carrier.insert("traceparent".to_string(), traceparent.to_string());
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// The trace id of `span` (hex), for request log lines.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    if !tracing_exported() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder (installed on first use; all services in one process share it).
pub fn metrics_handle() -> &'static PrometheusHandle {
    PROMETHEUS.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Suffix("_seconds".into()),
                &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
            )
            .expect("bucket list is not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (e.g. by a test harness); metrics then go there.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Renders the Prometheus text exposition.
pub fn render_metrics() -> String {
    let h = metrics_handle();
    h.run_upkeep();
    h.render()
}
