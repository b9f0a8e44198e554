#![doc = include_str!("../README.md")]

mod logs;
pub mod metrics;

use std::collections::BTreeMap;

use anyhow::Context as _;
use opentelemetry::{
    Context, global,
    propagation::{Extractor, Injector},
    trace::TracerProvider as _,
};
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{Sampler, SdkTracerProvider},
};
use orderflow_config::Source;
use serde::{Deserialize, Serialize};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::{
    EnvFilter, Layer as _, layer::SubscriberExt as _, util::SubscriberInitExt as _,
};

/// Flushes pending spans when dropped; keep it alive for the whole `main`.
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        // Nothing useful can be done about a failed flush at exit.
        let _ = self.provider.shutdown();
    }
}

/// Installs the global subscriber for a binary named `service`.
///
/// # Errors
/// When the OTLP exporter cannot be built or a subscriber is already set.
pub fn init(service: &'static str, src: &dyn Source) -> anyhow::Result<TelemetryGuard> {
    global::set_text_map_propagator(TraceContextPropagator::new());

    let exporting = src.get("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || src.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some();
    let mut resource = Resource::builder();
    if src.get("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service);
    }
    let mut provider = SdkTracerProvider::builder().with_resource(resource.build());
    let mut otel = None;
    if exporting {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .context("failed to build the OTLP span exporter")?;
        provider = provider.with_batch_exporter(exporter);
    }
    let provider = provider.build();
    if exporting {
        EXPORTING.store(true, std::sync::atomic::Ordering::Relaxed);
        global::set_tracer_provider(provider.clone());
        otel = Some(otel_layer(&provider, service));
    }
    // Without an exporter there is no trace to join, so the OpenTelemetry
    // layer is left out entirely: no per-span cost, and outbox rows carry
    // no trace headers.
    let filter = EnvFilter::try_new(src.get("RUST_LOG").unwrap_or_else(|| "info".to_owned()))
        .context("RUST_LOG is not a valid filter")?;
    let json = src
        .get("LOG_FORMAT")
        .is_some_and(|f| f.eq_ignore_ascii_case("json"));
    // NO_COLOR (https://no-color.org) turns colours off, as the fmt layer
    // does by default.
    let ansi = !json && src.get("NO_COLOR").is_none();
    // Trace ids exist only while spans are exported (the OpenTelemetry
    // layer is installed); then every line inside a span carries them.
    let fmt = log_layer(json, ansi, exporting, std::io::stdout);
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .try_init()
        .context("failed to install the tracing subscriber")?;
    Ok(TelemetryGuard { provider })
}

/// The log layer `init` installs: JSON lines (`json`) or compact text (with
/// colours when `ansi`), and with `trace_ids`, `trace_id` and `span_id` of
/// the current span on every line written inside one (they exist only with
/// the OpenTelemetry layer installed as well). Public for tests.
#[doc(hidden)]
pub fn log_layer<S, W>(
    json: bool,
    ansi: bool,
    trace_ids: bool,
    writer: W,
) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    if json {
        tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(false)
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(logs::WithTraceIds::new(
                tracing_subscriber::fmt::format()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false),
                logs::Shape::Json,
                trace_ids,
            ))
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(ansi)
            .event_format(logs::WithTraceIds::new(
                tracing_subscriber::fmt::format().compact().with_ansi(ansi),
                logs::Shape::Text,
                trace_ids,
            ))
            .boxed()
    }
}

/// For tests: logs to the test writer, `RUST_LOG` or `warn`; idempotent.
///
/// Propagation is set up as in production (nothing exported), so tests see
/// the trace context that services store in the outbox.
pub fn init_for_tests() {
    global::set_text_map_propagator(TraceContextPropagator::new());
    EXPORTING.store(true, std::sync::atomic::Ordering::Relaxed);
    let provider = SdkTracerProvider::builder()
        .with_sampler(Sampler::AlwaysOff)
        .build();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_test_writer()
                .with_filter(filter),
        )
        .with(otel_layer(&provider, "test"))
        .try_init();
}

/// The OpenTelemetry layer with a filter of its own: `RUST_LOG` only decides
/// what is logged, never whether spans (and so trace context) exist.
fn otel_layer<S>(
    provider: &SdkTracerProvider,
    name: &'static str,
) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(name))
        .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
}

/// W3C trace context (`traceparent`, `tracestate`) as a string map: the
/// shape of `outbox.headers` and of the AMQP headers the relay sends.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TraceHeaders(pub BTreeMap<String, String>);

impl TraceHeaders {
    /// The context of the current `tracing` span.
    pub fn capture() -> Self {
        Self::from_context(&tracing::Span::current().context())
    }

    pub fn from_context(cx: &Context) -> Self {
        let mut headers = Self::default();
        global::get_text_map_propagator(|p| p.inject_context(cx, &mut headers));
        headers
    }

    /// The context of `span` (empty when spans are not exported).
    pub fn of_span(span: &tracing::Span) -> Self {
        Self::from_context(&span.context())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The context these headers describe (empty when there are none).
    pub fn to_context(&self) -> Context {
        global::get_text_map_propagator(|p| p.extract(self))
    }
}

impl Injector for TraceHeaders {
    fn set(&mut self, key: &str, value: String) {
        // The propagator writes an empty `tracestate` when there is none.
        if !value.is_empty() {
            self.0.insert(key.to_owned(), value);
        }
    }
}

impl Extractor for TraceHeaders {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// Whether the OpenTelemetry layer is installed (spans are exported, or a
/// test set it up): when not, span contexts, links and trace headers would
/// be empty, and computing them is wasted work.
pub fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Links `span` to the span context that `headers` describe (W3C), if
/// valid: for work on behalf of many traces at once, such as a batch.
pub fn add_link(span: &tracing::Span, headers: &TraceHeaders) {
    use opentelemetry::trace::TraceContextExt as _;
    let cx = headers.to_context();
    let linked = cx.span().span_context().clone();
    if linked.is_valid() {
        span.add_link(linked);
    }
}

/// Makes `span` a child of the trace context in `carrier` (for example the
/// metadata of an incoming request). A carrier without a valid context
/// leaves the span a root.
pub fn set_parent_from(span: &tracing::Span, carrier: &dyn Extractor) {
    let cx = global::get_text_map_propagator(|p| p.extract(carrier));
    let _ = span.set_parent(cx);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_headers_round_trip_a_context() {
        global::set_text_map_propagator(TraceContextPropagator::new());
        let mut incoming = TraceHeaders::default();
        incoming.0.insert(
            "traceparent".into(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        );
        let cx = incoming.to_context();
        let out = TraceHeaders::from_context(&cx);
        assert_eq!(out, incoming);
    }
}
