//! CancelOrder by the customer: after the reservation (compensated, nothing
//! charged) and after confirmation (refused).

use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

use crate::harness::{SETTLE, System, wait_for};

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_after_the_reservation_releases_the_stock_and_charges_nothing() {
    let mut system = System::start().await;
    let product = system.stock_product(10).await;
    // Payment down: the order stops after its reservation, so the cancel
    // lands before any charge is decided.
    system.kill("payment").await;

    let order_id = system.create_order(&[(product, 2)], "tok_visa").await;
    system.wait_reservation(order_id, "RESERVED").await;
    assert_eq!(system.stock(product).await, (8, 2), "2 units reserved");

    // When payment comes back, its charge (inventory.reserved) and refund
    // (order.cancelled) queues are consumed concurrently. To have the
    // tombstone first every time, hold the charge's inbox key in an open
    // transaction: the charge's own inbox insert waits on it, the refund
    // handler does not.
    let reserved_event: Uuid = system
        .sql("inventory")
        .query_one(
            "SELECT id FROM outbox WHERE event_type = 'inventory.reserved' \
             AND payload->'data'->>'order_id' = $1",
            &[&order_id.to_string()],
        )
        .await
        .expect("inventory wrote one inventory.reserved for the order")
        .get(0);
    let (mut blocker, connection) =
        tokio_postgres::connect(system.db_url("payment"), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    let hold = blocker.transaction().await.unwrap();
    hold.execute(
        "INSERT INTO inbox (message_id, handler) VALUES ($1, 'charge')",
        &[&reserved_event],
    )
    .await
    .unwrap();

    let cancelled = system
        .call(
            "order",
            "CancelOrder",
            json!({"order_id": order_id.to_string(), "reason": "changed my mind"}),
        )
        .await;
    assert_eq!(
        cancelled["order"]["status"], "ORDER_STATUS_CANCELLED",
        "CancelOrder: {cancelled}"
    );
    assert_eq!(
        cancelled["order"]["cancelReason"], "cancelled by the customer: changed my mind",
        "CancelOrder: {cancelled}"
    );
    system.wait_reservation(order_id, "RELEASED").await;
    system.wait_stock(product, (10, 0)).await;

    system.restart("payment").await;
    wait_for("payment stores the order's tombstone", SETTLE, || async {
        let n = system
            .scalar(
                "payment",
                "SELECT count(*) FROM cancelled_orders WHERE order_id = $1",
                &[&order_id],
            )
            .await;
        if n == 1 {
            Ok(())
        } else {
            Err(format!("{n} tombstones"))
        }
    })
    .await;
    hold.rollback().await.unwrap();
    // The charge now runs, finds the tombstone and charges nothing.
    system.wait_idle(SETTLE).await;
    assert_eq!(
        system
            .scalar(
                "payment",
                "SELECT count(*) FROM inbox WHERE message_id = $1 AND handler = 'charge'",
                &[&reserved_event],
            )
            .await,
        1,
        "the charge handler has processed inventory.reserved"
    );
    let payment = system
        .grpcurl(
            "payment",
            "GetPayment",
            &json!({"order_id": order_id.to_string()}),
        )
        .await;
    assert!(
        matches!(&payment, Err(e) if e.contains("Code: NotFound")),
        "a cancelled order is never charged, GetPayment answered {payment:?}"
    );
    assert_eq!(
        system.stock(product).await,
        (10, 0),
        "the reserved units are back"
    );
    let order = system.get_order(order_id).await;
    assert_eq!(
        order["status"], "ORDER_STATUS_CANCELLED",
        "GetOrder: {order}"
    );
    system
        .wait_notifications(order_id, &["order.placed", "order.cancelled"])
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_after_confirmation_is_refused() {
    let system = System::start().await;
    let product = system.stock_product(5).await;
    let order_id = system.create_order(&[(product, 1)], "tok_visa").await;
    let order = system.wait_until_settled(order_id).await;
    assert_eq!(
        order["status"], "ORDER_STATUS_CONFIRMED",
        "GetOrder: {order}"
    );

    let refused = system
        .grpcurl(
            "order",
            "CancelOrder",
            &json!({"order_id": order_id.to_string(), "reason": "too late"}),
        )
        .await;
    assert!(
        matches!(&refused, Err(e) if e.contains("Code: FailedPrecondition")),
        "cancelling a CONFIRMED order is FAILED_PRECONDITION, got {refused:?}"
    );
    system.wait_idle(Duration::from_secs(30)).await;
    let order = system.get_order(order_id).await;
    assert_eq!(
        order["status"], "ORDER_STATUS_CONFIRMED",
        "a refused cancel changes nothing: {order}"
    );
    let payment = system
        .call(
            "payment",
            "GetPayment",
            json!({"order_id": order_id.to_string()}),
        )
        .await;
    assert_eq!(
        payment["payment"]["status"], "PAYMENT_STATUS_COMPLETED",
        "no refund: {payment}"
    );
    assert_eq!(system.stock(product).await, (4, 0), "the unit stays sold");
}
