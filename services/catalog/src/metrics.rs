//! How fresh the catalog is, on its /metrics: per stream (the inventory
//! event type), the time from an event to its application
//! (`catalog_event_freshness_seconds`), the time of the newest event
//! applied (`catalog_last_applied_event_timestamp_seconds`: its age is
//! `time() - ...` in PromQL) and how many were applied. Counted after the
//! transaction committed (`orderflow_db::after_commit`).

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use prometheus_client::{
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use std::sync::atomic::AtomicU64;

type Labels = Vec<(&'static str, &'static str)>;

struct Freshness {
    seconds: Family<Labels, Histogram>,
    last_event: Family<Labels, Gauge<f64, AtomicU64>>,
    applied: Family<Labels, Counter>,
}

/// One set per process: the handlers count into it.
static FRESHNESS: LazyLock<Freshness> = LazyLock::new(|| Freshness {
    // 1 ms .. 18 s in steps of 25 %, so a quantile read from the buckets
    // is within a quarter of the truth.
    seconds: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 1.25, 45))),
    last_event: Family::default(),
    applied: Family::default(),
});

/// Adds the freshness series to the service's registry.
pub fn register(registry: &mut Registry) {
    registry.register(
        "catalog_event_freshness_seconds",
        "Time from an inventory event to its application in the catalog, by stream",
        FRESHNESS.seconds.clone(),
    );
    registry.register(
        "catalog_last_applied_event_timestamp_seconds",
        "Time (Unix seconds) of the newest event the catalog applied, by stream",
        FRESHNESS.last_event.clone(),
    );
    registry.register(
        "catalog_events_applied",
        "Events the catalog applied, by stream",
        FRESHNESS.applied.clone(),
    );
}

/// Records events of `stream` applied now, given their times.
pub fn applied(stream: &'static str, times: &[DateTime<Utc>]) {
    let labels = vec![("stream", stream)];
    let now = Utc::now();
    let histogram = FRESHNESS.seconds.get_or_create(&labels);
    let mut newest = f64::NEG_INFINITY;
    for t in times {
        let age = (now - *t).to_std().map_or(0.0, |d| d.as_secs_f64());
        histogram.observe(age);
        #[allow(clippy::cast_precision_loss)] // microseconds since 1970 fit an f64's 52 bits
        let at = t.timestamp_micros() as f64 / 1e6;
        newest = newest.max(at);
    }
    let gauge = FRESHNESS.last_event.get_or_create(&labels);
    if newest > gauge.get() {
        gauge.set(newest);
    }
    FRESHNESS
        .applied
        .get_or_create(&labels)
        .inc_by(times.len() as u64);
}
