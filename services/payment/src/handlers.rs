//! The saga steps this service takes, as consumer handlers. Each runs inside
//! the runtime's transaction (inbox row + effect + outbox rows); a declined
//! card is an outcome (payment.failed), never a handler error.

use diesel_async::AsyncPgConnection;
use orderflow_consumer::{Handler, HandlerResult};
use orderflow_events::{CloudEvent, inventory::InventoryReserved, order::OrderCancelled};

use crate::store;

/// inventory.reserved -> payment.completed | payment.failed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Charge;

impl Handler for Charge {
    type Event = InventoryReserved;
    const NAME: &'static str = "charge";

    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: CloudEvent<InventoryReserved>,
    ) -> HandlerResult {
        let outcome = store::charge(conn, &event.data).await?;
        tracing::info!(event.id = %event.id, order.id = %event.data.order_id, ?outcome, "charge");
        Ok(())
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
}
