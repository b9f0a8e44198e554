//! The pool's usage on /metrics, read from the pool at each scrape.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::Pool;

type Labels = Vec<(String, String)>;

/// One or more pools (the relay has one per source), each with its labels.
#[derive(Default)]
pub struct PoolMetrics {
    pools: Vec<(Labels, Pool)>,
}

impl std::fmt::Debug for PoolMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.pools.iter().map(|(labels, _)| labels))
            .finish()
    }
}

impl PoolMetrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `pool`, its series labelled with `labels` (none for a service's
    /// single pool; `source` for the relay's).
    #[must_use]
    pub fn with(mut self, labels: &[(&str, &str)], pool: Pool) -> Self {
        let labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.pools.push((labels, pool));
        self
    }

    /// Registers `db_pool_connections{state}`, `db_pool_max_connections`
    /// and `db_pool_waiting` in `registry`.
    pub fn register(self, registry: &mut Registry) {
        registry.register_collector(Box::new(self));
    }
}

impl Collector for PoolMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let connections = Family::<Labels, Gauge>::default();
        let max = Family::<Labels, Gauge>::default();
        let waiting = Family::<Labels, Gauge>::default();
        for (labels, pool) in &self.pools {
            let status = pool.status();
            let with_state = |state: &str| {
                let mut l = labels.clone();
                l.push(("state".to_owned(), state.to_owned()));
                l
            };
            let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
            connections
                .get_or_create(&with_state("idle"))
                .set(gauge(status.available));
            connections
                .get_or_create(&with_state("in_use"))
                .set(gauge(status.size.saturating_sub(status.available)));
            max.get_or_create(labels).set(gauge(status.max_size));
            waiting.get_or_create(labels).set(gauge(status.waiting));
        }
        for (name, help, family) in [
            (
                "db_pool_connections",
                "Open database connections of the pool, by state (idle, in_use)",
                &connections,
            ),
            (
                "db_pool_max_connections",
                "The pool's size limit (DATABASE_POOL_SIZE)",
                &max,
            ),
            (
                "db_pool_waiting",
                "Callers waiting for a connection (the pool is exhausted while this is above 0)",
                &waiting,
            ),
        ] {
            let metric = encoder.encode_descriptor(name, help, None, family.metric_type())?;
            family.encode(metric)?;
        }
        Ok(())
    }
}
