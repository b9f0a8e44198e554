//! The outbox-relay: publishes the outbox rows of one or more service
//! databases to RabbitMQ.
//!
//! # Layout
//!
//! * `config`: the variables and their defaults.
//! * `source`: per source database, the publish loop (leases → claim heads →
//!   publish → mark), the LISTEN task that wakes it, stats and retention.
//! * `publisher`: pipelined, confirmed publishing with reconnect.
//! * `metrics`, `http`: Prometheus families and the open HTTP endpoints.
//! * `ops`: what operators see and do (events, replay, pause, dead letters),
//!   shared by `dashboard` (the page and JSON API, behind the admin token)
//!   and the command line.
//! * `rate`: the publish rate history the dashboard charts.
//!
//! The ordering and crash guarantees rest on `orderflow_outbox::relay`; read
//! its module docs first.

pub mod backlog;
pub mod config;
pub mod dashboard;
pub mod http;
pub mod metrics;
pub mod ops;
pub mod publisher;
pub mod rate;
pub mod source;

use std::{collections::BTreeMap, sync::Arc};

use anyhow::Context as _;
use orderflow_db::PoolConfig;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::{config::RelayConfig, metrics::Metrics, source::Source};

/// Runs every source and the HTTP server until `shutdown` completes, then
/// lets each source finish its batch and release its leases.
///
/// # Errors
/// When the HTTP address cannot be bound or a pool cannot be built.
pub async fn run(
    config: RelayConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let health: source::Health = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
    let owner = format!(
        "{}-{}-{:08x}",
        std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "relay".into()),
        std::process::id(),
        rand::random::<u32>()
    );

    // One pool per source, its usage on /metrics (`db_pool_*{source}`).
    let mut pools = Vec::new();
    let mut pool_metrics = orderflow_db::PoolMetrics::new();
    for source in &config.sources {
        let pool = orderflow_db::build_pool(&PoolConfig {
            url: source.database_url.clone(),
            max_size: 4,
            wait_timeout: std::time::Duration::from_secs(5),
            statement_timeout: std::time::Duration::from_secs(30),
            application_name: format!("outbox-relay/{}", source.name),
            settings: orderflow_outbox::relay::SESSION_SETTINGS,
        })?;
        pool_metrics = pool_metrics.with(&[("source", &source.name)], pool.clone());
        pools.push(pool);
    }
    pool_metrics.register(&mut registry);

    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("cannot bind RELAY_HTTP_ADDR={}", config.http_addr))?;
    tracing::info!(http.addr = %listener.local_addr()?, owner = %owner, "outbox-relay listening");
    let rates = rate::Rates::default();
    let ops = ops::Ops::new(&config)?;
    let dashboard_dead_letters = ops.dlq.clone();
    let dashboard = dashboard::Dashboard {
        keys: config.admin_token.clone().map(dashboard::auth::Keys::new),
        ops,
        health: health.clone(),
        metrics: metrics.clone(),
        rates: rates.clone(),
    };
    if dashboard.keys.is_none() {
        tracing::warn!("RELAY_ADMIN_TOKEN is not set: the dashboard is off");
    }
    let backlog = backlog::Backlog::register(&mut registry);
    let http_state = http::HttpState {
        registry: Arc::new(registry),
        health: health.clone(),
        lag_unhealthy: config.lag_unhealthy,
        backlog: backlog.clone(),
    };
    let app = http::router(http_state).merge(dashboard::router(dashboard));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut http_stop = stop_rx.clone();
    let http = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = http_stop.changed().await;
            })
            .await
    });

    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(
        backlog.watch(dashboard_dead_letters, stop_rx.clone()),
    ));
    for (source, pool) in config.sources.iter().zip(pools) {
        let source = Arc::new(Source {
            config: source.clone(),
            relay: config.clone(),
            pool,
            metrics: metrics.clone(),
            health: health.clone(),
            owner: owner.clone(),
            rates: rates.clone(),
            published_since_vacuum: Default::default(),
        });
        tasks.push(tokio::spawn(source.run(stop_rx.clone())));
    }

    shutdown.await;
    tracing::info!("shutting down: finishing batches and releasing leases");
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    let _ = http.await;
    Ok(())
}
