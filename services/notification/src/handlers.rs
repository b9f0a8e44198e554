//! One handler per customer-facing event. Each stores (sends) one
//! notification per event, inside the runtime's transaction.

use diesel_async::AsyncPgConnection;
use orderflow_consumer::{Handler, HandlerError, HandlerResult};
use orderflow_events::{
    CloudEvent, Event,
    order::{OrderCancelled, OrderConfirmed, OrderPlaced},
    payment::PaymentCompleted,
};

use crate::{
    message,
    store::{self, Draft, Outcome},
};

/// Sends `draft`. An event with no way to reach the customer can never
/// succeed, so it is parked (Reject) for an operator rather than retried.
async fn deliver(conn: &mut AsyncPgConnection, draft: Draft<'_>) -> HandlerResult {
    let (event_id, customer_id) = (draft.event_id, draft.customer_id);
    match store::send(conn, draft).await? {
        Outcome::Sent(_) => Ok(()),
        Outcome::Duplicate => {
            tracing::info!(event.id = %event_id, "already notified");
            Ok(())
        }
        Outcome::NoRecipient => Err(HandlerError::Reject(format!(
            "no phone or e-mail known for customer {customer_id}"
        ))),
    }
}

/// order.placed. Also remembers the customer's phone, if the order has one,
/// for the events that follow.
#[derive(Debug, Clone, Copy, Default)]
pub struct NotifyOrderPlaced;

impl Handler for NotifyOrderPlaced {
    type Event = OrderPlaced;
    const NAME: &'static str = "notify-order-placed";

    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: CloudEvent<OrderPlaced>,
    ) -> HandlerResult {
        let e = &event.data;
        if store::is_phone(&e.customer_phone) {
            store::upsert_phone(conn, e.customer_id, &e.customer_phone).await?;
        } else if !e.customer_phone.is_empty() {
            // CreateOrder validates phones; a bad one here is ignored, not fatal.
            tracing::warn!(event.id = %event.id, "customer_phone is not E.164; ignored");
        }
        let draft = Draft {
            event_id: event.id,
            event_type: OrderPlaced::TYPE,
            customer_id: e.customer_id,
            order_id: e.order_id,
            customer_email: &e.customer_email,
            message: message::order_placed(e),
        };
        deliver(conn, draft).await
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct NotifyOrderConfirmed;

impl Handler for NotifyOrderConfirmed {
    type Event = OrderConfirmed;
    const NAME: &'static str = "notify-order-confirmed";

    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: CloudEvent<OrderConfirmed>,
    ) -> HandlerResult {
        let e = &event.data;
        let draft = Draft {
            event_id: event.id,
            event_type: OrderConfirmed::TYPE,
            customer_id: e.customer_id,
            order_id: e.order_id,
            customer_email: &e.customer_email,
            message: message::order_confirmed(e),
        };
        deliver(conn, draft).await
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct NotifyOrderCancelled;

impl Handler for NotifyOrderCancelled {
    type Event = OrderCancelled;
    const NAME: &'static str = "notify-order-cancelled";

    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: CloudEvent<OrderCancelled>,
    ) -> HandlerResult {
        let e = &event.data;
        let draft = Draft {
            event_id: event.id,
            event_type: OrderCancelled::TYPE,
            customer_id: e.customer_id,
            order_id: e.order_id,
            customer_email: &e.customer_email,
            message: message::order_cancelled(e),
        };
        deliver(conn, draft).await
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct NotifyPaymentCompleted;

impl Handler for NotifyPaymentCompleted {
    type Event = PaymentCompleted;
    const NAME: &'static str = "notify-payment-completed";

    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: CloudEvent<PaymentCompleted>,
    ) -> HandlerResult {
        let e = &event.data;
        let draft = Draft {
            event_id: event.id,
            event_type: PaymentCompleted::TYPE,
            customer_id: e.customer_id,
            order_id: e.order_id,
            customer_email: &e.customer_email,
            message: message::payment_completed(e),
        };
        deliver(conn, draft).await
    }
}
