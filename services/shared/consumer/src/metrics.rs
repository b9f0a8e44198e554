//! Prometheus counters per handler. The names start with `consumer_` so
//! alert rules can rely on them; a service registers them in the registry it
//! serves on /metrics.

use std::time::Duration;

use prometheus_client::{
    metrics::{
        counter::Counter,
        family::Family,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

type Labels = Vec<(String, String)>;

fn handler_labels(handler: &str) -> Labels {
    vec![("handler".to_owned(), handler.to_owned())]
}

/// What the runtime did with the messages, per handler. Cheap to clone: the
/// clones share their counters.
#[derive(Clone, Debug)]
pub struct ConsumerMetrics {
    /// Every delivery the runtime settled, whatever became of it.
    consumed: Family<Labels, Counter>,
    /// From a delivery's arrival to its ack (or hand-back).
    handling: Family<Labels, Histogram, fn() -> Histogram>,
    applied: Family<Labels, Counter>,
    duplicates: Family<Labels, Counter>,
    retried: Family<Labels, Counter>,
    /// Labels: handler, kind (`malformed`, `unsupported`, `rejected`, `exhausted`).
    dead_lettered: Family<Labels, Counter>,
    /// Messages per transaction of a batch (batches of more than one).
    batch_size: Family<Labels, Histogram, fn() -> Histogram>,
    /// Transactions that applied more than one message.
    batches: Family<Labels, Counter>,
}

impl Default for ConsumerMetrics {
    fn default() -> Self {
        Self {
            consumed: Family::default(),
            handling: Family::new_with_constructor(|| {
                // 0.5 ms .. ~16 s
                Histogram::new(exponential_buckets(0.000_5, 2.0, 16))
            }),
            applied: Family::default(),
            duplicates: Family::default(),
            retried: Family::default(),
            dead_lettered: Family::default(),
            batch_size: Family::new_with_constructor(|| {
                // 2 .. 1024
                Histogram::new(exponential_buckets(2.0, 2.0, 10))
            }),
            batches: Family::default(),
        }
    }
}

impl ConsumerMetrics {
    /// Adds the counters to `registry` (once per registry).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "consumer_messages_consumed",
            "Deliveries settled (applied, duplicate, retried, dead-lettered or handed back)",
            self.consumed.clone(),
        );
        registry.register(
            "consumer_message_handling_seconds",
            "Time from a delivery's arrival to its ack",
            self.handling.clone(),
        );
        registry.register(
            "consumer_batches",
            "Transactions that applied more than one message",
            self.batches.clone(),
        );
        registry.register(
            "consumer_batch_messages",
            "Messages applied together in one transaction, per batch of more than one",
            self.batch_size.clone(),
        );
        registry.register(
            "consumer_messages_applied",
            "Messages whose handler committed its effect",
            self.applied.clone(),
        );
        registry.register(
            "consumer_messages_duplicate",
            "Deliveries acked without effect because the inbox had already seen them",
            self.duplicates.clone(),
        );
        registry.register(
            "consumer_messages_retried",
            "Transient failures sent to a delay queue for another attempt",
            self.retried.clone(),
        );
        registry.register(
            "consumer_messages_dead_lettered",
            "Messages parked in a DLQ, by kind (malformed, unsupported, rejected, exhausted)",
            self.dead_lettered.clone(),
        );
    }

    pub fn consumed(&self, handler: &str) -> u64 {
        self.consumed.get_or_create(&handler_labels(handler)).get()
    }

    pub fn applied(&self, handler: &str) -> u64 {
        self.applied.get_or_create(&handler_labels(handler)).get()
    }

    pub fn duplicates(&self, handler: &str) -> u64 {
        self.duplicates
            .get_or_create(&handler_labels(handler))
            .get()
    }

    pub fn retried(&self, handler: &str) -> u64 {
        self.retried.get_or_create(&handler_labels(handler)).get()
    }

    /// Parked messages of `handler`, all kinds together.
    pub fn dead_lettered(&self, handler: &str) -> u64 {
        crate::retry::FailureKind::ALL
            .iter()
            .map(|kind| self.dead_lettered_of(handler, kind.as_str()))
            .sum()
    }

    pub fn dead_lettered_of(&self, handler: &str, kind: &str) -> u64 {
        let mut labels = handler_labels(handler);
        labels.push(("kind".to_owned(), kind.to_owned()));
        self.dead_lettered.get_or_create(&labels).get()
    }

    pub(crate) fn observe_handled(&self, handler: &str, took: Duration) {
        let labels = handler_labels(handler);
        self.consumed.get_or_create(&labels).inc();
        self.handling
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// Batches of more than one message the handler's queue took.
    pub fn batches(&self, handler: &str) -> u64 {
        self.batches.get_or_create(&handler_labels(handler)).get()
    }

    pub(crate) fn observe_batch(&self, handler: &str, messages: usize) {
        let labels = handler_labels(handler);
        self.batches.get_or_create(&labels).inc();
        self.batch_size
            .get_or_create(&labels)
            .observe(messages as f64);
    }

    pub(crate) fn inc_applied(&self, handler: &str) {
        self.applied.get_or_create(&handler_labels(handler)).inc();
    }

    pub(crate) fn inc_duplicate(&self, handler: &str) {
        self.duplicates
            .get_or_create(&handler_labels(handler))
            .inc();
    }

    pub(crate) fn inc_retried(&self, handler: &str) {
        self.retried.get_or_create(&handler_labels(handler)).inc();
    }

    pub(crate) fn inc_dead_lettered(&self, handler: &str, kind: &str) {
        let mut labels = handler_labels(handler);
        labels.push(("kind".to_owned(), kind.to_owned()));
        self.dead_lettered.get_or_create(&labels).inc();
    }
}
