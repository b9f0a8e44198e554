//! What waits in the consumers' queues. Once the relay has published the
//! outbox, a saga's backlog is there: messages delivered to a service's
//! work queue and not yet applied. Read from RabbitMQ's management API every
//! [`EVERY`] (its own statistics are a few seconds old at most), shown on
//! `/metrics` as `broker_queue_messages{queue}` and in `/healthz` under
//! `queues`. It does not make the relay unhealthy: a backlog is work, not a
//! fault (the services' consumer metrics and the DLQ alerts say when it is
//! one).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use prometheus_client::{
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::sync::watch;

use crate::ops::dlq::DeadLetters;

/// How often the queues are read.
pub const EVERY: Duration = Duration::from_secs(5);

type Labels = Vec<(String, String)>;

/// Messages (ready and unacked) per work queue, as last read.
#[derive(Clone, Default)]
pub struct Backlog {
    pub queues: Arc<Mutex<BTreeMap<String, i64>>>,
    gauge: Family<Labels, Gauge>,
}

impl Backlog {
    pub fn register(registry: &mut Registry) -> Self {
        let backlog = Self::default();
        registry.register(
            "broker_queue_messages",
            "Messages in a consumer's work queue (ready and unacknowledged), read from the management API",
            backlog.gauge.clone(),
        );
        backlog
    }

    /// The last reading.
    pub fn snapshot(&self) -> BTreeMap<String, i64> {
        self.queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Reads the work queues every [`EVERY`] until `stop`.
    pub async fn watch(self, dead_letters: DeadLetters, mut stop: watch::Receiver<bool>) {
        while !*stop.borrow() {
            match dead_letters.queues().await {
                Ok(rows) => {
                    let depths: BTreeMap<String, i64> = rows
                        .iter()
                        .filter_map(|q| {
                            Some((q["name"].as_str()?.to_owned(), q["messages"].as_i64()?))
                        })
                        .collect();
                    for (queue, messages) in &depths {
                        self.gauge
                            .get_or_create(&vec![("queue".to_owned(), queue.clone())])
                            .set(*messages);
                    }
                    *self
                        .queues
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = depths;
                }
                Err(e) => tracing::debug!(error = %e, "cannot read the queue depths"),
            }
            tokio::select! {
                () = tokio::time::sleep(EVERY) => {}
                _ = stop.changed() => {}
            }
        }
    }
}
