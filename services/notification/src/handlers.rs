//! One handler per customer-facing event. Each stores (sends) one
//! notification per event, inside the runtime's transaction.

use diesel_async::AsyncPgConnection;
use orderflow_consumer::{Handler, HandlerError, HandlerResult, Traced};
use orderflow_events::{
    CloudEvent, Event,
    order::{OrderCancelled, OrderConfirmed, OrderPlaced},
    payment::PaymentCompleted,
};
use tracing::Instrument as _;
use uuid::Uuid;

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
        Outcome::NoRecipient => Err(no_recipient(customer_id)),
    }
}

fn no_recipient(customer_id: Uuid) -> HandlerError {
    HandlerError::Reject(format!(
        "no phone or e-mail known for customer {customer_id}"
    ))
}

/// A batch's drafts, sent with two statements (`store::send_all`); a draft
/// without a recipient fails the batch, whose messages are then applied
/// one at a time, so that one is parked alone.
async fn deliver_all<E>(
    conn: &mut AsyncPgConnection,
    events: &[Traced<E>],
    draft: impl Fn(&CloudEvent<E>) -> Draft<'_>,
) -> HandlerResult {
    let drafts = events
        .iter()
        .map(|t| (draft(&t.event), t.span.clone()))
        .collect();
    store::send_all(conn, drafts).await?.map_err(no_recipient)
}

/// order.placed. Also remembers the customer's phone, if the order has one,
/// for the events that follow.
#[derive(Debug, Clone, Copy, Default)]
pub struct NotifyOrderPlaced;

impl NotifyOrderPlaced {
    async fn remember_phone(
        conn: &mut AsyncPgConnection,
        event: &CloudEvent<OrderPlaced>,
    ) -> HandlerResult {
        let e = &event.data;
        if store::is_phone(&e.customer_phone) {
            store::upsert_phone(conn, e.customer_id, &e.customer_phone).await?;
        } else if !e.customer_phone.is_empty() {
            // CreateOrder validates phones; a bad one here is ignored, not fatal.
            tracing::warn!(event.id = %event.id, "customer_phone is not E.164; ignored");
        }
        Ok(())
    }

    fn draft(event: &CloudEvent<OrderPlaced>) -> Draft<'_> {
        let e = &event.data;
        Draft {
            event_id: event.id,
            event_type: OrderPlaced::TYPE,
            customer_id: e.customer_id,
            order_id: e.order_id,
            customer_email: &e.customer_email,
            message: message::order_placed(e),
        }
    }
}

impl Handler for NotifyOrderPlaced {
    type Event = OrderPlaced;
    const NAME: &'static str = "notify-order-placed";

    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: CloudEvent<OrderPlaced>,
    ) -> HandlerResult {
        Self::remember_phone(conn, &event).await?;
        deliver(conn, Self::draft(&event)).await
    }

    async fn handle_batch(
        &self,
        conn: &mut AsyncPgConnection,
        events: Vec<Traced<OrderPlaced>>,
    ) -> HandlerResult {
        // Every phone first: the batch's later events reach it by SMS.
        for t in &events {
            Self::remember_phone(conn, &t.event)
                .instrument(t.span.clone())
                .await?;
        }
        deliver_all(conn, &events, Self::draft).await
    }
}

/// A handler that only sends one notification per event: `handle` sends
/// it, `handle_batch` sends the batch's together.
macro_rules! notify_handler {
    ($(#[$doc:meta])* $name:ident, $event:ty, $key:literal, $message:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $name;

        impl $name {
            fn draft(event: &CloudEvent<$event>) -> Draft<'_> {
                let e = &event.data;
                Draft {
                    event_id: event.id,
                    event_type: <$event>::TYPE,
                    customer_id: e.customer_id,
                    order_id: e.order_id,
                    customer_email: &e.customer_email,
                    message: $message(e),
                }
            }
        }

        impl Handler for $name {
            type Event = $event;
            const NAME: &'static str = $key;

            async fn handle(
                &self,
                conn: &mut AsyncPgConnection,
                event: CloudEvent<$event>,
            ) -> HandlerResult {
                deliver(conn, Self::draft(&event)).await
            }

            async fn handle_batch(
                &self,
                conn: &mut AsyncPgConnection,
                events: Vec<Traced<$event>>,
            ) -> HandlerResult {
                deliver_all(conn, &events, Self::draft).await
            }
        }
    };
}

notify_handler!(
    /// order.confirmed.
    NotifyOrderConfirmed,
    OrderConfirmed,
    "notify-order-confirmed",
    message::order_confirmed
);
notify_handler!(
    /// order.cancelled.
    NotifyOrderCancelled,
    OrderCancelled,
    "notify-order-cancelled",
    message::order_cancelled
);
notify_handler!(
    /// payment.completed.
    NotifyPaymentCompleted,
    PaymentCompleted,
    "notify-payment-completed",
    message::payment_completed
);
