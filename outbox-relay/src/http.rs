//! `/metrics` for Prometheus, `/livez` (the process runs) and `/healthz`
//! (every source is readable and its lag is under the threshold), all open:
//! Prometheus and Kubernetes probes carry no token.

use std::{sync::Arc, time::Duration};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use prometheus_client::registry::Registry;
use serde_json::json;

use crate::source::Health;

#[derive(Clone)]
pub struct HttpState {
    pub registry: Arc<Registry>,
    pub health: Health,
    pub lag_unhealthy: Duration,
    /// The consumers' queues, shown (not judged) in `/healthz`.
    pub backlog: crate::backlog::Backlog,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(|| async { "ok" }))
        .route("/healthz", get(healthz))
        .with_state(state)
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    orderflow_telemetry::metrics::response(&state.registry)
}

/// 200 when every source was read recently and its oldest pending event is
/// younger than the threshold; 503 otherwise, with the reason per source.
async fn healthz(State(state): State<HttpState>) -> impl IntoResponse {
    let limit = state.lag_unhealthy.as_secs_f64();
    // Stats refresh every 2 s: a source counts as unreadable only well after that.
    let unreadable_limit = limit.max(10.0);
    let health = state
        .health
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let mut healthy = !health.is_empty();
    let mut sources = serde_json::Map::new();
    for (name, h) in &health {
        let unreadable_for = h.last_seen.map(|t| t.elapsed().as_secs_f64());
        let problem = match unreadable_for {
            None => Some("not read yet".to_owned()),
            Some(s) if s > unreadable_limit => Some(format!(
                "database unreadable for {s:.0}s: {}",
                h.last_error.as_deref().unwrap_or("unknown error")
            )),
            Some(_) if h.lag_seconds > limit => {
                Some(format!("lag {:.0}s exceeds {limit:.0}s", h.lag_seconds))
            }
            Some(_) => None,
        };
        healthy &= problem.is_none();
        sources.insert(
            name.clone(),
            json!({
                "healthy": problem.is_none(),
                "problem": problem,
                "lag_seconds": h.lag_seconds,
                "pending": h.pending,
                "parked": h.parked,
            }),
        );
    }
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let queues = state.backlog.snapshot();
    let queued: i64 = queues.values().sum();
    (
        status,
        axum::Json(json!({
            "healthy": healthy,
            "sources": sources,
            "queued_messages": queued,
            "queues": queues,
        })),
    )
}
