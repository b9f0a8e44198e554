#![doc = include_str!("../README.md")]

use std::{future::Future, net::SocketAddr, time::Duration};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tonic::{
    Code, Status,
    transport::{Server, server::Router, server::TcpIncoming},
};
use tonic_health::{ServingStatus, server::HealthReporter};
use tonic_types::{ErrorDetails, StatusExt as _};

/// A bound, not yet serving, gRPC listener. Binding first lets tests use
/// port 0 and read the port back before the server runs.
pub struct GrpcServer {
    listener: TcpListener,
    grace: Duration,
}

impl GrpcServer {
    /// # Errors
    /// When the address cannot be bound.
    pub async fn bind(addr: SocketAddr, grace: Duration) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("failed to bind gRPC listener on {addr}"))?;
        Ok(Self { listener, grace })
    }

    /// # Errors
    /// When the socket has no local address (never for a bound TCP socket).
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves the services that `register` adds until `shutdown` completes,
    /// then drains in-flight calls for at most the grace period.
    ///
    /// `names` are the fully-qualified service names reported by the health
    /// service (e.g. `orderflow.order.v1.OrderService`).
    ///
    /// # Errors
    /// When the reflection service cannot be built or the server fails.
    pub async fn serve(
        self,
        names: &[&str],
        register: impl FnOnce(Router) -> Router,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let (health, health_service) = tonic_health::server::health_reporter();
        set_status(&health, names, ServingStatus::Serving).await;

        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(orderflow_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                // google.rpc error details, so grpcurl can print BadRequest & co.
                .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        };
        let router = Server::builder()
            .trace_fn(request_span)
            .add_service(health_service)
            .add_service(reflection().build_v1().context("reflection v1")?)
            .add_service(reflection().build_v1alpha().context("reflection v1alpha")?);
        let router = register(router);

        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let incoming = TcpIncoming::from(self.listener).with_nodelay(Some(true));
        let server = router.serve_with_incoming_shutdown(incoming, async {
            let _ = stop_rx.await;
        });
        tokio::pin!(server);

        tokio::select! {
            result = &mut server => return result.context("gRPC server failed"),
            () = shutdown => {}
        }
        tracing::info!(
            grace_ms = self.grace.as_millis() as u64,
            "shutting down: draining in-flight calls"
        );
        set_status(&health, names, ServingStatus::NotServing).await;
        let _ = stop_tx.send(());
        match tokio::time::timeout(self.grace, server).await {
            Ok(result) => result.context("gRPC server failed while draining"),
            Err(_) => {
                tracing::warn!("grace period elapsed with calls still running; stopping anyway");
                Ok(())
            }
        }
    }
}

async fn set_status(health: &HealthReporter, names: &[&str], status: ServingStatus) {
    health.set_service_status("", status).await;
    for name in names {
        health.set_service_status(*name, status).await;
    }
}

fn request_span(req: &http::Request<()>) -> tracing::Span {
    let span = tracing::info_span!(
        "grpc.request",
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.method = %req.uri().path(),
    );
    orderflow_telemetry::set_parent_from(&span, &HeaderCarrier(req.headers()));
    span
}

struct HeaderCarrier<'a>(&'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// sysexits.h EX_CONFIG: the configuration is wrong; restarting will not help.
pub const EX_CONFIG: u8 = 78;

/// The `main` of every orderflow binary: a configuration error exits with
/// [`EX_CONFIG`] naming the variable; otherwise the multi-thread runtime and
/// telemetry for `service` are set up, `run` is awaited, and its error (with
/// its causes) is logged and printed before exiting with 1.
pub fn run_binary<C, F, Fut>(
    service: &'static str,
    config: Result<C, orderflow_config::ConfigError>,
    run: F,
) -> std::process::ExitCode
where
    F: FnOnce(C) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    use std::process::ExitCode;
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("configuration error: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let _telemetry = orderflow_telemetry::init(service, &orderflow_config::Env)?;
        run(config).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error.message = %format!("{e:#}"), "{service} failed");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGTERM (what Kubernetes sends) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}

/// Collects field violations; `into_result` turns them into one
/// INVALID_ARGUMENT status with a `google.rpc.BadRequest` detail.
#[derive(Debug, Default)]
pub struct Violations(Vec<(String, String)>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push((field.into(), description.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// # Errors
    /// INVALID_ARGUMENT listing every violation, when there is one.
    pub fn into_result(self) -> Result<(), Status> {
        if self.0.is_empty() {
            return Ok(());
        }
        let message = self
            .0
            .iter()
            .map(|(f, d)| format!("{f}: {d}"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut details = ErrorDetails::new();
        for (field, description) in self.0 {
            details.add_bad_request_violation(field, description);
        }
        Err(Status::with_error_details(
            Code::InvalidArgument,
            format!("invalid request: {message}"),
            details,
        ))
    }
}

/// FAILED_PRECONDITION with a `google.rpc.PreconditionFailure` detail.
pub fn failed_precondition(kind: &str, subject: &str, description: &str) -> Status {
    let mut details = ErrorDetails::new();
    details.add_precondition_failure_violation(kind, subject, description);
    Status::with_error_details(Code::FailedPrecondition, description.to_owned(), details)
}

/// NOT_FOUND with a `google.rpc.ResourceInfo` detail.
pub fn not_found(resource_type: &str, resource_name: &str) -> Status {
    let mut details = ErrorDetails::new();
    details.set_resource_info(
        resource_type,
        resource_name,
        "",
        format!("{resource_type} not found"),
    );
    Status::with_error_details(
        Code::NotFound,
        format!("{resource_type} {resource_name} not found"),
        details,
    )
}

/// ALREADY_EXISTS with a `google.rpc.ResourceInfo` detail.
pub fn already_exists(resource_type: &str, resource_name: &str, description: &str) -> Status {
    let mut details = ErrorDetails::new();
    details.set_resource_info(resource_type, resource_name, "", description);
    Status::with_error_details(Code::AlreadyExists, description.to_owned(), details)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_become_one_bad_request() {
        let mut v = Violations::new();
        assert!(Violations::new().into_result().is_ok());
        v.add("lines", "at least one line is required");
        v.add("customer_id", "not a UUID");
        let status = v.into_result().unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        let bad = status.get_details_bad_request().unwrap();
        let fields: Vec<_> = bad
            .field_violations
            .iter()
            .map(|f| f.field.as_str())
            .collect();
        assert_eq!(fields, ["lines", "customer_id"]);
    }
}
