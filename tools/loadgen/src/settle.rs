//! `settle`: waits until a load's saga has run to its end, and says how long
//! that took.
//!
//! The system is settled when no order is PENDING, every service's outbox
//! has been published (`outbox_pending` is empty), and every message the
//! broker routed has been applied: the inbox rows of all services add up to
//! the published events times the queues each is routed to (the fan-out,
//! read from the broker's bindings by the caller). Counting what was applied
//! needs no broker statistics, which RabbitMQ's management API only samples
//! every few seconds. One connection per database, polled every `every`.

use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use tokio::time::Instant;
use tokio_postgres::{Client, NoTls};

pub struct Plan {
    /// (service, connection URL); the first is the order service's.
    pub databases: Vec<(String, String)>,
    /// (producing service, event type, queues it is routed to).
    pub fanout: Vec<(String, String, i64)>,
    pub timeout: Duration,
    pub every: Duration,
}

#[derive(Debug, Serialize, Default, Clone, PartialEq, Eq)]
pub struct State {
    pub pending_orders: i64,
    pub pending_events: i64,
    /// Routed messages not yet applied (expected inbox rows minus inbox
    /// rows); counted only once nothing else is left.
    pub unapplied_messages: Option<i64>,
}

impl State {
    fn settled(&self) -> bool {
        self.pending_orders == 0 && self.pending_events == 0 && self.unapplied_messages == Some(0)
    }
}

#[derive(Debug, Serialize)]
pub struct Summary {
    /// What was left when the wait began.
    pub at_start: State,
    /// Seconds until settled; null when the timeout came first.
    pub settled_s: Option<f64>,
    /// What was left at the end (all zero when settled).
    pub at_end: State,
}

pub async fn run(plan: &Plan) -> anyhow::Result<Summary> {
    let mut clients = Vec::with_capacity(plan.databases.len());
    for (service, url) in &plan.databases {
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .with_context(|| format!("connecting to the {service} database"))?;
        tokio::spawn(connection);
        clients.push((service.clone(), client));
    }
    let started = Instant::now();
    let at_start = state(&clients, plan, true).await?;
    let mut last = at_start.clone();
    loop {
        if last.settled() {
            return Ok(Summary {
                at_start,
                settled_s: Some(started.elapsed().as_secs_f64()),
                at_end: last,
            });
        }
        if started.elapsed() >= plan.timeout {
            return Ok(Summary {
                at_start,
                settled_s: None,
                at_end: last,
            });
        }
        tokio::time::sleep(plan.every).await;
        last = state(&clients, plan, false).await?;
    }
}

async fn state(
    clients: &[(String, Client)],
    plan: &Plan,
    count_inbox: bool,
) -> anyhow::Result<State> {
    let mut s = State::default();
    if let Some((_, order)) = clients.first() {
        s.pending_orders = order
            .query_one("SELECT count(*) FROM orders WHERE status = 'PENDING'", &[])
            .await?
            .get(0);
    }
    for (_, client) in clients {
        s.pending_events += client
            .query_one("SELECT count(*) FROM outbox_pending", &[])
            .await?
            .get::<_, i64>(0);
    }
    // Counting the inbox is the dear part: at the start, then only once the
    // rest is done.
    if count_inbox || (s.pending_orders == 0 && s.pending_events == 0) {
        let mut expected = 0i64;
        let mut applied = 0i64;
        for (service, client) in clients {
            for row in client
                .query(
                    "SELECT event_type, count(*) FROM outbox GROUP BY event_type",
                    &[],
                )
                .await?
            {
                let event_type: String = row.get(0);
                let n: i64 = row.get(1);
                expected += plan
                    .fanout
                    .iter()
                    .filter(|(source, t, _)| source == service && *t == event_type)
                    .map(|(_, _, queues)| queues * n)
                    .sum::<i64>();
            }
            applied += client
                .query_one("SELECT count(*) FROM inbox", &[])
                .await?
                .get::<_, i64>(0);
        }
        s.unapplied_messages = Some(expected - applied);
    }
    Ok(s)
}
