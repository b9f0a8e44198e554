#![doc = include_str!("../README.md")]

pub mod access;
pub mod observe;
pub mod page_token;

pub use access::Access;
pub use observe::{GrpcMetrics, code_name};

use std::{future::Future, net::SocketAddr, time::Duration};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tonic::{
    Code, Status,
    transport::{Server, server::TcpIncoming},
};
use tonic_health::{ServingStatus, server::HealthReporter};
use tonic_types::{ErrorDetails, StatusExt as _};

/// What a service adds its gRPC API to: tonic's router behind the layer
/// that traces and measures every call, then the one that checks access
/// (so a refused call is traced and counted too).
pub type Router = tonic::transport::server::Router<
    tower::layer::util::Stack<
        access::AccessLayer,
        tower::layer::util::Stack<observe::ObserveLayer, tower::layer::util::Identity>,
    >,
>;

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
    /// service (e.g. `orderflow.order.v1.OrderService`). Every call is
    /// traced (`grpc.request`) and counted in `metrics`; `access` says
    /// which of the services' methods need the admin token and how fast a
    /// client may call the others.
    ///
    /// # Errors
    /// When the reflection service cannot be built, an admin method is not
    /// one of `names`' methods, or the server fails.
    pub async fn serve(
        self,
        names: &[&str],
        metrics: GrpcMetrics,
        access: Access,
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
        let methods = observe::methods_of(&[
            orderflow_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ]);
        let own_methods = methods
            .iter()
            .filter(|(service, _)| names.contains(&service.as_str()))
            .map(|(service, method)| format!("/{service}/{method}"))
            .collect();
        let access = access::AccessLayer::new(access, own_methods)?;
        let router = Server::builder()
            .layer(observe::ObserveLayer::new(metrics, methods))
            .layer(access)
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

/// Tells a task started by [`run_together`] to stop.
pub struct Stop(tokio::sync::watch::Receiver<bool>);

impl Stop {
    /// Completes when the task should stop.
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// Runs two long-lived tasks of one process (a gRPC server and an event
/// consumer) until `shutdown` completes or either task ends. Then the other
/// is told to stop and awaited. A task that ends before `shutdown`, even
/// without an error, is a failure: the process must not run half alive.
///
/// # Errors
/// The first task's error (named), or that it stopped unexpectedly.
pub async fn run_together<A, FA, B, FB>(
    shutdown: impl Future<Output = ()>,
    (a_name, a): (&str, A),
    (b_name, b): (&str, B),
) -> anyhow::Result<()>
where
    A: FnOnce(Stop) -> FA,
    FA: Future<Output = anyhow::Result<()>>,
    B: FnOnce(Stop) -> FB,
    FB: Future<Output = anyhow::Result<()>>,
{
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let a = a(Stop(stopped.clone()));
    let b = b(Stop(stopped));
    tokio::pin!(a, b, shutdown);
    let (mut a_done, mut b_done) = (None, None);
    tokio::select! {
        () = &mut shutdown => {}
        r = &mut a => a_done = Some(r),
        r = &mut b => b_done = Some(r),
    }
    let early = match (&a_done, &b_done) {
        (Some(_), _) => Some(a_name),
        (_, Some(_)) => Some(b_name),
        _ => None,
    };
    if let Some(name) = early {
        tracing::error!(task = name, "stopped before shutdown; stopping the rest");
    }
    let _ = stop.send(true);
    let a_result = match a_done {
        Some(r) => r,
        None => a.await,
    };
    let b_result = match b_done {
        Some(r) => r,
        None => b.await,
    };
    let named = |r: anyhow::Result<()>, name: &str| r.with_context(|| format!("{name} failed"));
    let (first, second) = if early == Some(b_name) {
        (named(b_result, b_name), named(a_result, a_name))
    } else {
        (named(a_result, a_name), named(b_result, b_name))
    };
    first?;
    second?;
    match early {
        Some(name) => anyhow::bail!("{name} stopped unexpectedly"),
        None => Ok(()),
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

    /// A required id: only the hyphenated, non-nil form is accepted, one
    /// spelling per id keeps logs and joins simple. `None` after a violation.
    pub fn uuid(&mut self, field: &str, value: &str) -> Option<uuid::Uuid> {
        if value.is_empty() {
            self.add(field, "is required");
            return None;
        }
        match uuid::Uuid::try_parse(value) {
            Ok(id) if value.len() == 36 && !id.is_nil() => Some(id),
            Ok(_) if value.len() == 36 => {
                self.add(field, "must not be the nil UUID");
                None
            }
            _ => {
                self.add(
                    field,
                    "must be a UUID such as 0b7e4a52-3f1c-4c3e-9d6f-2a1b5c8d9e0f",
                );
                None
            }
        }
    }

    /// An optional id (a filter): empty is `None` without a violation.
    pub fn optional_uuid(&mut self, field: &str, value: &str) -> Option<uuid::Uuid> {
        if value.is_empty() {
            None
        } else {
            self.uuid(field, value)
        }
    }

    /// # Errors
    /// INVALID_ARGUMENT listing the violations, when there is one: at most
    /// [`MAX_VIOLATIONS`], each description cut to [`MAX_DESCRIPTION`]
    /// bytes, so the status fits any client's header limit (grpc-java's
    /// default is 8 KiB of metadata) whatever the request held.
    pub fn into_result(self) -> Result<(), Status> {
        if self.0.is_empty() {
            return Ok(());
        }
        let total = self.0.len();
        let mut shown: Vec<(String, String)> = self
            .0
            .into_iter()
            .take(MAX_VIOLATIONS)
            .map(|(f, d)| (cut(f), cut(d)))
            .collect();
        if total > MAX_VIOLATIONS {
            shown.push((
                "request".to_owned(),
                format!("{} more violation(s) not listed", total - MAX_VIOLATIONS),
            ));
        }
        // The message names the first few; the details carry them all.
        let mut message = shown
            .iter()
            .take(MESSAGE_VIOLATIONS)
            .map(|(f, d)| format!("{f}: {d}"))
            .collect::<Vec<_>>()
            .join("; ");
        if total > MESSAGE_VIOLATIONS {
            message.push_str(&format!(" ({total} violations in all; see BadRequest)"));
        }
        let mut details = ErrorDetails::new();
        for (field, description) in shown {
            details.add_bad_request_violation(field, description);
        }
        Err(Status::with_error_details(
            Code::InvalidArgument,
            format!("invalid request: {message}"),
            details,
        ))
    }
}

/// Violations listed in one INVALID_ARGUMENT at most.
pub const MAX_VIOLATIONS: usize = 20;
/// Violations named in the status message.
const MESSAGE_VIOLATIONS: usize = 3;
/// Bytes of a field name or description kept in a violation.
pub const MAX_DESCRIPTION: usize = 120;

fn cut(mut text: String) -> String {
    if text.len() > MAX_DESCRIPTION {
        let mut end = MAX_DESCRIPTION;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// FAILED_PRECONDITION with a `google.rpc.PreconditionFailure` detail.
/// RESOURCE_EXHAUSTED for a healthy server with more work than it can
/// take now (every database connection busy): the client retries after
/// `retry_after` (RetryInfo).
pub fn busy(message: &str, retry_after: Duration) -> Status {
    resource_exhausted("server:database-connections", message, message, retry_after)
}

/// RESOURCE_EXHAUSTED with when to retry (RetryInfo) and which quota ran
/// out (QuotaFailure: `subject`, `description`), so a client can back off
/// without guessing. Every limit of the servers answers with it.
pub fn resource_exhausted(
    subject: &str,
    description: &str,
    message: &str,
    retry_after: Duration,
) -> Status {
    let mut details = ErrorDetails::with_retry_info(Some(retry_after));
    details.add_quota_failure_violation(subject.to_owned(), description.to_owned());
    Status::with_error_details(Code::ResourceExhausted, message.to_owned(), details)
}

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

    #[test]
    fn a_flood_of_violations_stays_small() {
        let mut v = Violations::new();
        for i in 0..1000 {
            v.add(format!("lines[{i}].product_id"), "é".repeat(500));
        }
        let status = v.into_result().unwrap_err();
        let bad = status.get_details_bad_request().unwrap();
        assert_eq!(bad.field_violations.len(), MAX_VIOLATIONS + 1);
        assert_eq!(
            bad.field_violations[MAX_VIOLATIONS].description,
            "980 more violation(s) not listed"
        );
        // Message (percent-encoded: at worst 3 bytes a byte) and details
        // (base64) travel as headers: under 8 KiB together.
        let size = status.message().len() * 3 + status.details().len() * 4 / 3;
        assert!(size < 8 * 1024, "{size} bytes");
    }
}
