//! The order side of the saga: the outcome of reservation and payment
//! settles the order. Each handler runs inside the consumer runtime's
//! transaction, next to its inbox row, and appends `order.confirmed` or
//! `order.cancelled` on the same connection (see `orderflow_consumer`).
//!
//! Settling is idempotent and order-tolerant: only a PENDING order changes,
//! so a late payment.completed for an order the customer cancelled leaves it
//! CANCELLED (payment refunds it on order.cancelled).

use diesel_async::AsyncPgConnection;
use orderflow_consumer::{Consumer, Handler, HandlerError, HandlerResult};
use orderflow_events::{
    CloudEvent,
    inventory::InventoryRejected,
    payment::{PaymentCompleted, PaymentFailed},
};
use uuid::Uuid;

use crate::{
    metrics::CancelCause,
    store::{self, OrderError},
};

/// Registers every handler of this service on `consumer`.
#[must_use]
pub fn register(consumer: Consumer) -> Consumer {
    consumer
        .with(ConfirmOnPaymentCompleted)
        .with(CancelOnInventoryRejected)
        .with(CancelOnPaymentFailed)
}

/// payment.completed: PENDING → CONFIRMED.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConfirmOnPaymentCompleted;

impl Handler for ConfirmOnPaymentCompleted {
    type Event = PaymentCompleted;
    const NAME: &'static str = "confirm-on-payment-completed";

    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: CloudEvent<PaymentCompleted>,
    ) -> HandlerResult {
        store::confirm_in_tx(conn, event.data.order_id)
            .await
            .map(drop)
            .map_err(settle_error)
    }

    async fn before_batch(
        &self,
        conn: &mut AsyncPgConnection,
        events: &[&CloudEvent<PaymentCompleted>],
    ) -> HandlerResult {
        Ok(store::lock_orders(conn, events.iter().map(|e| e.data.order_id).collect()).await?)
    }
}

/// inventory.rejected: PENDING → CANCELLED, with the shortage as reason.
#[derive(Debug, Clone, Copy, Default)]
pub struct CancelOnInventoryRejected;

impl Handler for CancelOnInventoryRejected {
    type Event = InventoryRejected;
    const NAME: &'static str = "cancel-on-inventory-rejected";

    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: CloudEvent<InventoryRejected>,
    ) -> HandlerResult {
        let data = event.data;
        cancel(
            conn,
            data.order_id,
            &format!("out of stock: {}", data.reason),
            CancelCause::OutOfStock,
        )
        .await
    }

    async fn before_batch(
        &self,
        conn: &mut AsyncPgConnection,
        events: &[&CloudEvent<InventoryRejected>],
    ) -> HandlerResult {
        Ok(store::lock_orders(conn, events.iter().map(|e| e.data.order_id).collect()).await?)
    }
}

/// payment.failed: PENDING → CANCELLED, with the gateway's reason.
#[derive(Debug, Clone, Copy, Default)]
pub struct CancelOnPaymentFailed;

impl Handler for CancelOnPaymentFailed {
    type Event = PaymentFailed;
    const NAME: &'static str = "cancel-on-payment-failed";

    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: CloudEvent<PaymentFailed>,
    ) -> HandlerResult {
        let data = event.data;
        cancel(
            conn,
            data.order_id,
            &format!("payment failed: {}", data.reason),
            CancelCause::PaymentFailed,
        )
        .await
    }

    async fn before_batch(
        &self,
        conn: &mut AsyncPgConnection,
        events: &[&CloudEvent<PaymentFailed>],
    ) -> HandlerResult {
        Ok(store::lock_orders(conn, events.iter().map(|e| e.data.order_id).collect()).await?)
    }
}

async fn cancel(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    reason: &str,
    cause: CancelCause,
) -> HandlerResult {
    match store::cancel_in_tx(conn, id, reason, cause).await {
        Ok(_) => Ok(()),
        // Confirmed meanwhile: a failure event cannot follow a completed
        // payment of the same order, so there is nothing to undo here.
        Err(OrderError::NotCancellable { id, status }) => {
            tracing::warn!(order.id = %id, order.status = %status, "settled order left as it is");
            Ok(())
        }
        Err(e) => Err(settle_error(e)),
    }
}

/// An event about an order this database never had cannot become valid by
/// retrying: park it. Everything else is worth a retry.
fn settle_error(err: OrderError) -> HandlerError {
    match err {
        OrderError::NotFound(id) => HandlerError::Reject(format!("unknown order {id}")),
        other => HandlerError::Transient(other.to_string()),
    }
}
