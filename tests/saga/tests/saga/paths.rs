//! One order each: the happy path, out of stock, a declined card.

use serde_json::json;

use crate::harness::{System, int};

#[tokio::test(flavor = "multi_thread")]
async fn an_order_in_stock_is_confirmed_charged_and_notified() {
    let system = System::start().await;
    let product = system.stock_product(10).await;

    let order_id = system.create_order(&[(product, 3)], "tok_visa").await;
    let order = system.wait_until_settled(order_id).await;

    assert_eq!(
        order["status"], "ORDER_STATUS_CONFIRMED",
        "an order in stock with a good card ends CONFIRMED; GetOrder: {order}"
    );
    assert_eq!(order.get("cancelReason"), None, "no cancel reason: {order}");
    // Sold: off on_hand at reservation, off reserved at commit-reservation.
    system.wait_stock(product, (7, 0)).await;
    let payment = system
        .call(
            "payment",
            "GetPayment",
            json!({"order_id": order_id.to_string()}),
        )
        .await;
    assert_eq!(
        payment["payment"]["status"], "PAYMENT_STATUS_COMPLETED",
        "GetPayment: {payment}"
    );
    assert_eq!(
        int(&payment["payment"]["amount"]["amountMinor"]),
        300,
        "3 units at 1.00 EUR: {payment}"
    );
    system
        .wait_notifications(
            order_id,
            &["order.placed", "payment.completed", "order.confirmed"],
        )
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_order_beyond_the_stock_is_cancelled_and_nothing_moves() {
    let system = System::start().await;
    let product = system.stock_product(2).await;

    let order_id = system.create_order(&[(product, 5)], "tok_visa").await;
    let order = system.wait_until_settled(order_id).await;

    assert_eq!(
        order["status"], "ORDER_STATUS_CANCELLED",
        "5 units of 2 cannot be reserved; GetOrder: {order}"
    );
    let reason = order["cancelReason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("stock"),
        "the cancel reason names the stock shortage, got {reason:?}"
    );
    system.wait_reservation(order_id, "REJECTED").await;
    assert_eq!(
        system.stock(product).await,
        (2, 0),
        "a rejected order moves no stock"
    );
    system
        .wait_notifications(order_id, &["order.placed", "order.cancelled"])
        .await;
    // order.cancelled has reached payment (its tombstone) by now or soon:
    // wait for the system to be idle, then nothing was charged.
    system.wait_idle(crate::harness::SETTLE).await;
    let missing = system
        .grpcurl(
            "payment",
            "GetPayment",
            &json!({"order_id": order_id.to_string()}),
        )
        .await;
    assert!(
        matches!(&missing, Err(e) if e.contains("Code: NotFound")),
        "no payment for an order out of stock, GetPayment answered {missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_declined_card_cancels_the_order_and_releases_the_stock() {
    let system = System::start().await;
    let product = system.stock_product(10).await;

    let order_id = system.create_order(&[(product, 4)], "tok_declined").await;
    let order = system.wait_until_settled(order_id).await;

    assert_eq!(
        order["status"], "ORDER_STATUS_CANCELLED",
        "a declined card cancels the order; GetOrder: {order}"
    );
    assert_eq!(
        order["cancelReason"], "payment failed: card declined",
        "the gateway's reason is kept: {order}"
    );
    // inventory releases on payment.failed, in parallel with the order.
    system.wait_stock(product, (10, 0)).await;
    system.wait_reservation(order_id, "RELEASED").await;
    let payment = system
        .call(
            "payment",
            "GetPayment",
            json!({"order_id": order_id.to_string()}),
        )
        .await;
    assert_eq!(
        payment["payment"]["status"], "PAYMENT_STATUS_FAILED",
        "GetPayment: {payment}"
    );
    assert_eq!(
        payment["payment"]["reason"], "card declined",
        "GetPayment: {payment}"
    );
    system
        .wait_notifications(order_id, &["order.placed", "order.cancelled"])
        .await;
}
