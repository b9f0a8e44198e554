//! `loadgen otlp-sink`: an OTLP/gRPC trace receiver that accepts and counts
//! spans and keeps nothing, so benchmarks can measure the services with
//! trace export on (`OTEL_EXPORTER_OTLP_ENDPOINT=http://<listen>`) without
//! a collector. Prints `spans=<n> requests=<n>` when the count changes, at
//! most once a second.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};

#[derive(Default, Clone)]
struct Counts {
    spans: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl TraceService for Counts {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize = request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.spans.fetch_add(spans as u64, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Serves until killed.
pub async fn run(listen: SocketAddr) -> anyhow::Result<()> {
    let counts = Counts::default();
    let reporter = counts.clone();
    tokio::spawn(async move {
        let mut last = u64::MAX;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let spans = reporter.spans.load(Ordering::Relaxed);
            if spans != last {
                println!(
                    "spans={spans} requests={}",
                    reporter.requests.load(Ordering::Relaxed)
                );
                last = spans;
            }
        }
    });
    eprintln!("loadgen: OTLP sink listening on {listen}");
    tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(counts))
        .serve(listen)
        .await
        .with_context(|| format!("OTLP sink on {listen}"))
}
