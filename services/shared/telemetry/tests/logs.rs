//! Log lines carry the trace they belong to: with the OpenTelemetry layer
//! installed (as when spans are exported), every line written inside a span
//! has that span's `trace_id` and `span_id`, in JSON and in text; a line
//! outside any span has none. One global subscriber (as in a binary), so
//! this file holds a single test.

#![allow(clippy::unwrap_used)] // test code

use std::sync::{Arc, Mutex};

use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::{layer::SubscriberExt as _, util::SubscriberInitExt as _};

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    fn lines(&self) -> Vec<String> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

#[test]
fn lines_inside_a_span_carry_its_trace_and_span_id() {
    let (json, text) = (Buffer::default(), Buffer::default());
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let (j, t) = (json.clone(), text.clone());
    tracing_subscriber::registry()
        .with(orderflow_telemetry::log_layer(
            true,
            false,
            true,
            move || j.clone(),
        ))
        .with(orderflow_telemetry::log_layer(
            false,
            false,
            true,
            move || t.clone(),
        ))
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
        .init();

    let span = tracing::info_span!("work", order.id = "o-1");
    let (trace_id, span_id) = {
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        (sc.trace_id().to_string(), sc.span_id().to_string())
    };
    span.in_scope(|| tracing::info!(answer = 42, "inside"));
    tracing::info!("outside");

    let lines: Vec<serde_json::Value> = json
        .lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let inside = &lines[0];
    assert_eq!(inside["fields"]["message"], "inside");
    assert_eq!(inside["fields"]["answer"], 42);
    assert_eq!(
        inside["span"]["name"], "work",
        "the current span is still there"
    );
    assert_eq!(inside["trace_id"], trace_id.as_str(), "{inside}");
    assert_eq!(inside["span_id"], span_id.as_str(), "{inside}");
    assert_eq!(trace_id.len(), 32);
    let outside = &lines[1];
    assert_eq!(outside["fields"]["message"], "outside");
    assert!(
        outside.get("trace_id").is_none(),
        "no span, no ids: {outside}"
    );

    let text = text.lines();
    assert_eq!(text.len(), 2, "{text:?}");
    assert!(
        text[0].contains("inside")
            && text[0].ends_with(&format!(" trace_id={trace_id} span_id={span_id}")),
        "{}",
        text[0]
    );
    assert!(!text[1].contains("trace_id="), "{}", text[1]);
}
