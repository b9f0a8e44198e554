//! Wiring: what the payment service adds to the process every service runs
//! (`orderflow_service::Application`): its name, gRPC API and handlers.

use orderflow_consumer::Consumer;
use orderflow_db::Pool;
use orderflow_grpc::Router;
use orderflow_service::Service;
use prometheus_client::registry::Registry;

use crate::{
    api::{PaymentApi, PaymentServiceServer, SERVICE_NAME},
    handlers::{Charge, RefundOnOrderCancelled},
};

/// Names the binary, the consumer's queues (`payment.<handler>`) and the
/// database sessions (`orderflow-payment`).
pub const CONSUMER_SERVICE: &str = "payment";

pub type Application = orderflow_service::Application<PaymentApp>;

pub struct PaymentApp;

impl Service for PaymentApp {
    const NAME: &'static str = CONSUMER_SERVICE;
    const MIGRATIONS: orderflow_db::ServiceMigrations = crate::MIGRATIONS;
    const GRPC_SERVICES: &'static [&'static str] = &[SERVICE_NAME];
    /// Payments are read by back-office staff; customers see their order.
    const ADMIN_METHODS: &'static [&'static str] = &[
        "/orderflow.payment.v1.PaymentService/GetPayment",
        "/orderflow.payment.v1.PaymentService/ListPayments",
    ];

    fn add_api(router: Router, pool: Pool) -> Router {
        router.add_service(PaymentServiceServer::new(PaymentApi::new(pool)))
    }

    fn add_handlers(consumer: Consumer) -> Consumer {
        consumer
            .with(Charge::default())
            .with(RefundOnOrderCancelled)
    }

    /// The gateway's circuit breaker and calls (`crate::gateway`).
    fn register_metrics(registry: &mut Registry) {
        crate::gateway::process().register_metrics(registry);
    }
}
