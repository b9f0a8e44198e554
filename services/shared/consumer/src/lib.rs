#![doc = include_str!("../README.md")]

mod config;
mod delivery;
mod inbox;
mod metrics;
mod retry;
mod runtime;
mod topology;

use std::{future::Future, sync::Arc};

use diesel_async::AsyncPgConnection;
use orderflow_events::{CloudEvent, Event};
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::Instrument as _;

pub use config::{ConsumerConfig, FAULT_EXIT_CODE};
pub use metrics::ConsumerMetrics;
pub use retry::FailureKind;
pub use topology::DELIVERY_LIMIT;

/// Why a handler did not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Worth retrying: the database was unavailable, a serialization
    /// conflict or deadlock, a timeout. Retried with backoff, then parked
    /// in the DLQ after the configured number of attempts.
    #[error("transient: {0}")]
    Transient(String),
    /// Will never succeed (the event contradicts this service's state in a
    /// way no retry fixes): parked in the DLQ at once, with this reason.
    #[error("rejected: {0}")]
    Reject(String),
}

impl From<diesel::result::Error> for HandlerError {
    fn from(err: diesel::result::Error) -> Self {
        Self::Transient(err.to_string())
    }
}

pub type HandlerResult = Result<(), HandlerError>;

/// An event of a batch, with the span of its message (its own trace):
/// what is done for this event belongs in it.
pub struct Traced<E> {
    pub event: CloudEvent<E>,
    pub span: tracing::Span,
}

/// Reacts to one event type. Business outcomes (a rejected reservation, a
/// declined payment) are not errors: they are state changes and events.
pub trait Handler: Send + Sync + 'static {
    /// The event this handler consumes; its exchange is
    /// `orderflow.<Event::producer()>`, its routing key `Event::TYPE`.
    type Event: Event + Send + Sync;
    /// Stable name: the inbox key and the queue name suffix, e.g.
    /// `reserve-stock` (queue `inventory.reserve-stock`). Renaming it
    /// forgets which messages were processed.
    const NAME: &'static str;

    /// Transactions in flight on this handler's queue, instead of
    /// `CONSUMER_CONCURRENCY`: a bulk handler whose batches touch disjoint
    /// rows and whose effect does not depend on their order may run more
    /// than one, so that a backlog of large messages uses more than one
    /// database backend.
    const CONCURRENCY: Option<usize> = None;
    /// Deliveries per batch, instead of `CONSUMER_BATCH_SIZE`: a handler
    /// whose messages each carry thousands of rows takes fewer, so that a
    /// transaction stays short.
    const BATCH_SIZE: Option<usize> = None;

    /// Applies `event` on `conn`, which is inside the transaction that also
    /// holds the inbox row; append outbox rows on the same `conn`. Must not
    /// commit or roll back itself.
    fn handle<'c>(
        &'c self,
        conn: &'c mut AsyncPgConnection,
        event: CloudEvent<Self::Event>,
    ) -> impl Future<Output = HandlerResult> + Send + 'c;

    /// Applies the new events of a batch, in delivery order, inside the
    /// batch's transaction (after [`Handler::before_batch`]). The default
    /// runs [`Handler::handle`] for each, each in its message's span. A
    /// handler whose events all need the same statements overrides it to
    /// apply them together (one statement for the batch instead of one per
    /// event); it should do its per-event work, such as logging, in each
    /// event's span. An error rolls the whole batch back, and the runtime
    /// then applies each message alone through [`Handler::handle`].
    fn handle_batch<'c>(
        &'c self,
        conn: &'c mut AsyncPgConnection,
        events: Vec<Traced<Self::Event>>,
    ) -> impl Future<Output = HandlerResult> + Send + 'c {
        async move {
            for Traced { event, span } in events {
                let outer = orderflow_db::replace_transaction_span(conn, Some(span.clone()));
                let handled = self.handle(conn, event).instrument(span).await;
                orderflow_db::replace_transaction_span(conn, outer);
                handled?;
            }
            Ok(())
        }
    }

    /// Called once before a batch of `events` is applied in one
    /// transaction (each then through [`Handler::handle`], in delivery
    /// order), only for events the inbox has not seen. A handler whose
    /// events lock shared rows takes those locks here, in one global order
    /// (say, by primary key), so that two batches cannot deadlock and a
    /// popular row is locked once per batch instead of once per message.
    /// The default takes none.
    fn before_batch<'c>(
        &'c self,
        conn: &'c mut AsyncPgConnection,
        events: &'c [&'c CloudEvent<Self::Event>],
    ) -> impl Future<Output = HandlerResult> + Send + 'c {
        let _ = (conn, events);
        std::future::ready(Ok(()))
    }
}

/// A service's handlers, consumed until shutdown.
pub struct Consumer {
    service: &'static str,
    pool: orderflow_db::Pool,
    config: ConsumerConfig,
    routes: Vec<Arc<dyn runtime::Route>>,
    metrics: ConsumerMetrics,
    ready: watch::Sender<bool>,
}

impl Consumer {
    /// `service` names the queues (`<service>.<handler>`) and the AMQP
    /// connection (`<service>/consumer`).
    pub fn new(service: &'static str, pool: orderflow_db::Pool, config: ConsumerConfig) -> Self {
        Self {
            service,
            pool,
            config,
            routes: Vec::new(),
            metrics: ConsumerMetrics::default(),
            ready: watch::Sender::new(false),
        }
    }

    /// Registers a handler (one queue each).
    #[must_use]
    pub fn with<H: Handler>(mut self, handler: H) -> Self {
        self.routes.push(runtime::route(handler));
        self
    }

    /// Adds the runtime's counters to `registry`, for the service's /metrics.
    #[must_use]
    pub fn register_metrics(self, registry: &mut Registry) -> Self {
        self.metrics.register(registry);
        self
    }

    /// The runtime's counters (shared with the running consumer).
    pub fn metrics(&self) -> ConsumerMetrics {
        self.metrics.clone()
    }

    /// `true` while every handler's queue is declared and consumed: false
    /// before the first connection and while reconnecting. For readiness
    /// checks, and for tests that must not publish before the queues exist.
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// Declares the queues and consumes until `shutdown` completes, then
    /// stops consuming, lets the messages in flight finish and be acked, and
    /// closes the connection. Reconnects (and redeclares) with backoff
    /// whenever the broker goes away.
    ///
    /// # Errors
    /// When the runtime cannot run at all (not for a failing message): an
    /// invalid configuration, two handlers with one NAME, or a queue that
    /// exists with other arguments.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        runtime::run(
            runtime::Setup {
                service: self.service,
                pool: self.pool,
                config: self.config,
                routes: self.routes,
                metrics: self.metrics,
                ready: self.ready,
            },
            shutdown,
        )
        .await
    }
}
