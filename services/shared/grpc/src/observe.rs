//! One tower layer around every gRPC call a server handles: the server span
//! (`grpc.request`, child of the caller's `traceparent`) and the Prometheus
//! metrics (`grpc_server_handled_total` by method and status code,
//! `grpc_server_handling_seconds` by method).
//!
//! A call ends when its status is known: in the response headers for an
//! error answered at once (trailers-only), else in the trailers after the
//! body. A response dropped before its trailers (the client went away)
//! counts as CANCELLED.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use http_body::{Body, Frame};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use tonic::Code;
use tracing::Instrument as _;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    grpc_service: String,
    grpc_method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandledLabels {
    grpc_service: String,
    grpc_method: String,
    grpc_code: String,
}

/// The server's call metrics. Cheap to clone: clones share the series.
#[derive(Clone)]
pub struct GrpcMetrics {
    handled: Family<HandledLabels, Counter>,
    handling: Family<MethodLabels, Histogram, fn() -> Histogram>,
}

impl Default for GrpcMetrics {
    fn default() -> Self {
        Self {
            handled: Family::default(),
            handling: Family::new_with_constructor(|| {
                // 0.5 ms .. ~16 s
                Histogram::new(exponential_buckets(0.000_5, 2.0, 16))
            }),
        }
    }
}

impl GrpcMetrics {
    /// Adds the series to `registry` (once per registry).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "grpc_server_handled",
            "gRPC calls completed by the server, by method and status code",
            self.handled.clone(),
        );
        registry.register(
            "grpc_server_handling_seconds",
            "Time from a call's arrival until its status was sent, by method",
            self.handling.clone(),
        );
    }

    /// Calls of `service`/`method` completed with `code` (`OK`, ...).
    pub fn handled(&self, service: &str, method: &str, code: &str) -> u64 {
        self.handled
            .get_or_create(&HandledLabels {
                grpc_service: service.to_owned(),
                grpc_method: method.to_owned(),
                grpc_code: code.to_owned(),
            })
            .get()
    }

    fn observe(&self, method: &Method, code: Code, seconds: f64) {
        self.handled
            .get_or_create(&HandledLabels {
                grpc_service: method.service.to_string(),
                grpc_method: method.method.to_string(),
                grpc_code: code_name(code).to_owned(),
            })
            .inc();
        self.handling
            .get_or_create(&MethodLabels {
                grpc_service: method.service.to_string(),
                grpc_method: method.method.to_string(),
            })
            .observe(seconds);
    }
}

/// `/package.Service/Method` split into its labels; only methods this server
/// serves get their own labels, so a client cannot grow the series.
#[derive(Clone, Debug)]
struct Method {
    service: Arc<str>,
    method: Arc<str>,
}

/// The layer itself (built by [`crate::GrpcServer::serve`]).
#[derive(Clone)]
pub struct ObserveLayer {
    metrics: GrpcMetrics,
    known: Arc<HashMap<String, Method>>,
}

impl ObserveLayer {
    /// `methods`: every `(service, method)` the server answers.
    pub(crate) fn new(
        metrics: GrpcMetrics,
        methods: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        let known = methods
            .into_iter()
            .map(|(service, method)| {
                (
                    format!("/{service}/{method}"),
                    Method {
                        service: service.into(),
                        method: method.into(),
                    },
                )
            })
            .collect();
        Self {
            metrics,
            known: Arc::new(known),
        }
    }

    fn method(&self, path: &str) -> Method {
        self.known.get(path).cloned().unwrap_or_else(|| Method {
            service: "unknown".into(),
            method: "unknown".into(),
        })
    }
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service the layer makes.
#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    layer: ObserveLayer,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for Observe<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Body + Unpin,
{
    type Response = http::Response<ObservedBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let started = Instant::now();
        let method = self.layer.method(req.uri().path());
        let span = tracing::info_span!(
            "grpc.request",
            otel.name = %req.uri().path().trim_start_matches('/'),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.service = %method.service,
            rpc.method = %method.method,
            rpc.grpc.status_code = tracing::field::Empty,
        );
        orderflow_telemetry::set_parent_from(&span, &crate::HeaderCarrier(req.headers()));
        let call = Call {
            metrics: self.layer.metrics.clone(),
            method,
            started,
            span: span.clone(),
        };
        let response = self.inner.call(req).instrument(span);
        Box::pin(async move {
            let response = response.await?;
            let status = response
                .headers()
                .get("grpc-status")
                .map(|v| code_of(v.as_bytes()));
            let (parts, body) = response.into_parts();
            let body = match status {
                // Trailers-only: the status is in the headers, no body follows.
                Some(code) => {
                    call.finish(code);
                    ObservedBody {
                        inner: body,
                        call: None,
                    }
                }
                None => ObservedBody {
                    inner: body,
                    call: Some(call),
                },
            };
            Ok(http::Response::from_parts(parts, body))
        })
    }
}

/// A call whose status is not known yet.
struct Call {
    metrics: GrpcMetrics,
    method: Method,
    started: Instant,
    span: tracing::Span,
}

impl Call {
    fn finish(self, code: Code) {
        self.metrics
            .observe(&self.method, code, self.started.elapsed().as_secs_f64());
        self.span.record("rpc.grpc.status_code", code as i32);
        if is_server_error(code) {
            self.span.record("otel.status_code", "ERROR");
        }
    }
}

/// The response body, which reports the call's end when its trailers pass.
pub struct ObservedBody<B> {
    inner: B,
    call: Option<Call>,
}

impl<B: Body + Unpin> Body for ObservedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(call) = self.call.take()
                {
                    let code = trailers
                        .get("grpc-status")
                        .map_or(Code::Unknown, |v| code_of(v.as_bytes()));
                    call.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(call) = self.call.take() {
                    call.finish(Code::Internal);
                }
            }
            Poll::Ready(None) => {
                if let Some(call) = self.call.take() {
                    call.finish(Code::Unknown);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for ObservedBody<B> {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            call.finish(Code::Cancelled);
        }
    }
}

fn code_of(value: &[u8]) -> Code {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .map_or(Code::Unknown, Code::from_i32)
}

/// What OpenTelemetry's semantic conventions count as a server-side error.
fn is_server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

/// The canonical name of a status code (`OK`, `INVALID_ARGUMENT`, ...).
pub fn code_name(code: Code) -> &'static str {
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

/// Every `(service, method)` in encoded `FileDescriptorSet`s.
pub(crate) fn methods_of(sets: &[&[u8]]) -> Vec<(String, String)> {
    use prost::Message as _;
    let mut methods = Vec::new();
    for set in sets {
        let Ok(set) = prost_types::FileDescriptorSet::decode(*set) else {
            continue;
        };
        for file in set.file {
            let package = file.package.unwrap_or_default();
            for service in file.service {
                let name = service.name.unwrap_or_default();
                let full = if package.is_empty() {
                    name
                } else {
                    format!("{package}.{name}")
                };
                for method in service.method {
                    methods.push((full.clone(), method.name.unwrap_or_default()));
                }
            }
        }
    }
    methods
}
