//! Wiring: what the inventory service adds to the process every service runs
//! (`orderflow_service::Application`): its name, gRPC API and handlers.

use orderflow_consumer::Consumer;
use orderflow_db::Pool;
use orderflow_grpc::Router;
use orderflow_service::Service;

use crate::{
    api::{InventoryApi, InventoryServiceServer, SERVICE_NAME},
    handlers,
};

/// Names the binary, the consumer's queues (`inventory.<handler>`) and the
/// database sessions (`orderflow-inventory`).
pub const CONSUMER_SERVICE: &str = "inventory";

pub type Application = orderflow_service::Application<InventoryApp>;

pub struct InventoryApp;

impl Service for InventoryApp {
    const NAME: &'static str = CONSUMER_SERVICE;
    const MIGRATIONS: orderflow_db::ServiceMigrations = crate::MIGRATIONS;
    const GRPC_SERVICES: &'static [&'static str] = &[SERVICE_NAME];
    /// The catalogue and stock are changed by staff, not by customers.
    const ADMIN_METHODS: &'static [&'static str] = &[
        "/orderflow.inventory.v1.InventoryService/UpsertProduct",
        "/orderflow.inventory.v1.InventoryService/AdjustStock",
        "/orderflow.inventory.v1.InventoryService/ImportStock",
        "/orderflow.inventory.v1.InventoryService/GetStockImport",
        "/orderflow.inventory.v1.InventoryService/ListStockImportErrors",
    ];

    fn add_api(router: Router, pool: Pool) -> Router {
        router.add_service(InventoryServiceServer::new(InventoryApi::new(pool)))
    }

    fn add_handlers(consumer: Consumer) -> Consumer {
        handlers::register(consumer)
    }
}
