use orderflow_events::order::{OrderCancelled, OrderConfirmed};
use orderflow_inventory::handlers::{
    CommitReservation, ReleaseOnOrderCancelled, ReserveStock, status,
};
use uuid::Uuid;

use crate::helpers::{TestApp, handle_on, placed};

fn confirmed(order: Uuid) -> OrderConfirmed {
    OrderConfirmed {
        order_id: order,
        customer_id: Uuid::new_v4(),
        customer_email: "ada@example.com".into(),
        currency: "EUR".into(),
        total_minor: 100,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_confirmed_order_sells_its_reserved_units() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.product(10).await, app.product(4).await);
    let order = placed(&[(a, 3), (b, 4)]);
    handle_on(&app, &ReserveStock, order.clone()).await;
    let events = app.count("outbox").await;

    handle_on(&app, &CommitReservation, confirmed(order.order_id)).await;

    // Initial stock = on_hand + units of confirmed orders; nothing reserved.
    assert_eq!(app.stock(a).await, (7, 0));
    assert_eq!(app.stock(b).await, (0, 0));
    assert_eq!(
        app.reservation(order.order_id).await.unwrap().0,
        status::COMMITTED
    );
    assert_eq!(
        app.count("outbox").await,
        events,
        "commit publishes nothing"
    );

    // A replay, and a late cancel: sold units stay sold.
    handle_on(&app, &CommitReservation, confirmed(order.order_id)).await;
    handle_on(
        &app,
        &ReleaseOnOrderCancelled,
        OrderCancelled {
            order_id: order.order_id,
            customer_id: order.customer_id,
            customer_email: String::new(),
            reason: "too late".into(),
        },
    )
    .await;
    assert_eq!(app.stock(a).await, (7, 0));
    assert_eq!(app.stock(b).await, (0, 0));
    assert_eq!(
        app.reservation(order.order_id).await.unwrap().0,
        status::COMMITTED
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_confirmation_without_a_held_reservation_changes_nothing() {
    let app = TestApp::spawn().await;
    let a = app.product(1).await;
    let unknown = Uuid::new_v4();
    handle_on(&app, &CommitReservation, confirmed(unknown)).await;
    assert_eq!(app.reservation(unknown).await, None);

    let rejected = placed(&[(a, 2)]);
    handle_on(&app, &ReserveStock, rejected.clone()).await;
    handle_on(&app, &CommitReservation, confirmed(rejected.order_id)).await;
    assert_eq!(
        app.reservation(rejected.order_id).await.unwrap().0,
        status::REJECTED
    );
    assert_eq!(app.stock(a).await, (1, 0));
}
