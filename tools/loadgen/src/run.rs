//! The two experiments: the timed closed loop and the idempotency burst.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use orderflow_proto::order::v1::order_service_client::OrderServiceClient;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::request::{Pools, Rng, build_request};

/// Latencies are recorded in microseconds up to this bound; slower calls are
/// clamped (they are also past any sane `--timeout`).
const MAX_LATENCY_US: u64 = 300_000_000;

pub struct Plan {
    pub concurrency: usize,
    pub lines: usize,
    pub warmup: Duration,
    pub duration: Duration,
}

/// The printed / JSON result of `create-orders`.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub concurrency: usize,
    pub connections: usize,
    pub lines: usize,
    pub duration_s: f64,
    pub ok: u64,
    /// Failed calls by canonical gRPC code name, e.g. `UNAVAILABLE`.
    pub errors: BTreeMap<&'static str, u64>,
    pub rate_per_s: f64,
    /// Latency percentiles of successful calls; null when none succeeded.
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

impl Summary {
    pub fn human_line(&self) -> String {
        let errors: u64 = self.errors.values().sum();
        let by_code = if self.errors.is_empty() {
            String::new()
        } else {
            let parts: Vec<String> = self
                .errors
                .iter()
                .map(|(c, n)| format!("{c}={n}"))
                .collect();
            format!(" ({})", parts.join(","))
        };
        let ms = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}ms"));
        format!(
            "concurrency={} ok={} errors={errors}{by_code} rate={:.1}/s p50={} p90={} p99={} max={}",
            self.concurrency,
            self.ok,
            self.rate_per_s,
            ms(self.p50_ms),
            ms(self.p90_ms),
            ms(self.p99_ms),
            ms(self.max_ms),
        )
    }
}

pub struct Report {
    pub summary: Summary,
    /// The first message seen for each error code, to make failures explainable.
    pub sample_errors: BTreeMap<&'static str, String>,
}

/// What one worker measured; merged at the end so the hot loop shares nothing.
struct WorkerStats {
    latencies: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<&'static str, u64>,
    sample_errors: BTreeMap<&'static str, String>,
}

/// Runs the closed loop. A call is counted (latency, ok, or error) when it
/// *completes* inside the measurement window (warmup end, run end]: counting
/// completions over a fixed window gives an unbiased rate, and calls begun in
/// the warmup but finished after it are warm. Workers start no call after the
/// end; the calls still in flight then are awaited but not counted.
pub async fn create_orders(
    clients: &[OrderServiceClient<Channel>],
    plan: &Plan,
) -> anyhow::Result<Report> {
    let pools = Arc::new(Pools::generate(&mut Rng::from_entropy()));
    // All workers block on this until every task is spawned, then start together.
    let (start_tx, start_rx) = watch::channel(None::<Instant>);
    let mut tasks = Vec::with_capacity(plan.concurrency);
    for i in 0..plan.concurrency {
        let client = clients[i % clients.len()].clone();
        let mut start_rx = start_rx.clone();
        let pools = Arc::clone(&pools);
        let (lines, warmup, duration) = (plan.lines, plan.warmup, plan.duration);
        tasks.push(tokio::spawn(async move {
            let start = match start_rx.wait_for(Option::is_some).await {
                Ok(start) => *start,
                Err(_) => None,
            };
            match start {
                Some(start) => {
                    worker(
                        client,
                        &pools,
                        lines,
                        start + warmup,
                        start + warmup + duration,
                    )
                    .await
                }
                None => Err(anyhow::anyhow!("run aborted before start")),
            }
        }));
    }
    start_tx.send_replace(Some(Instant::now()));

    let mut latencies = new_histogram()?;
    let mut ok = 0;
    let mut errors: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut sample_errors = BTreeMap::new();
    for task in tasks {
        let stats = task.await??;
        latencies.add(&stats.latencies)?;
        ok += stats.ok;
        for (code, n) in stats.errors {
            *errors.entry(code).or_default() += n;
        }
        for (code, message) in stats.sample_errors {
            sample_errors.entry(code).or_insert(message);
        }
    }

    let duration_s = plan.duration.as_secs_f64();
    let quantile = |q: f64| (ok > 0).then(|| latencies.value_at_quantile(q) as f64 / 1000.0);
    Ok(Report {
        summary: Summary {
            concurrency: plan.concurrency,
            connections: clients.len(),
            lines: plan.lines,
            duration_s,
            ok,
            errors,
            rate_per_s: ok as f64 / duration_s,
            p50_ms: quantile(0.50),
            p90_ms: quantile(0.90),
            p99_ms: quantile(0.99),
            max_ms: (ok > 0).then(|| latencies.max() as f64 / 1000.0),
        },
        sample_errors,
    })
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)?)
}

async fn worker(
    mut client: OrderServiceClient<Channel>,
    pools: &Pools,
    lines: usize,
    measure_from: Instant,
    end: Instant,
) -> anyhow::Result<WorkerStats> {
    let mut rng = Rng::from_entropy();
    let mut stats = WorkerStats {
        latencies: new_histogram()?,
        ok: 0,
        errors: BTreeMap::new(),
        sample_errors: BTreeMap::new(),
    };
    loop {
        // Built before taking the timestamp: only the call itself is measured.
        let request = build_request(&mut rng, pools, lines);
        let sent = Instant::now();
        if sent >= end {
            break;
        }
        let result = client.create_order(request).await;
        let done = Instant::now();
        if done <= measure_from || done > end {
            continue;
        }
        match result {
            Ok(_) => {
                let micros = u64::try_from((done - sent).as_micros()).unwrap_or(u64::MAX);
                stats.latencies.saturating_record(micros.max(1));
                stats.ok += 1;
            }
            Err(status) => {
                let code = code_name(status.code());
                *stats.errors.entry(code).or_default() += 1;
                stats
                    .sample_errors
                    .entry(code)
                    .or_insert_with(|| status.message().to_owned());
            }
        }
    }
    Ok(stats)
}

pub struct IdempotencyOutcome {
    pub request_id: String,
    pub ok: usize,
    pub order_ids: BTreeSet<String>,
    /// Responses whose order names another request_id than the one sent.
    pub mismatched_request_ids: usize,
    /// One entry per failed call: code name and message.
    pub errors: Vec<(&'static str, String)>,
}

/// Sends `calls` copies of one request at once over the given connections.
pub async fn idempotency(
    clients: &[OrderServiceClient<Channel>],
    calls: usize,
    lines: usize,
) -> IdempotencyOutcome {
    let mut rng = Rng::from_entropy();
    let pools = Pools::generate(&mut rng);
    let request = build_request(&mut rng, &pools, lines);
    let request_id = request.request_id.clone();
    let (start_tx, start_rx) = watch::channel(false);
    let mut tasks = Vec::with_capacity(calls);
    for i in 0..calls {
        let mut client = clients[i % clients.len()].clone();
        let mut start_rx = start_rx.clone();
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            // Released together so the calls really race on the server.
            let _ = start_rx.wait_for(|go| *go).await;
            client.create_order(request).await
        }));
    }
    start_tx.send_replace(true);

    let mut outcome = IdempotencyOutcome {
        request_id,
        ok: 0,
        order_ids: BTreeSet::new(),
        mismatched_request_ids: 0,
        errors: Vec::new(),
    };
    for task in tasks {
        match task.await {
            Ok(Ok(response)) => {
                outcome.ok += 1;
                match response.into_inner().order {
                    Some(order) => {
                        if order.request_id != outcome.request_id {
                            outcome.mismatched_request_ids += 1;
                        }
                        outcome.order_ids.insert(order.id);
                    }
                    None => outcome
                        .errors
                        .push(("NO_ORDER", "response without an order".to_owned())),
                }
            }
            Ok(Err(status)) => outcome
                .errors
                .push((code_name(status.code()), status.message().to_owned())),
            Err(join) => outcome.errors.push(("TASK_FAILED", join.to_string())),
        }
    }
    outcome
}

/// Canonical upper-case names, as in the gRPC spec and other tools' output.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_line_lists_errors_by_code() {
        let summary = Summary {
            concurrency: 8,
            connections: 8,
            lines: 2,
            duration_s: 5.0,
            ok: 100,
            errors: BTreeMap::from([("UNAVAILABLE", 2), ("INTERNAL", 1)]),
            rate_per_s: 20.0,
            p50_ms: Some(1.5),
            p90_ms: Some(2.0),
            p99_ms: Some(3.25),
            max_ms: None,
        };
        assert_eq!(
            summary.human_line(),
            "concurrency=8 ok=100 errors=3 (INTERNAL=1,UNAVAILABLE=2) rate=20.0/s p50=1.50ms p90=2.00ms p99=3.25ms max=n/a"
        );
    }
}
