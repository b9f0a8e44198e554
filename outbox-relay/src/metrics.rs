//! Prometheus metrics, per source. Names follow the `outbox_` prefix so the
//! alert rules in k8s/ can rely on them.

use std::sync::atomic::AtomicU64;

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

pub type Labels = Vec<(String, String)>;

pub fn source_labels(source: &str) -> Labels {
    vec![("source".to_owned(), source.to_owned())]
}

#[derive(Clone)]
pub struct Metrics {
    pub pending: Family<Labels, Gauge>,
    pub oldest_pending_age: Family<Labels, Gauge<f64, AtomicU64>>,
    pub parked: Family<Labels, Gauge>,
    pub published: Family<Labels, Counter>,
    /// Labels: source, reason (`nack`, `unroutable`, `broker`, `database`).
    pub failures: Family<Labels, Counter>,
    pub owned_partitions: Family<Labels, Gauge>,
    pub batch_seconds: Family<Labels, Histogram, fn() -> Histogram>,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            pending: Family::default(),
            oldest_pending_age: Family::default(),
            parked: Family::default(),
            published: Family::default(),
            failures: Family::default(),
            owned_partitions: Family::default(),
            batch_seconds: Family::new_with_constructor(|| {
                Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                    0.000_5, 2.0, 16,
                ))
            }),
        };
        registry.register(
            "outbox_pending_rows",
            "Outbox events waiting to be published (not parked)",
            m.pending.clone(),
        );
        registry.register(
            "outbox_oldest_pending_age_seconds",
            "Age of the oldest pending, not parked, event: the relay's lag",
            m.oldest_pending_age.clone(),
        );
        registry.register(
            "outbox_parked_rows",
            "Events parked after too many failed publishes",
            m.parked.clone(),
        );
        registry.register(
            "outbox_published",
            "Events published and confirmed by the broker",
            m.published.clone(),
        );
        registry.register(
            "outbox_publish_failures",
            "Failed publishes, by reason",
            m.failures.clone(),
        );
        registry.register(
            "outbox_owned_partitions",
            "Partitions this replica holds a lease on",
            m.owned_partitions.clone(),
        );
        registry.register(
            "outbox_batch_publish_seconds",
            "Time from the first publish of a batch to the last broker confirm",
            m.batch_seconds.clone(),
        );
        m
    }

    pub fn failure(&self, source: &str, reason: &str, n: u64) {
        let mut labels = source_labels(source);
        labels.push(("reason".to_owned(), reason.to_owned()));
        self.failures.get_or_create(&labels).inc_by(n);
    }
}
