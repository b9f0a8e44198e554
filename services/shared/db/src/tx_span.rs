//! A `db.transaction` span for every transaction on a pooled connection,
//! from BEGIN to COMMIT or ROLLBACK, through diesel's connection
//! instrumentation: no call site changes, every service and the relay get
//! it. Its parent is the span current at BEGIN (the gRPC call or the
//! consumed message); a transaction begun outside any span (the relay's
//! polling) records nothing, so idle work makes no traces.

use diesel::connection::{Instrumentation, InstrumentationEvent};
use diesel_async::AsyncConnection as _;

#[derive(Default)]
pub(crate) struct TransactionSpans {
    /// The open top-level transaction's span.
    current: Option<tracing::Span>,
}

impl Instrumentation for TransactionSpans {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        match event {
            InstrumentationEvent::BeginTransaction { depth, .. } if depth.get() == 1 => {
                self.current = if tracing::Span::current().is_none() {
                    None
                } else {
                    Some(tracing::info_span!(
                        "db.transaction",
                        otel.kind = "client",
                        db.system = "postgresql",
                        db.outcome = tracing::field::Empty,
                    ))
                };
            }
            InstrumentationEvent::CommitTransaction { depth, .. } if depth.get() == 1 => {
                if let Some(span) = self.current.take() {
                    span.record("db.outcome", "commit");
                }
            }
            InstrumentationEvent::RollbackTransaction { depth, .. } if depth.get() == 1 => {
                if let Some(span) = self.current.take() {
                    span.record("db.outcome", "rollback");
                }
            }
            _ => {}
        }
    }
}

/// The span of the transaction open on `conn`, if one is traced: work done
/// inside the transaction (an outbox append) becomes its child.
pub fn transaction_span(conn: &mut diesel_async::AsyncPgConnection) -> Option<tracing::Span> {
    conn.instrumentation()
        .downcast_ref::<TransactionSpans>()
        .and_then(|spans| spans.current.clone())
}

/// Makes `span` the span of the transaction open on `conn` and returns the
/// one it replaces, which the caller puts back. A transaction that applies
/// several messages runs each under its message's span this way, so what a
/// message appends to the outbox continues that message's trace.
pub fn replace_transaction_span(
    conn: &mut diesel_async::AsyncPgConnection,
    span: Option<tracing::Span>,
) -> Option<tracing::Span> {
    match conn.instrumentation().downcast_mut::<TransactionSpans>() {
        Some(spans) => std::mem::replace(&mut spans.current, span),
        None => None,
    }
}
