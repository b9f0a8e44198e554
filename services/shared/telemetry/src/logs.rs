//! Log lines with the trace they belong to: `trace_id` and `span_id` of the
//! current span on every line written inside one, so a log search and a
//! trace view lead to each other.

use std::fmt::Write as _;

use opentelemetry::trace::TraceContextExt as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::{
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    registry::LookupSpan,
};

#[derive(Debug, Clone, Copy)]
pub(crate) enum Shape {
    /// One JSON object per line: the ids become two more keys.
    Json,
    /// Readable text: ` trace_id=… span_id=…` ends the line.
    Text,
}

/// Wraps an event formatter and adds the current span's trace and span id.
pub(crate) struct WithTraceIds<F> {
    inner: F,
    shape: Shape,
    /// False when no OpenTelemetry layer is installed: there are no ids.
    enabled: bool,
}

impl<F> WithTraceIds<F> {
    pub(crate) fn new(inner: F, shape: Shape, enabled: bool) -> Self {
        Self {
            inner,
            shape,
            enabled,
        }
    }
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let ids = if self.enabled && ctx.lookup_current().is_some() {
            current_ids()
        } else {
            None
        };
        let Some((trace_id, span_id)) = ids else {
            return self.inner.format_event(ctx, writer, event);
        };
        // The inner formatter decides colours itself (`with_ansi` on it),
        // so formatting into a string loses nothing.
        let mut line = String::with_capacity(256);
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let mut ids = String::with_capacity(72);
        match self.shape {
            Shape::Json => {
                write!(ids, r#","trace_id":"{trace_id}","span_id":"{span_id}""#)?;
                match line.rfind('}') {
                    Some(end) => line.insert_str(end, &ids),
                    None => line.push_str(&ids),
                }
            }
            Shape::Text => {
                write!(ids, " trace_id={trace_id} span_id={span_id}")?;
                let end = line.trim_end_matches('\n').len();
                line.insert_str(end, &ids);
            }
        }
        writer.write_str(&line)
    }
}

/// The OpenTelemetry ids of the current span, when it has valid ones.
fn current_ids() -> Option<(String, String)> {
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}
