//! A consumer killed between its commit and its ack.

use std::time::Duration;

use crate::harness::{SETTLE, System};

#[tokio::test(flavor = "multi_thread")]
async fn inventory_killed_between_commit_and_ack_reserves_once() {
    let mut system =
        System::start_with(&[("inventory", "CONSUMER_FAULT_EXIT_AFTER_COMMIT", "1")]).await;
    let product = system.stock_product(10).await;

    let order_id = system.create_order(&[(product, 3)], "tok_visa").await;
    // reserve-stock commits, then the process exits before the ack.
    let mut crashed = system.take_proc("inventory");
    let status = crashed.wait_exit(SETTLE).await;
    assert_eq!(
        status.code(),
        Some(86),
        "CONSUMER_FAULT_EXIT_AFTER_COMMIT exits with 86 after the first commit, got {status}"
    );
    assert_eq!(
        system
            .scalar(
                "inventory",
                "SELECT count(*) FROM inbox WHERE handler = 'reserve-stock'",
                &[],
            )
            .await,
        1,
        "the reservation committed before the exit"
    );

    system.restart("inventory").await;
    let order = system.wait_until_settled(order_id).await;
    assert_eq!(
        order["status"], "ORDER_STATUS_CONFIRMED",
        "GetOrder: {order}"
    );
    system.wait_idle(Duration::from_secs(30)).await;

    // The broker redelivered the unacked order.placed: a duplicate.
    let logs = system.logs("inventory");
    assert_eq!(
        logs.count_containing(&["duplicate delivery", "reserve-stock"]),
        1,
        "the restarted inventory absorbs the redelivered order.placed as a duplicate"
    );
    let reservations = system
        .sql("inventory")
        .query(
            "SELECT r.status, l.quantity FROM reservations r \
             JOIN reservation_lines l USING (order_id) WHERE r.order_id = $1",
            &[&order_id],
        )
        .await
        .unwrap();
    let seen: Vec<(String, i32)> = reservations.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        seen,
        vec![("COMMITTED".to_owned(), 3)],
        "one reservation of 3 units, committed"
    );
    assert_eq!(
        system
            .scalar(
                "inventory",
                "SELECT count(*) FROM outbox WHERE event_type = 'inventory.reserved'",
                &[],
            )
            .await,
        1,
        "one inventory.reserved"
    );
    assert_eq!(system.stock(product).await, (7, 0), "stock moved once");
    assert_eq!(
        system
            .scalar(
                "payment",
                "SELECT count(*) FROM payments WHERE status = 'COMPLETED'",
                &[],
            )
            .await,
        1,
        "charged once"
    );
}
