//! The saga steps this service takes, as consumer handlers. Each runs inside
//! the runtime's transaction (inbox row + effect + outbox rows); a declined
//! card is an outcome (payment.failed), never a handler error. A gateway
//! outage or an open circuit breaker is a transient error: the transaction
//! rolls back and the runtime retries the message later.

use std::sync::Arc;

use diesel_async::AsyncPgConnection;
use orderflow_consumer::{Handler, HandlerError, HandlerResult};
use orderflow_events::{CloudEvent, inventory::InventoryReserved, order::OrderCancelled};

use crate::{
    gateway::{self, Gateway},
    store::{self, ChargeStepError},
};

/// inventory.reserved -> payment.completed | payment.failed.
#[derive(Debug, Clone)]
pub struct Charge {
    gateway: Arc<Gateway>,
}

impl Charge {
    /// Charging through `gateway` (tests: a breaker of their own).
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Self { gateway }
    }
}

impl Default for Charge {
    /// Charging through the process's gateway ([`gateway::process`]).
    fn default() -> Self {
        Self::new(gateway::process())
    }
}

impl Handler for Charge {
    type Event = InventoryReserved;
    const NAME: &'static str = "charge";

    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: CloudEvent<InventoryReserved>,
    ) -> HandlerResult {
        let outcome = store::charge(conn, &self.gateway, &event.data)
            .await
            .map_err(|e| match e {
                ChargeStepError::Database(e) => HandlerError::from(e),
                ChargeStepError::Gateway(e) => HandlerError::Transient(e.to_string()),
            })?;
        tracing::info!(event.id = %event.id, order.id = %event.data.order_id, ?outcome, "charge");
        Ok(())
    }

    async fn before_batch(
        &self,
        conn: &mut AsyncPgConnection,
        events: &[&CloudEvent<InventoryReserved>],
    ) -> HandlerResult {
        Ok(store::lock_orders(conn, events.iter().map(|e| e.data.order_id).collect()).await?)
    }
}

/// order.cancelled -> payment.refunded, or a tombstone when not charged yet.
#[derive(Debug, Clone, Copy, Default)]
pub struct RefundOnOrderCancelled;

impl Handler for RefundOnOrderCancelled {
    type Event = OrderCancelled;
    const NAME: &'static str = "refund-on-order-cancelled";

    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: CloudEvent<OrderCancelled>,
    ) -> HandlerResult {
        let outcome = store::refund(conn, &event.data).await?;
        tracing::info!(event.id = %event.id, order.id = %event.data.order_id, ?outcome, "refund on order cancelled");
        Ok(())
    }

    async fn before_batch(
        &self,
        conn: &mut AsyncPgConnection,
        events: &[&CloudEvent<OrderCancelled>],
    ) -> HandlerResult {
        Ok(store::lock_orders(conn, events.iter().map(|e| e.data.order_id).collect()).await?)
    }
}
