//! Wiring: config in, a bound server out. Binding happens in `build`, so
//! tests can pass port 0 and read the real port before serving.

use std::{future::Future, net::SocketAddr};

use anyhow::Context as _;
use orderflow_config::ServiceConfig;
use orderflow_db::{Pool, PoolConfig};
use orderflow_grpc::GrpcServer;

use crate::api::{OrderApi, OrderServiceServer, SERVICE_NAME};

pub struct Application {
    server: GrpcServer,
    pool: Pool,
}

impl Application {
    /// Builds the pool, checks the schema is current, binds the listener.
    ///
    /// # Errors
    /// When the database is unreachable or not migrated, or the address is taken.
    pub async fn build(config: &ServiceConfig) -> anyhow::Result<Self> {
        let pool = orderflow_db::build_pool(&PoolConfig {
            url: config.database_url.clone(),
            max_size: config.pool_size,
            wait_timeout: config.pool_timeout,
            statement_timeout: config.statement_timeout,
            application_name: "orderflow-order".to_owned(),
        })?;
        let pending = orderflow_db::pending_migrations(&config.database_url, crate::MIGRATIONS)
            .await
            .context("cannot check the database schema (DATABASE_URL)")?;
        anyhow::ensure!(
            pending.is_empty(),
            "the database has {} pending migration(s) ({}); run `order migrate` first",
            pending.len(),
            pending.join(", ")
        );
        let server = GrpcServer::bind(config.grpc_addr, config.shutdown_grace).await?;
        Ok(Self { server, pool })
    }

    /// # Errors
    /// Never for a bound TCP listener.
    pub fn grpc_addr(&self) -> anyhow::Result<SocketAddr> {
        self.server.local_addr()
    }

    /// Serves until `shutdown` completes and in-flight calls have drained.
    ///
    /// # Errors
    /// When the server fails.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let api = OrderApi::new(self.pool);
        self.server
            .serve(
                &[SERVICE_NAME],
                |router| router.add_service(OrderServiceServer::new(api)),
                shutdown,
            )
            .await
    }
}
