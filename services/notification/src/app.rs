//! Wiring: what the notification service adds to the process every service runs
//! (`orderflow_service::Application`): its name, gRPC API and handlers.

use orderflow_consumer::Consumer;
use orderflow_db::Pool;
use orderflow_grpc::Router;
use orderflow_service::Service;

use crate::{
    api::{NotificationApi, NotificationServiceServer, SERVICE_NAME},
    handlers::{
        NotifyOrderCancelled, NotifyOrderConfirmed, NotifyOrderPlaced, NotifyPaymentCompleted,
    },
};

/// Names the binary, the consumer's queues (`notification.<handler>`) and the
/// database sessions (`orderflow-notification`).
pub const CONSUMER_SERVICE: &str = "notification";

pub type Application = orderflow_service::Application<NotificationApp>;

pub struct NotificationApp;

impl Service for NotificationApp {
    const NAME: &'static str = CONSUMER_SERVICE;
    const MIGRATIONS: orderflow_db::ServiceMigrations = crate::MIGRATIONS;
    const GRPC_SERVICES: &'static [&'static str] = &[SERVICE_NAME];

    fn add_api(router: Router, pool: Pool) -> Router {
        router.add_service(NotificationServiceServer::new(NotificationApi::new(pool)))
    }

    fn add_handlers(consumer: Consumer) -> Consumer {
        consumer
            .with(NotifyOrderPlaced)
            .with(NotifyOrderConfirmed)
            .with(NotifyOrderCancelled)
            .with(NotifyPaymentCompleted)
    }
}
