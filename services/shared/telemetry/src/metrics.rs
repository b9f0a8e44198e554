//! Prometheus `/metrics`: the text encoding of a registry, and a small HTTP
//! listener that serves it (every service binary; the relay serves the same
//! encoding next to its dashboard).

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// What Prometheus expects for the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The `/metrics` response for `registry`.
pub fn response(registry: &Registry) -> axum::response::Response {
    let mut body = String::with_capacity(8 * 1024);
    match prometheus_client::encoding::text::encode(&mut body, registry) {
        Ok(()) => (StatusCode::OK, [("content-type", CONTENT_TYPE)], body).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "text/plain")],
            "encoding failed",
        )
            .into_response(),
    }
}

/// A bound `/metrics` listener, not yet serving: binding first lets tests
/// pass port 0 and read the port back.
pub struct MetricsListener {
    listener: TcpListener,
}

impl MetricsListener {
    /// # Errors
    /// When the address cannot be bound.
    pub async fn bind(addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr).await.with_context(|| {
            format!("failed to bind the metrics listener on {addr} (METRICS_LISTEN_ADDR)")
        })?;
        Ok(Self { listener })
    }

    /// # Errors
    /// Never for a bound TCP socket.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves `GET /metrics` until `shutdown` completes.
    ///
    /// # Errors
    /// When the server fails.
    pub async fn serve(
        self,
        registry: Arc<Registry>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let app = Router::new()
            .route("/metrics", get(metrics))
            .with_state(registry);
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .context("the metrics listener failed")
    }
}

async fn metrics(State(registry): State<Arc<Registry>>) -> impl IntoResponse {
    response(&registry)
}
