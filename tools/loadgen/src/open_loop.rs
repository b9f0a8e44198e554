//! The open loop: CreateOrder sent at a fixed rate whatever the answers.
//!
//! Call `i` is due at `start + i / rate` and is sent at that time even when
//! earlier calls are still waiting: a slow server does not slow the load
//! (no coordinated omission). Its latency is measured from when it was
//! *due*, so a client that fell behind its schedule counts against the
//! server, as a real customer's wait would. At most `max_in_flight` calls
//! are outstanding; a call due beyond that is not sent and counted as
//! `skipped` (the client, not the server, would otherwise run out of memory).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use hdrhistogram::Histogram;
use orderflow_proto::order::v1::{
    CreateOrderRequest, Money, OrderLine, order_service_client::OrderServiceClient,
};
use serde::Serialize;
use tokio::{sync::Semaphore, task::JoinSet, time::Instant};
use tonic::transport::Channel;

use crate::{
    request::{CURRENCY, Rng},
    run::code_name,
};

const MAX_LATENCY_US: u64 = 600_000_000;

pub struct Plan {
    pub rate: f64,
    pub duration: Duration,
    /// Product ids lines are drawn from (distinct within an order).
    pub products: Vec<String>,
    /// Each order has 1..=max_lines lines of quantity 1.
    pub max_lines: usize,
    pub unit_price_minor: i64,
    pub customers: usize,
    pub max_in_flight: usize,
}

/// The JSON result of `open-loop`.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub rate_wanted: f64,
    pub duration_s: f64,
    /// Calls sent, and calls sent per second of the schedule.
    pub sent: u64,
    pub sent_per_s: f64,
    /// Calls not sent because `max_in_flight` were outstanding.
    pub skipped: u64,
    pub ok: u64,
    /// Failed calls by canonical gRPC code name.
    pub errors: BTreeMap<&'static str, u64>,
    /// The first message of each error code.
    pub sample_errors: BTreeMap<&'static str, String>,
    /// Latency of successful calls from when they were due.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Latency of refused calls (RESOURCE_EXHAUSTED), p99: shedding must be fast.
    pub shed_p99_ms: Option<f64>,
    /// The most calls outstanding at once.
    pub peak_in_flight: usize,
}

enum Outcome {
    Ok(u64),
    Failed(tonic::Status, u64),
}

/// Runs the schedule, then waits for every call sent.
pub async fn run(clients: &[OrderServiceClient<Channel>], plan: &Plan) -> anyhow::Result<Summary> {
    anyhow::ensure!(plan.rate > 0.0, "--rate must be above 0");
    anyhow::ensure!(!plan.products.is_empty(), "no products to order");
    let mut rng = Rng::from_entropy();
    let customers: Arc<Vec<String>> = Arc::new(
        (0..plan.customers.max(1))
            .map(|_| rng.uuid_v4().to_string())
            .collect(),
    );
    let total = (plan.rate * plan.duration.as_secs_f64()).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / plan.rate);
    let slots = Arc::new(Semaphore::new(plan.max_in_flight.max(1)));
    let mut calls = JoinSet::new();
    let mut ok_latency = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3)?;
    let mut shed_latency = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3)?;
    let mut summary = Summary {
        rate_wanted: plan.rate,
        duration_s: plan.duration.as_secs_f64(),
        sent: 0,
        sent_per_s: 0.0,
        skipped: 0,
        ok: 0,
        errors: BTreeMap::new(),
        sample_errors: BTreeMap::new(),
        p50_ms: None,
        p99_ms: None,
        max_ms: None,
        shed_p99_ms: None,
        peak_in_flight: 0,
    };
    let mut record = |outcome: Outcome, summary: &mut Summary| match outcome {
        Outcome::Ok(us) => {
            ok_latency.saturating_record(us.max(1));
            summary.ok += 1;
        }
        Outcome::Failed(status, us) => {
            let code = code_name(status.code());
            if status.code() == tonic::Code::ResourceExhausted {
                shed_latency.saturating_record(us.max(1));
            }
            *summary.errors.entry(code).or_default() += 1;
            summary
                .sample_errors
                .entry(code)
                .or_insert_with(|| status.message().to_owned());
        }
    };
    let start = Instant::now();
    for i in 0..total {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due).await;
        // Settle what finished meanwhile, so memory stays bounded by what is in flight.
        while let Some(done) = calls.try_join_next() {
            record(done?, &mut summary);
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            summary.skipped += 1;
            continue;
        };
        let request = order(&mut rng, plan, &customers);
        let mut client = clients[i as usize % clients.len()].clone();
        calls.spawn(async move {
            let result = client.create_order(request).await;
            drop(slot);
            let us = u64::try_from(due.elapsed().as_micros()).unwrap_or(u64::MAX);
            match result {
                Ok(_) => Outcome::Ok(us),
                Err(status) => Outcome::Failed(status, us),
            }
        });
        summary.sent += 1;
        summary.peak_in_flight = summary.peak_in_flight.max(calls.len());
    }
    let schedule = start.elapsed().as_secs_f64();
    while let Some(done) = calls.join_next().await {
        record(done?, &mut summary);
    }
    summary.sent_per_s = summary.sent as f64 / schedule.max(1e-9);
    let q =
        |h: &Histogram<u64>, q: f64| (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1e3);
    summary.p50_ms = q(&ok_latency, 0.50);
    summary.p99_ms = q(&ok_latency, 0.99);
    summary.max_ms = (!ok_latency.is_empty()).then(|| ok_latency.max() as f64 / 1e3);
    summary.shed_p99_ms = q(&shed_latency, 0.99);
    Ok(summary)
}

/// 1..=max_lines lines of quantity 1 on distinct products.
fn order(rng: &mut Rng, plan: &Plan, customers: &[String]) -> CreateOrderRequest {
    let lines = (1 + rng.below(plan.max_lines.max(1) as u64) as usize).min(plan.products.len());
    let mut picked: Vec<usize> = Vec::with_capacity(lines);
    while picked.len() < lines {
        let p = rng.below(plan.products.len() as u64) as usize;
        if !picked.contains(&p) {
            picked.push(p);
        }
    }
    let customer = rng.below(customers.len() as u64) as usize;
    CreateOrderRequest {
        request_id: rng.uuid_v4().to_string(),
        customer_id: customers[customer].clone(),
        customer_email: format!("c{customer}@example.com"),
        lines: picked
            .into_iter()
            .map(|p| OrderLine {
                product_id: plan.products[p].clone(),
                quantity: 1,
                unit_price: Some(Money {
                    amount_minor: plan.unit_price_minor,
                    currency: CURRENCY.to_owned(),
                }),
            })
            .collect(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_have_distinct_products_and_unit_quantities() {
        let plan = Plan {
            rate: 1.0,
            duration: Duration::from_secs(1),
            products: (0..3).map(|i| format!("p{i}")).collect(),
            max_lines: 2,
            unit_price_minor: 100,
            customers: 5,
            max_in_flight: 1,
        };
        let customers: Vec<String> = (0..5).map(|i| format!("c{i}")).collect();
        let mut rng = Rng::seeded(3);
        let mut sizes = [0usize; 3];
        for _ in 0..500 {
            let o = order(&mut rng, &plan, &customers);
            sizes[o.lines.len()] += 1;
            assert!(o.lines.iter().all(|l| l.quantity == 1));
            assert!(o.lines.len() < 2 || o.lines[0].product_id != o.lines[1].product_id);
        }
        assert_eq!(sizes[0], 0);
        assert!(sizes[1] > 100 && sizes[2] > 100, "{sizes:?}");
        // A single product: every order has one line.
        let one = Plan {
            products: vec!["hot".into()],
            ..plan
        };
        assert!((0..50).all(|_| order(&mut rng, &one, &customers).lines.len() == 1));
    }
}
