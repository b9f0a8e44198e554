//! Wiring: what the catalog service adds to the process every service runs
//! (`orderflow_service::Application`): its name, gRPC API, handlers and
//! freshness metrics.

use orderflow_consumer::Consumer;
use orderflow_db::Pool;
use orderflow_grpc::Router;
use orderflow_service::Service;
use prometheus_client::registry::Registry;

use crate::{
    api::{CatalogApi, CatalogServiceServer, SERVICE_NAME},
    handlers,
};

/// Names the binary, the consumer's queues (`catalog.<handler>`) and the
/// database sessions (`orderflow-catalog`).
pub const CONSUMER_SERVICE: &str = "catalog";

pub type Application = orderflow_service::Application<CatalogApp>;

pub struct CatalogApp;

impl Service for CatalogApp {
    const NAME: &'static str = CONSUMER_SERVICE;
    const MIGRATIONS: orderflow_db::ServiceMigrations = crate::MIGRATIONS;
    const GRPC_SERVICES: &'static [&'static str] = &[SERVICE_NAME];
    /// Rebuilding is for operators; searching is for customers.
    const ADMIN_METHODS: &'static [&'static str] = &[
        "/orderflow.catalog.v1.CatalogService/RebuildCatalog",
        "/orderflow.catalog.v1.CatalogService/GetCatalogRebuild",
    ];

    fn add_api(router: Router, pool: Pool) -> Router {
        router.add_service(CatalogServiceServer::new(CatalogApi::new(pool)))
    }

    fn add_handlers(consumer: Consumer) -> Consumer {
        handlers::register(consumer)
    }

    fn register_metrics(registry: &mut Registry) {
        crate::metrics::register(registry);
    }
}
