#![doc = include_str!("../README.md")]

use std::{future::Future, marker::PhantomData, net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use orderflow_config::{ConfigError, ServiceConfig, ServiceDefaults, Source};
use orderflow_consumer::{Consumer, ConsumerConfig};
use orderflow_db::{Pool, PoolConfig, ServiceMigrations};
use orderflow_grpc::{Access, GrpcMetrics, GrpcServer, Router, Stop};
use orderflow_telemetry::metrics::MetricsListener;
use prometheus_client::registry::Registry;

/// A service's whole configuration: the gRPC server and database, and its consumer.
#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceConfig,
    pub consumer: ConsumerConfig,
}

impl Config {
    /// # Errors
    /// The first variable that is set but invalid.
    pub fn from_source(src: &dyn Source, defaults: ServiceDefaults) -> Result<Self, ConfigError> {
        Ok(Self {
            service: ServiceConfig::from_source(src, defaults)?,
            consumer: ConsumerConfig::from_source(src)?,
        })
    }
}

/// What a service adds to the shared [`Application`].
pub trait Service {
    /// `order`: the binary (`order migrate`), the queues (`order.<handler>`)
    /// and the database sessions (`orderflow-order`).
    const NAME: &'static str;
    const MIGRATIONS: ServiceMigrations;
    /// Fully-qualified gRPC service names, reported by the health service.
    const GRPC_SERVICES: &'static [&'static str];
    /// Methods that need `GRPC_ADMIN_TOKEN` (full paths,
    /// `/orderflow.inventory.v1.InventoryService/UpsertProduct`); the
    /// service's other methods are customer RPCs, rate limited per client.
    const ADMIN_METHODS: &'static [&'static str] = &[];

    /// Adds the service's gRPC API, on `pool`, to `router`.
    fn add_api(router: Router, pool: Pool) -> Router;

    /// Registers the service's event handlers.
    fn add_handlers(consumer: Consumer) -> Consumer;

    /// Adds the service's own metrics to its `/metrics` (the shared ones,
    /// gRPC calls, consumer and pool, are there already). Default: none.
    fn register_metrics(_registry: &mut Registry) {}
}

/// Config in, bound listeners out. Binding happens in `build`, so tests can
/// pass port 0 and read the real ports before serving.
pub struct Application<S> {
    server: GrpcServer,
    metrics_listener: MetricsListener,
    pool: Pool,
    access: Access,
    consumer: ConsumerConfig,
    /// `/metrics`: every series of the process. The consumer's are added
    /// when it is built, in `run_until`.
    registry: Registry,
    grpc_metrics: GrpcMetrics,
    service: PhantomData<fn() -> S>,
}

impl<S: Service> Application<S> {
    /// Builds the pool, checks the schema is current, binds the gRPC and
    /// metrics listeners.
    ///
    /// # Errors
    /// When the database is unreachable or not migrated, or an address is taken.
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        let service = &config.service;
        let pool = orderflow_db::build_pool(&PoolConfig {
            url: service.database_url.clone(),
            max_size: service.pool_size,
            wait_timeout: service.pool_timeout,
            statement_timeout: service.statement_timeout,
            application_name: format!("orderflow-{}", S::NAME),
            settings: &[],
        })?;
        let pending = orderflow_db::pending_migrations(&service.database_url, S::MIGRATIONS)
            .await
            .context("cannot check the database schema (DATABASE_URL)")?;
        anyhow::ensure!(
            pending.is_empty(),
            "the database has {} pending migration(s) ({}); run `{} migrate` first",
            pending.len(),
            pending.join(", "),
            S::NAME
        );
        let server = GrpcServer::bind(service.grpc_addr, service.shutdown_grace).await?;
        let metrics_listener = MetricsListener::bind(service.metrics_addr).await?;

        let mut registry = Registry::default();
        let grpc_metrics = GrpcMetrics::default();
        grpc_metrics.register(&mut registry);
        orderflow_db::PoolMetrics::new()
            .with(&[], pool.clone())
            .register(&mut registry);
        S::register_metrics(&mut registry);
        Ok(Self {
            server,
            metrics_listener,
            pool,
            access: Access {
                admin_token: service.admin_token.clone(),
                admin_methods: S::ADMIN_METHODS,
                rate_limit: service.rate_limit,
                max_in_flight: service.max_in_flight,
            },
            consumer: config.consumer.clone(),
            registry,
            grpc_metrics,
            service: PhantomData,
        })
    }

    /// # Errors
    /// Never for a bound TCP listener.
    pub fn grpc_addr(&self) -> anyhow::Result<SocketAddr> {
        self.server.local_addr()
    }

    /// Where `/metrics` is served.
    ///
    /// # Errors
    /// Never for a bound TCP listener.
    pub fn metrics_addr(&self) -> anyhow::Result<SocketAddr> {
        self.metrics_listener.local_addr()
    }

    /// The pool the server and the handlers use.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The gRPC server's call counters (for tests).
    pub fn grpc_metrics(&self) -> GrpcMetrics {
        self.grpc_metrics.clone()
    }

    /// Serves gRPC and consumes the saga's events until `shutdown`
    /// completes and in-flight calls and messages have drained; if either
    /// stops on its own, the other is stopped too. `/metrics` is served
    /// meanwhile.
    ///
    /// # Errors
    /// The server's or the consumer's error, or that one stopped early.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Self {
            server,
            metrics_listener,
            pool,
            access,
            consumer,
            mut registry,
            grpc_metrics,
            service: _,
        } = self;
        let consumer = S::add_handlers(Consumer::new(S::NAME, pool.clone(), consumer))
            .register_metrics(&mut registry);
        let metrics = serve_metrics(metrics_listener, registry);
        let result = orderflow_grpc::run_together(
            shutdown,
            ("gRPC server", |stop: Stop| {
                serve::<S>(server, pool, grpc_metrics, access, stop.wait())
            }),
            ("consumer", |stop: Stop| consumer.run(stop.wait())),
        )
        .await;
        metrics.stop().await;
        result
    }

    /// Serves gRPC (and `/metrics`) only, without consuming events: for
    /// tests of the API that must not depend on a broker.
    ///
    /// # Errors
    /// When the server fails.
    pub async fn serve_grpc_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let metrics = serve_metrics(self.metrics_listener, self.registry);
        let result = serve::<S>(
            self.server,
            self.pool,
            self.grpc_metrics,
            self.access,
            shutdown,
        )
        .await;
        metrics.stop().await;
        result
    }
}

async fn serve<S: Service>(
    server: GrpcServer,
    pool: Pool,
    metrics: GrpcMetrics,
    access: Access,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    server
        .serve(
            S::GRPC_SERVICES,
            metrics,
            access,
            |router| S::add_api(router, pool),
            shutdown,
        )
        .await
}

/// The `/metrics` listener, running beside the server until stopped.
struct MetricsTask {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

fn serve_metrics(listener: MetricsListener, registry: Registry) -> MetricsTask {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(listener.serve(Arc::new(registry), async {
        let _ = stopped.await;
    }));
    MetricsTask { stop, task }
}

impl MetricsTask {
    async fn stop(self) {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = format!("{e:#}"), "the metrics listener failed"),
            Err(e) => tracing::warn!(error = %e, "the metrics listener task failed"),
        }
    }
}
