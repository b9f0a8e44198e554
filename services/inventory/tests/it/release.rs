use orderflow_events::{order::OrderCancelled, payment::PaymentFailed};
use orderflow_inventory::handlers::{
    ReleaseOnOrderCancelled, ReleaseOnPaymentFailed, ReserveStock, status,
};
use uuid::Uuid;

use crate::helpers::{TestApp, handle_on, placed};

fn payment_failed(order: Uuid) -> PaymentFailed {
    PaymentFailed {
        payment_id: Uuid::new_v4(),
        order_id: order,
        customer_id: Uuid::new_v4(),
        customer_email: "ada@example.com".into(),
        currency: "EUR".into(),
        amount_minor: 100,
        reason: "card declined".into(),
    }
}

fn cancelled(order: Uuid) -> OrderCancelled {
    OrderCancelled {
        order_id: order,
        customer_id: Uuid::new_v4(),
        customer_email: "ada@example.com".into(),
        reason: "cancelled by the customer".into(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn payment_failed_gives_the_units_back_once() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.product(10).await, app.product(5).await);
    let order = placed(&[(a, 4), (b, 5)]);
    handle_on(&app, &ReserveStock, order.clone()).await;
    assert_eq!(app.stock(a).await, (6, 4));

    handle_on(
        &app,
        &ReleaseOnPaymentFailed,
        payment_failed(order.order_id),
    )
    .await;

    assert_eq!(app.stock(a).await, (10, 0));
    assert_eq!(app.stock(b).await, (5, 0));
    assert_eq!(
        app.reservation(order.order_id).await,
        Some((
            status::RELEASED.to_owned(),
            Some("payment failed: card declined".to_owned())
        ))
    );
    let (event_type, body) = app.events().await.pop().unwrap();
    assert_eq!(event_type, "inventory.released");
    assert_eq!(body["subject"], order.order_id.to_string());
    assert_eq!(body["data"]["reason"], "payment failed: card declined");
    assert_eq!(body["data"]["lines"].as_array().unwrap().len(), 2);
    let events = app.count("outbox").await;

    // Again (a replay), and a cancel after it: nothing more is given back.
    handle_on(
        &app,
        &ReleaseOnPaymentFailed,
        payment_failed(order.order_id),
    )
    .await;
    handle_on(&app, &ReleaseOnOrderCancelled, cancelled(order.order_id)).await;
    assert_eq!(app.stock(a).await, (10, 0));
    assert_eq!(app.stock(b).await, (5, 0));
    assert_eq!(app.count("outbox").await, events);
    assert_eq!(
        app.reservation(order.order_id).await.unwrap().0,
        status::RELEASED
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn order_cancelled_after_reserve_releases() {
    let app = TestApp::spawn().await;
    let a = app.product(3).await;
    let order = placed(&[(a, 3)]);
    handle_on(&app, &ReserveStock, order.clone()).await;
    assert_eq!(app.stock(a).await, (0, 3));

    handle_on(&app, &ReleaseOnOrderCancelled, cancelled(order.order_id)).await;

    assert_eq!(app.stock(a).await, (3, 0));
    let (status, reason) = app.reservation(order.order_id).await.unwrap();
    assert_eq!(status, status::RELEASED);
    assert_eq!(
        reason.unwrap(),
        "order cancelled: cancelled by the customer"
    );
    assert_eq!(app.events().await.pop().unwrap().0, "inventory.released");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_before_the_order_placed_leaves_a_tombstone() {
    let app = TestApp::spawn().await;
    let a = app.product(5).await;
    let order = placed(&[(a, 2)]);
    let events = app.count("outbox").await;

    handle_on(&app, &ReleaseOnOrderCancelled, cancelled(order.order_id)).await;
    assert_eq!(
        app.reservation(order.order_id).await.unwrap().0,
        status::CANCELLED
    );
    assert_eq!(
        app.count("outbox").await,
        events,
        "nothing was held: no event"
    );

    // The late order.placed finds the tombstone and reserves nothing.
    handle_on(&app, &ReserveStock, order.clone()).await;
    assert_eq!(app.stock(a).await, (5, 0));
    assert_eq!(
        app.reservation(order.order_id).await.unwrap().0,
        status::CANCELLED
    );
    assert_eq!(app.count("reservation_lines").await, 0);
    assert_eq!(app.count("outbox").await, events);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_payment_failed_without_a_reservation_also_leaves_a_tombstone() {
    let app = TestApp::spawn().await;
    let a = app.product(5).await;
    let order = placed(&[(a, 2)]);
    handle_on(
        &app,
        &ReleaseOnPaymentFailed,
        payment_failed(order.order_id),
    )
    .await;
    handle_on(&app, &ReserveStock, order.clone()).await;
    assert_eq!(app.stock(a).await, (5, 0));
    assert_eq!(
        app.reservation(order.order_id).await.unwrap().0,
        status::CANCELLED
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn releasing_a_rejected_reservation_changes_nothing() {
    let app = TestApp::spawn().await;
    let a = app.product(1).await;
    let order = placed(&[(a, 2)]);
    handle_on(&app, &ReserveStock, order.clone()).await;
    let events = app.count("outbox").await;
    handle_on(&app, &ReleaseOnOrderCancelled, cancelled(order.order_id)).await;
    assert_eq!(app.stock(a).await, (1, 0));
    assert_eq!(
        app.reservation(order.order_id).await.unwrap().0,
        status::REJECTED
    );
    assert_eq!(app.count("outbox").await, events);
}

/// order.placed and order.cancelled of one order handled at the same time,
/// many times over: whichever comes first, the units end up back on hand
/// and nothing stays reserved.
#[tokio::test(flavor = "multi_thread")]
async fn racing_placed_and_cancelled_always_end_with_the_stock_back() {
    let app = TestApp::spawn().await;
    let a = app.product(100).await;
    let mut tasks = Vec::new();
    for _ in 0..30 {
        let order = placed(&[(a, 1)]);
        let (pool1, pool2) = (app.pool.clone(), app.pool.clone());
        let cancel = cancelled(order.order_id);
        tasks.push(tokio::spawn(async move {
            let mut conn = pool1.get().await.unwrap();
            crate::helpers::handle(&mut conn, &ReserveStock, order).await
        }));
        tasks.push(tokio::spawn(async move {
            let mut conn = pool2.get().await.unwrap();
            crate::helpers::handle(&mut conn, &ReleaseOnOrderCancelled, cancel).await
        }));
    }
    for task in tasks {
        task.await.unwrap().expect("handled without error");
    }
    assert_eq!(app.stock(a).await, (100, 0));
    assert_eq!(
        app.count("reservations WHERE status IN ('RELEASED', 'CANCELLED')")
            .await,
        30
    );
}
