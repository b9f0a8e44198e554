use diesel_async::{AsyncConnection as _, AsyncPgConnection};
use orderflow_consumer::Handler as _;
use orderflow_events::{CloudEvent, order::OrderCancelled};
use orderflow_payment::handlers::{Charge, RefundOnOrderCancelled};
use uuid::Uuid;

use crate::helpers::{TestApp, reserved};

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_before_the_charge_leaves_a_tombstone_and_nothing_is_charged() {
    let app = TestApp::new().await;
    let customer = Uuid::new_v4();
    let event = reserved(customer, "tok_visa", 2500);

    app.cancel(event.order_id, customer).await;
    assert_eq!(app.tombstones().await.len(), 1);
    assert_eq!(app.tombstones().await[0].order_id, event.order_id);
    app.charge(event).await;

    assert!(app.payments().await.is_empty(), "nothing charged");
    assert!(app.outbox().await.is_empty(), "no event");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_after_the_charge_refunds_it() {
    let app = TestApp::new().await;
    let customer = Uuid::new_v4();
    let event = reserved(customer, "tok_visa", 2500);
    let order_id = event.order_id;
    app.charge(event).await;

    app.cancel(order_id, customer).await;
    // A second order.cancelled (another message) refunds nothing more.
    app.cancel(order_id, customer).await;

    let payments = app.payments().await;
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0].status, "REFUNDED");
    assert_eq!(
        payments[0].reason.as_deref(),
        Some("cancelled by the customer")
    );
    assert!(app.tombstones().await.is_empty());
    let outbox = app.outbox().await;
    let types: Vec<_> = outbox.iter().map(|r| r.event_type.as_str()).collect();
    assert_eq!(types, ["payment.completed", "payment.refunded"]);
    let data = &outbox[1].payload["data"];
    assert_eq!(data["payment_id"], payments[0].payment_id.to_string());
    assert_eq!(data["order_id"], order_id.to_string());
    assert_eq!(data["amount_minor"], 2500);
    assert_eq!(data["currency"], "EUR");
    assert_eq!(data["reason"], "cancelled by the customer");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_after_a_declined_charge_changes_nothing() {
    let app = TestApp::new().await;
    let customer = Uuid::new_v4();
    let event = reserved(customer, "tok_declined", 2500);
    let order_id = event.order_id;
    app.charge(event).await;

    app.cancel(order_id, customer).await;

    let payments = app.payments().await;
    assert_eq!(payments[0].status, "FAILED");
    assert_eq!(payments[0].reason.as_deref(), Some("card declined"));
    assert!(app.tombstones().await.is_empty());
    let types: Vec<_> = app
        .outbox()
        .await
        .into_iter()
        .map(|r| r.event_type)
        .collect();
    assert_eq!(types, ["payment.failed"]);
}

/// Charge and cancel of one order arrive on different queues and may run
/// at the same time. Whichever wins, the order ends either uncharged with a
/// tombstone or charged and refunded: never charged and left so.
#[tokio::test(flavor = "multi_thread")]
async fn racing_charge_and_cancel_never_leave_a_cancelled_order_charged() {
    let app = TestApp::new().await;
    let customer = Uuid::new_v4();
    let mut orders = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let event = reserved(customer, "tok_visa", 2500);
        orders.push(event.order_id);
        let cancelled = OrderCancelled {
            order_id: event.order_id,
            customer_id: customer,
            customer_email: String::new(),
            reason: "cancelled by the customer".into(),
        };
        let (url_a, url_b) = (app.db.url().to_owned(), app.db.url().to_owned());
        tasks.spawn(async move {
            let mut conn = AsyncPgConnection::establish(&url_a).await.unwrap();
            let event = CloudEvent::new("orderflow/inventory", event);
            conn.transaction(async |conn| Charge::default().handle(conn, event).await)
                .await
        });
        tasks.spawn(async move {
            let mut conn = AsyncPgConnection::establish(&url_b).await.unwrap();
            let event = CloudEvent::new("orderflow/order", cancelled);
            conn.transaction(async |conn| RefundOnOrderCancelled.handle(conn, event).await)
                .await
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap().unwrap();
    }

    let payments = app.payments().await;
    let tombstones = app.tombstones().await;
    for order in orders {
        let payment = payments.iter().find(|p| p.order_id == order);
        let tombstone = tombstones.iter().any(|t| t.order_id == order);
        match payment {
            None => assert!(tombstone, "{order}: neither charged nor remembered"),
            Some(p) => {
                assert_eq!(p.status, "REFUNDED", "{order}: charged after its cancel");
                assert!(!tombstone, "{order}: tombstone and payment");
            }
        }
    }
    let outbox = app.outbox().await;
    let completed = outbox
        .iter()
        .filter(|r| r.event_type == "payment.completed")
        .count();
    let refunded = outbox
        .iter()
        .filter(|r| r.event_type == "payment.refunded")
        .count();
    assert_eq!(completed, payments.len());
    assert_eq!(refunded, payments.len());
}
