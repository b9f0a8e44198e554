//! `loadgen search`: closed-loop searches at a given concurrency, each
//! worker cycling through a fixed list of queries, and their latency.
//! Against the catalog's SearchProducts, or, as the baseline, the plain
//! `name ILIKE '%word%'` a first version would write, run over SQL on the
//! same table.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use orderflow_proto::catalog::v1::{
    SearchProductsRequest, catalog_service_client::CatalogServiceClient,
};
use serde::Serialize;
use tonic::transport::Channel;

/// Where the searches go.
pub enum Target {
    Grpc(Vec<CatalogServiceClient<Channel>>),
    /// `postgres://...` of the catalog database; one connection per worker.
    Ilike(String),
}

pub struct Plan {
    pub concurrency: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub queries: Vec<String>,
    pub page_size: i32,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub concurrency: usize,
    pub calls: u64,
    pub errors: u64,
    pub calls_per_second: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Hits per call on average (so a fast empty answer shows).
    pub mean_hits: f64,
}

/// The baseline: every word of the query (excluded words and operators
/// dropped) as `name ILIKE '%word%'`, ordered by name, the page's size.
const ILIKE: &str = "SELECT product_id FROM catalog_products \
     WHERE name ILIKE ALL ($1::text[]) ORDER BY name LIMIT $2";

fn ilike_patterns(query: &str) -> Vec<String> {
    query
        .split_whitespace()
        .filter(|w| !w.starts_with('-') && *w != "OR")
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric())
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
        .map(|w| format!("%{w}%"))
        .collect()
}

/// Runs the plan; errors are counted, not fatal.
///
/// # Errors
/// When the database of the baseline cannot be connected to.
pub async fn run(target: Target, plan: &Plan) -> anyhow::Result<Summary> {
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let stop = measure_from + plan.duration;
    let mut workers = Vec::with_capacity(plan.concurrency);
    for w in 0..plan.concurrency {
        let queries = plan.queries.clone();
        let page_size = plan.page_size;
        enum Conn {
            Grpc(CatalogServiceClient<Channel>),
            Sql(tokio_postgres::Client),
        }
        let conn = match &target {
            Target::Grpc(clients) => Conn::Grpc(clients[w % clients.len()].clone()),
            Target::Ilike(url) => {
                let (client, connection) =
                    tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
                tokio::spawn(connection);
                Conn::Sql(client)
            }
        };
        workers.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).ok();
            let (mut calls, mut errors, mut hits) = (0u64, 0u64, 0u64);
            let statement = match &conn {
                Conn::Sql(c) => c.prepare(ILIKE).await.ok(),
                Conn::Grpc(_) => None,
            };
            let mut i = w;
            loop {
                let now = Instant::now();
                if now >= stop {
                    break;
                }
                let q = &queries[i % queries.len()];
                i += 1;
                let found = match &conn {
                    Conn::Grpc(client) => client
                        .clone()
                        .search_products(SearchProductsRequest {
                            query: q.clone(),
                            page_size,
                            ..Default::default()
                        })
                        .await
                        .map(|r| r.into_inner().hits.len() as u64)
                        .map_err(drop),
                    Conn::Sql(client) => match &statement {
                        Some(s) => client
                            .query(s, &[&ilike_patterns(q), &i64::from(page_size)])
                            .await
                            .map(|rows| rows.len() as u64)
                            .map_err(drop),
                        None => Err(()),
                    },
                };
                if now < measure_from {
                    continue;
                }
                calls += 1;
                match found {
                    Ok(n) => {
                        hits += n;
                        let us = u64::try_from(now.elapsed().as_micros()).unwrap_or(u64::MAX);
                        if let Some(h) = hist.as_mut() {
                            let _ = h.record(us.max(1));
                        }
                    }
                    Err(()) => errors += 1,
                }
            }
            (hist, calls, errors, hits)
        }));
    }
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut calls, mut errors, mut hits) = (0, 0, 0);
    for w in workers {
        let (hist, c, e, h) = w.await?;
        if let Some(hist) = hist {
            total.add(hist)?;
        }
        calls += c;
        errors += e;
        hits += h;
    }
    let ms = |q: f64| total.value_at_quantile(q) as f64 / 1000.0;
    Ok(Summary {
        concurrency: plan.concurrency,
        calls,
        errors,
        calls_per_second: calls as f64 / plan.duration.as_secs_f64(),
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        max_ms: total.max() as f64 / 1000.0,
        mean_hits: if calls > errors {
            hits as f64 / (calls - errors) as f64
        } else {
            0.0
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_baseline_keeps_the_words_a_name_must_hold() {
        assert_eq!(
            ilike_patterns("oak \"desk lamp\" -brass OR \" x"),
            ["%oak%", "%desk%", "%lamp%", "%x%"]
        );
    }
}
